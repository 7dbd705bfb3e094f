"""MAD, Most Apparent Distortion (Larson and Chandler 2010), as the authors' MAD_index.m
(release of 2011, with its mex helpers ical_std.c and ical_stat.c) computes it.

Input: the gray image 0..255 (`gray_rounded`, float64). Lower is better; identical images
score 0. Two stages, combined by a blend that depends on the first:

- detection (d_detect, "hi_index"): lightness k * I^(2.2/3) with k = 0.02874 (the code's form;
  the paper writes (b + k I)^gamma then a cube root; its LUT reads white as 254), a CSF
  applied in the Fourier domain, local contrast of the reference (ical_std: 16 x 16 block
  mean, min of 8 x 8 block stds) and of the error (16 x 16 block std) on a stride-4 grid, a
  log-contrast mask times the local MSE of the raw gray images (16 x 16 box, symmetric
  padding), RMS inside the edge crop, times 200;
- appearance (d_appear, "lo_index"): a log-Gabor bank (5 scales x 4 orientations, Kovesi's
  gaborconvolve as Larson altered it), block std / skewness / kurtosis of each response
  magnitude (ical_stat: 16 x 16 blocks, stride 4), weighted differences, RMS inside the crop;
- MAD = d_detect^alpha * d_appear^(1 - alpha), alpha = 1 / (1 + beta1 d_detect^beta2), with
  beta1 = exp(-2.55 / 3.35) = 0.467 and beta2 = 1 / (ln 10 * 3.35) = 0.130.

Block statistics are computed exactly as ical_std.c / ical_stat.c define them (stride 4, each
value painted on the 4 x 4 cell at the block's corner, zeros where no block starts), but from
non-overlapping 4 x 4 cells whose central moments are merged in pairs (two cells, then two
pairs, along each axis), which keeps the skewness and kurtosis of nearly flat blocks accurate
without unfolding every 16 x 16 block: four merges per block instead of sixteen updates.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from labelers.base import Metric
from labelers.fixed_bits import fixed_mean
from labelers.inputs import gray_rounded, symmetric_pad

# Detection stage (hi_index)
LIGHTNESS_K = 0.02874
LIGHTNESS_EXPONENT = 2.2 / 3
WHITE_READ_AS = 254  # uint8 255 + 1 is 255 in MATLAB: the LUT's index of 254
CSF_NFREQ = 32              # make_csf(M, N, 32): cycles per degree at the Nyquist column
CSF_SYMMETRY_W = 0.7        # about 3 dB down along the diagonals
CSF_LAMBDA = 0.114
CSF_PEAK_FREQ = 7.8909      # below it the CSF is flat at CSF_FLAT
CSF_FLAT = 0.9809
MEAN_THRESHOLD = 0.5        # G: blocks darker than this get no mask
CI_THRESHOLD = -5.0         # log contrast of the reference where the slope starts
CD_THRESHOLD = -5.0         # saturated log-contrast threshold of the error
C_SLOPE = 1.0
MS_SCALE = 1.0
DETECT_SCALE = 200.0

# Appearance stage (lo_index, gaborconvolve)
GABOR_SCALES = 5
GABOR_ORIENTATIONS = 4
GABOR_MIN_WAVELENGTH = 3.0
GABOR_MULT = 3.0
GABOR_SIGMA_ON_F = 0.55
GABOR_DTHETA_ON_SIGMA = 1.5
SCALE_WEIGHTS = (0.5, 0.75, 1.0, 5.0, 6.0)  # normalised to sum 1 before use
SKEW_WEIGHT = 2.0

# Blocks (ical_std / ical_stat) and the edge crop
BLOCK = 16
STRIDE = 4
SUB_BLOCK = 8
EDGE = BLOCK  # mp(BSIZE+1:end-BSIZE-1, ...): 0-based rows EDGE .. H-EDGE-2

# Blend: b1 = exp(-thresh1/thresh2), b2 = 1/(log(10) thresh2)
THRESH1 = 2.55
THRESH2 = 3.35
BETA1 = math.exp(-THRESH1 / THRESH2)
BETA2 = 1.0 / (math.log(10.0) * THRESH2)

DTYPE = torch.float64
IMAGES_PER_GROUP = 2  # CPU: distorted images a log-Gabor pass takes (its arrays stay in cache)


def lightness(gray: torch.Tensor) -> torch.Tensor:
    """hi_index's luminance LUT of gray values 0..255: LUT(img + 1) with LUT(i) = k (i - 1)^(2.2/3)
    on the uint8 gray image, whose + 1 saturates at 255 in MATLAB: white reads as 254."""
    return LIGHTNESS_K * gray.clamp(max=WHITE_READ_AS).pow(LIGHTNESS_EXPONENT)


def make_csf(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """make_csf(rows, cols, 32)' of MAD_index.m: rows x cols, zero frequency at the centre
    (between the middle samples, as the reference's half-pixel grid puts it)."""
    u = torch.arange(rows, dtype=DTYPE, device=device) - rows / 2 + 0.5
    v = torch.arange(cols, dtype=DTYPE, device=device) - cols / 2 + 0.5
    u, v = torch.meshgrid(u, v, indexing="ij")
    scale = 2 * CSF_NFREQ / cols
    radfreq = torch.hypot(u, v) * scale
    angle = torch.atan2(v, u)
    symmetry = (1 - CSF_SYMMETRY_W) / 2 * torch.cos(4 * angle) + (1 + CSF_SYMMETRY_W) / 2
    radfreq = radfreq / symmetry
    csf = 2.6 * (0.0192 + CSF_LAMBDA * radfreq) * torch.exp(-((CSF_LAMBDA * radfreq) ** 1.1))
    return torch.where(radfreq < CSF_PEAK_FREQ, torch.full_like(csf, CSF_FLAT), csf)


def csf_filter(image: torch.Tensor, csf: torch.Tensor) -> torch.Tensor:
    """real(ifft2(ifftshift(fftshift(fft2(image)) .* csf))) over the last two dims, by real
    transforms: for a real image that real part is the filtering by the even part of the
    (ifftshifted) CSF, (s(k) + s(-k)) / 2, whose product with the spectrum is Hermitian."""
    shifted = torch.fft.ifftshift(csf, dim=(-2, -1))
    mirrored = torch.roll(shifted.flip(-2, -1), (1, 1), (-2, -1))  # s(-k mod size)
    even = ((shifted + mirrored) / 2)[..., : csf.shape[-1] // 2 + 1]
    return torch.fft.irfft2(torch.fft.rfft2(image) * even, s=image.shape[-2:])


def full_spectrum(image: torch.Tensor) -> torch.Tensor:
    """fft2 of real images from their rfft2 (a third of the work), the other columns by
    Hermitian symmetry: X[r, c] = conj(X[-r, -c])."""
    cols = image.shape[-1]
    half = torch.fft.rfft2(image)
    spectrum = torch.empty((*half.shape[:-1], cols), dtype=half.dtype, device=half.device)
    kept = half.shape[-1]
    spectrum[..., :kept] = half
    if cols > kept:  # columns kept .. cols-1 mirror columns cols-kept .. 1, rows negated
        mirrored = half[..., 1 : cols - kept + 1].flip(-1, -2).roll(1, -2)
        spectrum[..., kept:] = mirrored.conj()
    return spectrum


def magnitude(z: torch.Tensor) -> torch.Tensor:
    """|z| of a complex tensor: on a CPU by numpy's vectorised complex abs (torch's CPU one
    is about ten times slower; the two differ by at most an ulp)."""
    if z.device.type != "cpu":
        return z.abs()
    return torch.from_numpy(np.abs(z.numpy()))


def gabor_wavelengths() -> tuple[float, ...]:
    """3, 9, 27, 81, 243: minWaveLength * mult^s."""
    return tuple(GABOR_MIN_WAVELENGTH * GABOR_MULT**s for s in range(GABOR_SCALES))


def scale_weights() -> tuple[float, ...]:
    """lo_index's per-scale weights s ./ sum(s)."""
    total = sum(SCALE_WEIGHTS)
    return tuple(w / total for w in SCALE_WEIGHTS)


def _gabor_grid(rows: int, cols: int, device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """gaborconvolve's normalised frequency grid x (along columns) and y (along rows), and the
    0-based index of its 'centre' sample, round(rows/2 + 1) in MATLAB's 1-based terms."""
    x = (torch.arange(cols, dtype=DTYPE, device=device) - cols / 2) / (cols / 2)
    y = (torch.arange(rows, dtype=DTYPE, device=device) - rows / 2) / (rows / 2)
    y, x = torch.meshgrid(y, x, indexing="ij")
    return x, y, math.floor(rows / 2 + 0.5), math.floor(cols / 2 + 0.5)


def log_gabor_radial(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The radial components, GABOR_SCALES x rows x cols, centred (not yet fftshifted):
    exp(-(log(r / rfo))^2 / (2 log(sigmaOnf)^2)), rfo = 2 / wavelength, 0 at the centre."""
    x, y, row_c, col_c = _gabor_grid(rows, cols, device)
    radius = torch.sqrt(x**2 + y**2)
    radius[row_c, col_c] = 1.0
    log_radius = torch.log(radius)
    denominator = -(2 * math.log(GABOR_SIGMA_ON_F) ** 2)
    radial = []
    for wavelength in gabor_wavelengths():
        rfo = (1.0 / wavelength) / 0.5
        component = torch.exp((log_radius - math.log(rfo)) ** 2 / denominator)
        component[row_c, col_c] = 0.0
        radial.append(component)
    return torch.stack(radial)


def log_gabor_angular(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The angular components, GABOR_ORIENTATIONS x rows x cols, centred: a Gaussian in the
    angular distance from o * pi / 4, theta = atan2(-y, x), sigma = pi / 4 / 1.5."""
    x, y, _, _ = _gabor_grid(rows, cols, device)
    theta = torch.atan2(-y, x)
    sin_theta, cos_theta = torch.sin(theta), torch.cos(theta)
    theta_sigma = math.pi / GABOR_ORIENTATIONS / GABOR_DTHETA_ON_SIGMA
    angular = []
    for o in range(GABOR_ORIENTATIONS):
        angle = o * math.pi / GABOR_ORIENTATIONS
        ds = sin_theta * math.cos(angle) - cos_theta * math.sin(angle)
        dc = cos_theta * math.cos(angle) + sin_theta * math.sin(angle)
        dtheta = torch.abs(torch.atan2(ds, dc))
        angular.append(torch.exp(-(dtheta**2) / (2 * theta_sigma**2)))
    return torch.stack(angular)


def log_gabor_bank(rows: int, cols: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 20 filters fftshift(logGabor_s .* spread_o), (scale, orientation) x rows x cols,
    ready to multiply fft2 of the image (zero frequency at [0, 0])."""
    radial = log_gabor_radial(rows, cols, device)
    angular = log_gabor_angular(rows, cols, device)
    bank = radial[:, None] * angular[None, :]
    return torch.fft.fftshift(bank, dim=(-2, -1))


# ---- block statistics (ical_std.c, ical_stat.c) -------------------------------------------


def grid_size(length: int) -> int:
    """Number of block corners 0, 4, 8, ... with corner < length - 15."""
    return max(0, (length - BLOCK) // STRIDE + 1)


def _cell_moments(x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Mean and central sums of powers 2..order of each non-overlapping 4 x 4 cell: its 16
    samples as 16 strided views, accumulated on cell-sized arrays (no 16-sample copies)."""
    rows, cols = x.shape[-2] // STRIDE, x.shape[-1] // STRIDE
    x = x[..., : rows * STRIDE, : cols * STRIDE]
    samples = [x[..., i::STRIDE, j::STRIDE] for i in range(STRIDE) for j in range(STRIDE)]
    mean = samples[0].clone()
    for sample in samples[1:]:
        mean += sample
    mean /= len(samples)
    sums = [torch.zeros_like(mean) for _ in range(order - 1)]  # powers 2 .. order
    d, d2 = torch.empty_like(mean), torch.empty_like(mean)
    for sample in samples:
        torch.sub(sample, mean, out=d)
        torch.mul(d, d, out=d2)
        sums[0] += d2
        if order > 2:
            sums[1].addcmul_(d2, d)
            sums[2].addcmul_(d2, d2)
    return [mean, *sums]


def _block_moments(x: torch.Tensor, size: int, order: int) -> tuple[torch.Tensor, ...]:
    """Mean and central sums of powers 2..order (2 or 4) of the size x size blocks at stride 4 whose
    corners lie on the grid, from 4 x 4 cells merged in pairs of equal count (Chan et al. /
    Pebay updates): neighbouring cells along the columns, then those pairs, then the same down
    the rows, so a 16 x 16 block takes four merges over every block of every image at once.
    The merges run on the cell grids flattened (contiguous operands): a neighbour `step` cells
    on is `step` places on along the columns, `step * cols` down the rows; a pair that wraps
    past a row's (or an image's) end is one of a cell no kept block starts in."""
    grid_rows, grid_cols = grid_size(x.shape[-2]), grid_size(x.shape[-1])
    span = size // STRIDE  # a power of two: 4 for BLOCK, 2 for SUB_BLOCK
    moments = _cell_moments(x, order)
    if grid_rows == 0 or grid_cols == 0:
        return tuple(m[..., :grid_rows, :grid_cols] for m in moments[:order])
    shape = moments[0].shape
    flat = [m.reshape(-1) for m in moments]
    count = STRIDE * STRIDE
    for unit in (1, shape[-1]):
        step = 1
        while step < span:
            shift = step * unit
            length = flat[0].numel() - shift
            flat = _merge_equal([m[:length] for m in flat], [m[shift:] for m in flat], count)
            count, step = 2 * count, 2 * step
    missing = shape.numel() - flat[0].numel()  # the last cells, which no kept block starts in
    return tuple(F.pad(m, (0, missing)).reshape(shape)[..., :grid_rows, :grid_cols]
                 for m in flat[:order])


def _merge_equal(a: list[torch.Tensor], b: list[torch.Tensor], count: int
                 ) -> list[torch.Tensor]:
    """Mean and central sums of powers 2.. (as many as given, up to 4) of the union of two
    disjoint sets of `count` values each, from theirs."""
    delta = b[0] - a[0]
    delta2 = delta * delta
    merged = [(a[0] + b[0]) / 2, a[1] + b[1] + delta2 * (count / 2)]
    if len(a) > 2:
        merged.append(a[2] + b[2] + 1.5 * delta * (b[1] - a[1]))
        merged.append(a[3] + b[3] + delta2 * delta2 * (count / 8)
                      + 1.5 * delta2 * (a[1] + b[1]) + 2 * delta * (b[2] - a[2]))
    return merged


def block_mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (normalised by 255) of each 16 x 16 block, on the grid."""
    mean, s2 = _block_moments(x, BLOCK, 2)
    return mean, torch.sqrt(s2 / (BLOCK * BLOCK - 1))


def block_min_std(x: torch.Tensor) -> torch.Tensor:
    """ical_std's modified std of the reference, on the grid: the smallest 8 x 8 block std
    (normalised by 63) among the block at the corner and the blocks one corner (4 pixels) down,
    right and diagonally on, which the C code reads at offset +5 (inside their 4 x 4 cells)."""
    _, s2 = _block_moments(x, SUB_BLOCK, 2)
    std = torch.sqrt(s2 / (SUB_BLOCK * SUB_BLOCK - 1))
    down = _next_corner(std, x.shape[-2], dim=-2)
    right = _next_corner(std, x.shape[-1], dim=-1)
    diagonal = _next_corner(down, x.shape[-1], dim=-1)
    return torch.minimum(torch.minimum(std, down), torch.minimum(right, diagonal))


def _next_corner(grid: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """The grid value one corner on along `dim` where ical_std reads it (corner + 5 < length - 15,
    so for a length divisible by 4 the last corner is never read), +inf elsewhere."""
    count = grid.shape[dim]
    inf = torch.full_like(grid.narrow(dim, 0, 1), math.inf)
    shifted = torch.cat([grid.narrow(dim, 1, count - 1), inf], dim=dim)
    corners = torch.arange(count, device=grid.device) * STRIDE
    read = (corners + STRIDE + 1 < length - (BLOCK - 1)).view(-1, *[1] * (-dim - 1))
    return torch.where(read, shifted, torch.full_like(shifted, math.inf))


def block_std_skew_kurt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ical_stat on the grid: std normalised by 255, skewness and kurtosis (not excess) with
    the 1/256 moments; both 0 where the block is flat."""
    _, s2, s3, s4 = _block_moments(x, BLOCK, 4)
    count = BLOCK * BLOCK
    std = torch.sqrt(s2 / (count - 1))
    var = s2 / count
    flat = var == 0
    safe = torch.where(flat, torch.ones_like(var), var)
    skew = torch.where(flat, torch.zeros_like(var), (s3 / count) / safe.pow(1.5))
    kurt = torch.where(flat, torch.zeros_like(var), (s4 / count) / safe**2)
    return std, skew, kurt


def grid_to_pixels(grid: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Paint each grid value on its 4 x 4 cell; pixels no block starts in stay 0."""
    cells = grid.repeat_interleave(STRIDE, dim=-2).repeat_interleave(STRIDE, dim=-1)
    return F.pad(cells, (0, cols - cells.shape[-1], 0, rows - cells.shape[-2]))


def edge_rms(pixel_map: torch.Tensor) -> torch.Tensor:
    """norm(mp2(:)) / sqrt(numel(mp2)) of mp2 = mp(BSIZE+1:end-BSIZE-1, BSIZE+1:end-BSIZE-1)."""
    rows, cols = pixel_map.shape[-2:]
    crop = pixel_map[..., EDGE : rows - EDGE - 1, EDGE : cols - EDGE - 1]
    return torch.sqrt(fixed_mean(crop**2, (-2, -1)))


# ---- detection stage --------------------------------------------------------------------


def detection_mask(ref_mean: torch.Tensor, ref_min_std: torch.Tensor,
                   err_std: torch.Tensor) -> torch.Tensor:
    """hi_index's mask from the log contrasts of the reference and of the error."""
    ci_ref = torch.log(ref_min_std / ref_mean)
    ci_dst = torch.log(err_std / ref_mean)
    ci_dst = torch.where(ref_mean < MEAN_THRESHOLD, torch.full_like(ci_dst, -math.inf), ci_dst)
    slope_threshold = C_SLOPE * (ci_ref - CI_THRESHOLD) + CD_THRESHOLD
    above = (ci_ref > CI_THRESHOLD) & (ci_dst > slope_threshold)
    below = (ci_ref <= CI_THRESHOLD) & (ci_dst > CD_THRESHOLD)
    zero = torch.zeros_like(ci_dst)
    mask = torch.where(above, ci_dst - slope_threshold, zero)
    mask = torch.where(below, ci_dst - CD_THRESHOLD, mask)
    return mask / MS_SCALE


def local_mse(ref_gray: torch.Tensor, dist_gray: torch.Tensor) -> torch.Tensor:
    """imfilter((ref - dst).^2, ones(16)/256, 'symmetric', 'same', 'conv'): the mean over rows
    p-7..p+8 and columns q-7..q+8 with mirrored (edge-repeating) borders."""
    squared = (ref_gray - dist_gray) ** 2
    padded = symmetric_pad(squared, (BLOCK - 1) // 2, BLOCK // 2)
    # box sums as differences of running sums: the squares of differences of integer gray
    # values are integers, so every sum is exact (< 2^53) in any order
    for dim in (-2, -1):
        running = F.pad(padded.cumsum(dim), (1, 0) if dim == -1 else (0, 0, 1, 0))
        length = running.shape[dim] - BLOCK
        padded = running.narrow(dim, BLOCK, length) - running.narrow(dim, 0, length)
    return padded / (BLOCK * BLOCK)


# ---- combination ------------------------------------------------------------------------


def blend_alpha(d_detect: torch.Tensor) -> torch.Tensor:
    """alpha = 1 / (1 + beta1 * d_detect^beta2)."""
    return 1.0 / (1.0 + BETA1 * d_detect.pow(BETA2))


def combine(d_detect: torch.Tensor, d_appear: torch.Tensor) -> torch.Tensor:
    """MAD = d_detect^alpha * d_appear^(1 - alpha)."""
    alpha = blend_alpha(d_detect)
    return d_detect.pow(alpha) * d_appear.pow(1.0 - alpha)


# ---- the metric -------------------------------------------------------------------------


@dataclass(frozen=True)
class MADReference:
    """Reference-side work of MAD for one reference image."""

    gray: torch.Tensor          # H x W, 0..255
    csf: torch.Tensor           # H x W, centred CSF
    filtered: torch.Tensor      # H x W, CSF-filtered lightness
    mean: torch.Tensor          # grid, 16 x 16 block mean of `filtered`
    min_std: torch.Tensor       # grid, ical_std's modified std of `filtered`
    gabor_bank: torch.Tensor    # 20 x H x W complex, fftshifted log-Gabor filters, (scale,
                                # orientation) in order
    gabor_stats: torch.Tensor   # 20 x 3 x grid: std, skewness, kurtosis of |responses|


class MAD(Metric):
    """MAD (Larson and Chandler 2010) on the rounded gray image 0..255; lower is better."""

    key = "mad"
    higher_is_better = False
    best = 0.0
    min_size = 2 * EDGE + 2  # the edge crop keeps at least one row and column

    def __init__(self, device: torch.device | str = "cpu"):
        super().__init__(device)
        self._banks: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _filters(self, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The CSF and the log-Gabor bank (complex: multiplied by spectra, never promoted
        per pass) for this size, kept for the last size seen."""
        if (rows, cols) not in self._banks:
            bank = log_gabor_bank(rows, cols, self.device).flatten(0, 1)
            self._banks = {(rows, cols): (make_csf(rows, cols, self.device),
                                          bank.to(torch.complex128))}
        return self._banks[(rows, cols)]

    def prepare(self, ref: torch.Tensor) -> MADReference:
        gray = gray_rounded(ref, DTYPE)[0, 0]
        csf, bank = self._filters(*gray.shape)
        filtered = csf_filter(lightness(gray), csf)
        mean, _ = block_mean_std(filtered)
        responses = magnitude(torch.fft.ifft2(full_spectrum(gray) * bank))
        stats = torch.stack(block_std_skew_kurt(responses), dim=1)
        return MADReference(gray, csf, filtered, mean, block_min_std(filtered), bank, stats)

    def compare(self, prepared: MADReference, dist: torch.Tensor) -> torch.Tensor:
        gray = gray_rounded(dist, DTYPE)[:, 0]
        d_detect = self.detection(prepared, gray)
        d_appear = self.appearance(prepared, gray)
        return combine(d_detect, d_appear)

    @staticmethod
    def detection(prepared: MADReference, gray: torch.Tensor) -> torch.Tensor:
        """d_detect of N gray images (N x H x W, 0..255) against the prepared reference."""
        rows, cols = gray.shape[-2:]
        error = csf_filter(lightness(gray), prepared.csf) - prepared.filtered
        _, err_std = block_mean_std(error)
        mask = detection_mask(prepared.mean, prepared.min_std, err_std)
        weighted = grid_to_pixels(mask, rows, cols) * local_mse(prepared.gray, gray)
        return edge_rms(weighted) * DETECT_SCALE

    def appearance(self, prepared: MADReference, gray: torch.Tensor) -> torch.Tensor:
        """d_appear of N gray images (N x H x W, 0..255) against the prepared reference: the
        log-Gabor responses of several filters per pass (all 20 on a GPU)."""
        rows, cols = gray.shape[-2:]
        spectra = full_spectrum(gray)[:, None]
        cuda = self.device.type == "cuda"
        per_pass = len(prepared.gabor_bank) if cuda else 1  # CPU: cache-sized passes of
        per_group = len(gray) if cuda else IMAGES_PER_GROUP  # one filter on a few images
        return edge_rms(grid_to_pixels(torch.cat([
            self._appearance_grid(prepared, spectra[first : first + per_group], per_pass)
            for first in range(0, len(gray), per_group)]), rows, cols))

    @staticmethod
    def _appearance_grid(prepared: MADReference, spectra: torch.Tensor, per_pass: int
                         ) -> torch.Tensor:
        """The weighted statistics differences on the block grid of N images from their
        spectra (N x 1 x H x W), `per_pass` filters at a time."""
        rows, cols = spectra.shape[-2:]
        weights = torch.tensor(scale_weights(), dtype=DTYPE, device=spectra.device)
        weights = weights.repeat_interleave(GABOR_ORIENTATIONS).view(-1, 1, 1)
        difference = torch.zeros((len(spectra), grid_size(rows), grid_size(cols)), dtype=DTYPE,
                                 device=spectra.device)
        for start in range(0, len(prepared.gabor_bank), per_pass):
            part = slice(start, start + per_pass)
            response = magnitude(torch.fft.ifft2(spectra * prepared.gabor_bank[part]))
            std, skew, kurt = block_std_skew_kurt(response)
            ref_std, ref_skew, ref_kurt = prepared.gabor_stats[part].unbind(dim=1)
            terms = ((ref_std - std).abs() + SKEW_WEIGHT * (ref_skew - skew).abs()
                     + (ref_kurt - kurt).abs())
            difference = difference + (weights[part] * terms).sum(dim=1)
        return difference
