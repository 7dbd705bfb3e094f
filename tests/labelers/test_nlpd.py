"""NLPD against NLP_dist.m: published constants, the pyramid's boundary handling and
reconstruction, the divisive normalisation on a tiny array, and the official calibration values."""

import pytest
import torch

from labelers.errors import InputTooSmallError
from labelers.nlpd import (
    BURT_ADELSON_TAPS,
    DN_FILTERS,
    DN_SIGMAS,
    NLPD,
    expand,
    laplacian_pyramid,
    lowpass_taps,
    normalise_level,
    reduce,
)

# NLP_dist.m, DN_filters: levels 2..6 set F2(2:4, 2:4) and pad to 5 x 5 with zeros.
PUBLISHED_FILTERS = [
    [[0, 0, 0, 0, 0], [0, 0, 0.1011, 0, 0], [0, 0.1493, 0, 0.1460, 0.0072],
     [0, 0, 0.1015, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, 0, 0.0757, 0, 0], [0, 0.1986, 0, 0.1846, 0],
     [0, 0, 0.0837, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, 0, 0.0477, 0, 0], [0, 0.2138, 0, 0.2243, 0],
     [0, 0, 0.0467, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0.2503, 0, 0.2616, 0],
     [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0.2598, 0, 0.2552, 0],
     [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0.2215, 0, 0.0717, 0],
     [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
]

# Official NLP_dist.m values (shared/spec/labels.md).
OFFICIAL = {"I03": 0.561610096893874, "I08": 0.302802106557736}


def _rows_of(values: list[float], rows: int) -> torch.Tensor:
    """1 x 1 x rows x len(values) float64 image whose every row is `values`."""
    return torch.tensor(values, dtype=torch.float64).expand(rows, -1)[None, None]


def test_published_constants():
    assert DN_SIGMAS == (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)
    assert [[list(row) for row in f] for f in DN_FILTERS] == PUBLISHED_FILTERS
    assert BURT_ADELSON_TAPS == (0.05, 0.25, 0.4, 0.25, 0.05)
    assert lowpass_taps().sum().item() == pytest.approx(1.0, abs=1e-15)


def test_reduce_mirrors_the_edge_sample():
    """imfilter 'symmetric' repeats the edge: padded row 1 0 | 0 1 2 3 4 5 | 5 4."""
    reduced = reduce(_rows_of([0, 1, 2, 3, 4, 5], 6), lowpass_taps())
    torch.testing.assert_close(reduced, _rows_of([0.4, 2.0, 3.95], 3), rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("width", "expected"),
    [(6, [0.1, 0.5, 1.0, 1.5, 1.9, 2.0]), (5, [0.1, 0.5, 1.0, 1.5, 1.9])],
)
def test_expand_replicates_a_border_then_filters_with_zeros(width, expected):
    """Row 0 1 2 -> replicate 0 0 1 2 2 -> 4x samples at even places -> filter -> crop."""
    expanded = expand(_rows_of([0, 1, 2], 3), (width, width), lowpass_taps())
    torch.testing.assert_close(expanded, _rows_of(expected, width), rtol=0, atol=1e-15)


def test_pyramid_sizes_and_reconstruction():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 1, 37, 50, dtype=torch.float64, generator=generator)
    taps = lowpass_taps()
    pyramid = laplacian_pyramid(image, taps)
    sizes = [tuple(level.shape[-2:]) for level in pyramid]
    assert sizes == [(37, 50), (19, 25), (10, 13), (5, 7), (3, 4), (2, 2)]
    collapsed = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        collapsed = band + expand(collapsed, tuple(band.shape[-2:]), taps)
    torch.testing.assert_close(collapsed, image, rtol=0, atol=1e-12)


def test_constant_image_has_empty_bands():
    pyramid = laplacian_pyramid(torch.full((1, 1, 40, 33), 0.3, dtype=torch.float64),
                                lowpass_taps())
    for band in pyramid[:-1]:
        assert band.abs().max().item() < 1e-14
    torch.testing.assert_close(pyramid[-1], torch.full_like(pyramid[-1], 0.3))


def test_normalisation_is_a_true_convolution_on_a_tiny_array():
    """Level 1, samples 3 -2 1 in the middle row: conv2 weighs the left neighbour with the
    right-hand taps (0.1460, then the 0.0072 two places away)."""
    band = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    band[0, 0, 2, :3] = torch.tensor([3.0, -2.0, 1.0])
    expected = torch.zeros_like(band)
    expected[0, 0, 2, :3] = torch.tensor([
        3 / (0.0248 + 2 * 0.1493),
        -2 / (0.0248 + 3 * 0.1460 + 1 * 0.1493),
        1 / (0.0248 + 2 * 0.1460 + 3 * 0.0072),
    ], dtype=torch.float64)
    normalised = normalise_level(band, DN_FILTERS[0], DN_SIGMAS[0])
    torch.testing.assert_close(normalised, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_official_calibration_values(calibration_pair, name):
    ref, dist = calibration_pair(name)
    assert NLPD().score(ref, dist).item() == pytest.approx(OFFICIAL[name], abs=1e-6)


def test_minimum_size():
    small = torch.zeros(1, 3, 16, 40, dtype=torch.uint8)
    with pytest.raises(InputTooSmallError):
        NLPD().score(small, small)
    smallest = torch.zeros(1, 3, 17, 17, dtype=torch.uint8)
    assert NLPD().score(smallest, smallest + 10).item() > 0
