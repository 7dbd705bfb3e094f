"""The contract every (id, level) pair keeps: shape, dtype, exact replay, change vs identity."""

import json

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

    # The recipe survives JSON, and replays the output from the reference alone.
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
    with pytest.raises(distortions.InvalidRecipeError, match="non-empty list of links"):
        distortions.replay(small_image, {"version": 1, "chain": []})
