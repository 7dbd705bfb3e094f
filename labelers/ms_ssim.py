"""MS-SSIM (Wang, Simoncelli and Bovik 2003) as msssim.m computes it: gray (rounded) 0..255,
five scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), SSIM statistics from an
11 x 11 Gaussian window of std 1.5 over the 'valid' region, K = (0.01, 0.03), L = 255, the
contrast-structure means of scales 1-4 and the full SSIM of scale 5 combined as a product;
between scales a 2 x 2 mean filter with symmetric border, keeping every second pixel."""

import torch
import torch.nn.functional as F

from distortions.kernels import gaussian_kernel_1d
from labelers.base import Metric
from labelers.fixed_bits import image_means
from labelers.inputs import gray_rounded

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2
WINDOW_SIZE, WINDOW_SIGMA = 11, 1.5


def gaussian_taps(device: torch.device) -> torch.Tensor:
    """The 1-D factor of fspecial('gaussian', 11, 1.5): the window is its outer product."""
    return torch.from_numpy(gaussian_kernel_1d(WINDOW_SIGMA, WINDOW_SIZE).copy()).to(device)


def filter_valid(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """filter2(window, x, 'valid') with the separable window, as sums of shifted slices (much
    faster than a one-channel float64 convolution on the CPU)."""
    return _shifted_sum(_shifted_sum(x, taps, -1), taps, -2)


def _shifted_sum(x: torch.Tensor, taps: torch.Tensor, dim: int) -> torch.Tensor:
    """sum_k taps[k] * (x shifted by k along `dim`), 'valid': the products added in k order
    into one tensor, through one buffer (the bits of summing them, without a new tensor for
    each tap: a quarter of MS-SSIM's time on a CPU)."""
    length = x.shape[dim] - taps.numel() + 1
    total = x.narrow(dim, 0, length) * taps[0]
    product = torch.empty_like(total)
    for k in range(1, taps.numel()):
        total.add_(torch.mul(x.narrow(dim, k, length), taps[k], out=product))
    return total


def _halve(gray: torch.Tensor) -> torch.Tensor:
    """imfilter(I, ones(2)/4, 'symmetric', 'same') then I(1:2:end, 1:2:end)."""
    padded = F.pad(gray, (0, 1, 0, 1), mode="replicate")  # symmetric = replicate for one pixel
    return F.avg_pool2d(padded, 2)


def moments(gray: torch.Tensor, taps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Local mean and mean of squares over the 'valid' region."""
    return filter_valid(gray, taps), filter_valid(gray * gray, taps)


class MSSSIM(Metric):
    key = "ms_ssim"
    higher_is_better = True
    best = 1.0
    min_size = 176  # 11 x 11 'valid' window at the fifth scale (176 / 16 = 11)

    def prepare(self, ref: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        taps = gaussian_taps(self.device)
        gray = gray_rounded(ref, torch.float64)
        scales = []
        for level in range(len(WEIGHTS)):
            if level:
                gray = _halve(gray)
            scales.append((gray, *moments(gray, taps)))
        return scales

    def compare(self, prepared: list, dist: torch.Tensor) -> torch.Tensor:
        taps = gaussian_taps(self.device)
        gray = gray_rounded(dist, torch.float64)
        score = torch.ones(dist.shape[0], dtype=torch.float64, device=self.device)
        for level, (ref_gray, mu1, mean_sq1) in enumerate(prepared):
            if level:
                gray = _halve(gray)
            mu2, mean_sq2 = moments(gray, taps)
            cross = filter_valid(ref_gray * gray, taps)
            sigma1, sigma2, sigma12 = mean_sq1 - mu1**2, mean_sq2 - mu2**2, cross - mu1 * mu2
            cs = (2 * sigma12 + C2) / (sigma1 + sigma2 + C2)
            if level == len(WEIGHTS) - 1:
                cs = cs * (2 * mu1 * mu2 + C1) / (mu1**2 + mu2**2 + C1)
            score = score * image_means(cs) ** WEIGHTS[level]
        return score
