"""A label-free dataset (generate --metrics none) trains class targets; regression targets it
has no values of are refused with what to do instead."""

import json

import pyarrow as pa
import pytest

from shards.schema import INDEX_SCHEMA
from shards.storage import Location
from training.pretrain import check_labels
from training.shard_data import Target


def _index(quality, scores) -> pa.Table:
    rows = [{"key": f"r_d01_l{i + 1}", "ref_id": "r", "kind": "distorted", "level": i + 1,
             "distortion_id": 1, "quality": q, "scores": s}
            for i, (q, s) in enumerate(zip(quality, scores, strict=True))]
    return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)


def test_a_label_free_index_refuses_quality_and_metric_targets(tmp_path):
    location = Location.parse(str(tmp_path))
    index = _index([None, None], [None, None])
    for name in ("quality", "mae", "ssim"):
        with pytest.raises(ValueError, match=f"no {name} values .*--metrics none"):
            check_labels(location, index, Target(name))
    assert check_labels(location, index, Target("level")) is None
    assert check_labels(location, index, Target("distortion")) is None


def test_a_metric_target_the_run_scored_is_accepted(tmp_path):
    index = _index([0.5, 0.7], [{"mae": 0.1}, {"mae": 0.2}])
    assert check_labels(Location.parse(str(tmp_path)), index, Target("mae")) is None
    with pytest.raises(ValueError, match="no gmsd values"):
        check_labels(Location.parse(str(tmp_path)), index, Target("gmsd"))


def test_a_target_only_some_samples_have_is_refused_before_training(tmp_path):
    """A metric scored on some shards only (its weights absent on some nodes) would stop a
    run at its first unscored sample, mid-epoch: refused at the start, naming the shards."""
    index = _index([0.5, 0.7, 0.6], [{"lpips": 0.1}, {"lpips": None}, {"lpips": 0.3}])
    index = index.append_column("shard", pa.array([0, 3, 4]))
    with pytest.raises(ValueError, match=r"1 of 3 distorted samples have no lpips value "
                                         r"\(in shard\(s\) 3"):
        check_labels(Location.parse(str(tmp_path)), index, Target("lpips"))


def test_the_distortion_class_target_refuses_types_beyond_the_papers_bank():
    record = {"key": "r_d38_l1", "distortion_id": 38, "level": 1}
    with pytest.raises(ValueError, match="distortion_id 38, beyond the 33 classes"):
        Target("distortion").value(record)
    assert Target("distortion").value({**record, "distortion_id": 33}) == 32


@pytest.mark.parametrize(("config", "target", "said"), [
    ({"compose": [2, 3]}, "level", "made with --compose or --compose-share"),
    ({"compose_share": 0.1}, "class", "no single class for the class target"),
    ({"distortion_ids": [1, 38], "levels": [1, 2]}, "distortion",
     r"distortion_id \[38\], beyond the 33 classes"),
])
def test_a_class_target_the_selection_cannot_give_is_refused_at_the_start(tmp_path, config,
                                                                         target, said):
    """Read from manifest.json before training, not at the first such sample mid-epoch."""
    from training.pretrain import check_classes

    (tmp_path / "manifest.json").write_text(json.dumps({"config": config}))
    with pytest.raises(ValueError, match=said):
        check_classes(Location.parse(str(tmp_path)), Target(target))
    check_classes(Location.parse(str(tmp_path)), Target("multihot"))  # mixtures: its bits
    check_classes(Location.parse(str(tmp_path)), Target("quality"))


def test_a_class_target_the_selection_gives_is_accepted(tmp_path):
    from training.pretrain import check_classes

    for compose in (None, [1, 1]):  # chains of one link: single types
        (tmp_path / "manifest.json").write_text(json.dumps(
            {"config": {"distortion_ids": [1, 33], "levels": [1, 5], "compose": compose,
                        "compose_share": 0.0}}))
        for name in ("distortion", "level", "class"):
            check_classes(Location.parse(str(tmp_path)), Target(name))
    (tmp_path / "manifest.json").unlink()  # none: checked as samples are read
    check_classes(Location.parse(str(tmp_path)), Target("level"))


@pytest.mark.parametrize(("text", "said"), [("{cut", "manifest.json is not JSON"),
                                            ('{"config": [1]}', "holds no config object")])
def test_a_class_target_on_a_damaged_manifest_names_the_file(tmp_path, text, said):
    from shards.reader import RunFileError
    from training.pretrain import check_classes

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(RunFileError, match=said):
        check_classes(Location.parse(str(tmp_path)), Target("level"))


@pytest.mark.parametrize("compose", [2, True, "1-2", {"k": 1}, [1]])
def test_a_class_target_names_a_manifest_whose_compose_is_not_k_m(tmp_path, compose):
    from shards.reader import RunFileError
    from training.pretrain import check_classes

    (tmp_path / "manifest.json").write_text(json.dumps({"config": {"compose": compose}}))
    with pytest.raises(RunFileError, match="is not \\(K, M\\): damaged"):
        check_classes(Location.parse(str(tmp_path)), Target("level"))


def test_drawn_versions_count_each_references_versions_and_types_as_python_does():
    """Counted by Arrow (23.1M ids as Python lists are gigabytes); checked by counting the
    rows here: a reference with a composed version sharing its first type, one whose
    composed first link is unknown (null), and one with a single version."""
    from collections import Counter

    from training.label_free import drawn_versions, full_chunks, groups_per_reference
    from training.objectives.base import GroupRequest

    rows = [("a", 1), ("a", 2), ("a", 2), ("b", 3), ("b", None), ("c", 7), ("a", 5)]
    index = pa.table({"ref_id": [r for r, _ in rows],
                      "distortion_id": pa.array([d for _, d in rows], pa.int32())})
    expected = {ref: (count, len({d for r, d in rows if r == ref}))
                for ref, count in Counter(r for r, _ in rows).items()}
    assert drawn_versions(index) == expected == {"a": (4, 3), "b": (2, 2), "c": (1, 1)}
    drawn = drawn_versions(index)
    chunks = GroupRequest("chunk", 32, versions=3, distinct_types=True)
    whole, notice = full_chunks(drawn, frozenset("abcz"), chunks, "train", "d")
    assert whole == frozenset("az") and "2 train reference(s) have fewer than 3 types" in notice
    pairs = GroupRequest("pair", 32, versions=3)
    assert groups_per_reference(drawn, frozenset("abz"), pairs) == Counter({"a": 3, "b": 2})


def test_each_datasets_groups_are_read_as_a_share_spread_over_its_shards(tiny_dataset):
    """A label-free run's epoch of `length` groups a worker, mixed over datasets in proportion
    to their train groups: each dataset's stream reads its part of it over the whole of its
    open shards (a share of each), not their front; a pass (validation) whole."""
    from collections import Counter

    from shards import open_dataset
    from shards.order import ONE_PASS
    from training.label_free import Part, _spread, training_reading

    dataset = open_dataset(str(tiny_dataset))
    refs = frozenset(dataset.references)
    shards = len(dataset.where(None, refs)[0])
    small, large = (Part(name, dataset, refs, frozenset(), groups, Counter())
                    for name, groups in (("small", 40), ("large", 120)))
    reading = training_reading("pair", 32)
    for part in (small, large):
        per_worker = 32 * part.train_groups / 160 / 2  # its quarter or three, over 2 workers
        expected = min(1.0, per_worker / (16 * part.train_groups / shards))
        assert _spread(reading, part, refs, [small, large], 2).share == pytest.approx(expected)
    assert _spread(ONE_PASS, small, refs, [small, large], 2) == ONE_PASS


@pytest.mark.parametrize(("target", "field", "classes"), [("distortion", "distortion_id", 33),
                                                          ("level", "level", 5)])
def test_a_class_target_takes_its_last_class_and_refuses_the_one_after(target, field, classes):
    """distortions.md: 33 types x 5 levels, ids 1-33: ids and levels count from 1,
    so the last is class 32 (4), and the next one is beyond the classes."""
    record = {"key": "r_d01_l1", "distortion_id": 1, "level": 1}
    assert Target(target).value({**record, field: classes}) == classes - 1
    with pytest.raises(ValueError, match=f"{field} {classes + 1}, beyond the {classes} classes"):
        Target(target).value({**record, field: classes + 1})
