"""Types 8-12: a noise type, then the learned denoiser (residual noise at high levels is meant).

The denoiser is told the true sigma for white noise and an estimate for the other noise types.
The work comes in two halves so that a pipeline can batch the network on a GPU: the seeded
noisy input and its sigma (CPU), then the network over many inputs at once.
"""

import math

import numpy as np

from distortions import denoiser
from distortions.noise import noisy_image


def denoiser_input(img: np.ndarray, params: dict) -> tuple[np.ndarray, float]:
    """The noisy float32 image and the sigma the network is told (clipped to its range)."""
    noisy = noisy_image(img, params)
    if params["noise"] == "white":
        sigma = min(math.sqrt(params["variance"]), denoiser.MAX_SIGMA)
    else:
        sigma = denoiser.estimated_sigma(noisy)
    return noisy.astype(np.float32), sigma


def denoise_inputs(inputs: list[tuple[np.ndarray, float]], identity: str) -> list[np.ndarray]:
    """The recorded denoiser over (noisy, sigma) inputs of one size, in batches: uint8 images."""
    network = denoiser.check_recorded(identity)
    noisy = np.stack([image for image, _ in inputs])
    sigmas = np.asarray([sigma for _, sigma in inputs], dtype=np.float32)
    return list(network.denoise_batch(noisy, sigmas))


def apply_denoised(img: np.ndarray, params: dict) -> np.ndarray:
    return denoise_inputs([denoiser_input(img, params)], params["denoiser"])[0]
