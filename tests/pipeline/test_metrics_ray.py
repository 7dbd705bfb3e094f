"""Ray's metrics endpoint serves the pipeline's custom metrics while a run goes on, under the
names the READMEs give (Ray prefixes a custom metric with ray_ and a counter ends in _total)."""

import re
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import ray

from pipeline.driver import ClusterOptions, generate

WAIT_SECONDS = 120
REPOSITORY = Path(__file__).resolve().parents[2]
READMES = (REPOSITORY / "README.md", REPOSITORY / "cluster" / "README.md")
# as /metrics shows them (what ray.util.metrics.Counter("iqa_failures") is exported as)
EXPORTED = {"ray_iqa_samples_written_total", "ray_iqa_failures_total",
            "ray_iqa_shards_written_total", "ray_iqa_stage_seconds_total"}
# the stage seconds' stages, the README's: type 8 (learned) gives the network stage
STAGES = {"decode", "distort", "network", "encode", "label", "write"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _served_metrics(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


def _exported(served: str) -> tuple[set[str], set[str]]:
    """The names of the iqa metrics on the endpoint, and the stage seconds' stages."""
    names = set(re.findall(r"^(ray_iqa_\w+)\{", served, re.MULTILINE))
    stages = set(re.findall(r'^ray_iqa_stage_seconds_total\{.*\bstage="(\w+)"', served,
                            re.MULTILINE))
    return names, stages


@pytest.mark.parametrize("readme", READMES, ids=lambda path: str(path.relative_to(REPOSITORY)))
def test_the_readmes_name_the_metrics_as_ray_exports_them(readme):
    text = readme.read_text()
    assert set(re.findall(r"\bray_iqa_\w+", text)) == EXPORTED
    bare = [name.removeprefix("ray_").removesuffix("_total") for name in EXPORTED]
    assert [name for name in bare if re.search(rf"\b{name}\b", text)] == []


@pytest.mark.ray
@pytest.mark.slow
def test_metrics_endpoint_serves_the_custom_metrics_during_a_run(shifted_sources, fast_config,
                                                                 monkeypatch):
    # report every second (default 10 s) so the check does not race the end of the run
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    # the endpoint shows a counter some seconds after it first moves (about 6 s here): 48
    # one-reference shards keep the run going for about five times as long as that
    folder, ensemble = shifted_sources(48)
    (folder / "a_not_an_image.png").write_bytes(b"not an image")  # sorted first: a failure
    config = fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble),
                         distortion_ids=(1, 8, 13), levels=(1, 3, 5))
    port = _free_port()
    ray.init(num_cpus=2, include_dashboard=False, _metrics_export_port=port)
    try:
        run = threading.Thread(target=generate, args=(config, ClusterOptions(actors=1)))
        run.start()
        seen, deadline = (set(), set()), time.monotonic() + WAIT_SECONDS
        while seen != (EXPORTED, STAGES) and time.monotonic() < deadline:
            time.sleep(1)
            seen = _exported(_served_metrics(port))
        during_run = run.is_alive()
        run.join()
    finally:
        ray.shutdown()
    assert seen == (EXPORTED, STAGES)
    assert during_run, "the metrics should be served while the run is still going"
