"""Ray's metrics endpoint serves the pipeline's custom metrics while a run goes on."""

import socket
import threading
import time
import urllib.request

import pytest
import ray

from pipeline.driver import ClusterOptions, generate

pytestmark = [pytest.mark.ray, pytest.mark.slow]
WAIT_SECONDS = 120
COUNTERS = ("iqa_samples_written", "iqa_shards_written", "iqa_failures")  # the README's
# iqa_stage_seconds's stages, the README's: type 8 (learned) gives the network stage
STAGES = tuple(f'stage="{stage}"' for stage in ("decode", "distort", "network", "encode",
                                                 "label", "write"))


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
        seen, deadline = "", time.monotonic() + WAIT_SECONDS
        while (not all(name in seen for name in COUNTERS + STAGES)
               and time.monotonic() < deadline):
            time.sleep(1)
            seen = _served_metrics(port)
        during_run = run.is_alive()
        run.join()
    finally:
        ray.shutdown()
    for name in COUNTERS:
        assert name in seen, f"{name} never reached the endpoint"
    assert "iqa_stage_seconds" in seen
    assert [stage for stage in STAGES if stage not in seen] == []
    assert during_run, "the metrics should be served while the run is still going"
