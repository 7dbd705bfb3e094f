"""The labeler benchmark's comparison of CPU pass sizes: every metric at every size, the
Labeler in its metrics' own passes and in passes of 16, and its table (the hand-written
metrics here: the networks' weights are absent)."""

import sys
from pathlib import Path

import labelers
from pipeline.sizing import TargetSize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_labelers


def test_cpu_passes_times_every_metric_at_every_size():
    ref, dists = bench_labelers.workload(3, TargetSize(192, 176))
    hand_written = [key for key in labelers.METRICS if key not in labelers.DEEP_METRICS]
    passes = bench_labelers.cpu_passes(ref, dists, tuple(hand_written))
    assert passes["keys"] == hand_written == list(passes["metrics"])
    for key, rates in passes["metrics"].items():
        assert rates["own"] == labelers.metric_class(key).cpu_chunk  # (instances were changed)
        assert all(rates[str(size)] > 0 for size in bench_labelers.PASS_SIZES)
    assert passes["labeler"]["own"] > 0 and passes["labeler"]["16"] > 0
    table = "\n".join(bench_labelers.cpu_passes_markdown(passes))
    assert table.count("\n| ") == len(hand_written) + 1  # a header and a row each
    assert "in their own passes" in table
