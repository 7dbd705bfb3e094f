"""The ten full-reference metrics, SSIM, MDSI and VSI beside them, and their ensembles
(shared/spec/labels.md; the pseudo-MOS ensemble: docs/labels-spec-notes.md).

    import labelers
    labelers.METRICS                         # ('gmsd', 'fsim', ..., 'lpips'): the default ten
    labelers.AVAILABLE_METRICS               # METRICS + ('ssim', 'mdsi', 'vsi'): the choice
    labeler = labelers.Labeler(device="cpu", allow_missing=True)
    scores = labeler.score(ref, dists)       # {'gmsd': array([...]), ...}; scores.absent
"""

from labelers.errors import (
    DeviceMemoryError,
    InputTooSmallError,
    InvalidPairError,
    LabelerError,
    UnknownMetricError,
)
from labelers.labeler import Labeler, Scores
from labelers.registry import AVAILABLE_METRICS, DEEP_METRICS, METRICS, metric_class
from labelers.weights import WeightsMissingError

__all__ = [
    "AVAILABLE_METRICS",
    "DEEP_METRICS",
    "METRICS",
    "DeviceMemoryError",
    "InputTooSmallError",
    "InvalidPairError",
    "Labeler",
    "LabelerError",
    "Scores",
    "UnknownMetricError",
    "WeightsMissingError",
    "metric_class",
]
