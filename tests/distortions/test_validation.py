import numpy as np
import pytest

import distortions
from distortions.errors import ImageTooSmallError, InvalidImageError, InvalidRecipeError


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((176, 192, 3), np.float32), "dtype uint8"),
        (np.zeros((176, 192), np.uint8), "H x W x 3"),
        (np.zeros((176, 192, 4), np.uint8), "H x W x 3"),
        ([[0]], "numpy array"),
    ],
)
def test_invalid_images_raise_typed_errors(image, message):
    with pytest.raises(InvalidImageError, match=message):
        distortions.apply(image, "gaussian_blur", 2, seed=0)


@pytest.mark.parametrize("shape", [(175, 400, 3), (400, 175, 3), (176, 191, 3), (191, 176, 3)])
def test_too_small_images_are_refused_with_their_size(shape):
    with pytest.raises(ImageTooSmallError, match=f"{shape[1]} x {shape[0]}"):
        distortions.apply(np.zeros(shape, np.uint8), "jpeg", 1, seed=0)


@pytest.mark.parametrize("shape", [(176, 192, 3), (192, 176, 3), (384, 512, 3)])
def test_minimum_size_in_either_orientation_is_accepted(shape):
    image = np.full(shape, 128, np.uint8)
    out, _ = distortions.apply(image, "white_noise", 3, seed=1)
    assert out.shape == shape


def test_errors_are_value_errors_for_callers_that_catch_broadly():
    assert issubclass(distortions.DistortionError, ValueError)


def test_replay_rejects_malformed_recipes(small_image):
    with pytest.raises(InvalidRecipeError, match="missing"):
        distortions.replay(small_image, {"level": 1})
    with pytest.raises(InvalidRecipeError, match="parameter"):
        distortions.replay(small_image, {"distortion_id": 1, "params": {}})
    _, recipe = distortions.apply(small_image, 1, 1, seed=0)
    with pytest.raises(InvalidRecipeError, match="names 'jpeg2000'"):
        distortions.replay(small_image, {**recipe, "distortion": "jpeg2000"})


def test_input_is_never_modified(small_image):
    image = small_image.copy()
    for d in distortions.registered():
        if not d.learned:
            distortions.apply(image, d.id, 5, seed=3)
    assert np.array_equal(image, small_image)
