"""Types 16-21: brightness (brighten, darken, mean shift), unsharp masking, contrast curves;
40-41: exposure in linear light; 43: global contrast reduction.

Tone curves act on uint8 values through a 256-entry lookup table of the exact curve; curves on
L* (continuous) are evaluated directly.
"""

import numpy as np
from scipy.interpolate import CubicSpline

from distortions.colorspace import (
    image_lab,
    lab_to_rgb,
    linear_to_srgb,
    srgb_to_linear,
    to_float,
    to_uint8,
)
from distortions.kernels import gaussian_blur_replicate

_LEVELS = np.arange(256, dtype=np.float64) / 255.0


def midpoint_curve(x: np.ndarray, mid: float) -> np.ndarray:
    """The spline through (0, 0), (0.5, mid), (1, 1); with three points it is the parabola
    y = (2 - 4 mid) x^2 + (4 mid - 1) x (MATLAB spline's not-a-knot ends)."""
    return (2 - 4 * mid) * x * x + (4 * mid - 1) * x


def _through_lut(img: np.ndarray, lut: np.ndarray) -> np.ndarray:
    return lut.astype(np.float32)[img]


def apply_brighten(img: np.ndarray, params: dict) -> np.ndarray:
    """KADID's imbrighten: RGB and L*/100 through the brightening curve, its output clamped to
    [0, 1] (above mid 0.75 the parabola overshoots 1), the Lab result clamped to [0, 1] as
    well, then blended 2:1."""
    mid = 0.5 + params["amount"] / 2
    rgb_curve = _through_lut(img, np.clip(midpoint_curve(_LEVELS, mid), 0, 1))
    lab = image_lab(img)
    lab[..., 0] = np.clip(midpoint_curve(lab[..., 0] / 100, mid), 0, 1) * 100
    return to_uint8((2 * rgb_curve + np.clip(lab_to_rgb(lab), 0, 1)) / 3)


def apply_darken(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(_through_lut(img, midpoint_curve(_LEVELS, 0.5 - params["amount"] / 2)))


def apply_mean_shift(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(to_float(img) + np.float32(params["shift"]))


def apply_unsharp_mask(img: np.ndarray, params: dict) -> np.ndarray:
    """L* + amount * (L* - Gaussian(L*)), Gaussian std 3 on a 13 x 13 support."""
    lab = image_lab(img)
    lightness = np.ascontiguousarray(lab[..., 0])
    blurred = gaussian_blur_replicate(lightness, 3.0, 13)
    lab[..., 0] = lightness + np.float32(params["amount"]) * (lightness - blurred)
    return to_uint8(lab_to_rgb(lab))


def contrast_curve(amount: float) -> CubicSpline:
    """Not-a-knot cubic spline through (0,0), (.3,.25-a/4), (.5,.5), (.7,.75+a/4), (1,1).

    These are KADID's knots. At a = 0 the curve still maps 0.3 to 0.25 and 0.7 to 0.75, a mild
    contrast increase, so level 3 is not an identity (the curve is the identity at a = -0.2).
    """
    knots = [0.0, 0.3, 0.5, 0.7, 1.0]
    values = [0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0]
    return CubicSpline(knots, values, bc_type="not-a-knot")


def apply_contrast_change(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(_through_lut(img, contrast_curve(params["amount"])(_LEVELS)))


def stretch_limits(channel: np.ndarray, fraction: float) -> tuple[int, int]:
    """MATLAB stretchlim(channel, [p, 1 - p]) on uint8 values, as bin indices 0..255."""
    cdf = np.cumsum(np.bincount(channel.ravel(), minlength=256)) / channel.size
    low = int(np.argmax(cdf > fraction))
    high = int(np.argmax(cdf >= 1 - fraction))
    return (0, 255) if low >= high else (low, high)


def apply_contrast_stretch(img: np.ndarray, params: dict) -> np.ndarray:
    """Per channel, map the stretch limits to 0 and 1 (imadjust(I, stretchlim(I, p)))."""
    out = np.empty(img.shape, dtype=np.float32)
    for c in range(3):
        low, high = stretch_limits(img[..., c], params["fraction"])
        out[..., c] = (img[..., c].astype(np.float32) - low) / (high - low)
    return to_uint8(out)


def apply_exposure(img: np.ndarray, params: dict) -> np.ndarray:
    """Exposure change by `ev` stops: sRGB decoded to linear light, times 2^ev, encoded, clipped."""
    light = srgb_to_linear(_LEVELS) * 2.0 ** params["ev"]
    return to_uint8(linear_to_srgb(light))[img]


def apply_contrast_reduction(img: np.ndarray, params: dict) -> np.ndarray:
    """mean + (1 - c) (x - mean), the mean taken over every RGB value of the image (exactly:
    an integer sum), so the mean is kept and each deviation scaled by 1 - c."""
    mean = int(img.sum(dtype=np.int64)) / img.size / 255
    return to_uint8(mean + (1 - params["amount"]) * (_LEVELS - mean))[img]
