"""GMSD, gradient magnitude similarity deviation (Xue et al. 2014), as GMSD.m computes it:
gray (rounded) 0..255, 2 x 2 average then keep every second pixel, Prewitt gradients (zero
padding, 'same'), similarity (2 g1 g2 + T) / (g1^2 + g2^2 + T) with T = 170, and its standard
deviation (N - 1 normalisation). Lower is better."""

import torch
import torch.nn.functional as F

from labelers.base import Metric
from labelers.fixed_bits import ieee_sqrt, image_stds
from labelers.inputs import box_downsample, gray_rounded

T = 170.0


def _gradient_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """Prewitt gradient magnitude, conv2(..., 'same') with zero padding, as sums of shifted
    slices and an IEEE square root: every pixel's value is the same sequence of correctly
    rounded operations whatever the batch, the threads or MKL's code path (a convolution
    through BLAS gave a reference and an identical version gradients one rounding apart, so
    GMSD 6e-17 instead of 0, in some processes; MKL's sqrt differs by path)."""
    padded = F.pad(gray, (1, 1, 1, 1))
    across = padded[..., :, :-2] - padded[..., :, 2:]  # left minus right neighbour
    down = padded[..., :-2, :] - padded[..., 2:, :]    # upper minus lower neighbour
    horizontal = (across[..., :-2, :] + across[..., 1:-1, :] + across[..., 2:, :]) / 3
    vertical = (down[..., :, :-2] + down[..., :, 1:-1] + down[..., :, 2:]) / 3
    return ieee_sqrt(horizontal**2 + vertical**2)


def gmsd_of_gray(ref_gradient: torch.Tensor, dist_gray: torch.Tensor) -> torch.Tensor:
    """GMSD of N gray images (N x 1 x H x W, 0..255) against a reference's gradient magnitude."""
    g_dist = _gradient_magnitude(box_downsample(dist_gray, 2))
    similarity = (2 * ref_gradient * g_dist + T) / (ref_gradient**2 + g_dist**2 + T)
    return image_stds(similarity)


def reference_gradient(ref_gray: torch.Tensor) -> torch.Tensor:
    """The reference half of GMSD: gradient magnitude of the downsampled gray image."""
    return _gradient_magnitude(box_downsample(ref_gray, 2))


class GMSD(Metric):
    key = "gmsd"
    higher_is_better = False
    best = 0.0
    min_size = 4

    def prepare(self, ref: torch.Tensor) -> torch.Tensor:
        return reference_gradient(gray_rounded(ref, torch.float64))

    def compare(self, prepared: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
        return gmsd_of_gray(prepared, gray_rounded(dist, torch.float64))
