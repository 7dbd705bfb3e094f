"""Types 8-12: a noise type, then the learned denoiser (residual noise at high levels is meant).

The denoiser is told the true sigma for white noise and an estimate for the other noise types.
"""

import math

import numpy as np

from distortions import denoiser
from distortions.colorspace import to_uint8
from distortions.noise import noisy_image


def apply_denoised(img: np.ndarray, params: dict) -> np.ndarray:
    noisy = noisy_image(img, params)
    sigma = math.sqrt(params["variance"]) if params["noise"] == "white" else None
    return to_uint8(denoiser.denoise(noisy, params["denoiser"], sigma))
