"""The benchmark figures of an IQA model: PLCC (raw, and after the 4-parameter logistic that
IQA evaluations fit from prediction to opinion), SROCC, KRCC (tau-b) and RMSE.

The correlations are labelers.correlation's (scipy.stats', fewer than 3 pairs refused, NaN for
a constant or non-finite series); this module adds what scipy lacks: the rising logistic fit
and the RMSE after it, NaN on fewer than 5 pairs (the logistic's 4 parameters pass through
any 4 rising points). Predictions that run against the opinions have no rising fit better
than a constant: their fitted PLCC is the raw one (negative), not the NaN of a flat curve."""

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from labelers.correlation import as_pair, finite, krcc, plcc, srocc
from labelers.ensemble import logistic

CORE_FIGURES = ("srocc", "plcc", "krcc", "rmse")  # what every kind of run has reported
FIT_PAIRS = 5  # the fewest the fitted PLCC and RMSE are: more than the logistic's 4 parameters
FLAT = 1e-6    # a fitted curve spreading less than this share of the opinions' range is flat


def rmse(x, y) -> float:
    x, y = as_pair(x, y)
    return root_mean_square(x - y)


def root_mean_square(values) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _rising(x: np.ndarray, rise: float, b2: float, b3: float, b4: float) -> np.ndarray:
    return logistic(x, b2 + rise, b2, b3, b4)


@dataclass(frozen=True)
class LogisticFit:
    """A fitted rising logistic, kept on the standardised predictions z = (s - centre) /
    spread where it was fitted: its values never meet the logistic's floor on a tiny scale."""

    parameters: tuple[float, float, float, float]  # b1..b4 over z
    centre: float
    spread: float

    def __call__(self, predicted) -> np.ndarray:
        z = (np.asarray(predicted, dtype=np.float64) - self.centre) / self.spread
        return logistic(z, *self.parameters)


def fit_logistic(predicted, opinion) -> LogisticFit:
    """Least-squares b1..b4 of the RISING logistic from predictions to opinion scores (b1 >= b2,
    b4 > 0): a model that ranks images backwards must not earn a high fitted PLCC. The fit runs
    on the standardised predictions, so its figures do not depend on their scale; where it
    does not converge, or ends worse than a constant (the flat curve, itself a rising logistic
    of no rise), the better of its start and that constant is kept. NaN parameters (so NaN
    fitted values) for non-finite input."""
    x, y = as_pair(predicted, opinion)
    if not finite(x, y):
        return LogisticFit((np.nan,) * 4, 0.0, 1.0)
    centre, spread = float(np.mean(x)), float(np.std(x)) or 1.0
    z = (x - centre) / spread
    start = (float(np.ptp(y)) or 1.0, float(y.min()), 0.0, 0.5)
    constant = (0.0, float(np.mean(y)), 0.0, 1.0)
    candidates = [start, constant]
    try:
        with warnings.catch_warnings():  # the parameters' covariance is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            fitted, _ = curve_fit(_rising, z, y, p0=start, bounds=([0.0, -np.inf, -np.inf, 1e-9],
                                                                      np.inf), maxfev=20000)
        candidates.append(tuple(fitted))
    except RuntimeError:  # no convergence: the start or the constant, whichever fits better
        pass
    rise, b2, b3, b4 = min(candidates, key=lambda p: float(np.sum((_rising(z, *p) - y) ** 2)))
    return LogisticFit((b2 + rise, b2, b3, b4), centre, spread)


def report(predicted, opinion) -> dict[str, float]:
    """PLCC (raw and fitted), SROCC, KRCC, RMSE (raw and fitted), and the pair count; the
    fitted ones NaN on fewer than FIT_PAIRS pairs, or on opinions all alike (a curve fitted
    to one value has an RMSE of 0 whatever was predicted)."""
    x, y = as_pair(predicted, opinion)
    raw = plcc(x, y)
    figures = {"plcc": math.nan, "plcc_raw": raw, "srocc": srocc(x, y), "krcc": krcc(x, y),
               "rmse": math.nan, "rmse_raw": rmse(x, y), "count": len(x)}
    if len(x) < FIT_PAIRS or np.ptp(y) == 0:
        return figures
    fitted = fit_logistic(x, y)(x)
    # the best rising curve is a constant (up to the fit's rounding: a spread of 1e-13 is no
    # curve, and its correlation is noise)
    flat = np.isfinite(fitted).all() and np.ptp(fitted) <= FLAT * max(np.ptp(y), 1e-300)
    return {**figures, "plcc": raw if flat else plcc(fitted, y), "rmse": rmse(fitted, y)}
