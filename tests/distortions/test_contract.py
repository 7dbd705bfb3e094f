"""The contract every (id, level) pair keeps: shape, dtype, exact replay, change vs identity."""

import json
import re

import numpy as np
import pytest

import distortions

PAIRS = [(d.id, level) for d in distortions.registered() for level in distortions.LEVELS]


def _case_id(pair):
    return f"{distortions.get(pair[0]).name}-L{pair[1]}"


@pytest.mark.parametrize("pair", PAIRS, ids=[_case_id(p) for p in PAIRS])
def test_contract(small_image, pair):
    distortion_id, level = pair
    distortion = distortions.get(distortion_id)
    out, recipe = distortions.apply(small_image, distortion_id, level, seed=2024)

    assert out.shape == small_image.shape
    assert out.dtype == np.uint8
    assert recipe["distortion_id"] == distortion_id and recipe["level"] == level

    # The recipe survives JSON, is one the bank makes, and replays the output from the
    # reference alone.
    distortions.check_recipe(json.loads(json.dumps(recipe)))
    replayed = distortions.replay(small_image, json.loads(json.dumps(recipe)))
    if distortion.learned:
        diff = np.abs(replayed.astype(int) - out.astype(int))
        assert diff.max() <= 1, "the learned denoiser must replay within one intensity level"
    else:
        assert np.array_equal(replayed, out)

    if level == distortion.identity_level:
        assert np.array_equal(out, small_image), "identity level must return the input"
    else:
        assert not np.array_equal(out, small_image), "a non-identity level must change the image"


def test_the_same_seed_gives_the_same_output_and_another_seed_differs(small_image):
    for name in ["white_noise", "motion_blur", "non_eccentricity", "color_block", "jitter",
                 "denoise_blur", "pink_noise", "rgb_shift"]:
        first, _ = distortions.apply(small_image, name, 4, seed=11)
        again, _ = distortions.apply(small_image, name, 4, seed=11)
        other, _ = distortions.apply(small_image, name, 4, seed=12)
        assert np.array_equal(first, again)
        assert not np.array_equal(first, other), name


def test_a_composed_recipe_replays_its_chain_byte_for_byte(small_image):
    links = [(13, 3, 11), (1, 4, 12), (16, 2, 13)]  # gaussian blur, jpeg, brighten
    out, recipe = distortions.compose(small_image, links)
    by_hand = small_image
    for distortion_id, level, seed in links:  # each link on the previous one's output
        by_hand, _ = distortions.apply(by_hand, distortion_id, level, seed)
    assert np.array_equal(out, by_hand)
    assert [(r["distortion_id"], r["level"], r["seed"]) for r in recipe["chain"]] == links
    assert np.array_equal(distortions.replay(small_image, json.loads(json.dumps(recipe))), out)
    distortions.check_recipe(json.loads(json.dumps(recipe)))
    with pytest.raises(distortions.InvalidRecipeError, match="non-empty list of links"):
        distortions.replay(small_image, {"version": 1, "chain": []})
    with pytest.raises(distortions.InvalidRecipeError, match="non-empty list of links"):
        distortions.check_recipe({"version": 1, "chain": []})


def test_a_chain_holds_each_type_once_and_no_learned_type(small_image):
    """What generate's --compose makes (distinct types, no learned denoiser), and so what a
    chain read from a shard may hold: a hostile one of thousands of links, or of denoiser
    passes, is refused before any link runs."""
    _, blur = distortions.apply(small_image, 13, 3, 1)
    _, learned = distortions.apply(small_image, 8, 1, 2)
    for links, why in (([blur] * 5000, r"each type once; \[13\] come again"),
                       ([blur, learned], r"no learned-denoiser type; it holds \[8\]"),
                       ([{"version": 1, "chain": [blur]}], "not other chains")):
        with pytest.raises(distortions.InvalidRecipeError, match=why):
            distortions.check_recipe({"version": 1, "chain": links})
    for links in ([(13, 3, 1), (13, 2, 2)], [(13, 3, 1), (8, 1, 2)],
                  [(1, 1, 0), ("jpeg", 5, 1)], [(np.int64(13), 2, 0), ("gaussian_blur", 5, 1)]):
        with pytest.raises(distortions.InvalidRecipeError, match="a chain holds"):
            distortions.compose(small_image, links)  # one type however it is named


def _edited(recipe: dict, **params) -> dict:
    return {**recipe, "params": {**recipe["params"], **params}}


def test_a_recipe_whose_parameters_its_level_and_seed_do_not_give_is_refused(small_image):
    """A recipe from a shard runs only with the parameters its (type, level, seed) make: a
    level's value, a seeded draw, an added or a missing parameter, another recipe version."""
    _, blur = distortions.apply(small_image, "gaussian_blur", 3, seed=5)
    _, blocks = distortions.apply(small_image, "color_block", 2, seed=5)
    _, noise = distortions.apply(small_image, "white_noise", 2, seed=5)
    not_made = {
        "sigma": _edited(blur, sigma=1e6),  # level 3's sigma is 1
        "blocks": _edited(blocks, blocks=blocks["params"]["blocks"] * 1000),
        "noise_seed": _edited(noise, noise_seed=noise["params"]["noise_seed"] + 1),
        "noise": {**noise, "params": {k: v for k, v in noise["params"].items()
                                      if k != "noise"}},
    }
    for name, recipe in not_made.items():
        with pytest.raises(distortions.InvalidRecipeError,
                           match=rf"parameters {name} are not those the level and seed give"):
            distortions.check_recipe(recipe)
    with pytest.raises(distortions.InvalidRecipeError,  # a parameter gaussian_blur has not
                       match="parameters radius are unknown to this bank"):
        distortions.check_recipe(_edited(blur, radius=99))
    _, chain = distortions.compose(small_image, [(13, 3, 5), (1, 2, 6)])
    chain["chain"][1] = _edited(chain["chain"][1], quality=1)
    with pytest.raises(distortions.InvalidRecipeError, match="jpeg level 2 seed 6: parameters "
                                                             "quality"):
        distortions.check_recipe(chain)
    for recipe, why in (({**blur, "version": 2}, "recipe version 2"),
                        ({**blur, "version": True}, "recipe version True"),
                        ({**blur, "version": 1.0}, "recipe version 1.0"),
                        ({**blur, "params": [1]}, "parameters must be a dict of name -> "
                         "value, not a list"),
                        ({k: v for k, v in blur.items() if k != "seed"}, "missing 'seed'"),
                        ("blur", "a recipe is a JSON object")):
        with pytest.raises(distortions.InvalidRecipeError, match=why):
            distortions.check_recipe(recipe)
    for params in (None, [1, 2], "sigma=1"):  # replay and apply, not an AttributeError
        with pytest.raises(distortions.InvalidRecipeError, match="gaussian_blur: its "
                                                                 "parameters must be a dict"):
            distortions.replay(small_image, {**blur, "params": params})
        with pytest.raises(distortions.InvalidRecipeError, match="must be a dict of name"):
            distortions.get("gaussian_blur").apply(small_image, params)
    with pytest.raises(distortions.InvalidLevelError):
        distortions.check_recipe({**blur, "level": 9})


def test_where_a_learned_version_was_made_is_not_checked(small_image):
    """The denoiser's device is where the version was made (replay checks the weights'
    identity itself): a version made on a GPU is a recipe the bank makes."""
    _, recipe = distortions.apply(small_image, "denoise_white", 2, seed=1)
    distortions.check_recipe(_edited(recipe, device="cuda:3"))
    with pytest.raises(distortions.InvalidRecipeError, match="parameters noise_seed"):
        distortions.check_recipe(_edited(recipe, device="cuda:3", noise_seed=7))
    # but where it was made is said in words: a reader joins and compares them
    for name, value in (("device", 5), ("device", ["cpu"]), ("denoiser", {"a": 1})):
        with pytest.raises(distortions.InvalidRecipeError,
                           match=rf"denoise_white: parameter {name} names where it was made, "
                                 rf"in words; got {re.escape(repr(value))}"):
            distortions.check_recipe(_edited(recipe, **{name: value}))


def test_replay_refuses_a_parameter_it_would_not_apply_the_same_twice_or_would_make_black(
        small_image):
    """replay takes any parameters a type can apply, but a null or non-finite one (numpy's
    cast makes NaN pixels black), a seed that is not a non-negative integer (numpy would
    draw a fresh one: two replays differ) and a width of zero are InvalidRecipeError."""
    _, noise = distortions.apply(small_image, "white_noise", 2, seed=5)
    _, blur = distortions.apply(small_image, "gaussian_blur", 3, seed=5)
    _, lens = distortions.apply(small_image, "lens_blur", 3, seed=5)
    _, brighten = distortions.apply(small_image, "brighten", 3, seed=5)
    for recipe, why in ((_edited(noise, noise_seed=None), "noise_seed must be a non-negative"),
                        (_edited(noise, noise_seed=-3), "noise_seed must be a non-negative"),
                        (_edited(noise, noise_seed=2.5), "noise_seed must be a non-negative"),
                        (_edited(noise, variance=float("nan")), "variance is nan"),
                        (_edited(brighten, amount=None), "amount is None"),
                        (_edited(blur, sigma=float("inf")), "sigma is inf"),
                        (_edited(blur, sigma=0), "NaN pixels"),
                        (_edited(lens, radius=0), "NaN pixels")):
        with pytest.raises(distortions.InvalidRecipeError, match=why):
            distortions.replay(small_image, recipe)
    again = _edited(noise, noise_seed=np.int64(11))  # any integer type
    assert np.array_equal(distortions.replay(small_image, again),
                          distortions.replay(small_image, again))


@pytest.fixture(scope="module")
def odd_sizes() -> list[np.ndarray]:
    """Crops of skimage's chelsea of odd sides just above the minimum, in both orientations,
    and one of sides that share no factor with the bank's block and patch sizes."""
    from skimage import data

    cat = data.chelsea()  # 300 x 451
    return [cat[:177, :193], cat[:193, :177], cat[:211, :331]]


@pytest.mark.parametrize("distortion", distortions.registered(), ids=lambda d: d.name)
def test_every_type_replays_exactly_at_odd_sizes(odd_sizes, distortion):
    """Sizes decide pixelate's and the resizes' grids, JPEG's and JPEG 2000's blocks and
    tiles, and where blocks and patches land (positions are fractions of the room there)."""
    for image in odd_sizes:
        for level in (1, 5):
            out, recipe = distortions.apply(image, distortion.id, level, seed=2026)
            assert out.shape == image.shape and out.dtype == np.uint8
            replayed = distortions.replay(image, json.loads(json.dumps(recipe)))
            worst = np.abs(replayed.astype(int) - out.astype(int)).max()
            assert worst <= (1 if distortion.learned else 0), (image.shape, level)
