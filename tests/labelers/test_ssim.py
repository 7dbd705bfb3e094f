"""SSIM (ssim_index.m): the official values, scikit-image's structural_similarity with the
same options, the dense map, and batched scoring through the Labeler."""

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import distortions
import labelers
from labelers.errors import InvalidPairError
from labelers.inputs import gray_rounded
from labelers.ssim import SSIM, box_reference, ssim_map, ssim_map_in_box, ssim_maps
from tests.labelers.conftest import tensor

OFFICIAL = {"I03": 0.6993, "I08": 0.9669}  # shared/spec/labels.md, 4 decimals
SKIMAGE_OPTIONS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False,
                   "data_range": 255, "win_size": 11}


def _image(batch: torch.Tensor) -> np.ndarray:
    """uint8 1 x 3 x H x W -> H x W x 3."""
    return batch[0].permute(1, 2, 0).numpy()


def _luma(image: np.ndarray) -> np.ndarray:
    """The float64 gray SSIM is computed on (MATLAB rgb2gray of uint8, rounded)."""
    return gray_rounded(tensor(image), torch.float64)[0, 0].numpy()


@pytest.fixture(scope="module")
def pairs(small_image) -> list[tuple[np.ndarray, np.ndarray]]:
    """The 192 x 176 astronaut against white noise, Gaussian blur and JPEG versions."""
    rng = np.random.default_rng(1)
    noisy = np.clip(np.rint(small_image + rng.normal(0, 15, small_image.shape)), 0, 255)
    versions = [noisy.astype(np.uint8),
                distortions.apply(small_image, "gaussian_blur", 3, seed=0)[0],
                distortions.apply(small_image, "jpeg", 4, seed=0)[0]]
    return [(small_image, version) for version in versions]


@pytest.mark.parametrize("name", ["I03", "I08"])
def test_official_values_on_calibration_pairs(calibration_pair, name):
    assert SSIM().score(*calibration_pair(name)).item() == pytest.approx(OFFICIAL[name],
                                                                         abs=1e-4)


def test_equals_skimage_structural_similarity(pairs):
    for ref, dist in pairs:
        expected, full = structural_similarity(_luma(ref), _luma(dist), full=True,
                                               **SKIMAGE_OPTIONS)
        # skimage filters to the input's size and averages its map without a 5-pixel border:
        # the 'valid' region, whose values need no padding.
        assert full[5:-5, 5:-5].mean() == pytest.approx(expected, abs=1e-12)
        value = SSIM().score(tensor(ref), tensor(dist)).item()
        assert value == pytest.approx(expected, abs=1e-13)


def test_dense_map_equals_skimages_full_map_including_the_border(pairs):
    # scipy's 'reflect' border repeats the edge pixel, as MATLAB's and numpy's 'symmetric'.
    for ref, dist in pairs:
        _, full = structural_similarity(_luma(ref), _luma(dist), full=True, **SKIMAGE_OPTIONS)
        np.testing.assert_allclose(ssim_map(ref, dist), full, rtol=0, atol=1e-6)


def test_dense_map_mean_over_the_valid_region_is_the_score(pairs):
    for ref, dist in pairs:
        dense = ssim_map(ref, dist)
        assert dense.shape == ref.shape[:2] and dense.dtype == np.float32
        value = SSIM().score(tensor(ref), tensor(dist)).item()
        assert dense[5:-5, 5:-5].mean(dtype=np.float64) == pytest.approx(value, abs=1e-6)


def test_a_boxed_map_is_the_whole_maps_window(pairs):
    """Inside, at an edge, in a corner: the widened box gives the whole map's values."""
    ref, dist = pairs[0]
    whole = ssim_map(ref, dist)
    prepared = box_reference(ref)
    height, width = whole.shape
    for y, x, h, w in ((20, 30, 16, 24), (0, 0, 11, 11), (height - 16, width - 24, 16, 24),
                       (3, width - 40, 20, 40), (0, 0, height, width)):
        np.testing.assert_array_equal(ssim_map_in_box(ref, dist, (y, x, h, w)),
                                      whole[y:y + h, x:x + w])
        np.testing.assert_array_equal(ssim_map_in_box(prepared, dist, (y, x, h, w)),
                                      whole[y:y + h, x:x + w])  # the reference prepared once
    with pytest.raises(InvalidPairError, match="reference is"):
        ssim_map_in_box(prepared, dist[:-1], (0, 0, 11, 11))
    for box in ((height - 10, 0, 11, 11), (0, width - 10, 11, 11), (-1, 0, 11, 11),
                (0, 0, 0, 11), (height + 5, width + 5, 4, 4)):  # past an edge, empty, outside
        with pytest.raises(ValueError, match=rf"box \(y, x, h, w\) .* is not inside the "
                                             rf"{height} x {width} image"):
            ssim_map_in_box(prepared, dist, box)


def test_dense_map_is_exactly_one_for_identical_images(small_image):
    dense = ssim_map(small_image, small_image.copy())
    assert dense.shape == small_image.shape[:2] and dense.dtype == np.float32
    assert np.all(dense == 1.0)


def test_batched_maps_equal_one_by_one(pairs):
    ref = pairs[0][0]
    versions = [dist for _, dist in pairs]
    maps = ssim_maps(ref, np.stack(versions))
    assert maps.shape == (len(versions), *ref.shape[:2]) and maps.dtype == np.float32
    for dense, dist in zip(maps, versions, strict=True):
        np.testing.assert_array_equal(dense, ssim_map(ref, dist))


def test_dense_map_refuses_mismatched_or_batched_input(small_image):
    with pytest.raises(InvalidPairError, match="reference is"):
        ssim_map(small_image, small_image[:-1])
    with pytest.raises(InvalidPairError, match="one H x W x 3 image"):
        ssim_map(small_image, small_image[None])


def test_score_is_the_mean_of_the_valid_map_of_the_calibration_pair(calibration_pair):
    ref, dist = calibration_pair("I03")
    dense = ssim_map(_image(ref), _image(dist))
    assert dense[5:-5, 5:-5].mean(dtype=np.float64) == pytest.approx(
        SSIM().score(ref, dist).item(), abs=1e-6)


def test_labeler_scores_ssim_in_batches_as_one_by_one(pairs):
    ref = pairs[0][0]
    versions = [dist for _, dist in pairs]
    labeler = labelers.Labeler(metrics=("ssim",), device="cpu", batch_size=2)
    scores = labeler.score(ref, versions)
    assert list(scores) == ["ssim"] and scores["ssim"].dtype == np.float64
    one_by_one = [SSIM().score(tensor(ref), tensor(dist)).item() for dist in versions]
    np.testing.assert_allclose(scores["ssim"], one_by_one, rtol=0, atol=1e-12)


def test_ssim_is_available_but_not_a_default_metric():
    assert "ssim" in labelers.AVAILABLE_METRICS and "ssim" not in labelers.METRICS
    assert labelers.metric_class("ssim") is SSIM and SSIM.higher_is_better
