"""VIF (labelers/vif.py): the published sp5 taps, corrDn's 'reflect1' edges, the pyramid, the
subband bookkeeping of vifvec.m, the GSM and channel estimates, and the calibration values.

Pinned numbers marked "C code" come from matlabPyrTools' corrDn C source (as shipped in
pyrtools 1.1.1) run on the same inputs; those marked "transcription" from a literal line-by-line
transcription of vifvec.m on top of that C code."""

import numpy as np
import pytest
import torch

from labelers import vif
from labelers.errors import InputTooSmallError, LabelerError
from labelers.inputs import gray_rounded
from labelers.vif import (
    SUBBANDS,
    TOL,
    VIF,
    at_block_centres,
    border_blocks,
    channel,
    corr_dn,
    gsm_parameters,
    sp5_filters,
    spyr_bands,
    window_side,
    wtree_cell,
)
from tests.conftest import on_cuda
from tests.labelers.conftest import tensor

CPU = torch.device("cpu")


def _gray_rgb(gray: np.ndarray) -> torch.Tensor:
    """R = G = B = gray: MATLAB rgb2gray returns gray itself."""
    return tensor(np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2))


def _as_image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64))[None, None]


@pytest.fixture(scope="module")
def astronaut_gray(small_image) -> torch.Tensor:
    """The committed 176 x 192 image as rounded gray, 1 x 1 x H x W float64."""
    return gray_rounded(tensor(small_image), torch.float64)


# --- the sp5Filters taps -------------------------------------------------------------------------


def test_sp5_taps_are_the_published_ones():
    lo0, lo, bands = sp5_filters(CPU)
    assert lo0.shape == (5, 5) and lo.shape == (9, 9) and bands.shape == (6, 7, 7)
    assert lo0[2, 2] == 0.40304148 and lo0[0, 0] == 0.00341614 and lo0[1, 2] == 0.15925570
    assert lo[4, 4] == 2 * 0.10096540 and lo[0, 0] == 2 * 0.00085404  # lofilt = 2 * [...]
    # bfilts(:, 1), reshaped column by column: its first column and its middle (zero) column
    np.testing.assert_array_equal(
        bands[0, :, 0], [0.00277643, 0.00496194, 0.01026699, 0.01455399, 0.01026699,
                         0.00496194, 0.00277643])
    np.testing.assert_array_equal(bands[0, :, 3], 0.0)
    # bfilts(:, 2) starts -0.00343249 -0.00640815 -0.00073141 0.01124321 (first column)
    np.testing.assert_array_equal(bands[1, :4, 0], [-0.00343249, -0.00640815, -0.00073141,
                                                    0.01124321])
    # bfilts(:, 4)'s 22nd tap (row 1 of column 4), bfilts(:, 3)'s 24th (row 3 of column 4)
    assert bands[3, 0, 3] == -0.01455399 and bands[2, 2, 3] == 0.12227230


def test_sp5_taps_have_the_published_symmetries():
    lo0, lo, bands = sp5_filters(CPU)
    for low in (lo0, lo):  # 8-fold symmetric low-passes
        torch.testing.assert_close(low, low.T, rtol=0, atol=0)
        torch.testing.assert_close(low, low.flip(0), rtol=0, atol=0)
    # DC gains: lo0filt about 1, lofilt about 2 (the factor of the 2 x 2 subsampling)
    assert lo0.sum().item() == pytest.approx(0.99917984, abs=1e-12)
    assert lo.sum().item() == pytest.approx(2.00000016, abs=1e-12)
    # the oriented filters are odd (no DC) and orientation 4 is orientation 1 turned by 90 deg
    torch.testing.assert_close(bands, -bands.flip(1, 2), rtol=0, atol=0)
    torch.testing.assert_close(bands[3], -bands[0].T, rtol=0, atol=0)
    torch.testing.assert_close(bands[0], -bands[0].flip(1), rtol=0, atol=0)  # d/dx: odd in x


# sp5Filters' hi0filt as published (9 x 9, symmetric): its top-left 5 x 5 quarter.
HI0_QUARTER = (
    (-0.00033429, -0.00113093, -0.00171484, -0.00133542, -0.00080639),
    (-0.00113093, -0.00350017, -0.00243812, 0.00631653, 0.01261227),
    (-0.00171484, -0.00243812, -0.00290081, -0.00673482, -0.00981051),
    (-0.00133542, 0.00631653, -0.00673482, -0.07027679, -0.11435863),
    (-0.00080639, 0.01261227, -0.00981051, -0.11435863, 0.81380200),
)


def test_sp5_filters_split_the_spectrum_into_a_nearly_tight_frame():
    # Reconstruction condition of the steerable pyramid (Simoncelli and Freeman 1995):
    # |H0|^2 + |L0|^2 (|L1|^2 + sum_b |B_b|^2) = 1, L1 = lofilt / 2. The published sp5 taps meet
    # it to their design accuracy (max 0.050, rms 0.0155); a wrong tap or reshape breaks it.
    quarter = np.array(HI0_QUARTER)
    hi0 = np.block([[quarter, quarter[:, -2::-1]], [quarter[-2::-1], quarter[-2::-1, -2::-1]]])
    lo0, lo, bands = (f.numpy() for f in sp5_filters(CPU))

    def power(taps):
        return np.abs(np.fft.fft2(taps, (64, 64))) ** 2

    total = power(hi0) + power(lo0) * (power(lo / 2) + sum(power(b) for b in bands))
    assert np.abs(total - 1).max() < 0.051
    assert np.sqrt(((total - 1) ** 2).mean()) < 0.016


# --- corrDn with 'reflect1' edges ----------------------------------------------------------------


def test_corr_dn_mirrors_about_the_edge_samples_and_does_not_flip_the_filter():
    image = _as_image(np.arange(12.0).reshape(3, 4))
    up_left, down_right = torch.zeros(2, 3, 3, dtype=torch.float64)
    up_left[0, 0] = down_right[2, 2] = 1
    # result(r, c) = image(r - 1, c - 1) with row -1 read as row 1, column -1 as column 1
    np.testing.assert_array_equal(corr_dn(image, up_left[None])[0, 0],
                                  [[5, 4, 5, 6], [1, 0, 1, 2], [5, 4, 5, 6]])
    # result(r, c) = image(r + 1, c + 1) with row 3 read as row 1, column 4 as column 2
    np.testing.assert_array_equal(corr_dn(image, down_right[None])[0, 0],
                                  [[5, 6, 7, 6], [9, 10, 11, 10], [5, 6, 7, 6]])


def test_block_centre_windows_match_corrdn_with_start_step_and_stop():
    # corrDn(x, ones(5), 'reflect1', [3 3], [2 2], [5 5]) on a 6 x 6 image (C code), whose
    # box means at_block_centres returns
    x = np.arange(36.0).reshape(6, 6) ** 1.5
    got = at_block_centres(_as_image(x), 5)[0, 0] * 25
    expected = [[886.2283342350188, 1144.8465816313792], [2834.4743289751104, 3235.8164990086652]]
    np.testing.assert_allclose(got, expected, rtol=1e-14)
    padded = np.pad(x, 2, mode="reflect")  # the same by definition: 5 x 5 sums at (1,1) ... (4,4)
    by_hand = [[padded[r : r + 5, c : c + 5].sum() for c in (1, 4)] for r in (1, 4)]
    np.testing.assert_allclose(got, by_hand, rtol=1e-14)


@pytest.mark.parametrize(("shape", "step", "start", "stop", "expected"), [
    ((9, 9), 2, (0, 0), None, (5, 5)),      # the low-pass: ceil(size / 2)
    ((10, 13), 2, (0, 0), None, (5, 7)),
    ((12, 15), 3, (1, 1), (11, 14), (4, 5)),  # vifvec.m's block centres
    ((12, 15), 3, (1, 2), (10, 15), (3, 5)),
])
def test_corr_dn_output_size_follows_start_step_and_stop(shape, step, start, stop, expected):
    image = _as_image(np.ones(shape))
    out = corr_dn(image, torch.ones(1, 3, 3, dtype=torch.float64), step, start, stop)
    assert out.shape[-2:] == expected
    np.testing.assert_allclose(out, 9.0)  # a constant image stays constant through the mirror


# --- the pyramid ---------------------------------------------------------------------------------


# Sum of squares of the 24 oriented bands of buildSpyr(gray, 4, 'sp5Filters', 'reflect1') of the
# committed 176 x 192 image, level (finest first) x orientation (C code).
BAND_ENERGY = (
    (2.341038560842567e+06, 2.151335636177392e+06, 1.667125758679317e+06,
     1.588077725666114e+06, 1.286240667425872e+06, 1.635778187353168e+06),
    (4.610257323234134e+06, 4.236319575419541e+06, 3.046600431855611e+06,
     2.572737526975321e+06, 2.156402525509995e+06, 2.933272440232605e+06),
    (6.609350255279765e+06, 6.585283093242480e+06, 5.394875796132635e+06,
     4.048145916327830e+06, 3.141600909848878e+06, 4.246417333006123e+06),
    (8.793090260812420e+06, 7.141940106402096e+06, 7.038664550874464e+06,
     5.493761438537418e+06, 3.300855835337875e+06, 5.357217811104461e+06),
)


def test_pyramid_band_energies_match_buildspyr(astronaut_gray):
    levels = spyr_bands(astronaut_gray, tuple(range(6)))
    assert [level.shape[-2:] for level in levels] == [(176, 192), (88, 96), (44, 48), (22, 24)]
    energy = torch.stack([(level**2).sum(dim=(0, 2, 3)) for level in levels])
    np.testing.assert_allclose(energy, BAND_ENERGY, rtol=1e-12)


def test_reflect1_zeroes_derivative_bands_on_the_edges_they_cross(astronaut_gray):
    # Mirrored about an edge sample the image is even there, and the filter of orientation 1
    # (a d/dx) is odd in x: the band is exactly 0 along the left and right columns; the one of
    # orientation 4 (d/dy) along the top and bottom rows. Other edge handling breaks this.
    for level in spyr_bands(astronaut_gray, (0, 3)):
        assert level[0, 0, :, [0, -1]].abs().max() < 1e-9
        assert level[0, 1, [0, -1], :].abs().max() < 1e-9
        assert level[0, 0, [0, -1], :].abs().max() > 1.0


def test_pyramid_orientations_are_where_the_stripes_say():
    columns = np.cos(np.arange(96) / 3.0) * 100  # varies along x only: vertical stripes
    levels = spyr_bands(_as_image(np.tile(columns, (80, 1))), (0, 3))
    for level in levels:
        assert level[0, 1].abs().max() < 1e-9       # d/dy of a column-constant image
        assert level[0, 0].abs().max() > 1.0


def test_pyramid_bands_are_linear_and_blind_to_dc(astronaut_gray):
    twice = torch.cat([astronaut_gray, 2 * astronaut_gray - 7])
    for single, double in zip(spyr_bands(astronaut_gray, (0, 3)), spyr_bands(twice, (0, 3)),
                              strict=True):
        torch.testing.assert_close(double[:1], single, rtol=0, atol=1e-10)
        torch.testing.assert_close(double[1:], 2 * single, rtol=0, atol=1e-9)  # no DC in bands


# --- vifvec.m's subbands -------------------------------------------------------------------------


def test_vifvec_cells_are_orientations_1_and_4_of_every_level():
    assert SUBBANDS == (4, 7, 10, 13, 16, 19, 22, 25)
    assert [wtree_cell(cell) for cell in SUBBANDS] == [
        (3, 3), (3, 0), (2, 3), (2, 0), (1, 3), (1, 0), (0, 3), (0, 0)
    ]
    assert wtree_cell(2) == (3, 5) and wtree_cell(20) == (0, 5)
    for residual in (1, 26):  # the low-pass and high-pass residuals
        with pytest.raises(ValueError, match="residual"):
            wtree_cell(residual)


def test_windows_grow_with_the_level_and_set_the_border_cut():
    assert [window_side(cell) for cell in SUBBANDS] == [3, 3, 5, 5, 9, 9, 17, 17]
    assert [border_blocks(window_side(cell)) for cell in SUBBANDS] == [1, 1, 1, 1, 2, 2, 3, 3]


# --- refparams_vecgsm and vifsub_est_M -----------------------------------------------------------


def test_gsm_covariance_and_s_field_follow_refparams_vecgsm():
    y = np.random.default_rng(3).normal(0, 5, (12, 15))
    covariance, eigenvalues, s_field = gsm_parameters(_as_image(y))
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(covariance), rtol=1e-12)
    windows = np.lib.stride_tricks.sliding_window_view(y, (3, 3)).reshape(-1, 9)
    np.testing.assert_allclose(covariance, np.cov(windows.T, bias=True), rtol=1e-12)
    assert s_field.shape == (4, 5)
    block = y[6:9, 3:6].reshape(9)  # block (2, 1)
    expected = block @ np.linalg.solve(np.cov(windows.T, bias=True), block) / 9
    assert s_field[2, 1].item() == pytest.approx(expected, rel=1e-10)


@pytest.fixture(scope="module")
def prepared_astronaut(astronaut_gray):
    return VIF().prepare(_gray_rgb(astronaut_gray[0, 0].numpy()))


def _dist_band(prepared, gray: torch.Tensor, index: int) -> torch.Tensor:
    sub = prepared.subbands[index]
    levels = spyr_bands(gray, vif.COMPUTED_ORIENTATIONS)
    return vif.crop_to_blocks(levels[sub.level][:, sub.slot, None])


@pytest.mark.parametrize("index", [0, 7])  # the coarsest (3 x 3 window) and finest (17 x 17) bands
def test_channel_of_a_scaled_image_is_its_gain_without_noise(prepared_astronaut, astronaut_gray,
                                                             index):
    # halving is exact in floating point: cov = ss_x / 2, ss_y = ss_x / 4, g = cov / (ss_x + tol)
    sub = prepared_astronaut.subbands[index]
    gain, noise = channel(sub, _dist_band(prepared_astronaut, 0.5 * astronaut_gray, index))
    variance = vif.crop_border(sub.variance, vif.border_blocks(sub.side))
    expected = torch.where(variance < TOL, 0.0, 0.5 * variance / (variance + TOL))
    torch.testing.assert_close(gain, expected, rtol=1e-12, atol=0)
    assert noise.min() == TOL and (noise <= 1e-15 * variance + TOL).all()


def test_negative_gain_is_cut_to_zero_and_all_variance_becomes_noise(prepared_astronaut,
                                                                     astronaut_gray):
    sub = prepared_astronaut.subbands[7]
    dist = _dist_band(prepared_astronaut, -astronaut_gray, 7)
    gain, noise = channel(sub, dist)
    np.testing.assert_array_equal(gain, 0.0)
    # vifvec.m sets sv^2 to the distorted window's variance SUM (not divided by the window area)
    blocks = vif.border_blocks(sub.side)
    np.testing.assert_allclose(noise, vif.crop_border(sub.variance, blocks), rtol=1e-9)


def test_halved_contrast_keeps_the_information_of_a_quarter_snr(prepared_astronaut):
    # gray = 2 k, distorted k: every band is halved exactly, so g = 1/2, sv^2 = tol and
    # VIF = sum log2(1 + s lambda / (4 (tol + sigma_nsq))) / sum log2(1 + s lambda / sigma_nsq)
    even = 2 * np.random.default_rng(5).integers(0, 128, (96, 120))
    metric = VIF()
    prepared = metric.prepare(_gray_rgb(even))
    kept = sum(vif.information(sub.s_field[None, None] / (4 * (TOL + vif.SIGMA_NSQ)),
                               sub.eigenvalues) for sub in prepared.subbands)
    value = metric.compare(prepared, _gray_rgb(even // 2))
    assert value.item() == pytest.approx((kept / prepared.information).item(), rel=1e-9)
    assert 0.3 < value.item() < 0.9


def test_flat_images(astronaut_gray):
    metric = VIF()
    texture = _gray_rgb(astronaut_gray[0, 0].numpy())
    flat = _gray_rgb(np.full((176, 192), 90))
    assert metric.score(texture, flat).item() == 0.0  # g = 0 everywhere: nothing kept
    with pytest.raises(LabelerError, match="flat"):
        metric.score(flat, texture)


def _ramp_and_stripes() -> list[np.ndarray]:
    ramp = np.tile(np.linspace(0, 255, 256).round(), (192, 1))
    stripes = np.tile((np.arange(256) // 8) % 2 * 200 + 20, (192, 1))
    halves = np.zeros((192, 256))
    halves[:, 128:] = 255
    return [ramp, stripes, halves]


@pytest.mark.parametrize("reference", _ramp_and_stripes(), ids=["ramp", "stripes", "halves"])
def test_a_reference_varying_along_one_direction_only_is_refused(reference):
    """Every row the same: its 3 x 3 neighbourhoods have three equal rows (rank 3 at most, by
    numpy), and so do those of every subband (filtering keeps the rows equal), so C_u is
    singular and VIF undefined: a LabelerError (which leaves the reference out of a run), not
    a linear-algebra error that fails its shard."""
    windows = np.lib.stride_tricks.sliding_window_view(reference, (3, 3)).reshape(-1, 9)
    assert np.linalg.matrix_rank(np.cov(windows.T)) <= 3
    with pytest.raises(LabelerError, match="C_u is singular"):
        VIF().score(_gray_rgb(reference), _gray_rgb(reference))


def test_short_side_below_72_is_rejected(astronaut_gray):
    # buildSpyr(im, 4, 'sp5Filters') needs floor(floor(floor(side / 2) / 2) / 2) >= 9
    gray = astronaut_gray[0, 0].numpy()
    metric = VIF()
    with pytest.raises(InputTooSmallError):
        metric.score(_gray_rgb(gray[:71]), _gray_rgb(gray[:71]))
    assert metric.score(_gray_rgb(gray[:72]), _gray_rgb(gray[:72])).item() == pytest.approx(1.0)


def test_chunks_give_the_batch_values(noisy_versions, monkeypatch):
    ref, dist = noisy_versions
    whole = VIF().score(ref, dist)
    chunked = VIF()
    monkeypatch.setattr(chunked, "cpu_chunk", 2)
    torch.testing.assert_close(chunked.score(ref, dist), whole, rtol=0, atol=1e-13)


# --- calibration ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vif_of(calibration_pair):
    """vif_of("I03"): VIF of a calibration pair, computed once per module."""
    scores = {}

    def score(name: str) -> float:
        if name not in scores:
            scores[name] = VIF().score(*calibration_pair(name)).item()
        return scores[name]
    return score


@pytest.mark.parametrize(("name", "official"), [("I03", 0.0172), ("I08", 0.9103)])
def test_official_values_on_calibration_pairs(vif_of, name, official):
    assert vif_of(name) == pytest.approx(official, abs=1e-3)


@pytest.mark.parametrize(("name", "value"), [
    ("I03", 0.017228688786146494),
    ("I04", 0.9890720680689735),   # colour only: gray differs by at most 1
    ("I06", 0.9924375842180064),   # colour only
    ("I08", 0.9102893647528149),
    ("I19", 0.1745105941511102),
])
def test_values_of_the_literal_transcription(vif_of, name, value):
    assert vif_of(name) == pytest.approx(value, abs=1e-10)


@on_cuda
def test_cuda_matches_cpu(noisy_versions):
    ref, dist = noisy_versions
    cpu = VIF("cpu").score(ref, dist)
    cuda = VIF("cuda").score(ref, dist).cpu()
    torch.testing.assert_close(cuda, cpu, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("size", "step", "filters"), [(7, 1, 4), (9, 2, 1), (3, 1, 2)])
def test_the_cpu_tap_sum_is_the_convolution_cuda_runs(size, step, filters):
    """corr_dn's CPU path (a sum tap by tap) and its CUDA path (F.conv2d) compute one
    correlation: on the CPU both agree within float64 rounding, so a CUDA label differs from
    its CPU one by rounding only (the device check compares them on a GPU)."""
    import torch.nn.functional as F

    rng = np.random.default_rng(size)
    window = torch.from_numpy(rng.uniform(0, 255, (2, 1, 40, 36)))
    taps = torch.from_numpy(rng.normal(size=(filters, size, size)))
    by_taps = vif._tap_sum(window, taps, step)
    by_conv = F.conv2d(window, taps[:, None], stride=step)
    assert by_taps.shape == by_conv.shape
    assert torch.allclose(by_taps, by_conv, rtol=1e-12, atol=1e-9)


def test_the_cpu_outer_sum_is_the_matrix_product_cuda_runs():
    rng = np.random.default_rng(3)
    centred = torch.from_numpy(rng.normal(size=(9, 5000)))
    assert torch.allclose(vif._outer_sum(centred), centred @ centred.T, rtol=1e-12, atol=1e-9)
