"""Mean absolute error of RGB in [0, 1], over all pixels and channels. Lower is better."""

import torch

from labelers.base import Metric
from labelers.fixed_bits import image_means
from labelers.inputs import unit_rgb


class MAE(Metric):
    key = "mae"
    higher_is_better = False
    best = 0.0
    min_size = 1

    def prepare(self, ref: torch.Tensor) -> torch.Tensor:
        return unit_rgb(ref, torch.float64)

    def compare(self, prepared: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return image_means((unit_rgb(dist, torch.float64) - prepared).abs())
