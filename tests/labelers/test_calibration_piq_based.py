"""Calibration of GMSD, FSIMc and MS-SSIM against the official (MATLAB) values (GMSD and
MS-SSIM through piq building blocks, FSIMc without), and MAE."""

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from labelers.fsim import FSIM, pooled
from labelers.gmsd import GMSD, gmsd_of_gray, reference_gradient
from labelers.mae import MAE
from labelers.ms_ssim import MSSSIM
from labelers.phase_congruency import _frequencies, filters, matlab_median, phase_congruency

OFFICIAL = {  # shared/spec/labels.md
    "gmsd": {"I03": 0.220347639470143, "I08": 0.134631933046914},
    "fsim": {"I03": 0.6890, "I08": 0.9575},
    "ms_ssim": {"I03": 0.6733, "I08": 0.9566},
}


@pytest.mark.parametrize("pair", ["I03", "I08"])
def test_gmsd_reproduces_matlab_to_1e6(calibration_pair, pair):
    assert GMSD().score(*calibration_pair(pair)).item() == pytest.approx(
        OFFICIAL["gmsd"][pair], abs=1e-6)


def test_gmsd_on_piq_assets(piq_asset):
    goldhill = GMSD().score(piq_asset("goldhill.gif"), piq_asset("goldhill_jpeg.gif")).item()
    assert goldhill == pytest.approx(0.138012587141798, abs=1e-6)
    # The published I01 value was computed on YIQ luma (0.299, 0.587, 0.114, not rounded),
    # not on MATLAB rgb2gray; fed the same gray, the GMSD core reproduces it to 1e-12.
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)

    def gray(x):
        return (x.to(torch.float64) * luma).sum(dim=1, keepdim=True)

    ref, dist = piq_asset("I01.BMP"), piq_asset("i01_01_5.bmp")
    value = gmsd_of_gray(reference_gradient(gray(ref)), gray(dist)).item()
    assert value == pytest.approx(0.094124655829098, abs=1e-12)


@pytest.mark.parametrize("pair", ["I03", "I08"])
def test_fsimc_matches_the_official_values_to_their_4_decimals(calibration_pair, pair):
    assert FSIM().score(*calibration_pair(pair)).item() == pytest.approx(
        OFFICIAL["fsim"][pair], abs=5e-5)


def test_fsim_on_piq_assets_to_the_published_5_decimals(piq_asset):
    """FeatureSIM.m's published values (labels.md). piq's fsim gives 0.92590 on I01: its YIQ
    weights, its frequency grid (transposed), its median, epsilon and float32 differ from
    FeatureSIM.m's, and it takes |S_I S_Q|^0.03 where FeatureSIM.m takes the real part."""
    # goldhill is gray: I and Q vanish, so FSIMc equals the achromatic FSIM 0.89691.
    goldhill = FSIM().score(piq_asset("goldhill.gif"), piq_asset("goldhill_jpeg.gif")).item()
    assert goldhill == pytest.approx(0.89691, abs=5e-6)
    i01 = FSIM().score(piq_asset("I01.BMP"), piq_asset("i01_01_5.bmp")).item()
    assert i01 == pytest.approx(0.92587, abs=5e-6)


@pytest.mark.parametrize("count", [1, 2, 7, 10, 196608])
def test_phase_congruencys_median_is_matlabs(count):
    """MATLAB's median (numpy's too) is the mean of the two middle values of an even count;
    torch.median takes the lower one."""
    values = torch.rand(3, count, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    np.testing.assert_array_equal(matlab_median(values).numpy(),
                                  np.median(values.numpy(), axis=1))


@pytest.mark.parametrize("n", [8, 9, 192, 257])
def test_phase_congruencys_frequency_grid_is_phasecong2s(n):
    """phasecong2's ranges: -n/2 .. n/2 - 1 over n for an even side (numpy's shifted FFT
    frequencies), -1/2 .. 1/2 in n steps for an odd one."""
    expected = np.fft.fftshift(np.fft.fftfreq(n)) if n % 2 == 0 else np.linspace(-0.5, 0.5, n)
    np.testing.assert_allclose(_frequencies(n, torch.device("cpu")).numpy(), expected,
                               rtol=0, atol=1e-15)


def test_phase_congruency_of_a_flat_image_is_0_and_fsim_stays_finite():
    """phasecong2 divides 0 by 0 where no filter responds (a flat image): no congruency."""
    black = torch.zeros(1, 3, 64, 80, dtype=torch.uint8)
    photo = torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    image = torch.zeros(1, 64, 80, dtype=torch.float64)
    assert not phase_congruency(image, filters(64, 80)).any()
    score = FSIM().score(photo, black).item()
    assert 0 < score < 1


@pytest.mark.parametrize(("period", "expected"), [(2, None), (4, None), (6, 1.0)])
def test_stripes_finer_than_the_shortest_wavelength_have_no_fsim_even_against_themselves(
        period, expected):
    """FeatureSIM.m pools by the sum of PCm: stripes finer than the log-Gabor bank's 6-pixel
    shortest wavelength have no phase congruency, so 0 / 0, as docs/labels-spec-notes.md
    says; at 6 pixels the filters respond and an image against itself scores 1."""
    rows = (np.arange(180) // (period // 2)) % 2 * 255
    image = torch.from_numpy(np.broadcast_to(rows[:, None], (180, 190)).astype(np.uint8))
    image = image.expand(1, 3, 180, 190)
    score = FSIM().score(image, image).item()
    if expected is None:
        assert np.isnan(score)
    else:
        assert score == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("pair", ["I03", "I08"])
def test_ms_ssim_within_5e3_of_official(calibration_pair, pair):
    # A faithful msssim.m port gives 0.6700 on I03; the configuration behind the official
    # 0.6733 is unknown (labels.md), hence the looser tolerance.
    assert MSSSIM().score(*calibration_pair(pair)).item() == pytest.approx(
        OFFICIAL["ms_ssim"][pair], abs=5e-3)


# IQA-PyTorch's "org" MS-SSIM row of January 2022 (ResultsCalibra/results_original.csv,
# commit e144d24): msssim.m fed the Y of rgb2ycbcr, unrounded. The later row that labels.md
# holds (0.6733, 0.9566) no configuration a review tried reproduces (session 19: rounded and
# unrounded grays, YCbCr, padding, downsampling, windows, MATLAB's multissim; the closest
# fits need a dynamic range near 260 for I03 and 270 for I19); this one the core gives exactly.
PYIQA_2022_YCBCR = {"I03": 0.6981, "I04": 0.9998, "I06": 0.9999, "I08": 0.9570, "I19": 0.8547}


@pytest.mark.parametrize("pair", sorted(PYIQA_2022_YCBCR))
def test_ms_ssim_core_gives_msssim_m_published_values_on_the_y_of_ycbcr(calibration_pair,
                                                                        pair, monkeypatch):
    import labelers.ms_ssim

    def y_of_ycbcr(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """MATLAB's rgb2ycbcr luma of 0..255 RGB, not rounded: 16 + (65.481, 128.553,
        24.966) / 255 . RGB."""
        weights = torch.tensor([65.481, 128.553, 24.966], dtype=dtype).view(1, 3, 1, 1)
        return 16 + (rgb.to(dtype) * weights / 255).sum(dim=1, keepdim=True)

    monkeypatch.setattr(labelers.ms_ssim, "gray_rounded", y_of_ycbcr)
    assert MSSSIM().score(*calibration_pair(pair)).item() == pytest.approx(
        PYIQA_2022_YCBCR[pair], abs=5e-5)


def test_ms_ssim_port_value_on_i03(calibration_pair):
    assert MSSSIM().score(*calibration_pair("I03")).item() == pytest.approx(0.6700, abs=5e-4)


def test_mae_is_the_mean_absolute_difference_in_unit_rgb():
    ref = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    dist = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    dist[0, 0] = 255  # one channel fully on: mean error 1/3
    dist[1] = 51  # every value off by 0.2
    torch.testing.assert_close(MAE().score(ref, dist), torch.tensor([1 / 3, 0.2],
                               dtype=torch.float64))


@pytest.mark.parametrize(("height", "width", "factor"), [(480, 640, 2), (640, 700, 3),
                                                         (385, 513, 2), (255, 300, 1)])
def test_fsim_pools_as_featuresim_m(height, width, factor):
    """FeatureSIM.m's Y, I, Q (its own weights), each conv2(P, fspecial('average', F), 'same')
    then P(1:F:end, 1:F:end), F = round(min / 256) half away from zero (640 / 256 = 2.5 -> 3).
    MATLAB's 'same' is the full convolution from index ceil((F - 1) / 2) (scipy's 'same' starts
    at (F - 1) // 2: another part for even F)."""
    image = torch.randint(0, 256, (1, 3, height, width), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(height))
    r, g, b = image[0].double().numpy()
    planes = (0.299 * r + 0.587 * g + 0.114 * b, 0.596 * r - 0.274 * g - 0.322 * b,
              0.211 * r - 0.523 * g + 0.312 * b)
    kernel = np.ones((factor, factor)) / factor**2
    start = factor // 2  # ceil((F - 1) / 2)
    expected = np.stack([
        convolve2d(plane, kernel, mode="full")[start:start + height, start:start + width]
        [::factor, ::factor] for plane in planes])
    np.testing.assert_allclose(pooled(image)[0].numpy(), expected, rtol=0, atol=1e-10)
