"""pixelate, color_shift and brighten against the KADID MATLAB code (impixelate.m,
imcolorshift.m, imbrighten.m), each expected output computed here without the bank's code."""

import math

import numpy as np
import pytest
import skimage.color
from scipy.interpolate import CubicSpline

import distortions
from distortions import colorspace
from distortions.color import edge_weight
from distortions.colorspace import to_float, to_uint8

PIXELATE_STRENGTHS = (0.01, 0.05, 0.1, 0.2, 0.5)
SHIFT_AMOUNTS = (1, 3, 6, 8, 12)
BRIGHTEN_AMOUNTS = (0.1, 0.2, 0.4, 0.7, 1.1)


# --- pixelate: imresize(imresize(I, z, 'nearest'), [h w], 'nearest') ---------------------------
def matlab_nearest_source(x: int, scale: float, size_in: int) -> int:
    """imresize's contributions() for the 'nearest' box kernel (width 1): output x (1-based)
    sits at u = x/scale + 0.5*(1 - 1/scale); of the P = 3 candidates from floor(u - 1/2), the
    one with box(u - j) = 1, i.e. -1/2 <= u - j < 1/2; out-of-range indices mirror."""
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = math.floor(u - 0.5)
    (j,) = [j for j in range(left, left + 3) if -0.5 <= u - j < 0.5]
    mirror = list(range(1, size_in + 1)) + list(range(size_in, 0, -1))
    return mirror[(j - 1) % len(mirror)]


def matlab_pixelate_sources(size: int, zoom: float) -> list[int]:
    """1-based source pixel of each output pixel along one axis."""
    small = math.ceil(zoom * size)  # imresize(I, z): output size ceil(z * n), mapping by z
    down = [matlab_nearest_source(x, zoom, size) for x in range(1, small + 1)]
    # imresize(J, [h w]): MATLAB sets scale = output size / input size
    return [down[matlab_nearest_source(x, size / small, small) - 1] for x in range(1, size + 1)]


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_pixelate_is_matlab_imresize_nearest_down_and_up(level):
    # non-square; no z * side is a whole number; at level 5 (z = 0.29) the last of the
    # ceil(183 z) rows maps past the end (u - 1/2 >= 184), where MATLAB mirrors to row 182
    height, width = 183, 203
    img = np.random.default_rng(level).integers(0, 256, (height, width, 3), dtype=np.uint8)
    zoom = 0.95 - PIXELATE_STRENGTHS[level - 1] ** 0.6
    assert all(zoom * side != math.ceil(zoom * side) for side in (height, width))
    rows, cols = matlab_pixelate_sources(height, zoom), matlab_pixelate_sources(width, zoom)
    expected = np.array([[img[r - 1, c - 1] for c in cols] for r in rows])
    out, _ = distortions.apply(img, "pixelate", level, seed=0)
    np.testing.assert_array_equal(out, expected)


def test_matlab_nearest_takes_the_upper_pixel_on_a_tie():
    # imresize.m's box is (-0.5 <= x) & (x < 0.5): u = 1.5, 3.5, ... keep 2, 4, ..., not 1, 3
    assert [matlab_nearest_source(x, 0.5, 10) for x in range(1, 6)] == [2, 4, 6, 8, 10]


def test_opencv_nearest_exact_differs_from_the_bank_on_51_to_79_percent_of_pixels():
    # the figure README and docs/distortions-spec-notes.md give, to the whole percent, for the
    # astronaut at 512 x 384: OpenCV's round trip maps both ways by the size ratio
    import cv2

    from pipeline.embedded import embedded_photo
    from pipeline.sizing import TargetSize, cover_and_crop

    img = cover_and_crop(embedded_photo("astronaut"), TargetSize(512, 384))
    height, width = img.shape[:2]
    differing = []
    for level, strength in zip(distortions.LEVELS, PIXELATE_STRENGTHS, strict=True):
        zoom = 0.95 - strength**0.6
        small = (math.ceil(zoom * width), math.ceil(zoom * height))
        down = cv2.resize(img, small, interpolation=cv2.INTER_NEAREST_EXACT)
        opencv = cv2.resize(down, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)
        out, _ = distortions.apply(img, "pixelate", level, seed=0)
        differing.append(np.mean((opencv != out).any(axis=-1)))
    # measured: 55.9, 59.0, 50.8, 56.5, 79.2 %
    assert (round(100 * min(differing)), round(100 * max(differing))) == (51, 79)


# --- color_shift: round(normr(rand(1, 2)) * amount), circshift by [rows cols] ------------------
@pytest.mark.parametrize("level", distortions.LEVELS)
def test_color_shift_draws_a_first_quadrant_shift_of_length_amount(level):
    amount = SHIFT_AMOUNTS[level - 1]
    shifts = []
    for seed in range(400):
        params = distortions.get("color_shift").sample_params(level, np.random.default_rng(seed))
        shifts.append((params["shift_x"], params["shift_y"]))
    for dx, dy in shifts:
        assert isinstance(dx, int) and isinstance(dy, int)
        assert dx >= 0 and dy >= 0
        # rounding each component moves the length by at most sqrt(2)/2
        assert abs(math.hypot(dx, dy) - amount) <= math.sqrt(0.5)
    if amount > 1:  # the whole quarter circle is reached, not just one side of it
        assert any(dx > dy for dx, dy in shifts) and any(dy > dx for dx, dy in shifts)


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_color_shift_output_is_the_recorded_shift_of_green(small_image, level):
    out, recipe = distortions.apply(small_image, "color_shift", level, seed=100 + level)
    dx, dy = recipe["params"]["shift_x"], recipe["params"]["shift_y"]
    x = to_float(small_image)
    green = x[..., 1]
    # content moves dy rows down and dx columns right; the first rows/columns repeat the edge
    moved = np.pad(green, ((dy, 0), (dx, 0)), mode="edge")[:green.shape[0], :green.shape[1]]
    weight = edge_weight(x)
    x[..., 1] = weight * moved + (1 - weight) * green
    np.testing.assert_array_equal(out, to_uint8(x))
    np.testing.assert_array_equal(out[..., [0, 2]], small_image[..., [0, 2]])


# --- brighten: (2 * clamp(curve(RGB)) + clamp(lab2rgb(clamp(curve(L*))))) / 3 -----------------
def brighten_expected(img: np.ndarray, amount: float, clamp_curve: bool = True) -> np.ndarray:
    """imbrighten's steps in float64 with scipy's spline and scikit-image's Lab (its lab2rgb
    clamps to [0, 1] as imbrighten does)."""
    spline = CubicSpline([0, 0.5, 1], [0, 0.5 + amount / 2, 1], bc_type="not-a-knot")

    def curve(v):
        return np.clip(spline(v), 0, 1) if clamp_curve else spline(v)

    rgb = img / 255.0
    lab = skimage.color.rgb2lab(rgb)
    lab[..., 0] = curve(lab[..., 0] / 100) * 100
    blended = (2 * curve(rgb) + np.clip(skimage.color.lab2rgb(lab), 0, 1)) / 3
    return np.rint(np.clip(blended, 0, 1) * 255)


@pytest.fixture(scope="module")
def brighten_image() -> np.ndarray:
    """Random colours, with ramps of grey and of saturated primaries and secondaries on top."""
    img = np.random.default_rng(7).integers(0, 256, (176, 256, 3), dtype=np.uint8)
    colours = [(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1), (1, 0, 1)]
    for row, colour in enumerate(colours):
        img[row] = np.outer(np.arange(256), colour)
    return img


@pytest.mark.parametrize("level", distortions.LEVELS)
def test_brighten_is_imbrighten_with_its_clamps(brighten_image, level):
    amount = BRIGHTEN_AMOUNTS[level - 1]
    out, _ = distortions.apply(brighten_image, "brighten", level, seed=0)
    diff = np.abs(out - brighten_expected(brighten_image, amount))
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # float32 here, float64 there


def test_brighten_clamps_are_hit_and_change_the_output(brighten_image):
    # a = 1.1 (level 5): the parabola peaks at 1.16 near 0.73, so RGB, L* and lab2rgb overshoot
    spline = CubicSpline([0, 0.5, 1], [0, 1.05, 1], bc_type="not-a-knot")
    lab = skimage.color.rgb2lab(brighten_image)
    assert (spline(brighten_image / 255) > 1).mean() > 0.2
    assert (spline(lab[..., 0] / 100) > 1).mean() > 0.2
    lab[..., 0] = np.clip(spline(lab[..., 0] / 100), 0, 1) * 100
    assert (colorspace.lab_to_rgb(lab) > 1).any(), "lab2rgb's clamp is not exercised"
    out, _ = distortions.apply(brighten_image, "brighten", 5, seed=0)
    unclamped = brighten_expected(brighten_image, 1.1, clamp_curve=False)
    assert (np.abs(out - unclamped) > 5).mean() > 0.05
