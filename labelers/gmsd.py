"""GMSD, gradient magnitude similarity deviation (Xue et al. 2014), as GMSD.m computes it:
gray (rounded) 0..255, 2 x 2 average then keep every second pixel, Prewitt gradients (zero
padding, 'same'), similarity (2 g1 g2 + T) / (g1^2 + g2^2 + T) with T = 170, and its standard
deviation (N - 1 normalisation). Lower is better."""

import torch
import torch.nn.functional as F

from labelers.base import Metric
from labelers.inputs import box_downsample, gray_rounded

T = 170.0


def _gradient_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude, conv2(..., 'same') with zero padding."""
    prewitt = torch.tensor([[1.0, 0.0, -1.0]] * 3, dtype=gray.dtype, device=gray.device) / 3
    kernels = torch.stack([prewitt, prewitt.T])[:, None]
    gradients = F.conv2d(F.pad(gray, (1, 1, 1, 1)), kernels)
    return torch.sqrt((gradients**2).sum(dim=1, keepdim=True))


def gmsd_of_gray(ref_gradient: torch.Tensor, dist_gray: torch.Tensor) -> torch.Tensor:
    """GMSD of N gray images (N x 1 x H x W, 0..255) against a reference's gradient magnitude."""
    g_dist = _gradient_magnitude(box_downsample(dist_gray, 2))
    similarity = (2 * ref_gradient * g_dist + T) / (ref_gradient**2 + g_dist**2 + T)
    return similarity.flatten(1).std(dim=1, correction=1)


def reference_gradient(ref_gray: torch.Tensor) -> torch.Tensor:
    """The reference half of GMSD: gradient magnitude of the downsampled gray image."""
    return _gradient_magnitude(box_downsample(ref_gray, 2))


class GMSD(Metric):
    key = "gmsd"
    higher_is_better = False
    min_size = 4

    def prepare(self, ref: torch.Tensor) -> torch.Tensor:
        return reference_gradient(gray_rounded(ref, torch.float64))

    def compare(self, prepared: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return gmsd_of_gray(prepared, gray_rounded(dist, torch.float64))
