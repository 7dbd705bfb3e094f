"""Input checks shared by every distortion: uint8 RGB of at least the minimum size."""

import numpy as np

from distortions.errors import ImageTooSmallError, InvalidImageError

# MS-SSIM's five scales need a short side of 176; JPEG 2000 ratios need a coded image larger
# than its headers. Width x height, as in 512 x 384; portrait images are accepted too.
MIN_LONG_SIDE = 192
MIN_SHORT_SIDE = 176


def check_image(img: object) -> np.ndarray:
    """Return `img` if it is a uint8 RGB H x W x 3 array of at least 192 x 176, else raise."""
    if not isinstance(img, np.ndarray):
        raise InvalidImageError(f"expected a numpy array, got {type(img).__name__}")
    if img.dtype != np.uint8:
        raise InvalidImageError(f"expected dtype uint8, got {img.dtype}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise InvalidImageError(f"expected an RGB image of shape H x W x 3, got {img.shape}")
    height, width = img.shape[:2]
    if min(height, width) < MIN_SHORT_SIDE or max(height, width) < MIN_LONG_SIDE:
        raise ImageTooSmallError(
            f"image is {width} x {height}; the distortion bank needs at least "
            f"{MIN_LONG_SIDE} x {MIN_SHORT_SIDE} (short side {MIN_SHORT_SIDE})"
        )
    return img
