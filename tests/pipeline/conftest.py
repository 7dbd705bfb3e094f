"""Pipeline fixtures: a folder of small sources with every bad-input kind, a fast config."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import ray
from PIL import Image

from labelers.ensemble import Ensemble, Mapping01
from pipeline.config import RunConfig
from pipeline.plan import Plan, PlannedReference
from pipeline.sizing import TargetSize

SMALL = TargetSize(192, 176)


def lettered_plan(letters: str, shard_refs: int, **listing) -> Plan:
    """A plan of one reference per letter (its ref_id and name; its file /in/LETTER.png),
    `shard_refs` to a shard (shard = position // shard_refs); `listing`: the Plan's
    source_bytes and source_mtimes."""
    refs = tuple(PlannedReference(letter, f"/in/{letter}.png", letter, "train")
                 for letter in letters)
    return Plan({"shard_refs": shard_refs}, refs, **listing)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for one test module (without the dashboard)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.fixture
def good_rgb(small_image) -> Image.Image:
    return Image.fromarray(small_image)


@pytest.fixture
def sources_folder(tmp_path, good_rgb) -> tuple:
    """Good images in many modes, and one file of each bad kind; returns (folder, expected)."""
    folder = tmp_path / "sources"
    (folder / "nested").mkdir(parents=True)
    rgba = good_rgb.convert("RGBA")
    rgba.putalpha(128)
    exif = good_rgb.getexif()
    exif[0x0112] = 6  # rotate 90 degrees
    sixteen = Image.fromarray(np.asarray(good_rgb.convert("L")).astype(np.uint16) * 257)
    good = {
        "rgb.png": _encode(good_rgb),
        "gray.png": _encode(good_rgb.convert("L")),
        "rgba.png": _encode(rgba),
        "palette.png": _encode(good_rgb.convert("P")),
        "cmyk.jpg": _encode(good_rgb.convert("CMYK"), "JPEG"),
        "sixteen.png": _encode(sixteen),
        "nested/rotated.jpg": _encode(good_rgb.resize((192, 192)), "JPEG", exif=exif.tobytes()),
    }
    bad = {
        "empty.png": (b"", "empty"),
        "text.png": (b"this is not an image", "not_an_image"),
        "truncated.jpg": (_encode(good_rgb, "JPEG")[:400], "corrupt"),
        "ended_early.jpg": (_cut_and_ended(_encode(good_rgb, "JPEG")), "corrupt"),
        "small.png": (_encode(good_rgb.resize((64, 48))), "too_small"),
        "bomb.png": (_encode(Image.new("RGB", (3000, 3000))), "too_many_pixels"),
    }
    for name, data in good.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in bad.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "missing.png", folder / "dangling.png")
    expected_failures = {name.split(".")[0]: reason for name, (_, reason) in bad.items()}
    expected_failures["dangling"] = "unreadable"
    return folder, [n.split("/")[-1].split(".")[0] for n in good], expected_failures


def _cut_and_ended(jpeg: bytes) -> bytes:
    """A JPEG cut half-way through its scan and given an end marker (EOI), as a repair tool
    ends a download cut short."""
    return jpeg[:len(jpeg) // 2] + b"\xff\xd9"


@pytest.fixture
def mae_ensemble() -> Ensemble:
    return Ensemble("test", {"mae": 1.0, "gmsd": 1.0},
                    {"mae": Mapping01("linear", best=0.0, worst=0.2),
                     "gmsd": Mapping01("linear", best=0.0, worst=0.3)})


@pytest.fixture
def shifted_sources(tmp_path, small_image, mae_ensemble):
    """shifted_sources(count) -> (folder of `count` shifted copies of the small image, a saved
    ensemble file): distinct references for runs of the whole pipeline."""
    def make(count: int) -> tuple[Path, Path]:
        folder = tmp_path / f"sources_{count}"
        folder.mkdir()
        for i in range(count):
            Image.fromarray(np.roll(small_image, 23 * i + 7, axis=1)).save(folder / f"p{i}.png")
        ensemble = tmp_path / "ensemble.json"
        mae_ensemble.save(ensemble)
        return folder, ensemble
    return make


@pytest.fixture
def fast_config(tmp_path):
    def make(sources: str, **overrides) -> RunConfig:
        options = {"sources": sources, "out": str(tmp_path / "out"), "size": SMALL,
                   "shard_refs": 4, "distortion_ids": (1, 13, 26), "levels": (1, 5),
                   "metrics": ("mae", "gmsd"), "max_pixels": 4_000_000, **overrides}
        return RunConfig(**options)
    return make
