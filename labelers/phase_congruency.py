"""Phase congruency as phasecong2.m (Kovesi; the copy FeatureSIM.m calls) computes it, in
float64: log-Gabor filters of 4 scales (wavelengths 6, 12, 24, 48) x 4 orientations (0, 45,
90, 135 degrees; sigma_f 0.55, angular spread pi / 4 / 1.2), each times a low-pass of radius
0.45 and order 15, built on MATLAB's frequency grid (x along columns and y along rows, ranges
-(n - 1) / 2 .. (n - 1) / 2 over n - 1 for an odd side, -n / 2 .. n / 2 - 1 over n for an even
one); per orientation the noise threshold comes from MATLAB's median (the mean of the two
middle values for an even count) of the smallest scale's squared amplitude, k = 2, divided by
1.7; epsilon 1e-4. PC = the orientations' summed thresholded energies over their summed
amplitudes; 0 where no filter responds at all (a flat image, where phasecong2 divides 0 by 0).
The filters depend on the image's size only: built once per reference."""

import math
from dataclasses import dataclass

import numpy as np
import torch

from labelers.fixed_bits import fixed_sum

SCALES = ORIENTATIONS = 4
MIN_WAVELENGTH, MULT, SIGMA_ON_F, D_THETA_ON_SIGMA = 6.0, 2.0, 0.55, 1.2
NOISE_K, EPSILON = 2.0, 1e-4
LOWPASS_CUTOFF, LOWPASS_ORDER = 0.45, 15
# T = (tau sqrt(pi / 2) + k sqrt((2 - pi / 2) tau^2)) / 1.7, for tau >= 0
THRESHOLD_PER_TAU = (math.sqrt(math.pi / 2) + NOISE_K * math.sqrt(2 - math.pi / 2)) / 1.7


@dataclass(frozen=True)
class Filters:
    """phasecong2's filters of one image size."""
    bank: torch.Tensor        # ORIENTATIONS x SCALES x H x W: radial x angular, float64
    noise_gain: torch.Tensor  # ORIENTATIONS: EstNoiseEnergy2 / meanE2n (filters' own sums)


def _frequencies(n: int, device: torch.device) -> torch.Tensor:
    """phasecong2's xrange / yrange for a side of n samples."""
    steps = torch.arange(n, dtype=torch.float64, device=device)
    if n % 2:
        return (steps - (n - 1) / 2) / (n - 1)
    return (steps - n // 2) / n


def filters(height: int, width: int, device: torch.device | str = "cpu") -> Filters:
    """The log-Gabor bank of an H x W image and each orientation's noise gain."""
    device = torch.device(device)
    y, x = torch.meshgrid(_frequencies(height, device), _frequencies(width, device),
                          indexing="ij")
    radius = torch.fft.ifftshift(torch.sqrt(x**2 + y**2))
    theta = torch.fft.ifftshift(torch.atan2(-y, x))
    lowpass = 1 / (1 + (radius / LOWPASS_CUTOFF) ** (2 * LOWPASS_ORDER))
    radius[0, 0] = 1  # no log of 0 at the zero frequency (its value is set to 0 below)
    centres = 1 / (MIN_WAVELENGTH * MULT ** torch.arange(SCALES, dtype=torch.float64,
                                                         device=device))
    radial = torch.exp(-torch.log(radius / centres.view(-1, 1, 1)) ** 2
                       / (2 * math.log(SIGMA_ON_F) ** 2)) * lowpass
    radial[:, 0, 0] = 0
    angles = torch.arange(ORIENTATIONS, dtype=torch.float64, device=device) * math.pi \
        / ORIENTATIONS
    sin_a, cos_a = torch.sin(angles).view(-1, 1, 1), torch.cos(angles).view(-1, 1, 1)
    sin_t, cos_t = torch.sin(theta), torch.cos(theta)
    distance = torch.atan2(sin_t * cos_a - cos_t * sin_a, cos_t * cos_a + sin_t * sin_a)
    theta_sigma = math.pi / ORIENTATIONS / D_THETA_ON_SIGMA
    spread = torch.exp(-distance**2 / (2 * theta_sigma**2))
    bank = spread[:, None] * radial[None]
    return Filters(bank, _noise_gain(bank))


def _noise_gain(bank: torch.Tensor) -> torch.Tensor:
    """Per orientation (2 sum(A_s^2) + 4 sum_{i<j} A_i A_j) / EM_n, A_s the filter's spatial
    form real(ifft2) * sqrt(H W) and EM_n the smallest scale's sum of squares: times meanE2n,
    phasecong2's EstNoiseEnergy2."""
    height, width = bank.shape[-2:]
    spatial = torch.fft.ifft2(bank).real * math.sqrt(height * width)
    squares = fixed_sum(spatial**2, (1, 2, 3))
    crossed = sum(fixed_sum(spatial[:, i] * spatial[:, j], (-2, -1))
                  for i in range(SCALES - 1) for j in range(i + 1, SCALES))
    return (2 * squares + 4 * crossed) / fixed_sum(bank[:, 0] ** 2, (-2, -1))


def matlab_median(values: torch.Tensor) -> torch.Tensor:
    """MATLAB's median of each row of N x K: the mean of the two middle values for even K
    (torch.median takes the lower one). On a CPU the two middle values come from numpy's
    partition (a selection, seven times faster than torch's sort of the row, and the same
    values: NaN ordered last by both); elsewhere from the sorted rows."""
    count = values.shape[1]
    middle = ((count - 1) // 2, count // 2)
    if values.device.type == "cpu":
        ordered = torch.from_numpy(np.partition(values.detach().contiguous().numpy(),
                                                sorted(set(middle)), axis=1))
    else:
        ordered = values.sort(dim=1).values
    return (ordered[:, middle[0]] + ordered[:, middle[1]]) / 2


def phase_congruency(image: torch.Tensor, bank: Filters) -> torch.Tensor:
    """PC of each image of N x H x W (float64; the size `bank` was built for)."""
    spectrum = torch.fft.fft2(image)[:, None]
    energy_all = torch.zeros_like(image)
    amplitude_all = torch.zeros_like(image)
    for orientation in range(ORIENTATIONS):
        responses = torch.fft.ifft2(spectrum * bank.bank[orientation])  # N x SCALES x H x W
        even, odd = responses.real, responses.imag
        amplitude = responses.abs()
        sum_even, sum_odd = even.sum(dim=1, keepdim=True), odd.sum(dim=1, keepdim=True)
        x_energy = torch.sqrt(sum_even**2 + sum_odd**2) + EPSILON
        mean_even, mean_odd = sum_even / x_energy, sum_odd / x_energy
        energy = (even * mean_even + odd * mean_odd
                  - (even * mean_odd - odd * mean_even).abs()).sum(dim=1)
        mean_e2n = -matlab_median(amplitude[:, 0].flatten(1) ** 2) / math.log(0.5)
        tau = torch.sqrt(mean_e2n * bank.noise_gain[orientation] / 2)
        threshold = (tau * THRESHOLD_PER_TAU).view(-1, 1, 1)
        energy_all += torch.clamp(energy - threshold, min=0)
        amplitude_all += amplitude.sum(dim=1)
    # where no filter responds at all (a flat image: phasecong2's 0 / 0, NaN), no congruency
    return torch.where(amplitude_all > 0, energy_all / amplitude_all, 0.0)
