"""Minimum-variance colour palettes: Wu's quantizer (X. Wu, "Efficient statistical computations
for optimal color quantization", Graphics Gems II, 1991), the method MATLAB's `rgb2ind(RGB, n)`
cites and KADID's colour quantization ran.

The pixels are counted in a 32 x 32 x 32 histogram of the RGB cube (each channel's top 5 bits);
its cumulative moments (count, the three channel sums, the sum of squares) give any box's
moments from its 8 corners. Starting from the whole cube, the box of largest variance is cut
at the cell boundary, along the axis, that leaves the two halves the least summed squared
error; n - 1 cuts give n boxes (fewer where no box can be cut), and each box's colour is the
mean of its pixels, rounded half up (as MATLAB's im2uint8 of its colour map). Ties go as in
Wu's code: the lowest cut, red before green before blue, the first box.
"""

import numpy as np

BITS = 5
CELLS = 1 << BITS     # histogram cells per channel
MOMENTS = 5           # pixel count, sum of R, sum of G, sum of B, sum of R^2 + G^2 + B^2

Box = tuple[tuple[int, int, int], tuple[int, int, int]]  # (low, high): cells low < c <= high


def minimum_variance_palette(img: np.ndarray, colors: int) -> np.ndarray:
    """At most `colors` RGB colours (uint8, colors x 3) for an H x W x 3 uint8 image, one per
    box of Wu's cuts, in the order the boxes were made."""
    cumulative = _cumulative_moments(img)
    boxes = [((0, 0, 0), (CELLS, CELLS, CELLS))]
    variances = [_variance(cumulative, boxes[0])]
    while len(boxes) < colors:
        largest = int(np.argmax(variances))
        if variances[largest] <= 0:
            break
        halves = _best_cut(cumulative, boxes[largest])
        if halves is None:
            variances[largest] = 0.0
            continue
        boxes[largest], upper = halves
        boxes.append(upper)
        variances[largest] = _variance(cumulative, boxes[largest])
        variances.append(_variance(cumulative, upper))
    moments = np.array([_box_moments(cumulative, box) for box in boxes])
    return np.floor(moments[:, 1:4] / moments[:, :1] + 0.5).astype(np.uint8)


def _cumulative_moments(img: np.ndarray) -> np.ndarray:
    """(CELLS + 1)^3 x MOMENTS: the moments of every box from the cube's origin to a cell, a
    zero plane in front of each axis (box bounds are exclusive below, inclusive above)."""
    pixels = img.reshape(-1, 3)
    cells = (pixels >> (8 - BITS)).astype(np.intp) + 1
    index = np.ravel_multi_index(cells.T, (CELLS + 1,) * 3)
    values = pixels.astype(np.float64)
    squares = np.einsum("ij,ij->i", values, values)  # integers: exact in any order
    weights = [None, values[:, 0], values[:, 1], values[:, 2], squares]
    size = (CELLS + 1) ** 3
    moments = np.stack([np.bincount(index, weights=w, minlength=size) for w in weights], axis=-1)
    moments = moments.reshape((CELLS + 1,) * 3 + (MOMENTS,))
    return moments.cumsum(axis=0).cumsum(axis=1).cumsum(axis=2)


def _box_moments(cumulative: np.ndarray, box: Box) -> np.ndarray:
    """The five moments of the pixels in `box`, from its 8 corners."""
    return _slab_moments(cumulative, box, axis=0)[-1]


def _slab_moments(cumulative: np.ndarray, box: Box, axis: int) -> np.ndarray:
    """Moments of the box cut short along `axis`, (low, i] for i = low .. high: one row each
    (the first zeros, the last the whole box)."""
    low, high = box
    others = [a for a in range(3) if a != axis]
    c = np.moveaxis(cumulative, axis, 0)[low[axis]:high[axis] + 1]
    (l1, l2), (h1, h2) = [low[a] for a in others], [high[a] for a in others]
    faces = c[:, h1, h2] - c[:, l1, h2] - c[:, h1, l2] + c[:, l1, l2]
    return faces - faces[0]


def _variance(cumulative: np.ndarray, box: Box) -> float:
    """The box's summed squared error about its mean; 0 for a box of one cell (never cut)."""
    low, high = box
    if np.prod(np.subtract(high, low)) <= 1:
        return 0.0
    count, *sums, squares = _box_moments(cumulative, box)
    return float(squares - np.dot(sums, sums) / count)


def _best_cut(cumulative: np.ndarray, box: Box) -> tuple[Box, Box] | None:
    """The box's two halves at the cut that maximises sum |S|^2 / N over them (least squared
    error): per axis the lowest best cut, then the axis of the highest score, red first; None
    where no cut leaves pixels on both sides."""
    best = (0.0, -1, -1)  # score, axis, cell
    for axis in range(3):
        score, cell = _best_cut_along(_slab_moments(cumulative, box, axis))
        if cell >= 0 and (score > best[0] or best[1] < 0):
            best = (score, axis, box[0][axis] + cell)
    _, axis, cell = best
    if axis < 0:
        return None
    low, high = box
    lower_high = tuple(cell if a == axis else high[a] for a in range(3))
    upper_low = tuple(cell if a == axis else low[a] for a in range(3))
    return (low, lower_high), (upper_low, high)


def _best_cut_along(slabs: np.ndarray) -> tuple[float, int]:
    """(score, offset) of the best cut among slabs[1:-1] (offset from the box's low bound);
    (0, -1) where none scores above zero (Wu's test: only a larger score replaces the best)."""
    lower = slabs[1:-1]
    upper = slabs[-1] - lower
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = ((lower[:, 1:4] ** 2).sum(axis=1) / lower[:, 0]
                  + (upper[:, 1:4] ** 2).sum(axis=1) / upper[:, 0])
    scores[(lower[:, 0] == 0) | (upper[:, 0] == 0)] = 0.0
    if not len(scores) or scores.max() <= 0:
        return 0.0, -1
    offset = int(np.argmax(scores))
    return float(scores[offset]), offset + 1
