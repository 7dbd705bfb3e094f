"""What docs/shards-spec-notes.md ("What a reader written from these documents can check")
tells a reader that has only the documents, each computed here from the note's words with
hashlib, numpy and PIL, against what the package writes and replays."""

import hashlib
import json
import math

import numpy as np
import pytest

import distortions
from pipeline.plan import split_of
from shards.keys import composed_key, ref_id_of


def documented_split(ref_id: str, seed: int) -> str:
    digest = hashlib.sha256(f"split|{seed}|{ref_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "train" if u < 0.8 else "val" if u < 0.9 else "test"


@pytest.mark.parametrize("seed", [0, 7, 2**40 + 3])
def test_the_split_is_the_documented_hash_with_its_fractions(seed):
    ref_ids = [f"photo_{n}" for n in range(20_000)] + ["é-ü", "a.b c", "x" * 300]
    splits = [split_of(ref_id, seed) for ref_id in ref_ids]
    assert splits == [documented_split(ref_id, seed) for ref_id in ref_ids]
    shares = {name: splits.count(name) / len(splits) for name in ("train", "val", "test")}
    # binomial standard deviations at n = 20,000: 0.0028 (train), 0.0021 (val, test)
    assert shares == pytest.approx({"train": 0.8, "val": 0.1, "test": 0.1}, abs=0.015)


def test_a_datasets_records_hold_the_documented_split_and_pixel_hash(generated,
                                                                     generated_images):
    seed = json.loads((generated / "plan.json").read_text())["inputs"]["seed"]
    assert generated_images
    for key, (pixels, record) in generated_images.items():  # pixels decoded by PIL
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
        assert record["sha256"] == hashlib.sha256(pixels.tobytes()).hexdigest(), key
        assert record["split"] == documented_split(record["ref_id"], seed), key


@pytest.mark.parametrize("level", [1, 3, 5])
def test_white_noise_replays_by_the_documented_conventions(small_image, level):
    distorted, recipe = distortions.apply(small_image, "white_noise", level, seed=11)
    params = recipe["params"]
    x = small_image.astype(np.float32) * np.float32(1 / 255)
    noise = np.random.default_rng(params["noise_seed"]).standard_normal(
        small_image.shape, dtype=np.float32) * np.float32(math.sqrt(params["variance"]))
    expected = np.rint(np.clip(x + noise, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(distorted, expected)
    assert params["variance"] == (0.001, 0.002, 0.003, 0.005, 0.01)[level - 1]  # the spec's v


@pytest.mark.parametrize("index, key", [(0, "coffee_c000"), (42, "coffee_c042"),
                                        (1234, "coffee_c1234")])
def test_a_composed_versions_key_is_the_documented_one(index, key):
    assert composed_key("coffee", index) == key
    assert ref_id_of(key) == "coffee"
