"""The labeler benchmark's comparison of CPU pass sizes: every metric at every size, the
Labeler in its metrics' own passes and in passes of 16, and its table (the hand-written
metrics here: the networks' weights are absent); its rates: the images scored over the
seconds until the device is done (a fake clock)."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import labelers
from pipeline.sizing import TargetSize

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_labelers
import device_timing


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


class FakeClock:
    """perf_counter for device_timing: seconds pass only when a fake says so."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_rate_on_cuda_stops_the_clock_once_the_device_is_done(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(device_timing, "time", clock)
    waits = []

    def device_finishes(device):  # the GPU's queued work: 3 s after the call returned
        waits.append(device)
        clock.now += 3.0

    monkeypatch.setattr(torch.cuda, "synchronize", device_finishes)

    def call():  # the Python side returns after 1 s
        clock.now += 1.0

    assert bench_labelers._rate(8, call, "cpu") == 8 / 1.0 and waits == []
    # one wait for earlier work before the clock starts, one before it stops: 8 / (1 + 3)
    assert bench_labelers._rate(8, call, "cuda") == 8 / 4.0 and len(waits) == 2


def test_pyiqa_loop_rates_the_pairs_it_scored(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(device_timing, "time", clock)
    scored = []

    def metric(ref, dist):
        scored.append(dist.shape)
        clock.now += 0.5

    fake = types.ModuleType("pyiqa")
    fake.create_metric = lambda name, device, as_loss: metric
    monkeypatch.setitem(sys.modules, "pyiqa", fake)
    ref = np.zeros((8, 8, 3), np.uint8)
    dists = [np.full((8, 8, 3), value, np.uint8) for value in (10, 20, 30)]
    rate = bench_labelers.pyiqa_loop("gmsd", ref, dists, "cpu", count=10)
    assert len(scored) == 1 + 3  # the warm-up, then each of the 3 versions there are
    assert rate == 3 / (3 * 0.5)


def test_more_pyiqa_pairs_than_versions_is_refused(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["bench_labelers.py", "--out", str(tmp_path),
                                      "--images", "4", "--pyiqa-images", "8"])
    with pytest.raises(SystemExit):
        bench_labelers.main()
    assert "--pyiqa-images 8 is more than the 4 distorted versions" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
