"""An installed (non-editable) copy carries every file its packages read at run time: a wheel
built from the tracked files holds each tracked file of the packages, data files included."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked(*paths: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *paths], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.split()


def test_a_wheel_holds_every_tracked_file_of_the_packages(tmp_path):
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [name.rstrip("*") for name in config["packages"]["find"]["include"]]
    wanted = set(_tracked(*packages))
    assert "labelers/pmos_ensemble.json" in wanted  # the listing sees the data files
    source = tmp_path / "source"
    for name in [*wanted, "pyproject.toml", "README.md"]:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(source), "-w", str(tmp_path / "wheel")], check=True,
                   capture_output=True, timeout=300)
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    held = {name for name in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in name}
    assert sorted(wanted - held) == [], "not installed by a wheel"
    assert sorted(held - wanted) == [], "installed, though not tracked"
