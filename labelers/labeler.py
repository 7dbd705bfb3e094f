"""The Labeler: every metric loaded once, each reference prepared once and scored against all
its distorted versions in batches."""

from collections.abc import Sequence

import numpy as np
import torch

from labelers import weights
from labelers.inputs import to_batch
from labelers.registry import METRICS, metric_class


class Scores(dict):
    """metric key -> N raw scores (float64 numpy); `.absent` names the metrics not computed."""

    def __init__(self, values: dict[str, np.ndarray], absent: tuple[str, ...]):
        super().__init__(values)
        self.absent = absent


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Labeler:
    """Scores distorted versions against their reference with the chosen metrics.

    metrics: keys from labelers.METRICS (default all ten, in that order).
    device: "cuda", "cpu", ... (default CUDA when present).
    allow_missing: when LPIPS/DISTS weights are absent, run the other metrics and report the
    absent ones in `Scores.absent` instead of raising WeightsMissingError.
    batch_size: distorted images scored per forward pass.
    """

    def __init__(self, metrics: Sequence[str] | None = None,
                 device: torch.device | str | None = None,
                 allow_missing: bool = False, batch_size: int = 16):
        keys = tuple(metrics) if metrics is not None else METRICS
        classes = {key: metric_class(key) for key in keys}
        absent = tuple(weights.missing(keys))
        if absent and not allow_missing:
            raise weights.WeightsMissingError(weights.missing_message(list(absent)))
        self.device = torch.device(device) if device is not None else default_device()
        self.absent = absent
        self.batch_size = batch_size
        self.metrics = {key: cls(self.device) for key, cls in classes.items() if key not in absent}

    @property
    def keys(self) -> tuple[str, ...]:
        """The metrics this labeler computes."""
        return tuple(self.metrics)

    def score(self, ref: np.ndarray, dists: np.ndarray | Sequence[np.ndarray]) -> Scores:
        """Raw scores of each distorted image (N x H x W x 3 uint8, or a list) against `ref`."""
        ref_batch = to_batch(ref, self.device)
        dist_batch = to_batch(dists, "cpu")
        results = {}
        for key, metric in self.metrics.items():
            metric.check_pair(ref_batch, dist_batch)
            with torch.inference_mode():
                prepared = metric.prepare(ref_batch)
                chunks = [metric.compare(prepared, chunk.to(self.device))
                          for chunk in dist_batch.split(self.batch_size)]
            results[key] = torch.cat(chunks).cpu().numpy().astype(np.float64)
        return Scores(results, self.absent)
