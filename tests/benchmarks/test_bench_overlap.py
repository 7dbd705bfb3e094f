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


def _run(images_per_s: float, busy: float, label_wait: float) -> dict:
    return {"images_per_s": images_per_s, "labelling_busy_seconds": busy,
            "pool_stage_seconds": {"label": label_wait}}


def test_the_table_gives_medians_over_the_runs_not_the_last_run():
    runs = [_run(30.0, 1.0, 0.3), _run(31.0, 2.0, 0.5), _run(32.0, 5.0, 0.1)]
    result = {"machine": "m", "references": 3, "image": "384x288", "distortions": [1],
              "levels": [1], "metrics": ["mae"], "rounds": 3,
              "runs": {mode: runs for mode in bench_overlap.MODES},
              "median_images_per_s": {mode: 31.0 for mode in bench_overlap.MODES},
              "speed_up": 1.0}
    report = bench_overlap.markdown(result)
    # medians: busy of 1, 2, 5 -> 2; label wait of 0.3, 0.5, 0.1 -> 0.3 (the last run: 5, 0.1)
    assert "| one reference at a time | 31.0 | 30.0, 31.0, 32.0 | 2.0 | 0.3 |" in report
    assert "labelling busy s (median) | pool's label wait s (median) |" in report
