"""Where a dataset's bytes come from: the versions of the libraries a replay runs and digests
of this project's code, recorded in its manifest and in every shard's stats, compared where
a recipe is replayed (a replay is exact only on the recorded versions)."""

import functools
import hashlib
import importlib.util
from pathlib import Path

from labelers.registry import package_version


def _opencv_codecs() -> dict[str, str]:
    """The codec libraries built into OpenCV, from its build information."""
    import cv2

    found = {}
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.strip().partition(":")
        if name in ("JPEG", "JPEG 2000", "PNG", "ZLib") and "(ver" in value:
            found[f"opencv_{name.lower().replace(' ', '')}"] = (
                value.split("(ver", 1)[1].strip(" )"))
    return found


def _opencv_dispatch() -> str:
    """The instruction sets OpenCV dispatches its kernels to on this machine: its float filters
    round differently without AVX2 (on another architecture too), so a replay is exact only
    where this matches. AVX-512 is left out: it changes no output (tests/distortions/
    test_golden.py)."""
    import cv2

    available = (feature.lstrip("*") for feature in cv2.getCPUFeaturesLine().split()
                 if not feature.endswith("?"))  # "?": built in, not usable here
    return " ".join(feature for feature in available if not feature.startswith("AVX512"))


# this project's code of a dataset's bytes: pixels (references sized by the pipeline, versions
# distorted), scores, records and tars; and what of it cannot move a recipe's replayed pixels:
# a replay is `distortions.replay` of the stored reference, whose pixels are checked by their
# SHA-256 (shards' code reads them and the recipe, and pipeline's and labelers' do not run)
CODE_ROOMS = ("distortions", "labelers", "shards", "pipeline")
NOT_REPLAYED = ("iqa-factory", "labelers_code", "pipeline_code", "shards_code")


def library_versions() -> dict[str, str | None]:
    """The versions of every library a replay depends on: NumPy, SciPy and scikit-image
    (float code of most types), OpenCV (with the instruction sets it dispatches to) and its
    libjpeg-turbo/OpenJPEG/libpng, Pillow and its libjpeg-turbo/OpenJPEG/zlib (JPEG, JPEG 2000
    and PNG), torch (the learned denoiser) and PyWavelets (the noise estimate it is given:
    scikit-image's wavelet sigma, to which a one-ulp change moves pixels); and this project's
    own: its version and a digest of each room of its code that makes a dataset's bytes
    (`CODE_ROOMS`; an editable install keeps its version across commits). Looked up once per
    process (every shard a worker makes records them)."""
    return dict(_library_versions())


def code_digest(room: str) -> str | None:
    """SHA-256 (16 hex digits) of a room's source files (*.py, *.json: names and bytes);
    None where the room is not installed. Found, never imported."""
    spec = importlib.util.find_spec(room)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.suffix in (".py", ".json")):
        digest.update(f"{path.relative_to(folder).as_posix()}\0".encode())
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@functools.cache
def _library_versions() -> dict[str, str | None]:
    from PIL import features

    versions = {package.lower(): package_version(package) for package in
                ("numpy", "scipy", "scikit-image", "opencv-python-headless", "Pillow", "torch",
                 "PyWavelets")}
    if versions["opencv-python-headless"] is None:
        versions["opencv-python-headless"] = package_version("opencv-python")
    versions.update(_opencv_codecs(), opencv_dispatch=_opencv_dispatch())
    versions.update({f"pillow_{name}": features.version(name) for name in
                     ("libjpeg_turbo", "jpg_2000", "zlib")})
    versions["iqa-factory"] = package_version("iqa-factory")
    versions.update({f"{room}_code": code_digest(room) for room in CODE_ROOMS})
    return versions


def differing_libraries(recorded: dict | None) -> dict[str, tuple]:
    """{library: (recorded version, this machine's)} of each library or code a replay runs
    whose version differs from the one recorded (every one when none is recorded)."""
    here = library_versions()
    recorded = recorded or {}
    return {name: (recorded.get(name), version) for name, version in sorted(here.items())
            if recorded.get(name) != version and name not in NOT_REPLAYED}
