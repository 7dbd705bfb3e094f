"""Filter kernels with MATLAB fspecial's definitions, and replicate-border filtering. The
project's one definition of the Gaussian window: the bank's blurs and the metrics (SSIM,
MS-SSIM, CW-SSIM) take theirs from here.

- gaussian: exp(-(x^2 + y^2) / 2s^2) on a centred grid, taps below eps * max zeroed,
  normalised; square windows are separable, so also given as their 1-D factor.
- disk: each tap is the area of the pixel square that lies inside a disk of radius r, the taps
  normalised to sum 1 (fspecial('disk', r): r = 1 gives 1/pi at the centre).
- motion: a line of `length` pixels at `angle` degrees, anti-aliased by the distance from each
  pixel centre to the line (to its end point beyond the half length), normalised
  (fspecial('motion', length, angle); length 1 is the 1 x 1 identity).
"""

import math
from functools import lru_cache

import cv2
import numpy as np

_SQRT_EPS = math.sqrt(np.finfo(np.float64).eps)


def fspecial_gaussian(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """fspecial('gaussian', shape, sigma): rows x cols (either may be even), centred, taps
    below eps * max zeroed, sum 1."""
    rows, cols = shape
    y = np.arange(rows) - (rows - 1) / 2
    x = np.arange(cols) - (cols - 1) / 2
    window = np.exp(-(x[None, :] ** 2 + y[:, None] ** 2) / (2.0 * sigma**2))
    window[window < np.finfo(np.float64).eps * window.max()] = 0.0
    return window / window.sum()


@lru_cache(maxsize=64)
def gaussian_kernel_1d(sigma: float, size: int) -> np.ndarray:
    """Normalised 1-D Gaussian of odd `size`; its outer product is fspecial('gaussian')."""
    half = (size - 1) / 2
    x = np.arange(size) - half
    kernel = np.exp(-(x**2) / (2.0 * sigma**2))
    # fspecial zeroes taps below eps * max; in 2-D that is the product of two 1-D taps.
    kernel[kernel * kernel.max() < np.finfo(np.float64).eps * kernel.max() ** 2] = 0.0
    kernel /= kernel.sum()
    kernel.setflags(write=False)
    return kernel


def gaussian_size(sigma: float) -> int:
    """The bank's kernel size for a Gaussian of std sigma: 2 * ceil(2 sigma) + 1."""
    return 2 * math.ceil(2 * sigma) + 1


def _quadrant_area(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Area of the disk inside [0, x] x [0, y], for x, y >= 0."""
    def integral(u: np.ndarray) -> np.ndarray:  # antiderivative of sqrt(r^2 - u^2)
        root = np.sqrt(np.maximum(radius**2 - u**2, 0.0))
        return 0.5 * (u * root + radius**2 * np.arcsin(u / radius))

    x = np.minimum(x, radius)
    crossing = np.sqrt(np.maximum(radius**2 - y**2, 0.0))  # where the arc meets height y
    flat = np.minimum(x, crossing)
    return y * flat + integral(x) - integral(flat)


def _signed_area(x: np.ndarray, y: np.ndarray, radius: float) -> np.ndarray:
    """Area of the disk inside the rectangle between the origin and (x, y), signed."""
    return np.sign(x) * np.sign(y) * _quadrant_area(np.abs(x), np.abs(y), radius)


@lru_cache(maxsize=32)
def disk_kernel(radius: float) -> np.ndarray:
    """fspecial('disk', radius): exact pixel coverage of the disk, normalised."""
    extent = math.ceil(radius - 0.5)
    grid = np.arange(-extent, extent + 1, dtype=np.float64)
    x0, y0 = np.meshgrid(grid - 0.5, grid - 0.5)
    x1, y1 = x0 + 1.0, y0 + 1.0
    area = (
        _signed_area(x1, y1, radius) - _signed_area(x0, y1, radius)
        - _signed_area(x1, y0, radius) + _signed_area(x0, y0, radius)
    )
    kernel = area / area.sum()
    kernel.setflags(write=False)
    return kernel


@lru_cache(maxsize=512)
def motion_kernel(length: int, angle: float) -> np.ndarray:
    """fspecial('motion', length, angle): a normalised, anti-aliased line kernel."""
    length = max(1, length)
    half = (length - 1) / 2
    phi = (angle % 180) / 180 * math.pi
    cos_phi, sin_phi = math.cos(phi), math.sin(phi)
    x_sign = 1 if cos_phi >= 0 else -1
    # Extent of one quadrant of the kernel, as fspecial computes it (with its tolerance).
    extent_x = math.trunc(half * cos_phi + x_sign - length * _SQRT_EPS)
    extent_y = math.trunc(half * sin_phi + 1 - length * _SQRT_EPS)
    x, y = np.meshgrid(np.arange(0, abs(extent_x) + 1) * x_sign, np.arange(0, extent_y + 1))
    perpendicular = y * cos_phi - x * sin_phi
    beyond_end = (np.hypot(x, y) >= half) & (np.abs(perpendicular) <= 1)
    along_excess = half - np.abs((x + perpendicular * sin_phi) / cos_phi)
    distance = np.where(beyond_end, np.hypot(perpendicular, along_excess), np.abs(perpendicular))
    weight = np.maximum(1 + _SQRT_EPS - distance, 0.0)
    # Place the quadrant and its point reflection; rows grow downwards, so +y is up.
    rows, cols = extent_y, abs(extent_x)
    kernel = np.zeros((2 * rows + 1, 2 * cols + 1))
    kernel[rows - y, cols + x] = weight
    kernel[rows + y, cols - x] = weight
    kernel /= kernel.sum() + _SQRT_EPS * length * length
    kernel.setflags(write=False)
    return kernel


def filter_replicate(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate a float32 image with a 2-D kernel, replicating the border (MATLAB imfilter)."""
    return cv2.filter2D(img, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REPLICATE)


def gaussian_blur_replicate(img: np.ndarray, sigma: float, size: int | None = None) -> np.ndarray:
    """Separable Gaussian filtering of a float32 image with a replicated border."""
    kernel = gaussian_kernel_1d(sigma, size or gaussian_size(sigma)).astype(np.float32)
    return cv2.sepFilter2D(img, -1, kernel, kernel, borderType=cv2.BORDER_REPLICATE)
