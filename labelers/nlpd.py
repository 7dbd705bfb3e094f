"""NLPD, the normalized Laplacian pyramid distance (Laparra, Ballé, Berardino and Simoncelli
2016), as the authors' NLP_dist.m computes it (its first output, DMOS_Lap_dn2).

Input: gray (rounded) / 255 in float64. A 6-level Laplacian pyramid (laplacian_pyramid_s:
Burt-Adelson taps (.05, .25, .4, .25, .05) as an outer product; reduce = imfilter with
'symmetric' boundary then keep odd rows and columns; expand = 1-pixel 'replicate' border,
zero insertion with gain 4, imfilter with zero boundary, crop), each level divided by
sigma + conv2(|level|, F, 'same') with the published per-level sigmas and 5 x 5 filters, then
the root mean squared difference of each normalised level, averaged over the six levels.
Lower is better."""

import torch
import torch.nn.functional as F

from labelers.base import Metric
from labelers.fixed_bits import image_means
from labelers.inputs import gray_rounded, symmetric_pad

PYRAMID_LEVELS = 6
BURT_ADELSON_TAPS = (0.05, 0.25, 0.4, 0.25, 0.05)
DN_SIGMAS = (0.0248, 0.0185, 0.0179, 0.0191, 0.0220, 0.2782)

Filter5x5 = tuple[tuple[float, ...], ...]

# Level 1's divisive-normalisation filter, as printed in NLP_dist.m (DN_filters).
DN_FILTER_LEVEL_1: Filter5x5 = (
    (0.0, 0.0, 0.0, 0.0, 0.0),
    (0.0, 0.0, 0.1011, 0.0, 0.0),
    (0.0, 0.1493, 0.0, 0.1460, 0.0072),
    (0.0, 0.0, 0.1015, 0.0, 0.0),
    (0.0, 0.0, 0.0, 0.0, 0.0),
)
# Levels 2..6: only the four neighbours of the centre are non-zero, as (above, left, right,
# below); NLP_dist.m sets them in F2(2:4, 2:4) of a 5 x 5 filter.
DN_NEIGHBOUR_TAPS = (
    (0.0757, 0.1986, 0.1846, 0.0837),
    (0.0477, 0.2138, 0.2243, 0.0467),
    (0.0, 0.2503, 0.2616, 0.0),
    (0.0, 0.2598, 0.2552, 0.0),
    (0.0, 0.2215, 0.0717, 0.0),
)


def _neighbour_filter(above: float, left: float, right: float, below: float) -> Filter5x5:
    """A 5 x 5 filter whose only non-zero taps are the four neighbours of the centre."""
    return (
        (0.0, 0.0, 0.0, 0.0, 0.0),
        (0.0, 0.0, above, 0.0, 0.0),
        (0.0, left, 0.0, right, 0.0),
        (0.0, 0.0, below, 0.0, 0.0),
        (0.0, 0.0, 0.0, 0.0, 0.0),
    )


DN_FILTERS = (DN_FILTER_LEVEL_1, *(_neighbour_filter(*taps) for taps in DN_NEIGHBOUR_TAPS))


def lowpass_taps(device: torch.device | str = "cpu") -> torch.Tensor:
    """The Burt-Adelson taps f (float64); the pyramid's 5 x 5 lowpass is f' * f."""
    return torch.tensor(BURT_ADELSON_TAPS, dtype=torch.float64, device=device)


def reduce(image: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """imfilter(I, f' * f, 'symmetric'), then I(1:2:end, 1:2:end): B x 1 x H x W ->
    B x 1 x ceil(H/2) x ceil(W/2). The separable filter is applied at the kept samples only
    (stride 2), a column pass then a row pass."""
    columns = F.conv2d(symmetric_pad(image, 2), taps.view(1, 1, -1, 1), stride=(2, 1))
    return F.conv2d(columns, taps.view(1, 1, 1, -1), stride=(1, 2))


def expand(low: torch.Tensor, size: tuple[int, int], taps: torch.Tensor) -> torch.Tensor:
    """laplacian_pyramid_s's upsample: replicate a 1-pixel border (n samples per side), put
    4 * samples at R(1:2:end, 1:2:end) of a 2n x 2n zero image, imfilter with f' * f and zero
    boundary, keep R(3:2 + size). Zero insertion followed by filtering is a stride-2 transposed
    convolution (the filter is symmetric): padding 2 and output padding 1 give the 2n samples of
    the filtered image, here a column pass then a row pass with gain 2 each."""
    padded = F.pad(low, (1, 1, 1, 1), mode="replicate")
    columns = F.conv_transpose2d(
        padded, 2 * taps.view(1, 1, -1, 1), stride=(2, 1), padding=(2, 0), output_padding=(1, 0)
    )
    filtered = F.conv_transpose2d(
        columns, 2 * taps.view(1, 1, 1, -1), stride=(1, 2), padding=(0, 2), output_padding=(0, 1)
    )
    return filtered[..., 2:2 + size[0], 2:2 + size[1]]


def laplacian_pyramid(image: torch.Tensor, taps: torch.Tensor) -> list[torch.Tensor]:
    """The 6-level pyramid of laplacian_pyramid_s: five bandpass levels, finest first, then the
    residual lowpass image."""
    levels = []
    current = image
    for _ in range(PYRAMID_LEVELS - 1):
        low = reduce(current, taps)
        levels.append(current - expand(low, tuple(current.shape[-2:]), taps))
        current = low
    levels.append(current)
    return levels


def normalise_level(band: torch.Tensor, dn_filter: Filter5x5, sigma: float) -> torch.Tensor:
    """band ./ (sigma + conv2(abs(band), F2, 'same')) for a 5 x 5 filter F2 given as nested
    tuples. conv2 is a true convolution with zero boundary: tap F2(a, b) weighs the sample
    (2 - a, 2 - b) away (0-based a, b), so the sum runs over the non-zero taps as shifted
    slices of the zero-padded |band|."""
    padded = F.pad(band.abs(), (2, 2, 2, 2))
    rows, cols = band.shape[-2:]
    amplitude = torch.zeros_like(band)
    for a, filter_row in enumerate(dn_filter):
        for b, tap in enumerate(filter_row):
            if tap:
                amplitude += tap * padded[..., 4 - a:4 - a + rows, 4 - b:4 - b + cols]
    return band / (sigma + amplitude)


class NLPD(Metric):
    key = "nlpd"
    higher_is_better = False
    best = 0.0
    # Five halvings of a side of 17 or more end at 2 pixels or more before the last reduce, so
    # every level is a genuine decimation and the 2-pixel symmetric padding never wraps.
    min_size = 17

    def __init__(self, device: torch.device | str = "cpu"):
        super().__init__(device)
        self.taps = lowpass_taps(self.device)

    def _normalised_pyramid(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """NLP(): gray / 255, Laplacian pyramid, divisive normalisation of every level."""
        image = gray_rounded(rgb, torch.float64) / 255
        pyramid = laplacian_pyramid(image, self.taps)
        return [
            normalise_level(band, dn_filter, sigma)
            for band, dn_filter, sigma in zip(pyramid, DN_FILTERS, DN_SIGMAS, strict=True)
        ]

    def prepare(self, ref: torch.Tensor) -> list[torch.Tensor]:
        return self._normalised_pyramid(ref)

    def compare(self, prepared: list[torch.Tensor], dist: torch.Tensor) -> torch.Tensor:
        distorted = self._normalised_pyramid(dist)
        level_rms = [
            image_means((ref_level - dist_level) ** 2).sqrt()
            for ref_level, dist_level in zip(prepared, distorted, strict=True)
        ]
        return torch.stack(level_rms, dim=1).mean(dim=1)
