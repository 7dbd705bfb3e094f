"""Noise types 3-7 and 39 (pink) and the noisy inputs of the denoised types 8-12, the mixtures
32-33 and denoise_blur (38).

Every generator draws from numpy's PCG64 seeded with the recipe's `noise_seed`, so the noise is
part of the recipe. Noisy images are clipped to [0, 1] as MATLAB's imnoise does.
"""

import math

import numpy as np

from distortions.colorspace import image_ycbcr, to_float, to_uint8, ycbcr_to_rgb


def _normal(shape: tuple[int, ...], variance: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(variance))


def white(x: np.ndarray, variance: float, seed: int) -> np.ndarray:
    """x + N(0, variance) on every RGB value, clipped."""
    return np.clip(x + _normal(x.shape, variance, seed), 0.0, 1.0)


def ycbcr_noise(ycc: np.ndarray, variance: float, seed: int, planes: slice) -> np.ndarray:
    """N(0, variance) added to the chosen planes of `ycc` (an image in YCbCr, studio swing:
    changed here), clipped there, to RGB."""
    ycc[..., planes] += _normal(ycc[..., planes].shape, variance, seed)
    return np.clip(ycbcr_to_rgb(np.clip(ycc, 0.0, 1.0)), 0.0, 1.0)


def impulse(x: np.ndarray, density: float, seed: int) -> np.ndarray:
    """Salt and pepper per array element: a fraction density/2 set to 0 and as many to 1."""
    draw = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    noisy = x.copy()
    noisy[draw < density / 2] = 0.0
    noisy[(draw >= density / 2) & (draw < density)] = 1.0
    return noisy


def speckle(x: np.ndarray, variance: float, seed: int) -> np.ndarray:
    """x + n * x with n uniform, mean 0, the given variance; clipped."""
    uniform = np.random.default_rng(seed).random(x.shape, dtype=np.float32)
    n = np.float32(math.sqrt(12 * variance)) * (uniform - np.float32(0.5))
    return np.clip(x + n * x, 0.0, 1.0)


def pink(x: np.ndarray, variance: float, seed: int) -> np.ndarray:
    """x + pink noise, clipped: per RGB plane, white Gaussian noise shaped in the 2-D Fourier
    domain by amplitude f^-1/2 (power 1/f, f the radial frequency; no DC), then scaled so the
    noise over the whole image has exactly the given variance."""
    white_noise = np.random.default_rng(seed).standard_normal(x.shape)
    height, width = x.shape[:2]
    radial = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    radial[0, 0] = np.inf  # zero mean: no DC component
    spectrum = np.fft.rfft2(white_noise, axes=(0, 1)) / np.sqrt(radial)[..., None]
    noise = np.fft.irfft2(spectrum, s=(height, width), axes=(0, 1))
    return np.clip(x + noise * (math.sqrt(variance) / noise.std()), 0.0, 1.0)


ALL_PLANES = slice(0, 3)
LUMA_PLANE = slice(0, 1)


def noisy_image(img: np.ndarray, params: dict) -> np.ndarray:
    """The float noisy image a params dict describes: its `noise` kind with its strength."""
    seed = params["noise_seed"]
    match params["noise"]:
        case "white":
            return white(to_float(img), params["variance"], seed)
        case "chroma":
            return ycbcr_noise(image_ycbcr(img), params["variance"], seed, ALL_PLANES)
        case "mono":
            return ycbcr_noise(image_ycbcr(img), params["variance"], seed, LUMA_PLANE)
        case "impulse":
            return impulse(to_float(img), params["density"], seed)
        case "speckle":
            return speckle(to_float(img), params["variance"], seed)
        case "pink":
            return pink(to_float(img), params["variance"], seed)
    raise ValueError(f"unknown noise kind {params['noise']!r}")


def apply_noise(img: np.ndarray, params: dict) -> np.ndarray:
    """Types 3-7 and 39: the noisy image, rounded to uint8."""
    return to_uint8(noisy_image(img, params))
