"""The ten full-reference metrics and their ensemble (shared/spec/labels.md).

    import labelers
    labelers.METRICS                         # ('gmsd', 'fsim', ..., 'lpips')
    labeler = labelers.Labeler(device="cpu", allow_missing=True)
    scores = labeler.score(ref, dists)       # {'gmsd': array([...]), ...}; scores.absent
"""

from labelers.errors import InputTooSmallError, InvalidPairError, LabelerError, UnknownMetricError
from labelers.labeler import Labeler, Scores
from labelers.registry import DEEP_METRICS, METRICS, metric_class
from labelers.weights import WeightsMissingError

__all__ = [
    "DEEP_METRICS",
    "METRICS",
    "InputTooSmallError",
    "InvalidPairError",
    "Labeler",
    "LabelerError",
    "Scores",
    "UnknownMetricError",
    "WeightsMissingError",
    "metric_class",
]
