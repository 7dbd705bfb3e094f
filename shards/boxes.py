"""Crop boxes (y, x, h, w) shared by every member of a group: one random box, or two
overlapping views as Re-IQA draws them (offset y in [0.70 h, 0.90 h), x so that the overlap is
10-30% of a view, both inside the image)."""

import math
from fractions import Fraction

import cv2
import numpy as np

Box = tuple[int, int, int, int]
# exact fractions: a bound that falls on a whole pixel is that pixel (in floats, 0.3 w / 0.3
# can come to a hair above w, ceil'd to one pixel past the widest offset the image allows)
OVERLAP = (Fraction(1, 10), Fraction(3, 10))  # the views' shared area, a fraction of one view
OFFSET = (Fraction(7, 10), Fraction(9, 10))   # the second view's vertical offset, of h
MIN_VIEW_HEIGHT = 4      # below, no whole-pixel offset lies in [0.70 h, 0.90 h)


def misfit(shape: tuple[int, ...], crop: tuple[int, int] | None, views: int = 1) -> str | None:
    """Why `views` boxes of `crop` (one_box, two_views) cannot be drawn on an image of
    `shape`; None where they can."""
    height, width = shape[:2]
    if crop is None:
        return None
    h, w = crop
    if views == 2:
        low = math.ceil(OFFSET[0] * h)
        if height < h + low or width < w:
            return (f"two overlapping {h} x {w} views need an image of at least "
                    f"{h + low} x {w}; this one is {height} x {width}")
    elif h > height or w > width:
        return f"a {h} x {w} crop does not fit a {height} x {width} image"
    return None


def one_box(shape: tuple[int, ...], crop: tuple[int, int] | None,
            rng: np.random.Generator) -> Box:
    """A uniform random h x w box inside an image of `shape` (the whole image for None)."""
    height, width = shape[:2]
    if crop is None:
        return (0, 0, height, width)
    why = misfit(shape, crop)
    if why:
        raise ValueError(why)
    h, w = crop
    return (int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1)), h, w)


def two_views(shape: tuple[int, ...], crop: tuple[int, int],
              rng: np.random.Generator) -> list[Box]:
    """Two h x w boxes whose overlap is 10-30% of one, both inside the image; the second lies
    below the first, to its right or left. Offsets are capped where the image is small (the
    overlap stays in the band)."""
    why = misfit(shape, crop, views=2)
    if why:
        raise ValueError(why)
    height, width = shape[:2]
    h, w = crop
    low = math.ceil(OFFSET[0] * h)
    dy = int(rng.integers(low, min(math.ceil(OFFSET[1] * h), height - h + 1)))
    kept = Fraction(h - dy, h)  # the rows the views share, as a fraction of h
    widest = min(math.floor(w - OVERLAP[0] * w / kept), width - w)
    dx = int(rng.integers(max(0, math.ceil(w - OVERLAP[1] * w / kept)), widest + 1))
    top = int(rng.integers(height - h - dy + 1))
    left = int(rng.integers(width - w - dx + 1))
    if rng.random() < 0.5:
        return [(top, left, h, w), (top + dy, left + dx, h, w)]
    return [(top, left + dx, h, w), (top + dy, left, h, w)]


def cut(image: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """The image's window under one box (h x w x 3), or its views stacked (2 x h x w x 3);
    a copy, so the full image can go."""
    views = [image[y:y + h, x:x + w] for y, x, h, w in boxes]
    return np.ascontiguousarray(views[0] if len(views) == 1 else np.stack(views))


def half_scale(image: np.ndarray) -> np.ndarray:
    """The image downsampled x1/2 (bicubic, sizes rounded down), Re-IQA's second scale."""
    height, width = image.shape[:2]
    if height < 2 or width < 2:
        raise ValueError(f"a {height} x {width} image has no half scale")
    return cv2.resize(image, half_shape((height, width))[::-1], interpolation=cv2.INTER_CUBIC)


def half_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """The (height, width) of an image of `shape` at half scale (half_scale)."""
    return shape[0] // 2, shape[1] // 2
