"""A label-free dataset (generate --metrics none) trains class targets; regression targets it
has no values of are refused with what to do instead."""

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
