"""Types 13-15: Gaussian, lens (disk) and motion blur, replicate border as MATLAB imfilter;
38: Re-IQA's denoise_blur, white noise then a Pillow Gaussian or box blur."""

import numpy as np
from PIL import Image, ImageFilter

from distortions.colorspace import to_float, to_uint8
from distortions.kernels import (
    disk_kernel,
    filter_replicate,
    gaussian_blur_replicate,
    motion_kernel,
)
from distortions.noise import white

# Re-IQA's imdenoise: ImageFilter.GaussianBlur(radius=3) (radius is the standard deviation) or
# ImageFilter.BoxBlur(radius=2) (a 5 x 5 mean), drawn 50/50
DENOISE_FILTERS = {"gaussian": (ImageFilter.GaussianBlur, 3), "box": (ImageFilter.BoxBlur, 2)}


def apply_gaussian_blur(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(gaussian_blur_replicate(to_float(img), params["sigma"]))


def apply_lens_blur(img: np.ndarray, params: dict) -> np.ndarray:
    return to_uint8(filter_replicate(to_float(img), disk_kernel(params["radius"])))


def apply_motion_blur(img: np.ndarray, params: dict) -> np.ndarray:
    kernel = motion_kernel(params["length"], params["angle"])
    return to_uint8(filter_replicate(to_float(img), kernel))


def apply_denoise_blur(img: np.ndarray, params: dict) -> np.ndarray:
    """White noise of the level's variance (clipped, rounded to uint8), then the recorded blur
    filter at its recorded radius, as Pillow computes it on 8-bit images."""
    noisy = to_uint8(white(to_float(img), params["variance"], params["noise_seed"]))
    make_filter = DENOISE_FILTERS[params["filter"]][0]
    return np.asarray(Image.fromarray(noisy).filter(make_filter(params["radius"])))
