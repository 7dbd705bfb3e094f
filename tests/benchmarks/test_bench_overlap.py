"""The overlap benchmark runs both modes on the same plan, and they write the same dataset."""

import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_overlap

from pipeline import worker
from pipeline.sizing import TargetSize
from shards.reader import read_index
from shards.storage import Location


def _rows(dataset: str) -> dict:
    index = read_index(Location.parse(dataset)).to_pylist()
    return {row["key"]: (row["sha256"], row["scores"], row["quality"]) for row in index}


def test_both_modes_label_the_same_plan_into_the_same_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    small = replace(bench_overlap.SIZES, image=TargetSize(192, 176), pipeline_refs=2,
                    pipeline_shard_refs=2, pipeline_distortions=(1, 13), pipeline_levels=(1,),
                    pipeline_metrics=("mae", "gmsd"))
    result = bench_overlap.measure(small, rounds=1)
    [at_a_time], [meanwhile] = (result["runs"][mode] for mode in bench_overlap.MODES)
    assert at_a_time["overlap_bytes"] == 0 and meanwhile["overlap_bytes"] == worker.OVERLAP_BYTES
    assert at_a_time["labelled_images"] == meanwhile["labelled_images"] == 2 * 2
    rows = _rows(at_a_time["dataset"])
    assert len(rows) == 2 * (1 + 2) and rows == _rows(meanwhile["dataset"])
    assert result["speed_up"] == round(result["median_images_per_s"]["next made meanwhile"]
                                       / result["median_images_per_s"]["one reference at a time"],
                                       2)
    report = bench_overlap.markdown(result)
    assert all(f"| {mode} |" in report for mode in bench_overlap.MODES)
