import json

import numpy as np
import pytest

import distortions
from distortions.errors import ImageTooSmallError, InvalidImageError, InvalidRecipeError
from distortions.registry import is_integer


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
    with pytest.raises(distortions.UnknownDistortionError, match="99"):
        distortions.replay(small_image, {"distortion_id": 99, "params": {}})
    with pytest.raises(distortions.UnknownDistortionError, match="99"):
        distortions.check_recipe({**recipe, "distortion_id": 99})


@pytest.mark.parametrize(("distortion_id", "params"), [
    (14, {"radius": -1}),          # OpenCV refuses it (cv2.error)
    (1, {"quality": 2**70}),       # too large for OpenCV's int
    (13, {"sigma": 1e15}),         # a kernel of 28 PiB (MemoryError)
])
def test_replay_names_parameters_its_libraries_refuse(small_image, distortion_id, params):
    recipe = {"distortion_id": distortion_id, "params": params}
    with pytest.raises(InvalidRecipeError, match="cannot be applied"):
        distortions.replay(small_image, recipe)


@pytest.mark.parametrize("links", [None, 5, "jpeg"])
def test_compose_names_a_chain_that_is_not_a_list(small_image, links):
    with pytest.raises(InvalidRecipeError, match="non-empty list"):
        distortions.compose(small_image, links)


def test_input_is_never_modified(small_image):
    image = small_image.copy()
    for d in distortions.registered():
        if not d.learned:
            distortions.apply(image, d.id, 5, seed=3)
    assert np.array_equal(image, small_image)


def test_numpy_integers_work_as_ids_and_levels_and_recipes_stay_json(small_image):
    out, recipe = distortions.apply(small_image, np.int64(3), np.int64(2), np.uint32(7))
    expected, _ = distortions.apply(small_image, 3, 2, 7)
    assert np.array_equal(out, expected)
    assert type(recipe["level"]) is int and type(recipe["seed"]) is int
    assert json.loads(json.dumps(recipe)) == recipe


@pytest.mark.parametrize("integer", [np.int64, np.uint64])
def test_numpy_parameters_are_the_numbers_the_recipes_text_gives(small_image, integer):
    """A recipe's numbers held as numpy's replay and check as its JSON text's do (Pillow's
    blurs refused a numpy radius; the check's canonical text refused numpy numbers)."""
    for name in ("denoise_blur", "jpeg", "white_noise", "color_shift", "rgb_shift"):
        out, recipe = distortions.apply(small_image, name, 2, seed=0)
        params = {key: np.asarray(value) if isinstance(value, list)
                  else integer(value) if is_integer(value)
                  else np.float64(value) if isinstance(value, float) else value
                  for key, value in recipe["params"].items()}
        numpy_recipe = {**recipe, "params": params}
        assert np.array_equal(distortions.replay(small_image, numpy_recipe), out)
        distortions.check_recipe(numpy_recipe)


def test_a_recipe_whose_name_is_not_its_ids_is_checked_as_it_is_replayed(small_image):
    _, recipe = distortions.apply(small_image, "jpeg", 3, seed=7)
    for check in (distortions.check_recipe, lambda r: distortions.replay(small_image, r)):
        with pytest.raises(InvalidRecipeError, match="names 'gaussian_blur' but id 1 is 'jpeg'"):
            check({**recipe, "distortion": "gaussian_blur"})


@pytest.mark.parametrize(("id_or_name", "level", "error"), [
    (True, 1, distortions.UnknownDistortionError),      # True is not id 1
    ([1], 1, distortions.UnknownDistortionError),
    (1, np.True_, distortions.InvalidLevelError),
    (1, 3.0, distortions.InvalidLevelError),
])
def test_ids_and_levels_of_other_types_are_typed_errors(small_image, id_or_name, level, error):
    with pytest.raises(error):
        distortions.apply(small_image, id_or_name, level, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, 7.0, True, "7"])
def test_a_seed_must_be_a_non_negative_integer(small_image, seed):
    with pytest.raises(distortions.InvalidSeedError, match="seed must be a non-negative integer"):
        distortions.apply(small_image, "jpeg", 1, seed)


def test_very_large_seeds_are_seeds(small_image):
    out, recipe = distortions.apply(small_image, "white_noise", 3, 2**64 + 5)
    assert np.array_equal(distortions.replay(small_image, recipe), out)


@pytest.mark.parametrize("links", [[], [(1, 1)], ["jpeg"]])
def test_a_chain_without_links_or_with_a_malformed_one_is_refused(small_image, links):
    with pytest.raises(InvalidRecipeError, match="link"):
        distortions.compose(small_image, links)


@pytest.mark.parametrize("name", ["jpeg2000", "color_quantization", "jpeg2000_noisy",
                                  "resize_bicubic", "resize_nearest", "jpeg", "gaussian_blur"])
def test_every_output_is_a_writable_array(small_image, name):
    out, _ = distortions.apply(small_image, name, 3, 0)
    out[0, 0] = 0  # would raise for a read-only view of a PIL image
    assert out.flags.c_contiguous


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("rgb_shift", {"offsets": [[1, 1], [2, 2]]}, "not the input's"),
    ("white_noise", {"variance": -0.01}, "cannot be applied"),
    ("resize_bicubic", {"factor": 0}, "cannot be applied"),
    ("resize_bicubic", {"filter": "cubic"}, "parameter value 'cubic' is not one it knows"),
    ("jpeg", {"quality": None}, "quality is None, not a value it can apply"),
])
def test_replaying_an_edited_recipe_is_a_typed_error(small_image, name, edit, message):
    _, recipe = distortions.apply(small_image, name, 2, 0)
    edited = {**recipe, "params": {**recipe["params"], **edit}}
    with pytest.raises(InvalidRecipeError, match=message):
        distortions.replay(small_image, edited)


def test_a_chain_given_as_a_numpy_array_is_the_same_chain(small_image):
    out, recipe = distortions.compose(small_image, np.array([[1, 3, 5], [13, 2, 6]]))
    expected, expected_recipe = distortions.compose(small_image, [(1, 3, 5), (13, 2, 6)])
    assert np.array_equal(out, expected) and recipe == expected_recipe


def test_replay_refuses_a_recipe_of_another_version_or_with_parameters_the_type_lacks(
        small_image):
    """Taken as they were, a newer recipe would replay otherwise than it was made (a
    parameter ignored): refused, naming the version or the parameter."""
    _, recipe = distortions.apply(small_image, "gaussian_blur", 3, seed=4)
    with pytest.raises(InvalidRecipeError, match="recipe version 2: this bank replays version 1"):
        distortions.replay(small_image, {**recipe, "version": 2})
    newer = {**recipe, "params": {**recipe["params"], "future_mode": "edge-aware"}}
    for refused in (newer, {"version": 1, "chain": [newer]}):
        with pytest.raises(InvalidRecipeError, match="gaussian_blur: parameters future_mode "
                                                     "are unknown to this bank"):
            distortions.replay(small_image, refused)
    with pytest.raises(InvalidRecipeError, match="future_mode are unknown to this bank"):
        distortions.check_recipe(newer)
    # another type's parameters too: JPEG 2000's rate control, a learned type's device
    _, jpeg = distortions.apply(small_image, "jpeg", 3, seed=4)
    for name, value in (("rate_control", 2), ("device", "cuda")):
        with pytest.raises(InvalidRecipeError, match=f"jpeg: parameters {name} are unknown"):
            distortions.replay(small_image, {**jpeg, "params": {**jpeg["params"], name: value}})
    # the parameters a recipe of each type records are all known
    for distortion in distortions.registered():
        if not distortion.learned:
            out, made = distortions.apply(small_image, distortion.id, 2, seed=4)
            np.testing.assert_array_equal(distortions.replay(small_image, made), out)
