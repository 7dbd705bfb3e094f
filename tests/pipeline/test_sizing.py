"""pipeline.sizing's native policy (limit_side), against its docstring: a long side above
max_side comes down to exactly max_side, the aspect kept (the short side rounded to the
nearest pixel), never below the bank's minimum short side."""

import numpy as np

from distortions.validation import MIN_SHORT_SIDE
from pipeline.sizing import limit_side


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
