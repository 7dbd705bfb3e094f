"""Rank and linear correlations between two series (SROCC, PLCC, Kendall's tau-b), defined once
for the ensemble's fit and the trained models' benchmark figures: scipy.stats' (tau-b in
O(n log n) time and O(n) memory), with fewer than MIN_PAIRS pairs refused and NaN, without
warnings, where one series is constant or not finite (no correlation is defined)."""

import math
import warnings

import numpy as np
from scipy import stats

MIN_PAIRS = 3  # the fewest pairs the rank and raw figures are defined on
UNDEFINED = "undefined"  # a figure that is NaN (null in JSON), in words on screen and in tables


def figure_text(value: float | None, width: int = 0) -> str:
    """`value` to 4 decimals, or UNDEFINED where it is None or NaN; right-aligned in `width`."""
    if value is None or not math.isfinite(value):
        return f"{UNDEFINED:>{width}}"
    return f"{value:>{width}.4f}"


def as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(x) < MIN_PAIRS:
        raise ValueError(f"correlations need at least {MIN_PAIRS} pairs, got {len(x)}")
    return x, y


def finite(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(np.isfinite(x).all() and np.isfinite(y).all())


def _correlation(statistic, x, y) -> float:
    x, y = as_pair(x, y)
    if not finite(x, y) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():  # scipy's near-constant-input warnings, for one
        warnings.simplefilter("ignore")
        return float(statistic(x, y).statistic)


def plcc(x, y) -> float:
    return _correlation(stats.pearsonr, x, y)


def srocc(x, y) -> float:
    return _correlation(stats.spearmanr, x, y)


def krcc(x, y) -> float:
    """Kendall's tau-b (ties in either variable corrected)."""
    return _correlation(stats.kendalltau, x, y)
