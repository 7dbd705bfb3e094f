"""Types 1-2 (JPEG, JPEG 2000) and 32-33 (white noise, then JPEG or JPEG 2000)."""

import numpy as np

from distortions.codecs import jpeg2000_roundtrip, jpeg_roundtrip
from distortions.colorspace import to_uint8
from distortions.noise import noisy_image


def apply_jpeg(img: np.ndarray, params: dict) -> np.ndarray:
    return jpeg_roundtrip(img, params["quality"])


def apply_jpeg2000(img: np.ndarray, params: dict) -> np.ndarray:
    return jpeg2000_roundtrip(img, params["ratio"], params.get("rate_control", 1))


def apply_jpeg_noisy(img: np.ndarray, params: dict) -> np.ndarray:
    return jpeg_roundtrip(to_uint8(noisy_image(img, params)), params["quality"])


def apply_jpeg2000_noisy(img: np.ndarray, params: dict) -> np.ndarray:
    return jpeg2000_roundtrip(to_uint8(noisy_image(img, params)), params["ratio"],
                              params.get("rate_control", 1))
