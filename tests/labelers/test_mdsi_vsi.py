"""MDSI (MDSI.m) and VSI (VSI.m) against the reference values piq's test-suite pins on its
assets, piq's own function where it follows the MATLAB code, MATLAB's imresize, polarity on the
distortion bank, and batched scoring through the Labeler.

Reference values (photosynthesis-team/piq, tests/test_mdsi.py and tests/test_vsi.py,
"compare_with_matlab"; images in shared/calibration/piq-assets, data range 255):
- MDSI, 'sum' combination (MATLAB): goldhill vs goldhill_jpeg 0.395910876130775, I01 vs
  i01_01_5 0.338972600511665. Published to 15 digits; float64 reproduces them, held
  to 1e-13.
- VSI: I01 vs i01_01_5 0.96405, computed by VSI.m in Octave (piq pull request #119), whose
  imresize interpolates on linspace(1, n, m) without antialiasing. Run with that resize this
  code gives 0.9640494: held to 5e-6, the rounding of the published 5 decimals. MATLAB's
  imresize (antialiased, pixel-centre mapping) gives 0.9639512, the value this metric computes:
  pinned to 1e-8 against regressions (no independent MATLAB value is published).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import distortions
import labelers
from labelers import vsi
from labelers.mdsi import MDSI
from labelers.vsi import VSI, imresize, resize_rows
from tests.labelers.conftest import tensor

MATLAB_MDSI = {"goldhill": 0.395910876130775, "I01": 0.338972600511665}
OCTAVE_VSI_I01, MATLAB_VSI_I01 = 0.96405, 0.9639512400
PIQ_ASSETS = {"goldhill": ("goldhill.gif", "goldhill_jpeg.gif"), "I01": ("I01.BMP", "i01_01_5.bmp")}


@pytest.mark.parametrize("name", ["goldhill", "I01"])
def test_mdsi_reproduces_matlab_on_piq_assets(piq_asset, name):
    ref, dist = (piq_asset(file) for file in PIQ_ASSETS[name])
    assert MDSI().score(ref, dist).item() == pytest.approx(MATLAB_MDSI[name], abs=1e-13)


def test_vsi_with_octaves_imresize_reproduces_the_published_value(piq_asset, monkeypatch):
    def octave_imresize(x, height, width):  # interp2 on linspace(1, n, m): align_corners=True
        return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=True)

    monkeypatch.setattr(vsi, "imresize", octave_imresize)
    ref, dist = (piq_asset(file) for file in PIQ_ASSETS["I01"])
    assert VSI().score(ref, dist).item() == pytest.approx(OCTAVE_VSI_I01, abs=5e-6)


def test_vsi_with_matlabs_imresize_on_i01(piq_asset):
    ref, dist = (piq_asset(file) for file in PIQ_ASSETS["I01"])
    assert VSI().score(ref, dist).item() == pytest.approx(MATLAB_VSI_I01, abs=1e-8)


def test_mdsi_equals_piq_mdsi_on_a_batch(calibration_pair):
    import piq

    ref, dist = calibration_pair("I03")
    batch = torch.cat([dist, calibration_pair("I08")[1]])
    expected = piq.mdsi(batch.double(), ref.expand(2, -1, -1, -1).double(), data_range=255,
                        reduction="none")
    torch.testing.assert_close(MDSI().score(ref, batch), expected, atol=1e-12, rtol=0)


def test_imresize_reproduces_matlabs_output():
    # MATLAB's imresize(uint8(IN), 0.5, 'bilinear'), quoted in the tests of Octave's imresize.m
    # (image package): antialiased, edges clamped, each pass rounded to uint8, rows first.
    image = torch.tensor([[116, 227, 153, 69, 146, 194, 59, 130, 139, 106],
                          [2, 47, 137, 249, 90, 75, 16, 24, 158, 44],
                          [155, 68, 46, 84, 166, 156, 69, 204, 32, 152],
                          [71, 221, 137, 230, 210, 153, 192, 115, 30, 118],
                          [107, 143, 108, 52, 51, 73, 101, 21, 175, 90],
                          [54, 158, 143, 77, 26, 168, 113, 229, 165, 225],
                          [9, 47, 133, 135, 130, 207, 236, 43, 19, 73]], dtype=torch.float64)
    matlab = torch.tensor([[108, 136, 125, 89, 107], [111, 132, 143, 114, 99],
                           [106, 110, 106, 127, 136], [47, 121, 163, 138, 68]],
                          dtype=torch.float64)
    # MATLAB rounds to uint8 after each pass
    rows_first = torch.floor(resize_rows(image, 4, scale=0.5) + 0.5)
    columns = torch.floor(resize_rows(rows_first.T.contiguous(), 5, scale=0.5) + 0.5)
    assert torch.equal(columns.T, matlab)
    # imresize(1:3, [1 6], 'bilinear'): linear between pixel centres, edges held.
    torch.testing.assert_close(imresize(image[None, None, :1, :3], 1, 6)[0, 0, 0], torch.tensor(
        [116, 143.75, 199.25, 208.5, 171.5, 153], dtype=torch.float64))


@pytest.mark.parametrize("size", [(255, 383), (199, 130), (384, 512)])
def test_mdsi_of_an_image_against_itself_is_exactly_zero(size):
    # MDSI.m: GCS is 1 everywhere, so every deviation from its mean is 0 (at 255 x 383 and
    # 199 x 130 a complex mean one ulp below 1 once gave (2^-53)^(1/4) = 1e-4)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (1, 3, *size),
                                                                dtype=np.uint8))
    assert MDSI().score(image, image.clone()).item() == 0.0


@pytest.mark.parametrize("distortion", ["gaussian_blur", "jpeg", "jpeg2000", "white_noise"])
def test_a_heavier_distortion_scores_worse(small_image, distortion):
    ref = tensor(small_image)
    versions = torch.cat([tensor(np.array(distortions.apply(small_image, distortion, level, 0)[0]))
                          for level in (2, 5)])
    mild, heavy = MDSI().score(ref, versions).tolist()
    assert heavy > mild > 0  # lower is better
    mild, heavy = VSI().score(ref, versions).tolist()
    assert heavy < mild < 1


def test_labeler_scores_in_batches_as_one_by_one(small_image):
    versions = [distortions.apply(small_image, name, level, seed=0)[0]
                for name in ("gaussian_blur", "jpeg", "color_shift") for level in (2, 4)]
    batched = labelers.Labeler(metrics=("mdsi", "vsi"), device="cpu", batch_size=4)
    single = labelers.Labeler(metrics=("mdsi", "vsi"), device="cpu", batch_size=1)
    scores, one_by_one = batched.score(small_image, versions), single.score(small_image, versions)
    assert list(scores) == ["mdsi", "vsi"]
    for key in scores:
        assert scores[key].shape == (6,) and scores[key].dtype == np.float64
        np.testing.assert_allclose(scores[key], one_by_one[key], rtol=0, atol=1e-12)


def test_mdsi_and_vsi_are_available_outside_the_default_ensemble():
    for key, cls, higher_is_better in (("mdsi", MDSI, False), ("vsi", VSI, True)):
        assert key in labelers.AVAILABLE_METRICS and key not in labelers.METRICS
        assert labelers.metric_class(key) is cls and cls.higher_is_better is higher_is_better


def test_unit_range_is_mat2gray_with_its_constant_image_rule():
    """mat2gray.m: (A - min) / (max - min); a constant A is A clipped to [0, 1]. A plane
    constant but for rounding is constant."""
    planes = torch.tensor([[[[-3.0, -3.0]]], [[[0.4, 0.4 + 1e-14]]], [[[7.0, 7.0]]],
                           [[[2.0, 6.0]]]], dtype=torch.float64)
    expected = torch.tensor([[[[0.0, 0.0]]], [[[0.4, 0.4]]], [[[1.0, 1.0]]], [[[0.0, 1.0]]]],
                            dtype=torch.float64)
    torch.testing.assert_close(vsi._unit_range(planes), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(176, 192), (384, 512), (512, 512), (384, 640)])
def test_a_flat_image_has_no_saliency_and_two_flat_images_score_one(shape):
    """SDSP's frequency prior is a log-Gabor band, which passes no DC: a flat image's visual
    saliency is 0 everywhere. Its gradients are 0 and a gray's chroma (M, N) is 0, so flat
    black against flat white is similar in every term VSI has (none is luminance): 1, at
    every size (FFT rounding stretched by mat2gray once gave 0.72 at 384 x 512)."""
    black, white = (tensor(np.full((*shape, 3), value, np.uint8)) for value in (0, 255))
    assert vsi.saliency(white.to(torch.float64)).abs().max().item() <= 1e-12
    assert VSI().score(black, white).item() == pytest.approx(1.0, abs=1e-12)

