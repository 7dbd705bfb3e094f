"""Ridge regression in closed form, the linear read-out of a probe: features standardised on
the fitting part, the penalty chosen on a validation part from a log grid.

The objective is mean((y - b - Xw)^2) + alpha * |w|^2 on standardised X, so alpha is a
per-sample penalty that means the same for any number of images; one SVD of X gives the
weights of every alpha, w = V diag(s / (s^2 + n alpha)) U^T (y - mean y). The penalty is
chosen by the validation part's RMSE: it is the error the regression minimises, a smooth
function of alpha on a small validation part (where SROCC ties between neighbouring alphas and
jumps with one swapped pair), and it sees the shrinkage of the predictions' scale that a rank
correlation ignores."""

from dataclasses import dataclass

import numpy as np

from training.correlation import root_mean_square

ALPHA_GRID: tuple[float, ...] = tuple(float(10.0 ** k) for k in np.arange(-6.0, 3.5, 0.5))
ROUNDING_SPREAD = 1e-5  # a feature's spread below this share of its mean is rounding noise


@dataclass(frozen=True)
class Ridge:
    """A fitted read-out: standardisation, weights on the standardised features, intercept."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    intercept: float
    alpha: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        return _standardised(features, self.mean, self.scale) @ self.weights + self.intercept


def _checked(features: np.ndarray, targets: np.ndarray, least: int = 2
             ) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if features.ndim != 2 or targets.shape != (len(features),):
        raise ValueError(f"ridge needs features (n, d) and n targets, got {features.shape} "
                         f"and {targets.shape}")
    if len(features) < least:
        raise ValueError(f"ridge needs at least {least} samples here, got {len(features)}")
    if not (np.isfinite(features).all() and np.isfinite(targets).all()):
        raise ValueError("ridge got features or targets that are not finite")
    return features, targets


def _standardised(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (np.asarray(features, dtype=np.float64) - mean) / scale


@dataclass(frozen=True)
class _Decomposed:
    """A fitting part standardised and decomposed once: X = U diag(s) V^T."""

    mean: np.ndarray
    scale: np.ndarray
    intercept: float
    left: np.ndarray
    singular: np.ndarray
    right: np.ndarray
    centred: np.ndarray   # the targets less their mean

    def shrink(self, alpha: float) -> np.ndarray:
        squared = self.singular ** 2
        return squared / (squared + len(self.centred) * alpha)

    def fit(self, alpha: float) -> Ridge:
        squared = self.singular ** 2
        weights = self.right.T @ (self.singular / (squared + len(self.centred) * alpha)
                                  * (self.left.T @ self.centred))
        return Ridge(self.mean, self.scale, weights, self.intercept, float(alpha))

    def leave_one_out_rmse(self, alpha: float) -> float:
        """The RMSE of each sample predicted by the fit without it, in closed form: residual
        / (1 - leverage), the leverage of the hat matrix 11^T/n + U diag(shrink) U^T (the
        same total penalty n alpha without the sample; the standardisation kept)."""
        shrink = self.shrink(alpha)
        fitted = self.left @ (shrink * (self.left.T @ self.centred))
        kept = 1.0 - 1.0 / len(self.centred) - (self.left ** 2) @ shrink
        if kept.min() <= 1e-12:  # a sample that is fitted exactly whatever its target
            return float("inf")
        return root_mean_square((self.centred - fitted) / kept)


def _decomposed(features: np.ndarray, targets: np.ndarray, alphas: tuple[float, ...]
                ) -> _Decomposed:
    features, targets = _checked(features, targets)
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"ridge penalties must be positive, got {alphas}")
    mean = features.mean(axis=0)
    spread = features.std(axis=0)
    # a feature that only moves by rounding (an encoder's float32 output is rounded to 6e-8
    # of its value) is a constant: standardised, its noise would weigh as much as a signal
    varying = spread > ROUNDING_SPREAD * np.abs(mean)
    scale = np.where(varying, spread, np.inf)  # a constant standardises to 0: no weight
    left, singular, right = np.linalg.svd(_standardised(features, mean, scale),
                                          full_matrices=False)
    intercept = float(targets.mean())
    return _Decomposed(mean, scale, intercept, left, singular, right, targets - intercept)


def ridge_path(features: np.ndarray, targets: np.ndarray,
               alphas: tuple[float, ...] = ALPHA_GRID) -> list[Ridge]:
    """One fit per alpha (each > 0), all from one SVD of the standardised features; a feature
    constant on the fitting part (or constant but for rounding) gets weight 0."""
    decomposed = _decomposed(features, targets, alphas)
    return [decomposed.fit(alpha) for alpha in alphas]


@dataclass(frozen=True)
class Selection:
    """The read-out of the chosen alpha and the RMSE of every alpha tried (on the validation
    part, or left one out)."""

    ridge: Ridge
    rmse: tuple[float, ...]


def select_ridge(train: tuple[np.ndarray, np.ndarray],
                 val: tuple[np.ndarray, np.ndarray] | None,
                 alphas: tuple[float, ...] = ALPHA_GRID) -> Selection:
    """Fit on `train` (features, targets) for every alpha, keep the one of least RMSE on
    `val` (the smallest alpha among equals), or without a validation part the least
    leave-one-out RMSE on `train` (by sample: optimistic where samples share a reference, far
    better than the training error, which always takes the smallest alpha). The weights stay
    those fitted on `train`."""
    decomposed = _decomposed(*train, alphas)
    fits = [decomposed.fit(alpha) for alpha in alphas]
    if val is None:
        errors = tuple(decomposed.leave_one_out_rmse(alpha) for alpha in alphas)
        return Selection(fits[int(np.argmin(errors))], errors)
    val_features, val_targets = _checked(*val, least=1)
    if val_features.shape[1] != len(decomposed.mean):
        raise ValueError(f"validation features have {val_features.shape[1]} columns, the "
                         f"fitting part {len(decomposed.mean)}")
    errors = tuple(root_mean_square(fit.predict(val_features) - np.asarray(val_targets))
                   for fit in fits)
    return Selection(fits[int(np.argmin(errors))], errors)
