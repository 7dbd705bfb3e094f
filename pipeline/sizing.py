"""The size policy: scale so the image covers the target (area interpolation), centre-crop."""

import math
from dataclasses import dataclass

import cv2
import numpy as np


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

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def cover_and_crop(img: np.ndarray, size: TargetSize, allow_upscale: bool = False) -> np.ndarray:
    """Scale by max(W/w, H/h) so the image covers `size`, then take the centre crop."""
    height, width = img.shape[:2]
    scale = max(size.width / width, size.height / height)
    if scale > 1 and not allow_upscale:
        raise SourceTooSmallError(
            f"source is {width}x{height}, smaller than the target {size}; allow upscaling to use it"
        )
    if scale != 1:
        new_size = (max(size.width, math.ceil(width * scale - 1e-9)),
                    max(size.height, math.ceil(height * scale - 1e-9)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        img = cv2.resize(img, new_size, interpolation=interpolation)
    top = (img.shape[0] - size.height) // 2
    left = (img.shape[1] - size.width) // 2
    return np.ascontiguousarray(img[top:top + size.height, left:left + size.width])
