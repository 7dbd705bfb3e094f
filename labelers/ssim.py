"""SSIM (Wang, Bovik, Sheikh and Simoncelli 2004) as the authors' ssim_index.m computes it:
gray (rounded) 0..255, the 11 x 11 Gaussian window of std 1.5 (sum 1) and K = (0.01, 0.03),
L = 255 shared with MS-SSIM, statistics over the 'valid' region ((H - 10) x (W - 10)), the
score the mean of that map. No automatic downsampling (that is the later ssim.m).

`ssim_map` / `ssim_maps` give the dense map for numpy callers: the same statistics filtered to
the input's size with a symmetric border (MATLAB imfilter 'symmetric', the edge pixel repeated),
float32 H x W, exactly 1 wherever the two images agree over the whole window (everywhere for
identical images)."""

from dataclasses import dataclass

import numpy as np
import torch

from labelers.base import Metric
from labelers.errors import InvalidPairError
from labelers.fixed_bits import image_means
from labelers.inputs import gray_rounded, symmetric_pad, to_batch
from labelers.ms_ssim import C1, C2, WINDOW_SIZE, filter_valid, gaussian_taps, moments

Prepared = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # gray, local mean, mean of squares


def _prepare_gray(gray: torch.Tensor, taps: torch.Tensor) -> Prepared:
    return gray, *moments(gray, taps)


def _map_of_gray(prepared: Prepared, gray: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """ssim_map of ssim_index.m for N gray images (N x 1 x H x W) against a prepared reference:
    N x 1 x (H - 10) x (W - 10)."""
    ref_gray, mu1, mean_sq1 = prepared
    mu2, mean_sq2 = moments(gray, taps)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma1_sq, sigma2_sq = mean_sq1 - mu1_sq, mean_sq2 - mu2_sq
    sigma12 = filter_valid(ref_gray * gray, taps) - mu1_mu2
    return ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)
            / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2)))


class SSIM(Metric):
    key = "ssim"
    higher_is_better = True
    best = 1.0
    min_size = WINDOW_SIZE  # ssim_index.m refuses images smaller than the window

    def prepare(self, ref: torch.Tensor) -> Prepared:
        return _prepare_gray(gray_rounded(ref, torch.float64), gaussian_taps(self.device))

    def compare(self, prepared: Prepared, dist: torch.Tensor) -> torch.Tensor:
        ssim = _map_of_gray(prepared, gray_rounded(dist, torch.float64),
                            gaussian_taps(self.device))
        return image_means(ssim)


def ssim_maps(reference: np.ndarray, distorted: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Dense SSIM maps of N versions (uint8 N x H x W x 3, or a list of H x W x 3) against one
    reference (uint8 H x W x 3): float32 N x H x W. Computed in float64 on the CPU."""
    ref, dist = to_batch(reference, "cpu"), to_batch(distorted, "cpu")
    if len(ref) != 1:
        raise InvalidPairError(f"ssim: expected one reference, got {len(ref)}")
    SSIM().check_pair(ref, dist)
    pad = WINDOW_SIZE // 2
    with torch.inference_mode():
        taps = gaussian_taps(torch.device("cpu"))
        prepared = _prepare_gray(symmetric_pad(gray_rounded(ref, torch.float64), pad), taps)
        maps = _map_of_gray(prepared, symmetric_pad(gray_rounded(dist, torch.float64), pad),
                            taps)
    return maps[:, 0].to(torch.float32).numpy()


@dataclass(frozen=True)
class BoxReference:
    """A reference prepared once for the dense SSIM maps of its versions in boxes (a triplet
    reader's): its gray image padded as a whole, as the dense map pads it, and its local
    moments, so each version computes only its own side, on its box."""

    shape: tuple[int, int]  # H, W
    gray: torch.Tensor      # 1 x 1 x (H + 10) x (W + 10)
    mean: torch.Tensor      # 1 x 1 x H x W
    mean_sq: torch.Tensor


def box_reference(reference: np.ndarray) -> BoxReference:
    """The reference (uint8 H x W x 3) prepared for `ssim_map_in_box`."""
    ref = to_batch(reference, "cpu")
    SSIM().check_pair(ref, ref)
    with torch.inference_mode():
        gray = symmetric_pad(gray_rounded(ref, torch.float64), WINDOW_SIZE // 2)
        mean, mean_sq = moments(gray, gaussian_taps(torch.device("cpu")))
    return BoxReference(tuple(ref.shape[2:]), gray, mean, mean_sq)


def ssim_map_in_box(reference: np.ndarray | BoxReference, distorted: np.ndarray,
                    box: tuple[int, int, int, int]) -> np.ndarray:
    """The dense SSIM map of the whole pair cut with `box` (y, x, h, w): the version's side
    computed on the box widened by the window's radius, where the window sees what it sees in
    the whole image (at the image's own edges, the same symmetric padding), the reference's
    read from its whole-image preparation, so the values are the whole map's."""
    prepared = reference if isinstance(reference, BoxReference) else box_reference(reference)
    if np.shape(distorted)[:2] != prepared.shape:
        raise InvalidPairError(f"ssim: reference is {prepared.shape} but the distorted image "
                               f"is {np.shape(distorted)[:2]}")
    y, x, h, w = box
    pad = WINDOW_SIZE // 2
    height, width = prepared.shape
    if min(y, x) < 0 or min(h, w) <= 0 or y + h > height or x + w > width:
        raise ValueError(f"ssim: box (y, x, h, w) {tuple(box)} is not inside the "
                         f"{height} x {width} image")
    top, left = max(0, y - pad), max(0, x - pad)
    bottom, right = min(height, y + h + pad), min(width, x + w + pad)
    dist = to_batch(distorted[top:bottom, left:right], "cpu")
    with torch.inference_mode():
        region = (prepared.gray[..., top:bottom + 2 * pad, left:right + 2 * pad],
                  prepared.mean[..., top:bottom, left:right],
                  prepared.mean_sq[..., top:bottom, left:right])
        dense = _map_of_gray(region, symmetric_pad(gray_rounded(dist, torch.float64), pad),
                             gaussian_taps(torch.device("cpu")))
    return dense[0, 0, y - top:y - top + h, x - left:x - left + w].to(torch.float32).numpy()


def ssim_map(reference: np.ndarray, distorted: np.ndarray) -> np.ndarray:
    """Dense SSIM map of one distorted image against its reference (both uint8 H x W x 3):
    float32 H x W, exactly 1 everywhere when the two are equal."""
    if np.ndim(distorted) != 3:
        raise InvalidPairError(f"ssim_map: expected one H x W x 3 image, got shape "
                               f"{np.shape(distorted)}")
    return ssim_maps(reference, distorted)[0]
