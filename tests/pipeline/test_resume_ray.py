"""Resume after the driver is killed mid-run: one shard finished and another partly written
when the kill lands; the rerun finishes with the same bytes as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DEADLINE_SECONDS = 300


def _command(folder: Path, ensemble: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "generate", "--sources", str(folder),
            "--out", str(out), "--size", "192x176", "--shard-refs", "1",
            "--distortions", "1,8,13", "--levels", "1,3,5", "--metrics", "mae,gmsd",
            "--ensemble", str(ensemble), "--actors", "1", "--max-in-flight", "1"]


def _kill_when_one_done_and_one_partial(command: list[str], shards: Path) -> tuple[str, str]:
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + DEADLINE_SECONDS
    try:
        while time.monotonic() < deadline and process.poll() is None:
            done = sorted(shards.glob("*_stats.json")) if shards.exists() else []
            partial = sorted(shards.glob("*.tar.*.partial")) if shards.exists() else []
            if done and partial:
                os.killpg(process.pid, signal.SIGKILL)
                return done[0].name, partial[0].name
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    pytest.fail("the run ended or timed out before one shard was done and another partial")


def _tars(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((out / "shards").glob("*.tar"))}


def test_killed_driver_resumes_to_the_same_bytes(tmp_path, shifted_sources):
    folder, ensemble = shifted_sources(4)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    clean = tmp_path / "clean"
    subprocess.run(_command(folder, ensemble, clean), check=True, env=environment,
                   capture_output=True)

    killed = tmp_path / "killed"
    done, partial = _kill_when_one_done_and_one_partial(_command(folder, ensemble, killed),
                                                        killed / "shards")
    assert done.endswith("_stats.json") and partial.endswith(".partial") and ".tar." in partial
    assert (killed / "shards" / partial).exists()  # the kill left a partly written shard
    assert not (killed / "report.json").exists()

    earlier = sum(json.loads(stats.read_text())["samples"]
                  for stats in (killed / "shards").glob("*_stats.json"))
    rerun = subprocess.run(_command(folder, ensemble, killed), check=True, env=environment,
                           capture_output=True, text=True)
    assert "resuming:" in rerun.stdout
    report = json.loads((killed / "report.json").read_text())  # its rate: this run's samples
    assert earlier > 0 and report["samples_this_run"] == report["samples"] - earlier
    assert not list((killed / "shards").glob("*.partial"))  # the partial shard was made again
    assert _tars(killed) == _tars(clean) and len(_tars(clean)) == 4

    # a rerun of the finished dataset makes nothing and needs no cluster: RAY_ADDRESS names a
    # port nothing listens on, which fails any Ray start (ClusterUnreachableError, exit 2)
    again = subprocess.run(_command(folder, ensemble, killed), capture_output=True, text=True,
                           env={**environment, "RAY_ADDRESS": "127.0.0.1:9"}, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "note: all 4 shards are finished: nothing to make (Ray not started)" in again.stdout
    rerun_report = json.loads((killed / "report.json").read_text())
    assert rerun_report["samples_this_run"] == 0 and "scheduling" not in rerun_report
    assert rerun_report["samples"] == report["samples"] and _tars(killed) == _tars(clean)
