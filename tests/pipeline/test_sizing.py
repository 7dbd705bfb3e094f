"""pipeline.sizing's native policy (limit_side), against its docstring: a long side above
max_side comes down to exactly max_side, the aspect kept (the short side rounded to the
nearest pixel), never below the bank's minimum short side."""

import cv2
import numpy as np

from distortions.validation import MIN_SHORT_SIDE
from pipeline.sizing import TargetSize, cover_and_crop, limit_side


def _blank(width: int, height: int) -> np.ndarray:
    return np.zeros((height, width, 3), dtype=np.uint8)


def test_a_long_side_above_the_maximum_comes_to_exactly_the_maximum():
    # 400 / 539 in floats times 539 is a hair under 400: cut down, not rounded, it is 399
    assert limit_side(_blank(539, 300), 400).shape[:2] == (round(300 * 400 / 539), 400)
    assert limit_side(_blank(300, 539), 400).shape[:2] == (400, round(300 * 400 / 539))


def test_a_short_side_is_rounded_to_the_nearest_pixel():
    # 301 x 402 at 400 / 402: 299.502 rows, nearer 300 than 299
    assert limit_side(_blank(402, 301), 400).shape[:2] == (300, 400)


def test_an_image_within_the_maximum_or_at_the_minimum_short_side_is_kept():
    image = _blank(400, 300)
    assert limit_side(image, 400) is image and limit_side(image, None) is image
    thin = _blank(900, MIN_SHORT_SIDE)
    assert limit_side(thin, 400) is thin


def test_cover_scales_to_the_exact_whole_size_where_the_product_is_whole():
    """cover_and_crop: scaled by max(512 / w, 384 / h), then centre-cropped. 1092 x 546 at
    384 / 546 is exactly 768 x 384 (1092 x 384 / 546 = 768), which floats give as
    768.0000000000001: rounded up, the image was scaled to 769 columns, other pixels."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(546, 1092, 3), dtype=np.uint8)
    exact = cv2.resize(image, (1092 * 384 // 546, 384), interpolation=cv2.INTER_AREA)
    left = (exact.shape[1] - 512) // 2
    assert np.array_equal(cover_and_crop(image, TargetSize(512, 384)),
                          exact[:, left:left + 512])
