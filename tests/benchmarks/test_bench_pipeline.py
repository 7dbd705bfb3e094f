"""The pipeline projection's node rate: what a device run measured, and on what basis."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _device_figures(tmp_path: Path, pipeline: dict) -> Path:
    path = tmp_path / "bench-gpu.json"
    path.write_text(json.dumps({
        "labelers": {"all_ten": {"images_per_s": 325.0}},
        "sources": {"labelers": "run2", "pipeline": "run3"},
        "environment": {"gpu": "a GPU"},
        "pipeline": {"labelled_images": 1000, "from_first_request_seconds": 5.0,
                     "labelled_images_per_s": 150.0, **pipeline}}))
    return path


@pytest.fixture
def gpu_rates(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_pipeline import gpu_rates
    return gpu_rates


def test_the_node_rate_is_the_rate_while_every_shard_process_worked(tmp_path, gpu_rates):
    """A long run keeps every shard process busy until its last shards: the rate of a short
    device run's middle, not its start or tail, is what 23.1M images see."""
    rates = gpu_rates(_device_figures(tmp_path, {"while_all_worked": {
        "seconds": 3.0, "labelled_images": 780, "labelled_images_per_s": 260.0}}))
    assert rates["node_rate"] == 260.0
    assert rates["node_rate_started"] == 1000 / 5.0
    assert "while all its shard processes worked" in rates["node_rate_basis"]


def test_a_run_that_did_not_time_it_gives_the_rate_from_the_first_request(tmp_path, gpu_rates):
    rates = gpu_rates(_device_figures(tmp_path, {}))
    assert rates["node_rate"] == 1000 / 5.0 and rates["node_rate_started"] is None
    assert "first request" in rates["node_rate_basis"]


@pytest.mark.parametrize("overlap, said", [
    (None, "one reference at a time (a run from before shard tasks overlapped"),
    (0, "one reference at a time (run with --pipeline-overlap-bytes 0)"),
    (2**30, "made its next reference meanwhile, up to 1,073,741,824 bytes")])
def test_the_source_says_whether_the_measured_pool_overlapped_as_the_driver_does(
        tmp_path, gpu_rates, overlap, said):
    """On a GPU node the driver's shard tasks make their next reference while one's labels are
    awaited (pipeline.scheduling); a rate measured without that is not the driver's."""
    from pipeline.scheduling import layout
    assert layout(16, 1).overlap
    figures = {} if overlap is None else {"overlap_bytes": overlap}
    source = gpu_rates(_device_figures(tmp_path, figures))["source"]
    assert said in source
    assert ("not measured yet" in source) == (not overlap)


def test_the_projection_counts_the_cores_of_the_layout(monkeypatch):
    """The CPU rate is in-flight shard tasks over a task's seconds per image: the words name
    the layout's count, not a fixed 15."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_pipeline import markdown

    result = json.loads((ROOT / "docs" / "bench-pipeline.json").read_text())
    result["projection"]["layout"]["max_in_flight"] = 7
    assert f"would allow {result['projection']['cpu_rate_this_machine']} images/s from 7 " \
           "cores." in markdown(result)
