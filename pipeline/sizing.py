"""The size policies: scale so the image covers the target (area interpolation) and
centre-crop; or keep each source's own size (`native`), downscaled only above a maximum side
and never below the bank's minimum."""

import math
from dataclasses import dataclass

import cv2
import numpy as np

from distortions.registry import is_integer
from distortions.validation import MIN_LONG_SIDE, MIN_SHORT_SIDE

NATIVE = "native"


class SourceTooSmallError(ValueError):
    """The source is smaller than the target and upscaling was not allowed."""


@dataclass(frozen=True)
class TargetSize:
    width: int = 512
    height: int = 384

    @classmethod
    def parse(cls, text: str) -> "TargetSize":
        """'512x384' -> TargetSize(512, 384)."""
        try:
            width, height = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"size must look like 512x384, got {text!r}") from None
        if width <= 0 or height <= 0:
            raise ValueError(f"size must be positive, got {text!r}")
        return cls(width, height)

    def __post_init__(self) -> None:
        if not all(is_integer(side) for side in (self.width, self.height)):
            raise ValueError(f"a size's width and height are whole numbers, got "
                             f"{self.width!r} x {self.height!r}")
        if (min(self.width, self.height) < MIN_SHORT_SIDE
                or max(self.width, self.height) < MIN_LONG_SIDE):
            raise ValueError(f"size {self} is below the distortion bank's minimum "
                             f"{MIN_LONG_SIDE}x{MIN_SHORT_SIDE} (MS-SSIM's five scales need a "
                             f"short side of {MIN_SHORT_SIDE}); every image would fail")

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def cover_and_crop(img: np.ndarray, size: TargetSize, allow_upscale: bool = False,
                   max_pixels: int | None = None) -> np.ndarray:
    """Scale a w x h image by max(size.width / w, size.height / h) so that it covers `size`,
    then take the centre crop. The
    scaled image must stay within `max_pixels` (None: no bound): upscaling a sliver such as
    2 x 5000 to cover 512 x 384 would make 640 million pixels to keep 200 thousand."""
    height, width = img.shape[:2]
    scale = max(size.width / width, size.height / height)
    if scale > 1 and not allow_upscale:
        raise SourceTooSmallError(
            f"source is {width}x{height}, smaller than the target {size}; allow upscaling to "
            "use it (--allow-upscale)"
        )
    if scale != 1:
        new_size = (max(size.width, math.ceil(width * scale - 1e-9)),
                    max(size.height, math.ceil(height * scale - 1e-9)))
        if max_pixels is not None and new_size[0] * new_size[1] > max_pixels:
            raise SourceTooSmallError(
                f"source is {width}x{height}: covering {size} scales it to "
                f"{new_size[0]}x{new_size[1]}, over {max_pixels} pixels (too thin a sliver)")
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        img = cv2.resize(img, new_size, interpolation=interpolation)
    top = (img.shape[0] - size.height) // 2
    left = (img.shape[1] - size.width) // 2
    return np.ascontiguousarray(img[top:top + size.height, left:left + size.width])


def parse_size(text: str) -> "TargetSize | str":
    """'native', or a target such as '512x384'."""
    return NATIVE if text.strip().lower() == NATIVE else TargetSize.parse(text)


def check_max_side(max_side: int | None) -> None:
    if max_side is not None and max_side < MIN_LONG_SIDE:
        raise ValueError(f"max_side must be at least {MIN_LONG_SIDE} (the bank's minimum long "
                         f"side), got {max_side}")


def limit_side(img: np.ndarray, max_side: int | None) -> np.ndarray:
    """The image at its own size, or, when its long side exceeds `max_side`, downscaled (area
    interpolation, aspect kept) to that long side, but never so far that its short side falls
    below the bank's minimum."""
    height, width = img.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return img
    scale = max(max_side / max(height, width), MIN_SHORT_SIDE / min(height, width))
    if scale >= 1:
        return img
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(img, new_size, interpolation=cv2.INTER_AREA)
