"""CW-SSIM, the complex wavelet SSIM of Sampat et al. (2009), as cwssim_index.m computes it.

cwssim_index(img1, img2, level=4, or=8, guardb=0, K=0) on the rounded gray image (0..255):
1. Decompose both images with matlabPyrTools buildSCFpyr(im, level, or - 1): the complex
   steerable pyramid built in the Fourier domain, with raised-cosine radial masks (rcosFn,
   width 1, position -1/2) and analytic (one-lobe) angular masks, all sampled through pointOp's
   linear look-up tables.
2. Take the `or` complex bands of the coarsest level (`level`), i.e. pyramid bands
   (level - 1) * or + 2 ... level * or + 1: 48 x 64 for a 384 x 512 image.
3. Per band: corr = b1 .* conj(b2), varr = |b1|^2 + |b2|^2, both averaged over a 7 x 7 box
   ('valid'); cssim = (2 |corr| + K) / (varr + K).
4. Pool each cssim map with fspecial('gaussian', s - 6, s(1) / 4), s the band size (the
   weights sum to one), and average the `or` pooled values.

The bands of one level need only the low-pass cascade down to that level, so the module builds
the composite Fourier filter of each wanted band once per image size (the product of the masks
buildSCFpyr applies on the way down, on the centred crop it keeps) and never the other levels;
the crop is gathered from rfft2's half spectrum (conjugate symmetry gives the other half).
The guard band of the original is gb = guardb / 2^(level - 1) pixels cut from each band edge,
but the weights are sized from the uncut band, so the original runs only with guardb = 0: no
band pixel is discarded. K = 0 leaves 0 / 0 where both bands vanish over a window (flat
images); the original returns NaN there, this module 1 (the two windows are identical).
"""

from dataclasses import dataclass
from functools import lru_cache
from math import ceil, factorial

import numpy as np
import torch
import torch.nn.functional as F

from distortions.kernels import fspecial_gaussian
from labelers.base import Metric
from labelers.fixed_bits import fixed_mean, fixed_sum
from labelers.inputs import gray_rounded

LEVEL = 4          # pyramid level whose bands are compared (also the pyramid height)
ORIENTATIONS = 8   # buildSCFpyr order = ORIENTATIONS - 1
WINDOW = 7         # side of the box window of the local statistics
K = 0.0            # stabilising constant of the cssim formula


def rcos_lut(width: float = 1.0, position: float = -0.5) -> tuple[np.ndarray, np.ndarray]:
    """matlabPyrTools rcosFn(width, position, [0 1]): abscissae X and the raised cosine
    Y = cos^2 rising from 0 at position - width/2 to 1 at position + width/2 (ends repeated)."""
    size = 256
    x = np.pi * np.arange(-size - 1, 2) / (2 * size)
    y = np.cos(x) ** 2
    y[0] = y[1]
    y[size + 2] = y[size + 1]
    return position + (2 * width / np.pi) * (x + np.pi / 4), y


def point_op(values: np.ndarray, lut: np.ndarray, origin: float, increment: float) -> np.ndarray:
    """matlabPyrTools pointOp (the MEX version): linear interpolation in an equispaced look-up
    table whose first sample sits at `origin`, extrapolated linearly from the end segments."""
    pos = (values - origin) / increment
    index = np.clip(np.trunc(pos), 0, lut.size - 2).astype(np.int64)
    return lut[index] + (lut[index + 1] - lut[index]) * (pos - index)


def log_radius_and_angle(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """buildSCFpyr's frequency grid, centred like fftshift: log2 of the radius (the DC sample
    takes its left neighbour's radius) and the angle atan2(y, x), both height x width."""
    row_ctr, col_ctr = ceil((height + 0.5) / 2) - 1, ceil((width + 0.5) / 2) - 1
    x, y = np.meshgrid(
        (np.arange(width) - col_ctr) / (width / 2), (np.arange(height) - row_ctr) / (height / 2)
    )
    radius = np.sqrt(x**2 + y**2)
    radius[row_ctr, col_ctr] = radius[row_ctr, col_ctr - 1]
    return np.log2(radius), np.arctan2(y, x)


def radial_masks(log_rad: np.ndarray, octave: int) -> tuple[np.ndarray, np.ndarray]:
    """(high-pass, low-pass) raised-cosine masks of buildSCFpyr shifted down by `octave` octaves
    (0: hi0mask / lo0mask; k >= 1: himask / lomask of pyramid level k). hi^2 + lo^2 = 1."""
    xrcos, yrcos = rcos_lut()
    xrcos = xrcos - octave
    yrcos = np.sqrt(yrcos)
    yircos = np.sqrt(1.0 - yrcos**2)
    increment = xrcos[1] - xrcos[0]
    return (point_op(log_rad, yrcos, xrcos[0], increment),
            point_op(log_rad, yircos, xrcos[0], increment))


def angular_masks(angle: np.ndarray, nbands: int) -> np.ndarray:
    """The nbands analytic angular masks of buildSCFpyrLevs, nbands x angle.shape: one lobe of
    2 sqrt(const) cos^(nbands-1)(theta - pi b / nbands), b = 0 .. nbands - 1."""
    lutsize = 1024
    xcosn = np.pi * np.arange(-(2 * lutsize + 1), lutsize + 2) / lutsize  # [-2 pi, pi]
    order = nbands - 1
    const = 2 ** (2 * order) * factorial(order) ** 2 / (nbands * factorial(2 * order))
    alfa = np.mod(np.pi + xcosn, 2 * np.pi) - np.pi
    ycosn = 2 * np.sqrt(const) * np.cos(xcosn) ** order * (np.abs(alfa) < np.pi / 2)
    increment = xcosn[1] - xcosn[0]
    return np.stack([
        point_op(angle, ycosn, xcosn[0] + np.pi * b / nbands, increment) for b in range(nbands)
    ])


def centre_crop(height: int, width: int) -> tuple[int, int, int, int]:
    """buildSCFpyrLevs' crop of the centred spectrum to the next level:
    (row start, col start, rows, cols), starts 0-based."""
    starts, sizes = [], []
    for dim in (height, width):
        ctr, lodim = ceil((dim + 0.5) / 2), ceil((dim - 0.5) / 2)
        starts.append(ctr - ceil((lodim + 0.5) / 2))
        sizes.append(lodim)
    return starts[0], starts[1], sizes[0], sizes[1]


@dataclass(frozen=True)
class BandFilters:
    """Composite Fourier filters of the bands of one pyramid level: band b of an image is
    ifft2(ifftshift(fftshift(fft2(im))[rows, cols] * filters[b]))."""

    rows: slice
    cols: slice
    filters: np.ndarray  # complex, nbands x band height x band width


@lru_cache(maxsize=8)
def band_filters(height: int, width: int, level: int, nbands: int) -> BandFilters:
    """The masks buildSCFpyr(im, level, nbands - 1) multiplies into the spectrum on the way to
    the bands of `level`: lo0mask, the low-pass masks of levels 1 .. level - 1 (each cropped
    with the spectrum), then that level's high-pass and angular masks and (-i)^(nbands - 1)."""
    log_rad, angle = log_radius_and_angle(height, width)
    lowpass = radial_masks(log_rad, 0)[1]
    row0, col0 = 0, 0
    for octave in range(1, level):
        top, left, rows, cols = centre_crop(*log_rad.shape)
        crop = (slice(top, top + rows), slice(left, left + cols))
        log_rad, angle, lowpass = log_rad[crop], angle[crop], lowpass[crop]
        row0, col0 = row0 + top, col0 + left
        lowpass = lowpass * radial_masks(log_rad, octave)[1]
    highpass = radial_masks(log_rad, level)[0]
    filters = (-1j) ** (nbands - 1) * lowpass * angular_masks(angle, nbands) * highpass
    rows, cols = log_rad.shape
    return BandFilters(slice(row0, row0 + rows), slice(col0, col0 + cols), filters)


@dataclass(frozen=True)
class PreparedReference:
    bands: torch.Tensor     # complex128, 1 x nbands x h x w
    filters: torch.Tensor   # complex128, nbands x h x w
    rows: torch.Tensor      # int64, h: the band's rows in the unshifted spectrum
    cols: torch.Tensor      # int64, w: its columns
    weights: torch.Tensor   # float64, (h - WINDOW + 1) x (w - WINDOW + 1)


def unshifted_indices(centred: slice, size: int, device: torch.device) -> torch.Tensor:
    """Indices in fft2's order of a range in fftshift's order (fftshift puts sample 0 at
    size // 2), so the crop needs no shifted copy of the whole spectrum."""
    return (torch.arange(centred.start, centred.stop, device=device) - size // 2) % size


def pyramid_bands(gray: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                  filters: torch.Tensor) -> torch.Tensor:
    """Complex bands (N x nbands x h x w) of gray images N x 1 x H x W (float64); `rows` and
    `cols` index the band's frequencies in fft2's order (unshifted_indices)."""
    height, width = gray.shape[-2:]
    # the band filters are 1e-16 at DC: without its mean, a flat image's bands are 0, not
    # FFT rounding that would set its windows' scores (K = 0)
    centred = gray - fixed_mean(gray, (-2, -1), keepdim=True)
    half = torch.fft.rfft2(centred)  # columns 0 .. width // 2; X[r, c] = conj(X[-r, -c])
    direct = cols <= width // 2
    half_cols = torch.where(direct, cols, (width - cols) % width)
    spectrum = torch.where(
        direct,
        half[..., rows[:, None], half_cols],
        half[..., ((height - rows) % height)[:, None], half_cols].conj(),
    )
    return torch.fft.ifft2(torch.fft.ifftshift(spectrum * filters, dim=(-2, -1)))


def cssim_pooled(ref_bands: torch.Tensor, dist_bands: torch.Tensor, weights: torch.Tensor
                 ) -> torch.Tensor:
    """Per-band CW-SSIM (N x nbands): box-averaged cross-correlation and energy, cssim map,
    Gaussian-weighted mean (the weights sum to 1)."""
    corr = ref_bands * dist_bands.conj()
    varr = ref_bands.abs() ** 2 + dist_bands.abs() ** 2
    stats = torch.cat([corr.real, corr.imag, varr], dim=1)
    stats = F.avg_pool2d(F.avg_pool2d(stats, (WINDOW, 1), stride=1), (1, WINDOW), stride=1)
    corr_re, corr_im, varr = stats.chunk(3, dim=1)
    numerator = 2 * torch.sqrt(corr_re**2 + corr_im**2) + K
    denominator = varr + K
    cssim = torch.where(
        denominator > 0, numerator / denominator.clamp_min(torch.finfo(varr.dtype).tiny), 1.0
    )
    # divided by the weights' own sum, added in the same order: 1 exactly where cssim is 1
    # everywhere (the Gaussian's weights sum to 1 but for rounding)
    return fixed_sum(cssim * weights, (-2, -1)) / fixed_sum(weights, (-2, -1))


class CWSSIM(Metric):
    """CW-SSIM (cwssim_index.m, level 4, 8 orientations, K = 0) on the rounded gray image."""

    key = "cw_ssim"
    higher_is_better = True
    best = 1.0
    min_size = 64  # buildSCFpyr height <= floor(log2(short side)) - 2, so 4 levels need 64
    cpu_chunk = 4

    def prepare(self, ref: torch.Tensor) -> PreparedReference:
        height, width = ref.shape[-2:]
        spec = band_filters(int(height), int(width), LEVEL, ORIENTATIONS)
        filters = torch.from_numpy(spec.filters).to(self.device)
        band_rows, band_cols = spec.filters.shape[-2:]
        weights = fspecial_gaussian((band_rows - WINDOW + 1, band_cols - WINDOW + 1), band_rows / 4)
        rows = unshifted_indices(spec.rows, int(height), self.device)
        cols = unshifted_indices(spec.cols, int(width), self.device)
        gray = gray_rounded(ref, torch.float64)
        return PreparedReference(
            bands=pyramid_bands(gray, rows, cols, filters),
            filters=filters,
            rows=rows,
            cols=cols,
            weights=torch.from_numpy(weights).to(self.device),
        )

    def compare(self, prepared: PreparedReference, dist: torch.Tensor) -> torch.Tensor:
        bands = pyramid_bands(gray_rounded(dist, torch.float64), prepared.rows, prepared.cols,
                              prepared.filters)
        return cssim_pooled(prepared.bands, bands, prepared.weights).mean(dim=1)
