"""Training fixtures: a tiny shard dataset written with the project's own writer, and a tiny
KADID-10k-format folder."""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from labelers.ensemble import Ensemble, Mapping01
from shards.keys import distorted_key, reference_key
from shards.layout import SOURCES_FILE
from shards.schema import METRIC_KEYS, SOURCES_SCHEMA
from shards.storage import Location
from shards.writer import ShardWriter

SIZE = (64, 48)  # width, height: larger than the 32-pixel crops the tests train on
SPLITS = {"r0": "train", "r1": "train", "r2": "train", "r3": "train", "r4": "val",
          "r5": "test"}
NOISE = {1: 4.0, 2: 12.0, 3: 24.0}  # level -> noise deviation: quality falls with level


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def reference_image(index: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    y, x = np.mgrid[0:size[1], 0:size[0]]
    base = np.stack([x * (3 + index), y * (5 - index % 3), (x + y) * 2], axis=-1)
    return (base % 256).astype(np.uint8)


def _record(ref_id: str, key: str, kind: str, pixels: np.ndarray, **fields) -> dict:
    height, width = pixels.shape[:2]
    return {"key": key, "ref_id": ref_id, "kind": kind, "split": SPLITS[ref_id],
            "distortion_id": None, "distortion": None, "category": None, "level": None,
            "seed": None, "recipe": None, "width": width, "height": height, "codec": "png",
            "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(), "scores": None,
            "quality": None, "ensemble_hash": None, "metrics_used": None, **fields}


def write_tiny_dataset(root: Path, shard_refs: int = 3, size: tuple[int, int] = SIZE,
                       failed: frozenset[tuple[str, int]] = frozenset(),
                       distortion_ids: tuple[int, ...] = (9, 10),
                       sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    """Six references (4 train, 1 val, 1 test) of `size` (width, height; `sizes` gives some
    another), `distortion_ids` x
    3 noise levels each but the (ref_id, distortion id) pairs `failed` names (as if every
    level of that type had failed), in shards of `shard_refs` references; Q from a one-metric
    (MAE) ensemble."""
    ensemble = Ensemble("tiny", {"mae": 1.0}, {"mae": Mapping01("linear", best=0.0, worst=0.1)})
    location = Location.parse(str(root))
    location.makedirs(str(root))
    ensemble.save(root / "ensemble.json")
    refs = sorted(SPLITS)
    sources = []
    for shard, start in enumerate(range(0, len(refs), shard_refs)):
        writer = ShardWriter(location, shard)
        for number, ref_id in enumerate(refs[start:start + shard_refs], start=start):
            reference = reference_image(number, (sizes or {}).get(ref_id, size))
            writer.add(_record(ref_id, reference_key(ref_id), "reference", reference),
                       png(reference))
            sources.append({"ref_id": ref_id, "uri": f"{ref_id}.png", "shard": shard,
                            "split": SPLITS[ref_id], "status": "ok"})
            for distortion_id in sorted(set(distortion_ids)
                                        - {d for r, d in failed if r == ref_id}):
                for level, sigma in NOISE.items():
                    noise = np.random.default_rng([number, distortion_id, level]).normal(
                        0, sigma, reference.shape)
                    pixels = np.clip(reference + noise, 0, 255).astype(np.uint8)
                    mae = float(np.abs(pixels.astype(float) - reference).mean() / 255)
                    quality, used = ensemble.quality({"mae": np.array([mae])})
                    scores = dict.fromkeys(METRIC_KEYS) | {"mae": mae}
                    writer.add(_record(
                        ref_id, distorted_key(ref_id, distortion_id, level), "distorted",
                        pixels, distortion_id=distortion_id, distortion="noise",
                        category="noise", level=level, scores=scores,
                        quality=float(quality[0]), ensemble_hash=ensemble.hash,
                        metrics_used=list(used)), png(pixels))
        writer.finish({})
    pq.write_table(pa.Table.from_pylist(sources, schema=SOURCES_SCHEMA), root / SOURCES_FILE)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture
def kadid_folder(tmp_path) -> Path:
    """KADID-10k's layout: dmos.csv and images/, 4 references x 2 types x 3 levels."""
    root = tmp_path / "kadid"
    (root / "images").mkdir(parents=True)
    rows = ["dist_img,ref_img,dmos,var"]
    for number in range(4):
        reference = reference_image(number)
        ref_name = f"I{number + 1:02d}.png"
        (root / "images" / ref_name).write_bytes(png(reference))
        for kind in (1, 2):
            for level, sigma in NOISE.items():
                noise = np.random.default_rng([number, kind, level]).normal(0, sigma,
                                                                           reference.shape)
                pixels = np.clip(reference + noise, 0, 255).astype(np.uint8)
                name = f"I{number + 1:02d}_{kind:02d}_{level:02d}.png"
                (root / "images" / name).write_bytes(png(pixels))
                rows.append(f"{name},{ref_name},{5 - level - 0.1 * kind:.2f},0.5")
    (root / "dmos.csv").write_text("\n".join(rows) + "\n")
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def square_dataset(tmp_path_factory) -> Path:
    """The tiny dataset at 64 x 64: room for two overlapping 16-pixel views at half scale."""
    return write_tiny_dataset(tmp_path_factory.mktemp("square_dataset"), size=(64, 64))
