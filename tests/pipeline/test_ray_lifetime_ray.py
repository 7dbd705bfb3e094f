"""generate stops the local Ray it started before it returns, where a Ctrl-C is the
command's to answer ("interrupted", exit 130), not in an exit handler after it (a traceback,
exit 0); a Ray its caller started stays up."""

import os
import subprocess
import sys
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
