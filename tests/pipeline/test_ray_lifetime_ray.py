"""generate stops the local Ray it started before it returns, where a Ctrl-C is the
command's to answer ("interrupted", exit 130), not in an exit handler after it (a traceback,
exit 0); a Ray its caller started stays up; a SIGTERM stops it as a Ctrl-C does."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
RUN = """
import sys, ray
from pipeline.config import RunConfig
from pipeline.driver import generate
if sys.argv[2] == "caller":
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
generate(RunConfig(sources="embedded", out=sys.argv[1], limit=1, distortion_ids=(1,),
                   levels=(1,), metrics=()))
print("RAY_UP", ray.is_initialized())
"""


@pytest.mark.parametrize(("started_by", "up"), [("generate", False), ("caller", True)])
def test_generate_stops_the_ray_it_started_and_no_other(tmp_path, started_by, up):
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "out"), started_by],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"RAY_UP {up}" in done.stdout.splitlines()
    assert (tmp_path / "out" / "report.json").exists()


def test_a_sigterm_stops_generate_as_a_ctrl_c_does(tmp_path):
    """SIGTERM (`kill`, Kubernetes' stop) to a generate whose shards are being made: its stop
    path runs (exit 143, "terminated", the lease let go), where Ray's own handler aborted
    the driver; the same command then finishes the run."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--sources", "embedded",
               "--out", str(out), "--distortions", "1-7,13-33", "--metrics", "none",
               "--shard-refs", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list((out / "shards").glob("*.partial")) and process.poll() is None:
            assert time.monotonic() < deadline, "no shard was begun"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-2000:]
    assert "iqa-factory: terminated (SIGTERM) (the same command resumes a generate run)" \
        in stderr
    assert not (out / "generate.lease").exists() and not (out / "report.json").exists()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.json").exists()
