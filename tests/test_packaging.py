"""An installed (non-editable) copy carries every file its packages read at run time."""

import fnmatch
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_in_a_package_is_in_its_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [name.rstrip("*") for name in config["packages"]["find"]["include"]]
    patterns = config.get("package-data", {})
    tracked = subprocess.run(["git", "ls-files", *packages], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    data = [Path(name) for name in tracked if not name.endswith(".py")]
    assert any(path.name == "pmos_ensemble.json" for path in data)  # the listing sees them
    left_out = [str(path) for path in data
                if not any(fnmatch.fnmatch(path.name, pattern)
                           for pattern in patterns.get(path.parts[0], ()))]
    assert left_out == [], f"not installed by a wheel: {left_out}"
