"""Wu's minimum-variance palette (type 29's), checked against its definition computed the slow
way on pixel lists (no histogram moments), against Pillow's median cut, and on the edge cases
of few colours."""

import numpy as np
import pytest
from PIL import Image

from distortions.color import apply_color_quantization
from distortions.palette import minimum_variance_palette


def _squared_error(pixels: np.ndarray) -> float:
    return float(((pixels - pixels.mean(axis=0)) ** 2).sum()) if len(pixels) else 0.0


def _greedy_boxes_by_pixels(img: np.ndarray, colors: int) -> list[np.ndarray]:
    """Wu's greedy cuts from the paper's statement, on the pixels themselves: the box of most
    squared error (spanning more than one 5-bit cell) is cut at the cell boundary, along the
    axis, that leaves the least squared error in its two halves; the lowest axis and cut win
    ties. Returns each box's pixels."""
    pixels = img.reshape(-1, 3).astype(np.float64)
    cells = (img.reshape(-1, 3) >> 3).astype(int)
    boxes = [(np.zeros(3, int), np.full(3, 32), np.arange(len(pixels)))]  # cells low <= c < high
    while len(boxes) < colors:
        errors = [_squared_error(pixels[m]) if np.prod(hi - lo) > 1 else 0.0
                  for lo, hi, m in boxes]
        worst = int(np.argmax(errors))
        if errors[worst] <= 0:
            break
        lo, hi, members = boxes[worst]
        best = None
        for axis in range(3):
            for cut in range(lo[axis] + 1, hi[axis]):
                below = members[cells[members, axis] < cut]
                above = members[cells[members, axis] >= cut]
                if len(below) and len(above):
                    error = _squared_error(pixels[below]) + _squared_error(pixels[above])
                    if best is None or error < best[0] - 1e-6:
                        best = (error, axis, cut, below, above)
        if best is None:
            break
        _, axis, cut, below, above = best
        below_hi, above_lo = hi.copy(), lo.copy()
        below_hi[axis] = above_lo[axis] = cut
        boxes[worst] = (lo, below_hi, below)
        boxes.append((above_lo, hi, above))
    return [pixels[m] for _, _, m in boxes]


def _nearest_error(img: np.ndarray, palette: np.ndarray) -> float:
    """Mean squared error of each pixel to its nearest palette colour (no dithering)."""
    pixels = img.reshape(-1, 1, 3).astype(np.float64)
    return float(((pixels - palette[None]) ** 2).sum(axis=-1).min(axis=1).mean())


@pytest.fixture(scope="module")
def crop(embedded_small) -> np.ndarray:
    return np.ascontiguousarray(embedded_small["coffee"][40:104, 60:140])


def _corners(count: int) -> np.ndarray:
    """An image of the first `count` corners of the red-green square, in equal numbers: cuts
    along red and green leave the same error (a tie)."""
    corners = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [255, 255, 0]], np.uint8)[:count]
    return corners[np.arange(40).reshape(5, 8) % count]


@pytest.mark.parametrize(("image", "colors"), [
    ("crop", 2), ("crop", 5), ("crop", 16),
    ("corners", 2),   # red and green tie: red is cut
    ("corners", 3),   # then two boxes of equal error: the first is cut
])
def test_the_palette_is_the_mean_of_each_box_of_wus_greedy_cuts_in_their_order(
        crop, image, colors):
    img = crop if image == "crop" else _corners(4)
    boxes = _greedy_boxes_by_pixels(img, colors)
    expected = np.floor(np.array([box.mean(axis=0) for box in boxes]) + 0.5).astype(np.uint8)
    palette = minimum_variance_palette(img, colors)
    assert len(palette) == colors
    assert palette.tolist() == expected.tolist()


def test_ties_go_to_red_then_the_first_box():
    """The corners' first cut is along red (means 0 and 255 in red, 128 in green), as Wu's
    code breaks the tie; the second cuts the box made first (of equal error) along green."""
    assert minimum_variance_palette(_corners(4), 2).tolist() == [[0, 128, 0], [255, 128, 0]]
    assert minimum_variance_palette(_corners(4), 3).tolist() == [
        [0, 0, 0], [255, 128, 0], [0, 255, 0]]


def test_the_dithered_output_holds_palette_colours_only():
    """Pillow gets the palette's n entries: no padding colour (black) can be chosen, here for
    an image without a dark pixel."""
    gradient = np.linspace(120, 250, 192 * 176 * 3).reshape(176, 192, 3)
    img = np.ascontiguousarray(np.roll(gradient, 7, axis=1).astype(np.uint8))
    for colors in (8, 64):
        out = apply_color_quantization(img, {"colors": colors})
        palette = set(map(tuple, minimum_variance_palette(img, colors).tolist()))
        assert set(map(tuple, out.reshape(-1, 3).tolist())) <= palette
        assert out.min() >= 120


@pytest.mark.parametrize("colors", [64, 48, 32, 16, 8])
def test_minimum_variance_leaves_less_error_than_pillows_median_cut(embedded_small, colors):
    """Wu's cuts minimise each split's squared error, so on photos the nearest-colour error is
    below median cut's (the paper's comparison): on the five embedded photos at 256x192, at
    most 0.78 of it (coffee at 48 colours), 0.09 of it at the least (hubble_deep_field)."""
    for photo in embedded_small.values():
        median_cut = Image.fromarray(photo).quantize(colors, method=Image.Quantize.MEDIANCUT)
        theirs = np.array(median_cut.getpalette()[:3 * colors], np.float64).reshape(-1, 3)
        ours = minimum_variance_palette(photo, colors).astype(np.float64)
        assert _nearest_error(photo, ours) < 0.8 * _nearest_error(photo, theirs)


def test_an_image_of_fewer_colours_gets_exactly_its_colours():
    """Colours in distinct cells are each a box of their own; the cutting stops there."""
    colours = np.array([[0, 0, 0], [255, 255, 255], [200, 30, 90]], np.uint8)
    img = colours[np.arange(60 * 40).reshape(60, 40) % 3]
    assert sorted(map(tuple, minimum_variance_palette(img, 64))) == sorted(map(tuple, colours))


def test_a_constant_image_gets_its_one_colour():
    img = np.full((20, 30, 3), (17, 130, 250), np.uint8)
    assert minimum_variance_palette(img, 8).tolist() == [[17, 130, 250]]


def test_colours_sharing_a_cell_are_one_colour_their_mean_rounded_as_matlab_does():
    """Boxes are made of 5-bit cells: 8 and 13 share one (8 // 8 == 13 // 8); their mean 10.5
    rounds half away from zero, as MATLAB's im2uint8 of the colour map does."""
    img = np.zeros((10, 10, 3), np.uint8)
    img[:5] = 8
    img[5:] = 13
    assert minimum_variance_palette(img, 4).tolist() == [[11, 11, 11]]
