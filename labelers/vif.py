"""VIF, the wavelet-domain Visual Information Fidelity of Sheikh and Bovik (2006), as the LIVE
reference code vifvec.m computes it, on the rounded gray image (0..255, float64):

1. Decompose reference and distorted image with matlabPyrTools buildSpyr(im, 4, 'sp5Filters',
   'reflect1'): the real steerable pyramid in the spatial domain (lo0filt, then per level the
   six 7 x 7 oriented bfilts and the lofilt low-pass keeping every second sample), every
   correlation done by corrDn with 'reflect1' edges (mirror about the edge sample).
2. ind2wtree reverses the pyramid into a cell array (1: low-pass residual ... 26: high-pass
   residual); vifvec.m uses the cells [4 7 10 13 16 19 22 25]: orientations 1 and 4 (0-based 0
   and 3, which are perpendicular) of each of the four levels, not all 24 bands.
3. Per subband, cropped to a multiple of M = 3 in both dimensions (vifsub_est_M): the gain g and
   the noise variance sv^2 of the channel dist = g ref + v, from box-window sums (window side
   2^lev + 1, lev = ceil((cell - 1) / 6): 17 at the finest level ... 3 at the coarsest) sampled
   at the centre of every 3 x 3 block, with the reference code's clamps.
4. Per subband (refparams_vecgsm): C_u, the covariance of all overlapping 3 x 3 blocks of the
   reference (mean removed, divided by the count); the S field s = x' C_u^-1 x / M^2 of the
   non-overlapping blocks x; the eigenvalues of C_u.
5. Drop ceil(((side - 1) / 2) / M) blocks at every border, then
   VIF = sum log2(1 + g^2 s lambda_j / (sv^2 + sigma_nsq)) / sum log2(1 + s lambda_j / sigma_nsq)
   with sigma_nsq = 0.4, the sums over all eigenvalues, blocks and subbands.

Everything that depends only on the reference (its pyramid, box statistics, C_u, S field,
eigenvalues and the denominator) is computed once in `prepare`; the pyramid computes only the
two orientations used, and neither residual. The clamps are vifvec.m's, quirks included: where
g < 0 (or the reference window is flat) sv^2 is the distorted window's variance SUM, not divided
by the window area, and g is set to 0, so a negative image scores 0. A flat reference has no
information (the ratio is 0 / 0; MATLAB returns rounding noise): it raises LabelerError, as
does one whose C_u is singular (MATLAB's inv returns Inf): neighbourhoods that vary along one
direction only, a ramp or stripes.
"""

from dataclasses import dataclass
from math import ceil

import numpy as np
import torch
import torch.nn.functional as F

from labelers.base import Metric
from labelers.errors import LabelerError
from labelers.fixed_bits import fixed_mean, fixed_sum
from labelers.inputs import gray_rounded

HEIGHT = 4                                   # pyramid levels
ORIENTATIONS = 6                             # sp5Filters: six oriented bands per level
SUBBANDS = (4, 7, 10, 13, 16, 19, 22, 25)    # vifvec.m's cells of ind2wtree's array
M = 3                                        # side of the GSM neighbourhood (M x M vectors)
SIGMA_NSQ = 0.4                              # variance of the visual noise
TOL = 1e-15                                  # vifsub_est_M's tolerance for zero variance
SINGULAR = torch.finfo(torch.float64).eps    # C_u's eigenvalue ratio below which MATLAB warns

# matlabPyrTools sp5Filters.m, as published (the high-pass residual's hi0filt is not needed).
SP5_LO0 = (  # lo0filt, 5 x 5
    (0.00341614, -0.01551246, -0.03848215, -0.01551246, 0.00341614),
    (-0.01551246, 0.05586982, 0.15925570, 0.05586982, -0.01551246),
    (-0.03848215, 0.15925570, 0.40304148, 0.15925570, -0.03848215),
    (-0.01551246, 0.05586982, 0.15925570, 0.05586982, -0.01551246),
    (0.00341614, -0.01551246, -0.03848215, -0.01551246, 0.00341614),
)
SP5_LO_HALF = (  # lofilt = 2 * this, 9 x 9
    (0.00085404, -0.00244917, -0.00387812, -0.00944432, -0.00962054,
     -0.00944432, -0.00387812, -0.00244917, 0.00085404),
    (-0.00244917, -0.00523281, -0.00661117, 0.00410600, 0.01002988,
     0.00410600, -0.00661117, -0.00523281, -0.00244917),
    (-0.00387812, -0.00661117, 0.01396746, 0.03277038, 0.03981393,
     0.03277038, 0.01396746, -0.00661117, -0.00387812),
    (-0.00944432, 0.00410600, 0.03277038, 0.06426333, 0.08169618,
     0.06426333, 0.03277038, 0.00410600, -0.00944432),
    (-0.00962054, 0.01002988, 0.03981393, 0.08169618, 0.10096540,
     0.08169618, 0.03981393, 0.01002988, -0.00962054),
    (-0.00944432, 0.00410600, 0.03277038, 0.06426333, 0.08169618,
     0.06426333, 0.03277038, 0.00410600, -0.00944432),
    (-0.00387812, -0.00661117, 0.01396746, 0.03277038, 0.03981393,
     0.03277038, 0.01396746, -0.00661117, -0.00387812),
    (-0.00244917, -0.00523281, -0.00661117, 0.00410600, 0.01002988,
     0.00410600, -0.00661117, -0.00523281, -0.00244917),
    (0.00085404, -0.00244917, -0.00387812, -0.00944432, -0.00962054,
     -0.00944432, -0.00387812, -0.00244917, 0.00085404),
)
SP5_BANDS = (  # bfilts, one row per orientation: 7 x 7 taps, column by column
    (
        0.00277643, 0.00496194, 0.01026699, 0.01455399, 0.01026699, 0.00496194, 0.00277643,
        -0.00986904, -0.00893064, 0.01189859, 0.02755155, 0.01189859, -0.00893064, -0.00986904,
        -0.01021852, -0.03075356, -0.08226445, -0.11732297, -0.08226445, -0.03075356, -0.01021852,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.01021852, 0.03075356, 0.08226445, 0.11732297, 0.08226445, 0.03075356, 0.01021852,
        0.00986904, 0.00893064, -0.01189859, -0.02755155, -0.01189859, 0.00893064, 0.00986904,
        -0.00277643, -0.00496194, -0.01026699, -0.01455399, -0.01026699, -0.00496194, -0.00277643,
    ),
    (
        -0.00343249, -0.00640815, -0.00073141, 0.01124321, 0.00182078, 0.00285723, 0.01166982,
        -0.00358461, -0.01977507, -0.04084211, -0.00228219, 0.03930573, 0.01161195, 0.00128000,
        0.01047717, 0.01486305, -0.04819057, -0.12227230, -0.05394139, 0.00853965, -0.00459034,
        0.00790407, 0.04435647, 0.09454202, 0.0, -0.09454202, -0.04435647, -0.00790407,
        0.00459034, -0.00853965, 0.05394139, 0.12227230, 0.04819057, -0.01486305, -0.01047717,
        -0.00128000, -0.01161195, -0.03930573, 0.00228219, 0.04084211, 0.01977507, 0.00358461,
        -0.01166982, -0.00285723, -0.00182078, -0.01124321, 0.00073141, 0.00640815, 0.00343249,
    ),
    (
        0.00343249, 0.00358461, -0.01047717, -0.00790407, -0.00459034, 0.00128000, 0.01166982,
        0.00640815, 0.01977507, -0.01486305, -0.04435647, 0.00853965, 0.01161195, 0.00285723,
        0.00073141, 0.04084211, 0.04819057, -0.09454202, -0.05394139, 0.03930573, 0.00182078,
        -0.01124321, 0.00228219, 0.12227230, 0.0, -0.12227230, -0.00228219, 0.01124321,
        -0.00182078, -0.03930573, 0.05394139, 0.09454202, -0.04819057, -0.04084211, -0.00073141,
        -0.00285723, -0.01161195, -0.00853965, 0.04435647, 0.01486305, -0.01977507, -0.00640815,
        -0.01166982, -0.00128000, 0.00459034, 0.00790407, 0.01047717, -0.00358461, -0.00343249,
    ),
    (
        -0.00277643, 0.00986904, 0.01021852, 0.0, -0.01021852, -0.00986904, 0.00277643,
        -0.00496194, 0.00893064, 0.03075356, 0.0, -0.03075356, -0.00893064, 0.00496194,
        -0.01026699, -0.01189859, 0.08226445, 0.0, -0.08226445, 0.01189859, 0.01026699,
        -0.01455399, -0.02755155, 0.11732297, 0.0, -0.11732297, 0.02755155, 0.01455399,
        -0.01026699, -0.01189859, 0.08226445, 0.0, -0.08226445, 0.01189859, 0.01026699,
        -0.00496194, 0.00893064, 0.03075356, 0.0, -0.03075356, -0.00893064, 0.00496194,
        -0.00277643, 0.00986904, 0.01021852, 0.0, -0.01021852, -0.00986904, 0.00277643,
    ),
    (
        -0.01166982, -0.00128000, 0.00459034, 0.00790407, 0.01047717, -0.00358461, -0.00343249,
        -0.00285723, -0.01161195, -0.00853965, 0.04435647, 0.01486305, -0.01977507, -0.00640815,
        -0.00182078, -0.03930573, 0.05394139, 0.09454202, -0.04819057, -0.04084211, -0.00073141,
        -0.01124321, 0.00228219, 0.12227230, 0.0, -0.12227230, -0.00228219, 0.01124321,
        0.00073141, 0.04084211, 0.04819057, -0.09454202, -0.05394139, 0.03930573, 0.00182078,
        0.00640815, 0.01977507, -0.01486305, -0.04435647, 0.00853965, 0.01161195, 0.00285723,
        0.00343249, 0.00358461, -0.01047717, -0.00790407, -0.00459034, 0.00128000, 0.01166982,
    ),
    (
        -0.01166982, -0.00285723, -0.00182078, -0.01124321, 0.00073141, 0.00640815, 0.00343249,
        -0.00128000, -0.01161195, -0.03930573, 0.00228219, 0.04084211, 0.01977507, 0.00358461,
        0.00459034, -0.00853965, 0.05394139, 0.12227230, 0.04819057, -0.01486305, -0.01047717,
        0.00790407, 0.04435647, 0.09454202, 0.0, -0.09454202, -0.04435647, -0.00790407,
        0.01047717, 0.01486305, -0.04819057, -0.12227230, -0.05394139, 0.00853965, -0.00459034,
        -0.00358461, -0.01977507, -0.04084211, -0.00228219, 0.03930573, 0.01161195, 0.00128000,
        -0.00343249, -0.00640815, -0.00073141, 0.01124321, 0.00182078, 0.00285723, 0.01166982,
    ),
)


def sp5_filters(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lo0filt 5 x 5, lofilt 9 x 9, bfilts 6 x 7 x 7) in float64. Each band filter is its
    published column of 49 taps reshaped 7 x 7 column by column, as MATLAB's reshape does."""
    options = {"dtype": torch.float64, "device": device}
    lo0 = torch.tensor(SP5_LO0, **options)
    lo = 2 * torch.tensor(SP5_LO_HALF, **options)
    bands = torch.tensor(SP5_BANDS, **options).reshape(ORIENTATIONS, 7, 7).transpose(1, 2)
    return lo0, lo, bands


def corr_dn(
    images: torch.Tensor,
    filters: torch.Tensor,
    step: int = 1,
    start: tuple[int, int] = (0, 0),
    stop: tuple[int, int] | None = None,
) -> torch.Tensor:
    """matlabPyrTools corrDn(image, filt, 'reflect1', [step step], start + 1, stop) of N x 1 x H x W
    images with K odd square filters (K x k x k): correlation (no flip) about the middle tap, the
    image mirrored about its edge samples (x[-1] = x[1]), evaluated at rows and columns start,
    start + step, ... below stop (0-based, exclusive; default the image size). N x K x h x w."""
    window = _reflected_window(images, filters.shape[-1], step, start, stop)
    if window.device.type != "cpu":
        return F.conv2d(window, filters[:, None], stride=step)
    return _tap_sum(window, filters, step)


def _tap_sum(window: torch.Tensor, filters: torch.Tensor, step: int) -> torch.Tensor:
    """F.conv2d(window, filters[:, None], stride=step) on a CPU as the sum, tap by tap in
    row-major order, of the window's shifted (strided) views times the tap: float64 conv2d
    there copies the window k^2 times (im2col) for a product with one or two filters."""
    size = filters.shape[-1]
    rows = (window.shape[-2] - size) // step + 1
    cols = (window.shape[-1] - size) // step + 1
    taps = filters[None, :, :, :, None, None]  # 1 x K x k x k x 1 x 1
    total = None
    for row in range(size):
        for col in range(size):
            view = window[..., row : row + step * (rows - 1) + 1 : step,
                          col : col + step * (cols - 1) + 1 : step]
            if total is None:
                total = view * taps[:, :, row, col]
            else:
                total.addcmul_(view, taps[:, :, row, col])
    return total


def _reflected_window(images: torch.Tensor, size: int, step: int, start: tuple[int, int],
                      stop: tuple[int, int] | None) -> torch.Tensor:
    """The 'reflect1'-padded region that corrDn's outputs at start, start + step, ... read."""
    pad = size // 2
    stop = stop or images.shape[-2:]
    ends = [  # one past the last padded row / column the outputs read
        first + step * (ceil((last - first) / step) - 1) + size
        for first, last in zip(start, stop, strict=True)
    ]
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return padded[..., start[0] : ends[0], start[1] : ends[1]]


def spyr_bands(gray: torch.Tensor, orientations: tuple[int, ...], height: int = HEIGHT
               ) -> list[torch.Tensor]:
    """The oriented bands of buildSpyr(gray, height, 'sp5Filters', 'reflect1') for the listed
    orientations (0-based): one N x len(orientations) x h x w tensor per level, finest first; the
    first level has the image's size, each next one ceil(size / 2). The residuals (hi0 and the
    last low-pass) are never used by VIF and not computed."""
    lo0, lo, bands = sp5_filters(gray.device)
    bands = bands[list(orientations)]
    low = corr_dn(gray, lo0[None])
    levels = [corr_dn(low, bands)]
    for _ in range(1, height):
        low = corr_dn(low, lo[None], step=2)
        levels.append(corr_dn(low, bands))
    return levels


def wtree_cell(cell: int, height: int = HEIGHT) -> tuple[int, int]:
    """(level, orientation), 0-based, level 0 the finest, of cell `cell` (1-based) of ind2wtree's
    array: buildSpyr's subbands backwards, cell 1 the low-pass residual, then the coarsest level's
    bands from orientation 6 down to 1, ..., the finest level's, the high-pass residual last."""
    entry = height * ORIENTATIONS + 1 - cell  # 0-based in buildSpyr's order of oriented bands
    if not 0 <= entry < height * ORIENTATIONS:
        raise ValueError(f"cell {cell} holds a residual, not an oriented band")
    return divmod(entry, ORIENTATIONS)


def window_side(cell: int) -> int:
    """vifvec.m's box window side for a cell: 2^lev + 1 with lev = ceil((cell - 1) / 6)."""
    return 2 ** ceil((cell - 1) / ORIENTATIONS) + 1


def border_blocks(side: int) -> int:
    """Blocks dropped at every border of a subband (they see the window cross the edge)."""
    return ceil(((side - 1) // 2) / M)


def at_block_centres(images: torch.Tensor, side: int) -> torch.Tensor:
    """corrDn(images, ones(side)/side^2, 'reflect1', [M M], floor(M/2) + 1, size - ceil(M/2) + 1):
    the mean of a side x side box centred on every M x M block of images whose sides are
    multiples of M (average pooling: the same sums as the convolution, much faster)."""
    return F.avg_pool2d(block_window(images, side), side, stride=M)


def block_window(images: torch.Tensor, side: int) -> torch.Tensor:
    """The reflected region `at_block_centres` pools (gathered values: the window of a
    product is the product of the windows)."""
    rows, cols = images.shape[-2:]
    stop = (rows - ceil(M / 2) + 1, cols - ceil(M / 2) + 1)
    return _reflected_window(images, side, M, (M // 2, M // 2), stop)


def crop_to_blocks(band: torch.Tensor) -> torch.Tensor:
    """The top-left part of a subband whose sides are multiples of M."""
    rows, cols = band.shape[-2:]
    return band[..., : rows // M * M, : cols // M * M]


def crop_border(field: torch.Tensor, blocks: int) -> torch.Tensor:
    """A block field without `blocks` blocks at each border."""
    rows, cols = field.shape[-2:]
    return field[..., blocks : rows - blocks, blocks : cols - blocks]


def gsm_parameters(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """refparams_vecgsm for one subband (1 x 1 x h x w, sides multiples of M): C_u, the covariance
    of all overlapping M x M blocks (as M^2-vectors, mean removed, divided by their count), its
    eigenvalues, and the S field x' C_u^-1 x / M^2 of the non-overlapping blocks x, h/M x w/M.
    A C_u singular to working precision (blocks that vary along one direction only: a ramp,
    stripes) raises LabelerError, where MATLAB's inv warns and returns Inf."""
    vectors = F.unfold(y, M)[0]
    centred = vectors - fixed_mean(vectors, (1,), keepdim=True)
    covariance = _outer_sum(centred) / vectors.shape[1]
    eigenvalues = torch.linalg.eigvalsh(covariance)
    if not eigenvalues[0] > SINGULAR * eigenvalues[-1]:
        raise LabelerError("vif: the reference's 3 x 3 neighbourhoods of a subband vary along "
                           "fewer than 9 directions (a ramp, stripes): their covariance C_u is "
                           "singular and VIF undefined")
    tiles = F.unfold(y, M, stride=M)[0]
    s_field = (torch.linalg.solve(covariance, tiles) * tiles).sum(dim=0) / (M * M)
    return covariance, eigenvalues, s_field.reshape(y.shape[-2] // M, y.shape[-1] // M)


def _outer_sum(centred: torch.Tensor) -> torch.Tensor:
    """centred @ centred.T (M^2 x M^2, over every block). On the CPU a matrix product of that
    shape splits its long sum among the threads, so its last bits, and VIF's, moved with the
    labeler's thread count (the cluster's size); numpy's einsum sums on one thread, in one
    order."""
    if centred.device.type != "cpu":
        return centred @ centred.T
    values = centred.numpy()
    return torch.from_numpy(np.einsum("in,jn->ij", values, values))


def information(snr: torch.Tensor, eigenvalues: torch.Tensor) -> torch.Tensor:
    """sum_j sum_blocks log2(1 + snr lambda_j), per image (N x 1 x h x w -> N)."""
    return sum(fixed_sum(torch.log2(1 + snr * value), (-3, -2, -1)) for value in eigenvalues)


@dataclass(frozen=True)
class ReferenceSubband:
    """The reference half of one vifvec.m subband."""

    level: int
    slot: int                   # its orientation's place among COMPUTED_ORIENTATIONS
    side: int                   # box window side of the channel estimation
    mean: torch.Tensor          # window means at the block centres
    variance: torch.Tensor      # ss_x: window sums of squares less side^2 mean^2, >= 0
    s_field: torch.Tensor       # border-cropped S field
    eigenvalues: torch.Tensor   # the M^2 eigenvalues of C_u
    window: torch.Tensor        # block_window of its coefficients (sides multiples of M)


@dataclass(frozen=True)
class PreparedReference:
    """Everything VIF needs from one reference."""

    subbands: tuple[ReferenceSubband, ...]
    information: torch.Tensor   # the denominator: the reference image's information


def channel(ref: ReferenceSubband, dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vifsub_est_M: gain g and noise variance sv^2 of dist = g ref + v at every block centre,
    border-cropped, for N distorted subbands (N x 1 x h x w), with the reference's clamps."""
    area = ref.side * ref.side
    mean, cross, square = _pooled_moments(ref.window, block_window(dist, ref.side), ref.side)
    covariance = cross * area - area * ref.mean * mean
    variance = (square * area - area * mean**2).clamp_min(0)
    gain = covariance / (ref.variance + TOL)
    noise = (variance - gain * covariance) / area
    flat_ref, flat_dist = ref.variance < TOL, variance < TOL
    gain = gain.masked_fill(flat_ref | flat_dist, 0)
    noise = torch.where(flat_ref, variance, noise).masked_fill(flat_dist, 0)
    noise = torch.where(gain < 0, variance, noise).clamp_min(TOL)
    blocks = border_blocks(ref.side)
    return crop_border(gain.clamp_min(0), blocks), crop_border(noise, blocks)


def _pooled_moments(ref_window: torch.Tensor, window: torch.Tensor, side: int
                    ) -> tuple[torch.Tensor, ...]:
    """The side x side means at stride M of the N windows, of their products with the
    reference's and of their squares (each N x 1 x h x w). On a CPU the three fields of the N
    images are pooled in one call as 3N channels laid out channels-last, which torch's
    average pooling sums as vectors across the channels: each output the same additions, in
    the same (row, column) order from zero, and the same division as the planar kernel's
    (its bits), 1.6 times as fast for the 17-pixel windows of the finest level."""
    if window.device.type != "cpu":
        return tuple(F.avg_pool2d(values, side, stride=M)
                     for values in (window, ref_window * window, window * window))
    count, rows, cols = window.shape[0], window.shape[-2], window.shape[-1]
    planes = window[:, 0].permute(1, 2, 0)  # rows x cols x N views
    stacked = torch.empty((rows, cols, 3, count), dtype=window.dtype)
    stacked[:, :, 0] = planes
    torch.mul(ref_window[0, 0, :, :, None], planes, out=stacked[:, :, 1])
    torch.mul(planes, planes, out=stacked[:, :, 2])
    pooled = F.avg_pool2d(stacked.view(1, rows, cols, 3 * count).permute(0, 3, 1, 2), side,
                          stride=M)[0]
    return tuple(pooled[k * count:(k + 1) * count, None] for k in range(3))


def reference_subband(band: torch.Tensor, cell: int, level: int, slot: int) -> ReferenceSubband:
    """Box statistics, C_u's eigenvalues and the S field of one reference subband."""
    y = crop_to_blocks(band)
    side = window_side(cell)
    area = side * side
    mean = at_block_centres(y, side)
    variance = (at_block_centres(y * y, side) * area - area * mean**2).clamp_min(0)
    _, eigenvalues, s_field = gsm_parameters(y)
    return ReferenceSubband(
        level=level,
        slot=slot,
        side=side,
        mean=mean,
        variance=variance,
        s_field=crop_border(s_field, border_blocks(side)),
        eigenvalues=eigenvalues,
        window=block_window(y, side),
    )


def distorted_information(prepared: PreparedReference, gray: torch.Tensor) -> torch.Tensor:
    """The numerator of VIF for N gray images (N x 1 x H x W): the information the distorted
    images keep, summed over the subbands."""
    levels = spyr_bands(gray, COMPUTED_ORIENTATIONS)
    total = torch.zeros(len(gray), dtype=torch.float64, device=gray.device)
    for sub in prepared.subbands:
        band = crop_to_blocks(levels[sub.level][:, sub.slot, None])
        gain, noise = channel(sub, band)
        total = total + information(gain * gain * sub.s_field / (noise + SIGMA_NSQ),
                                    sub.eigenvalues)
    return total


BANDS = tuple(wtree_cell(cell) for cell in SUBBANDS)  # (level, orientation) of each cell
COMPUTED_ORIENTATIONS = tuple(sorted({orientation for _, orientation in BANDS}))  # (0, 3)


class VIF(Metric):
    """VIF (vifvec.m: sp5 steerable pyramid, 4 levels, M = 3, sigma_nsq = 0.4) on gray."""

    key = "vif"
    higher_is_better = True
    best = 1.0
    min_size = 72  # buildSpyr builds 4 levels only if the side halved 3 times is >= 9 (lofilt)
    cpu_chunk = 4

    def prepare(self, ref: torch.Tensor) -> PreparedReference:
        gray = gray_rounded(ref, torch.float64)
        if bool((gray == gray.flatten()[0]).all()):
            raise LabelerError("vif: the reference image is flat, so it carries no information "
                               "and VIF (information ratio 0 / 0) is undefined")
        levels = spyr_bands(gray, COMPUTED_ORIENTATIONS)
        subbands = []
        for cell, (level, orientation) in zip(SUBBANDS, BANDS, strict=True):
            slot = COMPUTED_ORIENTATIONS.index(orientation)
            subbands.append(reference_subband(levels[level][:, slot, None], cell, level, slot))
        total = sum(information(sub.s_field[None, None] / SIGMA_NSQ, sub.eigenvalues)
                    for sub in subbands)
        return PreparedReference(tuple(subbands), total)

    def compare(self, prepared: PreparedReference, dist: torch.Tensor) -> torch.Tensor:
        return (distorted_information(prepared, gray_rounded(dist, torch.float64))
                / prepared.information)
