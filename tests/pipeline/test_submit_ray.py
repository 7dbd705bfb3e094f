"""`generate --address http://HEAD:8265` submits the same command to a Ray cluster through the
Jobs API: here a real Ray head started for the test, with its dashboard's job server."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.commands.inspect_dataset import inspect
from shards.reader import complete_shards
from shards.storage import Location

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).parent / "ray")
REPOSITORY = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(url: str, seconds: float = 90) -> None:
    """Until the server answers at all (401 included: Ray's token authentication, on by
    default for local clusters since Ray 2.59, guards the dashboard)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


TOKEN = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "iqa-factory-test-token-0123456789abcdef"}


def _without_token() -> dict:
    return {k: v for k, v in os.environ.items() if k not in TOKEN}


@dataclass(frozen=True)
class Head:
    jobs: str  # the dashboard's Jobs API
    gcs: str   # what RAY_ADDRESS names


@pytest.fixture
def ray_head():
    """A Ray head with token authentication and the project's environment first on PATH (the
    job runs `python -m pipeline.cli`), as a remote cluster would be set up."""
    dashboard, gcs = _free_port(), _free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run([RAY, "start", "--head", f"--port={gcs}", "--num-cpus=2",
                    "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={dashboard}", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180,
                   env={**_without_token(), **TOKEN, "PATH": path})
    address = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for(f"{address}/api/version")
        yield Head(address, f"127.0.0.1:{gcs}")
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def _generate(address: str, folder, ensemble, out, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--address", address,
         "--sources", str(folder), "--out", str(out), "--size", "192x176",
         "--shard-refs", "1", "--distortions", "1,13", "--levels", "1,5",
         "--metrics", "mae,gmsd", "--ensemble", str(ensemble)],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=900, env=env)


def test_address_submits_the_run_as_a_job_and_follows_it(ray_head, shifted_sources, tmp_path):
    folder, ensemble = shifted_sources(2)
    out = tmp_path / "out"
    refused = _generate(ray_head.jobs, folder, ensemble, out, _without_token())
    assert refused.returncode == 2
    assert "requires Ray's authentication token: export RAY_AUTH_MODE=token" in refused.stderr
    assert "Traceback" not in refused.stderr
    result = _generate(ray_head.jobs, folder, ensemble, out, {**_without_token(), **TOKEN})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "submitted job" in result.stdout and "SUCCEEDED" in result.stdout
    assert complete_shards(Location.parse(str(out))) == [0, 1]
    _, problems = inspect(str(out))
    assert problems == []
    # a job that fails says why in its last line (a runtime environment that cannot be set up
    # leaves no logs: Ray's job message is all there is)
    failed = _generate(ray_head.jobs, tmp_path / "absent", ensemble, tmp_path / "out2",
                       {**_without_token(), **TOKEN})
    assert failed.returncode == 1
    last = failed.stdout.rstrip().splitlines()[-1]
    assert "FAILED (Job entrypoint command failed with exit code 2" in last


def test_interrupting_the_follow_leaves_the_job_running_and_says_so(ray_head,
                                                                     shifted_sources,
                                                                     tmp_path):
    folder, ensemble = shifted_sources(1)
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--address", ray_head.jobs,
               "--sources", str(folder), "--out", str(tmp_path / "out"), "--size", "192x176",
               "--distortions", "1", "--levels", "1", "--metrics", "mae",
               "--ensemble", str(ensemble)]
    environment = {**_without_token(), **TOKEN}
    following = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environment)
    first = following.stdout.readline()
    assert first.startswith("submitted job"), first
    job = first.split()[2]
    following.stdout.readline()  # the job's first line, followed as the job writes it
    seen = time.time()
    following.send_signal(signal.SIGINT)
    _, stderr = following.communicate(timeout=120)
    assert following.returncode == 130
    assert f"stopped following job {job}: it runs on in the cluster; `ray job stop" in stderr
    # Ray reads its authentication mode once per process: asked from one that has the token
    waited = subprocess.run(
        [sys.executable, "-c", WAIT_FOR_JOB, ray_head.jobs, job], capture_output=True,
        text=True, timeout=900, env=environment)
    status, ended = waited.stdout.split()
    assert status == "SUCCEEDED", waited.stderr[-2000:]  # it ran on to its end
    assert seen < int(ended) / 1000  # its output came as it ran, not once it had ended


WAIT_FOR_JOB = """
import sys, time
from ray.job_submission import JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
while (status := str(client.get_job_status(sys.argv[2])).split(".")[-1]) not in (
        "SUCCEEDED", "FAILED", "STOPPED"):
    time.sleep(2)
print(status, client.get_job_info(sys.argv[2]).end_time)
"""


def test_ray_address_of_a_token_cluster_without_the_token_gets_the_hint(ray_head, tmp_path):
    """Before: twenty seconds of GCS warnings, one a second, then only 'Failed to connect'."""
    refused = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "generate", "--sources", "embedded",
         "--limit", "1", "--out", str(tmp_path / "out"), "--allow-missing-metrics"],
        cwd=REPOSITORY, capture_output=True, text=True, timeout=300,
        env={**_without_token(), "RAY_ADDRESS": ray_head.gcs})
    assert refused.returncode == 2
    assert f"RAY_ADDRESS={ray_head.gcs} requires Ray's authentication token" in refused.stderr
    assert "RAY_AUTH_MODE=token" in refused.stderr and "Traceback" not in refused.stderr
    assert refused.stderr.count("Failed to get cluster ID") <= 1  # the probe, not a retry loop


def test_a_local_run_never_joins_a_cluster_another_program_started(ray_head, monkeypatch):
    """Without RAY_ADDRESS a run starts its own Ray: a bare ray.init() would join the cluster
    `ray start` made on this machine (and die with it, or run on its other environment)."""
    import ray

    from pipeline.driver import _start_local_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    context = _start_local_ray()
    try:
        assert context.address_info["gcs_address"] != ray_head.gcs
    finally:
        ray.shutdown()
