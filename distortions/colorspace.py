"""Colour conversions with MATLAB's conventions, on float32 images in [0, 1].

They compute in float64 with elementwise arithmetic (no BLAS matrix products, no float32
powers): float32 `pow`/`cbrt` and BLAS kernels round differently on CPUs with and without
AVX-512, which changed output pixels from one machine to the next. In float64 those last-bit
differences stay far below the uint8 rounding, so every machine writes the same bytes.

- gray: rgb2gray weights (0.298936, 0.587043, 0.114021);
- YCbCr: BT.601 studio swing as MATLAB's rgb2ycbcr (Y in [16, 235]/255, Cb/Cr in [16, 240]/255);
- Lab: sRGB transfer curve, D65 white (0.95047, 1, 1.08883), L* in [0, 100], as MATLAB
  rgb2lab and skimage (OpenCV's float Lab is off by up to 0.3 and does not invert exactly).

image_ycbcr and image_lab keep the conversion of the image converted last on a thread: a
reference's versions of several types start from the same one.
"""

import functools
import hashlib
import threading
from collections.abc import Callable

import numpy as np

GRAY_WEIGHTS = np.array([0.298936021293776, 0.587043074451121, 0.114020904255103])

_YCBCR_MATRIX = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
) / 255.0
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0]) / 255.0
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_MATRIX)

_XYZ_FROM_RGB = np.array(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_FROM_RGB_WHITE = _XYZ_FROM_RGB / _D65_WHITE[:, None]
_RGB_WHITE_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB_WHITE)
_LAB_DELTA = 6 / 29
_LAB_EPSILON = _LAB_DELTA**3


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1]."""
    return img.astype(np.float32) * np.float32(1.0 / 255.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8: clip, then round half to even (as numpy's rint). A ValueError
    where a pixel is NaN (a parameter the distortion cannot apply: NaN, a zero width), which
    the cast would make black."""
    if np.isnan(img).any():
        raise ValueError("the distortion gave NaN pixels: a parameter it cannot apply")
    return np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _weighted(planes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_c planes[..., c] * weights[c] in float64, elementwise (the same bits on every CPU)."""
    x = planes.astype(np.float64, copy=False)
    return x[..., 0] * weights[0] + x[..., 1] * weights[1] + x[..., 2] * weights[2]


def _mix(planes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Each pixel's 3-vector times `matrix` (float64): planes @ matrix.T without BLAS."""
    return np.stack([_weighted(planes, row) for row in matrix], axis=-1)


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray on a float image (no rounding), in the image's dtype."""
    return _weighted(img, GRAY_WEIGHTS).astype(img.dtype)


def rgb_to_ycbcr(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2ycbcr (studio swing) on a float RGB image in [0, 1]."""
    return (_mix(img, _YCBCR_MATRIX) + _YCBCR_OFFSET).astype(img.dtype)


def ycbcr_to_rgb(img: np.ndarray) -> np.ndarray:
    """MATLAB ycbcr2rgb (studio swing), the exact inverse of rgb_to_ycbcr; not clipped."""
    return _mix(img.astype(np.float64) - _YCBCR_OFFSET, _RGB_FROM_YCBCR).astype(img.dtype)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve decoded (IEC 61966-2-1): sRGB values in [0, 1] to linear light."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light to sRGB values (negative light is clipped to 0; not clipped above)."""
    x = np.maximum(x, 0)
    linear = x <= 0.0031308
    return np.where(linear, x * 12.92, 1.055 * _kept_base(x, linear) ** (1 / 2.4) - 0.055)


def _kept_base(x: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """x with 1 where `dropped`: the base of a power whose result is kept only elsewhere.
    Zero and negative bases take pow's slow path (up to 13 times the time of the others);
    the kept elements see the same call, so the same bits."""
    return np.where(dropped, 1.0, x)


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > _LAB_EPSILON, np.cbrt(t), t / (3 * _LAB_DELTA**2) + 4 / 29)


def _lab_f_inverse(f: np.ndarray) -> np.ndarray:
    cubed = f > _LAB_DELTA
    return np.where(cubed, _kept_base(f, np.logical_not(cubed)) ** 3,
                    3 * _LAB_DELTA**2 * (f - 4 / 29))


_LINEAR_OF_LEVEL = srgb_to_linear(to_float(np.arange(256, dtype=np.uint8)).astype(np.float64))


def rgb_to_lab(img: np.ndarray) -> np.ndarray:
    """sRGB -> CIE Lab (D65), float32: L* in [0, 100]. A uint8 image is read as to_float(img)
    and its transfer curve looked up per level (the same float64 values, without a power per
    pixel); a float image is in [0, 1]."""
    if img.dtype == np.uint8:
        linear = _LINEAR_OF_LEVEL[img]
    else:
        linear = srgb_to_linear(img.astype(np.float64))
    f = _lab_f(_mix(linear, _XYZ_FROM_RGB_WHITE))
    lab = np.empty(f.shape, dtype=np.float32)
    lab[..., 0] = 116 * f[..., 1] - 16
    lab[..., 1] = 500 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200 * (f[..., 1] - f[..., 2])
    return lab


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) -> sRGB float32, not clipped above (negative light is clipped to 0)."""
    lab = lab.astype(np.float64)
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], axis=-1)
    linear = _mix(_lab_f_inverse(f), _RGB_WHITE_FROM_XYZ)
    return linear_to_srgb(linear).astype(np.float32)


def kept_per_image(convert: Callable[[np.ndarray], np.ndarray]
                   ) -> Callable[[np.ndarray], np.ndarray]:
    """`convert(img)` as a fresh array, computed once for consecutive calls on the same pixels
    (told by their digest, shape and dtype) on a thread, then copied (a digest and a copy take
    under 1 ms at 512x384; the conversions 7-15 ms, in float64 for the same bits on every CPU)."""
    last = threading.local()

    @functools.wraps(convert)
    def converted(img: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(img)
        key = (pixels.shape, pixels.dtype.str,
               hashlib.blake2b(pixels.data, digest_size=16).digest())
        if getattr(last, "key", None) != key:
            last.key, last.value = key, convert(pixels)
        return last.value.copy()
    return converted


# a reference's 20 chroma and mono noise versions (types 4, 5, 9, 10)
image_ycbcr = kept_per_image(lambda img: rgb_to_ycbcr(to_float(img)))
# its versions of types 16, 19, 27 and 31 (brighten, unsharp mask, colour diffusion, Lab
# saturation): 19 conversions of 14 ms
image_lab = kept_per_image(rgb_to_lab)
