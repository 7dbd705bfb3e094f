"""Types 13-15: Gaussian, lens (disk) and motion blur, replicate border as MATLAB imfilter."""

import numpy as np

from distortions.colorspace import to_float, to_uint8
from distortions.kernels import (
    disk_kernel,
    filter_replicate,
    gaussian_blur_replicate,
    motion_kernel,
)


def apply_gaussian_blur(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(gaussian_blur_replicate(to_float(img), params["sigma"]))


def apply_lens_blur(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(filter_replicate(to_float(img), disk_kernel(params["radius"])))


def apply_motion_blur(img: np.ndarray, params: dict) -> np.ndarray:
    kernel = motion_kernel(params["length"], params["angle"])
    return to_uint8(filter_replicate(to_float(img), kernel))
