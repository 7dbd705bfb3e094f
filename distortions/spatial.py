"""Types 22-26: jitter, non-eccentricity patches, pixelation, Otsu quantization, colour blocks;
34-37: resizing down and back up (Re-IQA).

Random positions are recorded as fractions in [0, 1) of the room available, so a recipe does not
depend on the image size it was sampled for.
"""

import math

import cv2
import numpy as np
from PIL import Image

from distortions.colorspace import to_float, to_uint8
from distortions.otsu import otsu_threshold_bins

JITTER_ITERATIONS = 5
PATCH, PATCH_MARGIN, PATCH_REACH = 16, 16, 8
BLOCK = 32
RESIZE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                  "lanczos": Image.Resampling.LANCZOS, "nearest": Image.Resampling.NEAREST}


def apply_jitter(img: np.ndarray, params: dict) -> np.ndarray:
    """Five rounds of per-pixel N(0, 1) * amount offsets in x and y, bicubic, replicate border."""
    x = to_float(img)
    height, width = img.shape[:2]
    grid_y, grid_x = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(params["noise_seed"])
    amount = np.float32(params["amount"])
    for _ in range(JITTER_ITERATIONS):
        dx = rng.standard_normal((height, width), dtype=np.float32) * amount
        dy = rng.standard_normal((height, width), dtype=np.float32) * amount
        x = cv2.remap(x, grid_x + dx, grid_y + dy, cv2.INTER_CUBIC,
                      borderMode=cv2.BORDER_REPLICATE)
    return to_uint8(x)


def _place(fraction: float, room: int) -> int:
    """Integer position 0..room-1 from a fraction in [0, 1)."""
    return min(int(fraction * room), room - 1)


def apply_non_eccentricity(img: np.ndarray, params: dict) -> np.ndarray:
    """Copy 16 x 16 patches, one after another, to offsets of up to 8 px from where they were."""
    out = img.copy()
    height, width = img.shape[:2]
    for fy, fx, dy, dx in params["patches"]:
        top = PATCH_MARGIN + _place(fy, height - 2 * PATCH_MARGIN - PATCH + 1)
        left = PATCH_MARGIN + _place(fx, width - 2 * PATCH_MARGIN - PATCH + 1)
        patch = out[top:top + PATCH, left:left + PATCH].copy()
        out[top + dy:top + dy + PATCH, left + dx:left + dx + PATCH] = patch
    return out


def matlab_nearest_indices(size_in: int, size_out: int, scale: float) -> np.ndarray:
    """0-based source index of each output pixel in MATLAB imresize(..., 'nearest') along one
    axis: output x (1-based) maps to u = x/scale + (1 - 1/scale)/2, the box kernel picks the j
    with u - j in [-1/2, 1/2), j = floor(u - 1/2) + 1, and indices past the end mirror
    (MATLAB's [1:n n:-1:1]; shrinking by z < 1/2 can overshoot by 2, to n - 1)."""
    u = np.arange(1, size_out + 1) / scale + 0.5 * (1 - 1 / scale)
    index = np.floor(u - 0.5).astype(np.int64) % (2 * size_in)
    return np.where(index < size_in, index, 2 * size_in - 1 - index)


def _pixelate_indices(size: int, zoom: float) -> np.ndarray:
    """Source index per output pixel along one axis: down by the scale zoom to ceil(zoom size)
    pixels, then back up to `size` by the scale MATLAB derives from the sizes."""
    small = max(1, math.ceil(zoom * size))
    down = matlab_nearest_indices(size, small, zoom)
    up = matlab_nearest_indices(small, size, size / small)
    return down[up]


def apply_pixelate(img: np.ndarray, params: dict) -> np.ndarray:
    """KADID's impixelate: imresize(I, z, 'nearest') with z = 0.95 - s^0.6, then imresize
    back to [h w] with 'nearest'."""
    zoom = 0.95 - params["strength"] ** 0.6
    rows = _pixelate_indices(img.shape[0], zoom)
    cols = _pixelate_indices(img.shape[1], zoom)
    return img[rows[:, None], cols[None, :]]


def _histogram_bins(values: np.ndarray, low: int, high: int) -> np.ndarray:
    """Each uint8 value's bin among 256 spanning the image's [low, high], as MATLAB multithresh
    bins."""
    return np.rint((values.astype(np.float32) - low) * np.float32(255 / (high - low))
                   ).astype(np.int64)


def apply_quantization(img: np.ndarray, params: dict) -> np.ndarray:
    """imquantize(I, t, [0 t(2:end) 1]) with t the multilevel Otsu thresholds (multithresh),
    on KADID's min-max stretched image (mapmm), stretched back.

    Values at or below t_1 become the image's minimum (0 once stretched), those in
    (t_{k-1}, t_k] become t_k, those above t_N its maximum (1 once stretched). The thresholds
    are found on the histogram's bins, but each value is compared with them as imquantize
    compares it, not its bin: (v - min) / (max - min) <= b / 255, in integers (exact).

    Each of the 256 uint8 values is binned and quantized once, the pixels then looked up.
    """
    low, high = int(img.min()), int(img.max())
    if low == high:
        return img.copy()
    present = np.arange(low, high + 1, dtype=np.uint8)
    value_counts = np.bincount(img.ravel(), minlength=256)[low:high + 1]
    threshold_bins = otsu_threshold_bins(
        np.bincount(_histogram_bins(present, low, high), weights=value_counts, minlength=256),
        params["thresholds"])
    thresholds = (low + threshold_bins / 255 * (high - low)) / 255
    values = np.concatenate([[low / 255], thresholds[1:], [high / 255]]).astype(np.float32)
    classes = np.searchsorted(np.asarray(threshold_bins, np.int64) * (high - low),
                              (np.arange(256, dtype=np.int64) - low) * 255, side="left")
    return to_uint8(values[classes])[img]


def apply_color_block(img: np.ndarray, params: dict) -> np.ndarray:
    """Paste 32 x 32 blocks of one uniform colour each."""
    out = img.copy()
    height, width = img.shape[:2]
    for fy, fx, red, green, blue in params["blocks"]:
        top = _place(fy, height - BLOCK + 1)
        left = _place(fx, width - BLOCK + 1)
        out[top:top + BLOCK, left:left + BLOCK] = (red, green, blue)
    return out


def apply_resize(img: np.ndarray, params: dict) -> np.ndarray:
    """Re-IQA's imresizedist: Pillow resize to (int(w / f), int(h / f)) and back to (w, h), both
    with the type's filter (Pillow antialiases downscaling: the kernel widens by the factor)."""
    height, width = img.shape[:2]
    factor, resample = params["factor"], RESIZE_FILTERS[params["filter"]]
    small = Image.fromarray(img).resize((width // factor, height // factor), resample,
                                        reducing_gap=None)
    return np.asarray(small.resize((width, height), resample, reducing_gap=None))
