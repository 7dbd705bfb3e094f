"""The benchmark figures of an IQA model: PLCC (raw, and after the 4-parameter logistic that
IQA evaluations fit from prediction to opinion), SROCC, KRCC (tau-b) and RMSE."""

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from labelers.ensemble import logistic

KENDALL_CHUNK = 2048


def _as_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"correlations need at least 3 pairs, got {len(x)}")
    return x, y


def plcc(x, y) -> float:
    x, y = _as_pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their positions."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    sizes = np.diff(np.r_[first, len(values)])
    ranks = np.empty(len(values))
    ranks[order] = first[group] + (sizes[group] + 1) / 2
    return ranks


def srocc(x, y) -> float:
    x, y = _as_pair(x, y)
    return plcc(average_ranks(x), average_ranks(y))


def krcc(x, y) -> float:
    """Kendall's tau-b (ties in either variable corrected), pairs counted in row chunks."""
    x, y = _as_pair(x, y)
    concordance = tied_x = tied_y = 0.0
    for start in range(0, len(x), KENDALL_CHUNK):
        sx = np.sign(x[start:start + KENDALL_CHUNK, None] - x[None, :])
        sy = np.sign(y[start:start + KENDALL_CHUNK, None] - y[None, :])
        concordance += (sx * sy).sum()
        tied_x += (sx == 0).sum()
        tied_y += (sy == 0).sum()
    n = len(x)
    pairs = n * (n - 1)  # ordered pairs; the diagonal is in the tie counts
    denominator = np.sqrt((pairs - (tied_x - n)) * (pairs - (tied_y - n)))
    return float(concordance / denominator) if denominator > 0 else float("nan")


def rmse(x, y) -> float:
    x, y = _as_pair(x, y)
    return float(np.sqrt(np.mean((x - y) ** 2)))


def _rising(x: np.ndarray, rise: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return logistic(x, b2 + rise, b2, b3, b4)


def fit_logistic(predicted, opinion) -> np.ndarray:
    """Least-squares b1..b4 of the RISING logistic from predictions to opinion scores (b1 >= b2,
    b4 > 0): a model that ranks images backwards must not earn a high fitted PLCC."""
    x, y = _as_pair(predicted, opinion)
    spread = float(np.std(x)) or 1.0
    start = (float(np.ptp(y)) or 1.0, float(y.min()), float(np.mean(x)), spread / 2)
    bounds = ([0.0, -np.inf, -np.inf, 1e-9 * spread], np.inf)
    try:
        with warnings.catch_warnings():  # the parameters' covariance is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            (rise, b2, b3, b4), _ = curve_fit(_rising, x, y, p0=start, bounds=bounds,
                                              maxfev=20000)
    except RuntimeError:  # no convergence: the start is the honest fallback
        rise, b2, b3, b4 = start
    return np.array([b2 + rise, b2, b3, b4])


def report(predicted, opinion) -> dict[str, float]:
    """PLCC (raw and fitted), SROCC, KRCC, RMSE (raw and fitted), and the pair count."""
    x, y = _as_pair(predicted, opinion)
    fitted = logistic(x, *fit_logistic(x, y))
    return {"plcc": plcc(fitted, y), "plcc_raw": plcc(x, y), "srocc": srocc(x, y),
            "krcc": krcc(x, y), "rmse": rmse(fitted, y), "rmse_raw": rmse(x, y),
            "count": len(x)}
