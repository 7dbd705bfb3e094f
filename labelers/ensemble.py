"""The ensemble: Q = sum_i W_i q_i / sum_i W_i over the metrics present, with q_i = m_i(s_i) in
[0, 1] (higher is better) and W the weights of a versioned ensemble file. The file's hash is
recorded with every label so labels can be re-derived without re-scoring (labels.md)."""

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distortions.canonical import canonical_digest
from labelers.errors import LabelerError
from labelers.registry import AVAILABLE_METRICS, metric_class

DEFAULT_ENSEMBLE_FILE = Path(__file__).with_name("default_ensemble.json")
PMOS_ENSEMBLE_FILE = Path(__file__).with_name("pmos_ensemble.json")
SHIPPED_ENSEMBLES = {"default": DEFAULT_ENSEMBLE_FILE, "pmos": PMOS_ENSEMBLE_FILE}


class EnsembleError(LabelerError):
    """An ensemble file is malformed, or scores do not fit it."""


@dataclass(frozen=True)
class Mapping01:
    """Raw score -> quality in [0, 1]. 'linear': best maps to 1, worst to 0, clipped.
    'sigmoid': f(s) = 1 / (1 + exp(-(s - center) / scale)), a fitted mapping (scale < 0 for
    metrics where lower is better), stretched so that f = low gives 0 and f = high gives 1
    (clipped; fit-ensemble sets them to f's range over the scores it was fitted on, so that q
    spans [0, 1] there; 0 and 1 by default)."""

    kind: str
    best: float | None = None
    worst: float | None = None
    center: float | None = None
    scale: float | None = None
    low: float = 0.0
    high: float = 1.0

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.kind == "linear":
            q = (s - self.worst) / (self.best - self.worst)
        elif self.kind == "sigmoid":
            q = (logistic(s, 1.0, 0.0, self.center, self.scale) - self.low) / (
                self.high - self.low)
        else:
            raise EnsembleError(f"unknown mapping kind {self.kind!r}")
        return np.clip(q, 0.0, 1.0)

    @property
    def rising(self) -> bool:
        """Whether q rises with the raw score (for metrics where higher is better)."""
        return self.best > self.worst if self.kind == "linear" else self.scale > 0

    def to_json(self) -> dict:
        if self.kind == "linear":
            return {"kind": "linear", "best": float(self.best), "worst": float(self.worst)}
        stretch = {} if (self.low, self.high) == (0.0, 1.0) else {
            "low": float(self.low), "high": float(self.high)}  # files without them: unchanged
        return {"kind": "sigmoid", "center": float(self.center), "scale": float(self.scale),
                **stretch}

    @classmethod
    def from_json(cls, data: dict) -> "Mapping01":
        try:
            if data["kind"] == "linear":
                best, worst = _number(data["best"], "best"), _number(data["worst"], "worst")
                if best == worst or not math.isfinite(best - worst):
                    raise EnsembleError(f"a linear mapping needs best != worst, their "
                                        f"difference a finite number; got {best}, {worst}")
                return cls("linear", best, worst)
            if data["kind"] == "sigmoid":
                scale = _number(data["scale"], "scale")
                if scale == 0:
                    raise EnsembleError("a sigmoid mapping needs a non-zero scale")
                low = _number(data.get("low", 0.0), "low")
                high = _number(data.get("high", 1.0), "high")
                if not 0 <= low < high <= 1:
                    raise EnsembleError(f"a sigmoid mapping's low and high are in [0, 1], low "
                                        f"below high; got {low} and {high}")
                return cls("sigmoid", center=_number(data["center"], "center"), scale=scale,
                           low=low, high=high)
            raise EnsembleError(f"unknown mapping kind {data['kind']!r}")
        except (KeyError, TypeError) as error:
            raise EnsembleError(f"malformed mapping {data!r}: {error}") from None


def _number(value, what: str) -> float:
    """A finite JSON number as a float; an EnsembleError naming `what` for anything else (a
    string, true, null, NaN, Infinity, an integer too large for a float)."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError
        return float(value)
    except (ValueError, OverflowError):
        raise EnsembleError(f"{what} must be a finite number, got {value!r:.40}") from None


def logistic(s: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic of IQA model fitting: b2 + (b1 - b2) / (1 + exp(-(s - b3)/b4));
    a scale too small to divide by is taken as 1e-12 of its own sign."""
    b4 = b4 if abs(b4) > 1e-12 else math.copysign(1e-12, b4)
    z = np.clip(-(np.asarray(s, dtype=np.float64) - b3) / b4, -500, 500)
    return b2 + (b1 - b2) / (1 + np.exp(z))


@dataclass(frozen=True)
class Ensemble:
    """Weights and per-metric mappings; `hash` identifies the definition."""

    name: str
    weights: dict[str, float]
    mappings: dict[str, Mapping01]
    notes: dict = field(default_factory=dict)

    def __post_init__(self):
        if set(self.weights) != set(self.mappings):
            raise EnsembleError("weights and mappings must name the same metrics")
        # held in the metrics' sorted order, whatever a file's: Q adds its terms in that order,
        # so one definition (one hash) gives the same bits of Q however it was written
        object.__setattr__(self, "weights", dict(sorted(self.weights.items())))
        object.__setattr__(self, "mappings", dict(sorted(self.mappings.items())))
        if any(w < 0 or not math.isfinite(w) for w in self.weights.values()):
            raise EnsembleError("weights must be finite and non-negative")
        tiny = {key: w for key, w in self.weights.items() if 0 < w < sys.float_info.min}
        if tiny:  # subnormal: w x q keeps a few digits of q, or none
            raise EnsembleError(f"weights {tiny} are below {sys.float_info.min:.4g}, where a "
                                "weight times a score loses its digits: scale them up, only "
                                "their ratios matter")
        total = sum(self.weights.values())
        if total <= 0:
            raise EnsembleError("an ensemble needs a metric of positive weight")
        if not math.isfinite(total):
            raise EnsembleError("the weights' sum overflows (each finite, their sum not): "
                                "scale them down, only their ratios matter")

    def definition(self) -> dict:
        """What the hash covers: name, weights and mappings (notes are commentary)."""
        return {"name": self.name,
                "weights": {key: float(w) for key, w in sorted(self.weights.items())},
                "mappings": {k: self.mappings[k].to_json() for k in sorted(self.mappings)}}

    @property
    def hash(self) -> str:
        return canonical_digest(self.definition())[:16]

    def quality(self, scores: Mapping[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
        """Q for each sample from raw scores, and the metrics used (weights renormalised over
        the metrics of this ensemble present in `scores`; one of weight 0 is none of them)."""
        used = tuple(key for key in self.weights if key in scores and self.weights[key] > 0)
        total = sum(self.weights[key] for key in used)
        if not used or total <= 0:
            raise EnsembleError(f"no metric of positive weight among the ensemble's "
                                f"{list(self.weights)} is in the scores ({list(scores)})")
        shapes = {key: np.shape(scores[key]) for key in used}
        if len(set(shapes.values())) > 1:
            raise EnsembleError(f"the metrics' scores are not one per sample alike (shapes "
                                f"{shapes}): no Q from them")
        numbers = {key: _as_numbers(key, scores[key]) for key in used}
        q = sum(self.weights[key] * self.mappings[key](numbers[key]) for key in used)
        return np.asarray(q / total, dtype=np.float64), used

    def metrics_every_sample_has(self, finite: Mapping[str, int], total: int
                                 ) -> tuple[str, ...]:
        """The metrics of this ensemble that each of `total` samples has a score of, given how
        many have a finite one (`finite`): those Q can be computed over for all of them. A
        metric only some have is an EnsembleError (Q would mean two things in one dataset), as
        is a dataset with none of the ensemble's metrics."""
        if total == 0:
            raise EnsembleError("no distorted sample to make Q of")
        weighed = [key for key, weight in self.weights.items() if weight > 0]
        partial = {key: total - finite.get(key, 0) for key in weighed
                   if 0 < finite.get(key, 0) < total}
        if partial:
            raise EnsembleError("some samples have no score of " + ", ".join(
                f"{key} ({missing} of {total})" for key, missing in partial.items())
                + ": their Q would not be comparable; use an ensemble without them")
        used = tuple(key for key in weighed if finite.get(key, 0) == total)
        unweighed = [key for key in self.weights
                     if key not in weighed and finite.get(key, 0) == total]
        if not used and unweighed:
            raise EnsembleError(f"the samples have scores of {', '.join(unweighed)} only, which "
                                "the ensemble weighs 0: Q would be undefined")
        if not used:
            raise EnsembleError(f"no sample has a score of any of the ensemble's metrics "
                                f"{list(self.weights)} (generated label-free, or with other "
                                "metrics)")
        return used

    def to_json(self) -> dict:
        return {**self.definition(), "hash": self.hash, "notes": self.notes}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, data: dict) -> "Ensemble":
        try:
            if not isinstance(data["name"], str):
                raise EnsembleError(f"name must be a string, got {data['name']!r}")
            ensemble = cls(
                name=data["name"],
                weights={k: _number(v, f"the weight of {k}") for k, v in data["weights"].items()},
                mappings={k: Mapping01.from_json(v) for k, v in data["mappings"].items()},
                notes=data.get("notes", {}),
            )
        except KeyError as error:
            raise EnsembleError(f"not an ensemble file: it has no field {error}") from None
        except (TypeError, AttributeError) as error:
            raise EnsembleError(f"not an ensemble file: {error}") from None
        unknown = sorted(set(ensemble.weights) - set(AVAILABLE_METRICS))
        if unknown:
            raise EnsembleError(f"unknown metric(s) {unknown}: the metrics are "
                                f"{', '.join(AVAILABLE_METRICS)}")
        backwards = sorted(key for key, mapping in ensemble.mappings.items()
                           if mapping.rising != metric_class(key).higher_is_better)
        if backwards:
            raise EnsembleError(f"the mapping of {', '.join(backwards)} gives a better score a "
                                "lower q (linear: best and worst swapped; sigmoid: the scale's "
                                "sign): q must rise with quality")
        if "hash" in data and data["hash"] != ensemble.hash:
            raise EnsembleError(f"ensemble hash {data['hash']} does not match its content "
                                f"({ensemble.hash}): the file was edited without rehashing")
        return ensemble


def resolve(name_or_path: Path | str | None = None) -> Path:
    """The file of an ensemble: an existing file as given, else a shipped ensemble's by name
    (SHIPPED_ENSEMBLES: "default", "pmos"); None is the default."""
    if name_or_path is None:
        return DEFAULT_ENSEMBLE_FILE
    if not str(name_or_path).strip():  # Path("") is the working folder
        raise EnsembleError(f"the ensemble is named {str(name_or_path)!r}: give a file, or a "
                            f"shipped ensemble's name ({', '.join(SHIPPED_ENSEMBLES)})")
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in SHIPPED_ENSEMBLES:
        return SHIPPED_ENSEMBLES[name_or_path]
    what = "a folder, not a file" if Path(name_or_path).is_dir() else "no such file"
    raise EnsembleError(f"cannot read ensemble file {str(name_or_path)!r}: {what}, and no "
                        f"shipped ensemble has that name (names: {', '.join(SHIPPED_ENSEMBLES)})")


def _as_numbers(key: str, scores) -> np.ndarray:
    """A metric's scores as float64, or an EnsembleError naming it: scores that are not
    numbers, or not finite ones, make no Q."""
    try:
        numbers = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise EnsembleError(f"the {key} scores are not numbers ({scores!r:.80}): no Q from "
                            "them") from None
    bad = int(np.count_nonzero(~np.isfinite(numbers)))
    if bad:
        raise EnsembleError(f"{bad} {key} score(s) are not finite numbers: no Q for them")
    return numbers


def load(name_or_path: Path | str | None = None) -> Ensemble:
    """An ensemble file, a shipped ensemble by name ("default", "pmos"), or the default."""
    file = resolve(name_or_path)
    try:
        data = file.read_bytes()
    except OSError as error:
        raise EnsembleError(f"cannot read ensemble file {file}: {error}") from error
    return parsed(data, str(file))


def parsed(data: bytes, name: str) -> Ensemble:
    """The ensemble an ensemble file's bytes hold (`name`: the file, for the errors), wherever
    the file was read (a dataset's ensemble.json on an object store too)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EnsembleError(f"cannot read ensemble file {name}: not JSON text ({error})") from error
    if not isinstance(document, dict):
        raise EnsembleError(f"{name} is not an ensemble file: a JSON "
                            f"{type(document).__name__}, not an object")
    try:
        return Ensemble.from_json(document)
    except EnsembleError as error:
        raise EnsembleError(f"{name}: {error}") from None
