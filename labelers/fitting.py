"""Fitting an ensemble to human opinion scores on a seeded 80% split by reference, reported
on the other 20% (labels.md).

Per metric, a 4-parameter logistic from raw score to opinion score fixes the mapping's shape
(centre and scale; it rises or falls as the metric's own direction says, never against it);
the ensemble uses that curve stretched to span [0, 1] over the training scores (a curve flat
over them weighs 0). The weights are
fitted jointly: opinion ~ intercept + sum_k W_k q_k with W >= 0 (bounded least squares). The
logistic's own amplitude is not a weight: fitted one metric at a time, it absorbs how much the
other metrics explain. Backfitting then refits each metric's logistic to its partial residual
(the opinion less the other metrics' weighted terms), which removes the others' variation from
its fit, and the weights are refitted; a few rounds converge."""

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import curve_fit, lsq_linear

from labelers.correlation import MIN_PAIRS, plcc, srocc
from labelers.ensemble import Ensemble, EnsembleError, Mapping01, logistic
from labelers.registry import metric_class

BACKFIT_ROUNDS = 5
NO_WEIGHT = 1e-9  # weights summing below this share of the opinions' range are the solver's
                  # rounding of zero (a q in [0, 1] so weighed moves Q by nothing)


@dataclass(frozen=True)
class FitReport:
    ensemble: Ensemble
    train_references: int
    test_references: int
    per_metric: dict[str, dict[str, float]]  # key -> {"srocc", "plcc"} on the test split
    ensemble_test: dict[str, float]

    def to_json(self) -> dict:
        return {"ensemble_hash": self.ensemble.hash, "train_references": self.train_references,
                "test_references": self.test_references, "per_metric": self.per_metric,
                "ensemble": self.ensemble_test}


def split_by_reference(references: np.ndarray, seed: int, train_fraction: float = 0.8):
    """Boolean train mask: a seeded 80% of the distinct references, with all their versions."""
    unique = np.unique(references)
    if len(unique) < 2:
        raise EnsembleError("fitting needs at least two reference images to split")
    count = min(len(unique) - 1, max(1, round(train_fraction * len(unique))))
    train_refs = set(np.random.default_rng(seed).permutation(unique)[:count])
    return np.array([ref in train_refs for ref in references])


def fit_sigmoid(scores: np.ndarray, target: np.ndarray, rising: bool) -> Mapping01:
    """The shape (centre, scale) of the least-squares 4-parameter logistic whose amplitude is
    non-negative and which rises with the score where the metric's higher is better (scale >
    0), falls where its lower is (scale < 0): fitted to what other metrics leave unexplained, a
    free curve can face the metric's wrong way and take the weight of its noise."""
    spread = float(np.std(scores))
    sign = 1.0 if rising else -1.0
    least = spread * 1e-6  # |scale| bound away from 0 (a step)
    start = (float(target.min()), max(float(np.ptp(target)), 1e-9), float(np.median(scores)),
             sign * spread / 2)
    scale_bounds = (least, np.inf) if rising else (-np.inf, -least)
    bounds = ((-np.inf, 0.0, -np.inf, scale_bounds[0]), (np.inf, np.inf, np.inf, scale_bounds[1]))
    try:
        (_, _, center, scale), _ = curve_fit(_amplitude_logistic, scores, target, p0=start,
                                             bounds=bounds, max_nfev=20000)
    except RuntimeError as error:
        raise EnsembleError(f"the logistic did not converge on {len(scores)} samples "
                            f"({error}): more references, or fewer metrics") from None
    return Mapping01("sigmoid", center=float(center), scale=float(scale))


def _amplitude_logistic(s: np.ndarray, low: float, amplitude: float, center: float,
                        scale: float) -> np.ndarray:
    return low + amplitude * logistic(s, 1.0, 0.0, center, scale)


def fit_weights(features: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """The free intercept and non-negative weights of target ~ b0 + features @ W."""
    design = np.column_stack([np.ones(len(target)), features])
    lower = np.r_[-np.inf, np.zeros(features.shape[1])]
    solution = lsq_linear(design, target, bounds=(lower, np.inf)).x
    return float(solution[0]), solution[1:]


def backfit(scores: dict[str, np.ndarray], opinion: np.ndarray, rising: dict[str, bool]
            ) -> tuple[dict[str, Mapping01], np.ndarray]:
    """Per-metric sigmoid mappings (each in its metric's direction) and joint weights, refined
    by backfitting."""
    keys = list(scores)
    mappings = {key: fit_sigmoid(scores[key], opinion, rising[key]) for key in keys}
    for _ in range(BACKFIT_ROUNDS):
        features = np.column_stack([mappings[key](scores[key]) for key in keys])
        intercept, weights = fit_weights(features, opinion)
        for index, key in enumerate(keys):
            others = features @ weights - features[:, index] * weights[index]
            if weights[index] > 0:
                mappings[key] = fit_sigmoid(scores[key], opinion - intercept - others,
                                            rising[key])
    spanned = {key: spanning(mappings[key], scores[key]) for key in keys}
    used = [key for key in keys if spanned[key] is not None]
    weights = np.zeros(len(keys))  # a curve flat over the scores says nothing: weight 0
    if used:
        features = np.column_stack([spanned[key](scores[key]) for key in used])
        weights[[keys.index(key) for key in used]] = fit_weights(features, opinion)[1]
    return {key: spanned[key] or mappings[key] for key in keys}, weights


def spanning(mapping: Mapping01, scores: np.ndarray) -> Mapping01 | None:
    """`mapping` stretched so that its q spans [0, 1] over `scores` (None where the curve is
    flat over them): a fitted curve whose middle lies beyond the scores (its tail fitted, its
    amplitude left out) would otherwise give q a sliver of [0, 1], and Q with it."""
    values = logistic(scores, 1.0, 0.0, mapping.center, mapping.scale)
    low, high = float(values.min()), float(values.max())
    if not high - low > 1e-9:
        return None
    return replace(mapping, low=low, high=high)


def check_opinions(opinion: np.ndarray, references: np.ndarray) -> None:
    """A clear error for opinion scores no ensemble can be fitted to (finite, not all equal)
    or references too few to split; the fit-ensemble command calls it before any scoring."""
    opinion = np.asarray(opinion, dtype=np.float64)
    if opinion.size == 0:
        raise EnsembleError("there are no opinion scores to fit to")
    if not np.isfinite(opinion).all():
        raise EnsembleError(f"{int((~np.isfinite(opinion)).sum())} of the {opinion.size} "
                            "opinion scores are not finite numbers")
    if np.ptp(opinion) == 0:
        raise EnsembleError(f"the opinion scores are all equal ({opinion[0]:g}): "
                            "nothing to fit an ensemble to")
    if len(np.unique(references)) < 2:
        raise EnsembleError("fitting needs at least two reference images to split")


def _check_fittable(scores: dict[str, np.ndarray], where: str = "") -> None:
    """A clear error for what no curve can be fitted to: equal or non-finite values (`where`:
    on which part of the data)."""
    for key, values in scores.items():
        if not np.isfinite(values).all() or np.ptp(values) == 0:
            raise EnsembleError(f"the {key} scores must be finite and not all equal{where}: "
                                f"leave {key} out (--metrics)")


def _correlations(predicted: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    """SROCC and PLCC; None where none is defined (fewer than MIN_PAIRS samples, one side
    constant)."""
    if len(predicted) < MIN_PAIRS:
        return {"srocc": None, "plcc": None}
    found = {"srocc": srocc(predicted, target), "plcc": plcc(predicted, target)}
    return {name: None if math.isnan(value) else value for name, value in found.items()}


def _canonical(scores: dict[str, np.ndarray], opinion: np.ndarray, references: np.ndarray
               ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """The samples in one order (by reference, opinion, then scores) and the metrics by name:
    the optimisers stop at points that depend on the order of their data, so a fit (and the
    hash that names it) would otherwise move with the table's row order and --metrics'."""
    keys = sorted(scores)
    arrays = {key: np.asarray(scores[key], dtype=np.float64) for key in keys}
    order = np.lexsort([*(arrays[key] for key in reversed(keys)), opinion, references])
    return ({key: arrays[key][order] for key in keys}, opinion[order], references[order])


def fit_ensemble(scores: dict[str, np.ndarray], opinion: np.ndarray, references: np.ndarray,
                 seed: int = 0, name: str = "fitted",
                 rising: dict[str, bool] | None = None) -> FitReport:
    """Fit mappings and weights on 80% of the references; report on the other 20%.

    opinion: opinion scores where higher is better (MOS, or KADID's `dmos` column).
    rising: whether each metric's higher score is better (where not given: the registry's)."""
    opinion = np.asarray(opinion, dtype=np.float64)
    references = np.asarray(references)
    given = rising or {}
    rising = {key: given[key] if key in given else metric_class(key).higher_is_better
              for key in scores}
    check_opinions(opinion, references)
    _check_fittable(scores)
    scores, opinion, references = _canonical(scores, opinion, references)
    train = split_by_reference(references, seed)
    _check_fittable({key: values[train] for key, values in scores.items()},
                    " on the training references")
    mappings, raw = backfit({key: values[train] for key, values in scores.items()},
                            opinion[train], rising)
    if raw.sum() <= NO_WEIGHT * np.ptp(opinion[train]):
        raise EnsembleError("every fitted weight is zero: the metrics do not predict the scores")
    weights = {key: float(w) for key, w in zip(scores, raw / raw.sum(), strict=True)}
    ensemble = Ensemble(name, weights, mappings,
                        notes={"fitted_on_samples": int(train.sum()), "split_seed": seed})
    quality, _ = ensemble.quality(scores)
    test = ~train
    return FitReport(
        ensemble=ensemble,
        train_references=len(np.unique(references[train])),
        test_references=len(np.unique(references[test])),
        per_metric={key: _correlations(mappings[key](scores[key])[test], opinion[test])
                    for key in scores},
        ensemble_test=_correlations(quality[test], opinion[test]),
    )
