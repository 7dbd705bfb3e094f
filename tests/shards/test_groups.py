"""open_dataset(...).groups: pairs, chunks and triplets are pixel-aligned (each member's crop
is the same window of its full stored image), one box per group, drawn reproducibly whatever
the read order; versions=n draws n distinct versions per seed; two views overlap inside the
image; member order inside a shard does not matter."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from labelers.ssim import ssim_map
from shards import open_dataset
from shards.boxes import two_views
from shards.group_spec import GroupSpec
from shards.groups import IncompleteShardError
from shards.keys import distorted_key, reference_key
from shards.layout import shard_paths
from shards.order import Order
from shards.reader import DamagedShardError, read_index
from shards.storage import Location
from shards.writer import ShardWriter
from tests.conftest import stats_agree

from .conftest import _png, _record, pattern, window


def _versions_by_ref(root, split=None) -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for row in read_index(Location.parse(str(root))).to_pylist():
        if row["kind"] == "distorted" and split in (None, row["split"]):
            versions.setdefault(row["ref_id"], set()).add(row["key"])
    return versions


def _assert_aligned(group: dict, images: dict, views: int = 1) -> None:
    """Every member's view(s) are the window(s) of its full stored image under the box(es)."""
    boxes = group["box"] if views == 2 else [group["box"]]
    members = [(f"{group['ref_id']}_ref", group["reference"])] + [
        (meta["key"], pixels) for meta, pixels in zip(group["meta"], group["distorted"],
                                                      strict=True)]
    for key, pixels in members:
        full = images[key][0]
        expected = [window(full, box) for box in boxes]
        assert np.array_equal(pixels, expected[0] if views == 1 else np.stack(expected)), key


@pytest.mark.parametrize("split", [None, "train"])
def test_pairs_are_one_per_version_and_aligned(generated, generated_images, split):
    groups = list(open_dataset(str(generated)).groups("pair", split, crop=(48, 64), seed=3))
    keys = sorted(group["meta"][0]["key"] for group in groups)
    assert keys == sorted(k for ks in _versions_by_ref(generated, split).values() for k in ks)
    for group in groups:
        assert len(group["distorted"]) == 1 and group["reference"].shape == (48, 64, 3)
        assert group["meta"][0]["ref_id"] == group["ref_id"]
        _assert_aligned(group, generated_images)


def test_an_identity_version_pairs_with_equal_pixels_whatever_the_member_order(hand_made,
                                                                              hand_images):
    """a_d01_l1 equals its reference and is stored before it; c's versions all precede c_ref."""
    groups = {g["meta"][0]["key"]: g for g in
              open_dataset(str(hand_made)).groups("pair", crop=(16, 24), seed=1)}
    assert set(groups) == {k for ks in _versions_by_ref(hand_made).values() for k in ks}
    for key in ("a_d01_l1", "b_d01_l1", "c_d01_l1"):
        assert np.array_equal(groups[key]["distorted"][0], groups[key]["reference"])
    shifted = groups["a_d02_l3"]  # rolled 3 columns: a misaligned crop would hide that
    assert not np.array_equal(shifted["distorted"][0], shifted["reference"])
    for group in groups.values():
        _assert_aligned(group, hand_images)


def test_boxes_depend_on_the_seed_not_on_the_read_order(generated):
    dataset = open_dataset(str(generated))

    def boxes(seed: int, order: Order) -> dict[str, tuple]:
        return {g["meta"][0]["key"]: g["box"] for g in
                dataset.groups("pair", crop=(32, 32), seed=seed, order=order)}

    plain = boxes(5, Order())
    assert boxes(5, Order(shuffle=7)) == plain
    assert boxes(6, Order()) != plain
    assert boxes(5, Order(epoch=1)) != plain  # a new epoch, new crops
    assert len(set(plain.values())) > 1  # one box per pair, not one for all


def test_a_shard_drawn_twice_in_a_resampled_epoch_gives_new_groups(generated):
    """Resampling draws shards with replacement: a second draw of a shard in one epoch brings
    its references again, with other versions and crops (identical groups twice in an epoch
    teach nothing new, and a contrastive queue would hold a query's own crop as a
    negative)."""
    dataset = open_dataset(str(generated))
    order = Order(resampled=True, length=60)  # 3 shards, 20 draws: each shard drawn again
    chunks = [(chunk["ref_id"], tuple(m["key"] for m in chunk["meta"]), chunk["box"])
              for chunk in dataset.groups("chunk", crop=(32, 32), seed=4, versions=2,
                                          order=order)]
    by_ref: dict[str, list] = {}
    for ref_id, keys, box in chunks:
        by_ref.setdefault(ref_id, []).append((keys, box))
    again = [draws for draws in by_ref.values() if len(draws) > 1]
    assert again  # some reference came back
    assert all(len(set(draws)) == len(draws) for draws in again), again
    twice = [(c["ref_id"], c["box"]) for c in dataset.groups(
        "chunk", crop=(32, 32), seed=4, versions=2, order=order)]
    assert twice == [(ref_id, box) for ref_id, _, box in chunks]  # still reproducible


def test_whole_images_when_no_crop(hand_made, hand_images):
    group = next(iter(open_dataset(str(hand_made)).groups("chunk")))
    height, width = group["reference"].shape[:2]
    assert group["box"] == (0, 0, height, width) == (0, 0, *hand_images["a_ref"][0].shape[:2])
    _assert_aligned(group, hand_images)


@pytest.mark.parametrize("root_name", ["generated", "hand_made"])
def test_a_chunk_is_a_reference_and_all_its_versions_under_one_box(root_name, request):
    root = request.getfixturevalue(root_name)
    images = request.getfixturevalue("generated_images" if root_name == "generated"
                                     else "hand_images")
    chunks = list(open_dataset(str(root)).groups("chunk", crop=(24, 32), seed=2))
    versions = _versions_by_ref(root)
    assert sorted(chunk["ref_id"] for chunk in chunks) == sorted(versions)
    for chunk in chunks:
        keys = [meta["key"] for meta in chunk["meta"]]
        assert keys == sorted(versions[chunk["ref_id"]])
        assert len(chunk["distorted"]) == len(keys)
        _assert_aligned(chunk, images)  # one box for every member


def test_versions_n_draws_n_distinct_versions_reproducibly(generated):
    dataset = open_dataset(str(generated))
    versions = _versions_by_ref(generated)

    def drawn(seed: int) -> dict[str, list[str]]:
        return {chunk["ref_id"]: [meta["key"] for meta in chunk["meta"]] for chunk in
                dataset.groups("chunk", crop=16, seed=seed, versions=3)}

    first = drawn(0)
    assert drawn(0) == first and set(first) == set(versions)
    for ref_id, keys in first.items():
        assert len(set(keys)) == 3 and set(keys) <= versions[ref_id]
    assert any(drawn(seed) != first for seed in range(1, 4))
    by_type = {chunk["ref_id"]: [meta["distortion_id"] for meta in chunk["meta"]] for chunk in
               dataset.groups("chunk", crop=16, versions=3, distinct_types=True)}
    assert all(sorted(ids) == [1, 13, 26] for ids in by_type.values())
    # asking for more than a reference holds still draws each type once
    by_type = {chunk["ref_id"]: [meta["distortion_id"] for meta in chunk["meta"]] for chunk in
               dataset.groups("chunk", crop=16, versions=100, distinct_types=True)}
    assert all(sorted(ids) == [1, 13, 26] for ids in by_type.values())
    # and without a count, one version of every type (not all the versions)
    by_type = {chunk["ref_id"]: [meta["distortion_id"] for meta in chunk["meta"]] for chunk in
               dataset.groups("chunk", crop=16, distinct_types=True)}
    assert all(sorted(ids) == [1, 13, 26] for ids in by_type.values())
    assert max(len(keys) for keys in versions.values()) > 3  # (so there was a choice)


def test_two_views_overlap_inside_the_image_with_one_pair_of_boxes(generated,
                                                                   generated_images):
    chunks = list(open_dataset(str(generated)).groups("chunk", crop=(40, 48), seed=4,
                                                      versions=2, views=2))
    assert chunks
    for chunk in chunks:
        first, second = chunk["box"]
        height, width = generated_images[f"{chunk['ref_id']}_ref"][0].shape[:2]
        for y, x, h, w in (first, second):
            assert (h, w) == (40, 48)
            assert 0 <= y <= y + h <= height and 0 <= x <= x + w <= width
        rows = min(first[0], second[0]) + 40 - max(first[0], second[0])
        columns = min(first[1], second[1]) + 48 - max(first[1], second[1])
        assert rows > 0 and columns > 0
        assert 0.10 <= rows * columns / (40 * 48) <= 0.30  # Re-IQA's overlap band
        assert chunk["reference"].shape == (2, 40, 48, 3)
        assert all(view.shape == (2, 40, 48, 3) for view in chunk["distorted"])
        _assert_aligned(chunk, generated_images, views=2)


def test_two_views_fit_an_image_exactly_as_wide_as_them():
    """An image as wide as the views leaves them no sideways offset: the overlap must then
    come from the rows alone, dy = 0.7 h gives 30% (for a 150-row view, dy = 105): a draw
    there is allowed, never a 'low >= high' of the bounds' rounding."""
    from shards.boxes import two_views

    rng = np.random.default_rng(0)
    for _ in range(300):
        first, second = two_views((270, 124), (150, 124), rng)
        assert first[1] == second[1] == 0
        rows = min(first[0], second[0]) + 150 - max(first[0], second[0])
        assert 105 <= abs(second[0] - first[0]) < 135 and 0.10 <= rows / 150 <= 0.30


def test_crops_that_do_not_fit_are_refused(generated):
    dataset = open_dataset(str(generated))
    with pytest.raises(ValueError, match="does not fit"):
        next(iter(dataset.groups("pair", crop=(400, 64))))
    with pytest.raises(ValueError, match="two overlapping"):
        next(iter(dataset.groups("pair", crop=(120, 64), views=2)))
    with pytest.raises(ValueError, match="views must be"):
        dataset.groups("chunk", views=2)
    with pytest.raises(ValueError, match="kind must be"):
        dataset.groups("quad")
    for crop in (0, -5, (16, 0), 64.5, (16.0, 16), (True, 16), "64", (16, 16, 3)):
        with pytest.raises(ValueError, match="crop must be a positive size"):
            dataset.groups("pair", crop=crop)
    with pytest.raises(ValueError, match="two views need a crop at least 4 high"):
        dataset.groups("chunk", crop=(3, 40), views=2)
    # from 4 rows every draw of two views exists (the band's offsets are whole pixels)
    assert all(len(chunk["box"]) == 2 for chunk in dataset.groups("chunk", crop=(4, 5), views=2))


def test_a_shard_whose_index_names_a_missing_member_is_an_error(tmp_path, hand_made):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    broken = tmp_path / "broken"
    shutil.copytree(hand_made, broken)
    location = Location.parse(str(broken))
    path = shard_paths(location, 1)["parquet"]
    table = pq.read_table(path)
    extra = {**table.slice(0, 1).to_pylist()[0], "key": "c_d09_l1", "distortion_id": 9}
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([extra],
                                                                 schema=table.schema)]), path)
    stats_agree(Path(path))  # its size and SHA-256, but not the samples its stats count
    with pytest.raises(DamagedShardError, match=r"stats say 5 samples, parquet has 6"):
        list(open_dataset(str(broken)).groups("pair", crop=16))
    stats_path = Path(shard_paths(location, 1)["stats"])
    stats = json.loads(stats_path.read_text())
    stats_path.write_text(json.dumps({**stats, "samples": 6}))  # as if written so
    for kind in ("chunk", "pair", "triplet"):
        with pytest.raises(IncompleteShardError, match="c_d09_l1"):
            list(open_dataset(str(broken)).groups(kind, crop=16))


def test_triplets_add_the_whole_pairs_ssim_map_cut_with_the_box(hand_made, hand_images):
    """The map of the whole pair cut with the triplet's box (MT-IRN's target), not a map of
    the crop, whose window would meet a made-up border 5 pixels inside the crop."""
    dataset = open_dataset(str(hand_made))
    for crop, views in (((24, 32), 1), ((16, 16), 2)):
        for triplet in dataset.groups("triplet", crop=crop, views=views, seed=1):
            (dense,) = triplet["ssim_map"]
            key = triplet["meta"][0]["key"]
            whole = ssim_map(hand_images[f"{triplet['ref_id']}_ref"][0], hand_images[key][0])
            boxes = triplet["box"] if views == 2 else [triplet["box"]]
            expected = [window(whole, box) for box in boxes]
            assert dense.dtype == np.float32
            assert np.array_equal(dense, expected[0] if views == 1 else np.stack(expected)), key
            _assert_aligned(triplet, hand_images, views)
            if key.endswith("_d01_l1"):  # the identity version: SSIM 1 everywhere
                assert np.all(dense == 1)


def test_a_references_ssim_preparation_is_let_go_after_its_last_triplet(hand_made,
                                                                        monkeypatch):
    """Each reference is prepared once (its whole gray image and moments, 24 bytes a pixel)
    and not held past its last drawn version: a shard of 16 large references would hold
    gigabytes in every loader worker."""
    import gc
    import weakref

    from shards import groups

    made, prepare = [], groups.ssim_reference

    def recording(reference):
        prepared = prepare(reference)
        made.append(weakref.ref(prepared))
        return prepared
    dataset = open_dataset(str(hand_made))
    left = Counter(triplet["ref_id"] for triplet in dataset.groups("triplet", crop=16, seed=1))
    monkeypatch.setattr(groups, "ssim_reference", recording)
    owners: dict[str, weakref.ref] = {}
    for triplet in dataset.groups("triplet", crop=16, seed=1):
        ref_id = triplet["ref_id"]
        if ref_id not in owners:  # prepared for this, its first triplet
            owners[ref_id] = made[len(owners)]
        left[ref_id] -= 1
        gc.collect()
        assert (owners[ref_id]() is None) == (left[ref_id] == 0), ref_id
    assert len(made) == len(owners) > 1  # once each


def test_a_pair_whose_version_is_not_its_references_size_is_named(tmp_path):
    """The generator keeps every version at its reference's size; a foreign or hand-made
    shard that does not is named, never cut into crops of two sizes."""
    reference = pattern(0)
    version = np.ascontiguousarray(reference[:-8, :-8])
    writer = ShardWriter(Location.parse(str(tmp_path)), 0)
    writer.add(_record("a", reference_key("a"), reference), _png(reference))
    writer.add(_record("a", distorted_key("a", 1, 1), version, 1, 1), _png(version))
    writer.finish({})
    for kind in ("pair", "triplet"):
        with pytest.raises(ValueError, match="a pair's members must share one size"):
            list(open_dataset(str(tmp_path)).groups(kind, crop=16))
    for crop in (16, None):  # a chunk's too, cut or whole
        with pytest.raises(ValueError, match="a chunk's members must share one size"):
            list(open_dataset(str(tmp_path)).groups("chunk", crop=crop))


def test_a_spec_says_which_images_its_boxes_fit_at_every_scale():
    """GroupSpec.misfit is None exactly where every scale's box(es) can be drawn: then they lie
    inside the image and inside its half-scale image (of the shape half_scale makes); where it
    names a scale, a box of the crop (or two views, offset 0.7 h at least) is larger there."""
    from shards.boxes import half_scale
    from shards.group_spec import GroupSpec

    rng = np.random.default_rng(7)
    for _ in range(200):
        height, width = (int(side) for side in rng.integers(8, 90, 2))
        crop = tuple(int(side) for side in rng.integers(4, 40, 2))
        spec = GroupSpec("chunk", crop, views=int(rng.integers(1, 3)),
                         half_scale=bool(rng.integers(2)))
        half = half_scale(np.zeros((height, width, 3), np.uint8)).shape[:2]
        scales = {"full": (height, width), "half": half}
        why = spec.misfit((height, width))
        if why is None:
            for scale, shape in scales.items():
                if scale == "full" or spec.half_scale:
                    for y, x, h, w in spec.boxes(shape, "r", scale=scale):
                        assert y >= 0 and y + h <= shape[0] and x >= 0 and x + w <= shape[1]
        else:
            scale = why.split()[1]
            rows, cols = scales[scale]
            needed = crop[0] + (int(np.ceil(0.7 * crop[0])) if spec.views == 2 else 0)
            assert rows < needed or cols < crop[1]
    wide = GroupSpec("chunk", (16, 16), views=2, half_scale=True)
    assert wide.misfit((40, 64)).startswith("at half scale: two overlapping 16 x 16 views")
    assert wide.misfit((56, 64)) is None


@pytest.mark.parametrize(("kind", "options"), [
    ("pair", {"crop": (24, 32)}),
    ("triplet", {"crop": (24, 32)}),
    ("chunk", {"crop": (16, 24), "views": 2, "half_scale": True}),
])
def test_flipped_groups_are_their_unflipped_selves_mirrored(generated, kind, options):
    """flip=True mirrors about half the groups left-right, every member (and SSIM map, and
    half-scale member) alike, and nothing else: the same boxes and versions as flip=False,
    the same groups mirrored on every read of the seed."""
    dataset = open_dataset(str(generated))

    def read(flip: bool) -> dict:
        return {(group["ref_id"], group["meta"][0]["key"] if kind != "chunk" else None): group
                for group in dataset.groups(kind, seed=5, flip=flip, **options)}
    plain, flipped, again = read(False), read(True), read(True)
    assert set(plain) == set(flipped)
    mirrored = [name for name, group in flipped.items() if group["flipped"]]
    assert mirrored and len(mirrored) < len(flipped)
    assert [name for name, group in again.items() if group["flipped"]] == mirrored
    if kind != "chunk":  # enough groups to show about one in two
        assert 0.2 < len(mirrored) / len(flipped) < 0.8
    for name, group in flipped.items():
        base = plain[name]
        assert group["box"] == base["box"] and group["meta"] == base["meta"]
        for field, axis in (("reference", -2), ("distorted", -2), ("ssim_map", -1),
                            ("reference_half", -2), ("distorted_half", -2)):
            if field in base:
                expected = np.flip(np.asarray(base[field]), axis) if group["flipped"] \
                    else np.asarray(base[field])
                assert np.array_equal(np.asarray(group[field]), expected), (name, field)
    assert not any(group["flipped"] for group in plain.values())


def test_fewer_distinct_types_than_a_reference_holds_draws_that_many_types_once_each():
    """GroupSpec: versions K with distinct_types draws K versions, each of another type."""
    versions = [(distorted_key("r", distortion_id, level), distortion_id)
                for distortion_id in (1, 13, 26) for level in (1, 3, 5)]
    type_of = dict(versions)
    for seed in range(5):
        spec = GroupSpec("chunk", seed=seed, versions=2, distinct_types=True)
        chosen = spec.chosen("r", versions)
        assert len(chosen) == 2 and len({type_of[key] for key in chosen}) == 2


def test_the_second_view_lies_to_the_right_of_the_first_or_to_its_left():
    """boxes.two_views: 'the second lies below the first, to its right or left'; both occur."""
    sides = set()
    for seed in range(20):
        first, second = two_views((96, 128), (32, 32), np.random.default_rng(seed))
        assert second[0] > first[0]
        sides.add("right" if second[1] > first[1] else "left")
    assert sides == {"right", "left"}
