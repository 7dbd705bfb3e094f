"""A folder of SOURCES that cannot be read is named by the run: at its start, in its summary
and in report.json (`folders_unlisted`), never passed over in silence. The run goes as a user
without the capabilities that let root read every folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_a_run_names_a_folder_it_cannot_read(tmp_path):
    folder = tmp_path / "sources"
    for name in ("open", "locked"):
        (folder / name).mkdir(parents=True)
        pixels = np.random.default_rng(len(name)).integers(0, 256, (176, 192, 3), np.uint8)
        Image.fromarray(pixels).save(folder / name / "a.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "generate", "--sources", str(folder),
               "--out", str(out), "--size", "192x176", "--distortions", "1", "--levels", "1",
               "--metrics", "none", "--actors", "1", "--max-in-flight", "1"]
    unprivileged = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
                    if os.geteuid() == 0 else [])
    (folder / "locked").chmod(0)
    try:
        done = subprocess.run([*unprivileged, *command], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              timeout=600)
    finally:
        (folder / "locked").chmod(0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    warning = (f"warning: folders of SOURCES that cannot be read, their images left out: "
               f"1: {folder / 'locked'} (Permission denied)")
    lines = done.stdout.splitlines()
    assert lines.count(warning) == 2  # at the start, and in the summary at the end
    assert lines.index(warning) < len(lines) // 2
    report = json.loads((out / "report.json").read_text())
    assert report["folders_unlisted"] == {str(folder / "locked"): "Permission denied"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["references"] == 1  # the open folder's image only
