"""Benchmark the storage modes (generate --store images | recipes | hybrid) on an images
dataset (the embedded run, out/demo): bytes per sample and dataset size per mode, projected to
the paper's 140k references and 23.1M versions; pretraining loader samples/s per mode (the
real ShardStream under a DataLoader, 1, 2 and 8 workers); the replay cost per distortion type
against the PNG decode an images dataset pays.

    python benchmarks/bench_storage.py --dataset out/demo --out docs [--seconds 8]

The recipes and hybrid datasets are written from the images one by the project's shard writer,
sample for sample, dropping the PNGs the mode does not keep: the tars `generate --store` writes
(tests/shards/test_store_modes.py pins that the modes' tars hold the same members in the same
order, the PNGs aside).
"""

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

import distortions
from pipeline.encoding import decode_png
from pipeline.plan import Plan
from shards.reader import complete_shards, read_index, read_sources, shard_stats
from shards.replay import MANIFEST_FILE
from shards.schema import pixel_sha256
from shards.storage import Location
from shards.store_modes import library_versions, stores_pixels
from shards.tar_stream import read_tar
from shards.writer import ShardWriter, shard_paths
from training.shard_data import ShardStream, StreamConfig, Target, distorted_index, split_shards
from training.transforms import Augment

PAPER_REFERENCES = 140_000
PAPER_VERSIONS = 23_100_000
MODES = ("images", "recipes", "hybrid")
WORKERS = (1, 2, 8)
WRITER_STATS = ("shard", "samples", "tar_bytes", "tar_sha256", "write_seconds")


def derive(source: Path, store: str, target: Path) -> Path:
    """The dataset `generate --store store` writes of the same run, from the images one."""
    src, out = Location.parse(str(source)), Location.parse(str(target))
    plan = Plan.from_json(json.loads(src.read_bytes(src.path("plan.json"))))
    plan = Plan({**plan.inputs, "store": store}, plan.references, plan.duplicates)
    out.makedirs(out.root)
    out.write_bytes(out.path("plan.json"), json.dumps({**plan.to_json(),
                                                       "digest": plan.digest}).encode())
    manifest = json.loads(src.read_bytes(src.path(MANIFEST_FILE)))
    manifest.update(store=store, plan_digest=plan.digest, replay_libraries=library_versions())
    out.write_bytes(out.path(MANIFEST_FILE), json.dumps(manifest).encode())
    out.write_bytes(out.path("sources.parquet"), src.read_bytes(src.path("sources.parquet")))
    for index in complete_shards(src):
        writer = ShardWriter(out, index)
        for sample in read_tar(src, shard_paths(src, index)["tar"]):
            meta = json.loads(sample["json"])
            writer.add(meta, sample["png"] if stores_pixels(store, meta) else None)
        stats = shard_stats(src, index)
        writer.finish({**{k: v for k, v in stats.items() if k not in WRITER_STATS},
                       "plan_digest": plan.digest})
    return target


def tar_bytes(root: Path) -> dict[str, int]:
    """Bytes the tars spend on references and on versions (headers and padding counted)."""
    spent = {"reference": 0, "distorted": 0, "total": 0, "references": 0, "versions": 0}
    for path in sorted((root / "shards").glob("*.tar")):
        spent["total"] += path.stat().st_size
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                kind = "reference" if member.name.partition(".")[0].endswith("_ref") else (
                    "distorted")
                spent[kind] += member.offset_data - member.offset + -(-member.size // 512) * 512
                if member.name.endswith(".json"):
                    spent["references" if kind == "reference" else "versions"] += 1
    return spent


def sizes(roots: dict[str, Path]) -> dict[str, dict]:
    """Per mode: bytes per reference and per version, the run's size, the 23.1M projection."""
    found = {}
    for mode, root in roots.items():
        spent = tar_bytes(root)
        per_ref = spent["reference"] / spent["references"]
        per_version = spent["distorted"] / spent["versions"]
        found[mode] = {"tar_bytes": spent["total"], "references": spent["references"],
                       "versions": spent["versions"],
                       "bytes_per_reference": round(per_ref),
                       "bytes_per_version": round(per_version),
                       "bytes_per_sample": round(spent["total"] / (spent["references"]
                                                                   + spent["versions"])),
                       "paper_scale_tb": round((PAPER_REFERENCES * per_ref
                                                + PAPER_VERSIONS * per_version) / 1e12, 3)}
    for mode in found:
        found[mode]["times_smaller_than_images"] = round(
            found["images"]["tar_bytes"] / found[mode]["tar_bytes"], 1)
        found[mode]["paper_times_smaller"] = round(
            found["images"]["paper_scale_tb"] / found[mode]["paper_scale_tb"], 1)
    return found


def loader_rate(root: Path, workers: int, seconds: float, crop: int, batch: int = 16) -> float:
    """Pretraining samples/s: ShardStream (`crop` px crops, verified replays) in a
    DataLoader, timed after its first batch."""
    location = Location.parse(str(root))
    splits = {ref: "train" for ref in read_sources(location)["ref_id"].to_pylist()}
    shards = split_shards(location, distorted_index(location), splits, "train")
    stream = ShardStream(StreamConfig(str(root), shards, Target("quality"), Augment(crop), seed=0,
                                      train=True, shuffle_buffer=100))
    loader = iter(DataLoader(stream, batch_size=batch, num_workers=workers))
    next(loader)
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        count += len(next(loader)[1])
    return round(count / (time.perf_counter() - started), 1)


def image_size(root: Path) -> str:
    """WxH of the dataset's first sample."""
    row = read_index(Location.parse(str(root)), columns=["width", "height"]).slice(0, 1)
    return f"{row['width'][0].as_py()}x{row['height'][0].as_py()}"


def replay_costs(root: Path) -> list[dict]:
    """ms per version of each type: replay + SHA-256 check vs decoding its PNG, over the
    first reference's versions (every level)."""
    location = Location.parse(str(root))
    rows = read_index(location, [complete_shards(location)[0]]).to_pylist()
    members = {s["__key__"]: s["png"] for s in read_tar(
        location, shard_paths(location, complete_shards(location)[0])["tar"])}
    first = next(r for r in rows if r["kind"] == "reference")
    reference = decode_png(members[first["key"]])
    replay, decode = defaultdict(list), defaultdict(list)
    for row in rows:
        if row["kind"] != "distorted" or row["ref_id"] != first["ref_id"]:
            continue
        started = time.perf_counter()
        same = pixel_sha256(distortions.replay(reference, json.loads(row["recipe"])))
        replay[row["distortion_id"]].append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_png(members[row["key"]])
        decode[row["distortion_id"]].append(time.perf_counter() - started)
        if same != row["sha256"]:
            raise RuntimeError(f"{row['key']}: replay differs from the stored pixels")
    return [{"id": i, "name": distortions.get(i).name,
             "replay_ms": round(1e3 * float(np.mean(replay[i])), 1),
             "png_decode_ms": round(1e3 * float(np.mean(decode[i])), 1),
             "stored_in_hybrid": distortions.get(i).learned} for i in sorted(replay)]


def markdown(result: dict) -> str:
    lines = ["# Storage modes: bytes, loader speed, replay cost", "",
             f"Measured on {result['machine']} with `make bench-storage` over "
             f"{result['dataset']} ({result['sizes']['images']['references']} references x "
             f"{result['sizes']['images']['versions'] // result['sizes']['images']['references']}"
             f" versions at {result['size']}).", "",
             "## Bytes", "", "| mode | tars | bytes/reference | bytes/version | bytes/sample | "
             "x smaller | at 140k refs + 23.1M versions | x smaller there |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, s in result["sizes"].items():
        lines.append(f"| {mode} | {s['tar_bytes'] / 1e6:.1f} MB | {s['bytes_per_reference']:,} "
                     f"| {s['bytes_per_version']:,} | {s['bytes_per_sample']:,} | "
                     f"{s['times_smaller_than_images']} | {s['paper_scale_tb']} TB | "
                     f"{s['paper_times_smaller']} |")
    lines += ["", f"## Pretraining loader (ShardStream, {result['crop']} px crops, batch 16, "
              "replays verified), samples/s",
              "", "| mode | " + " | ".join(f"{w} workers" for w in WORKERS) + " |",
              "|---|" + "---|" * len(WORKERS)]
    for mode, rates in result["loader_samples_per_s"].items():
        lines.append(f"| {mode} | " + " | ".join(f"{rates[str(w)]}" for w in WORKERS) + " |")
    lines += ["", f"## Replay cost per type (ms per {result['size']} version, mean of its "
              "levels)", "",
              "| id | type | replay + SHA-256 | PNG decode | stored in hybrid |",
              "|---|---|---|---|---|"]
    for row in result["replay"]:
        lines.append(f"| {row['id']} | {row['name']} | {row['replay_ms']} | "
                     f"{row['png_decode_ms']} | {'yes' if row['stored_in_hybrid'] else ''} |")
    lines += ["", "## Goals", ""] + [f"- {goal}" for goal in result["goals"]]
    return "\n".join(lines) + "\n"


def goals(result: dict) -> list[str]:
    smaller = result["sizes"]["hybrid"]["times_smaller_than_images"]
    rates = result["loader_samples_per_s"]
    share = rates["hybrid"]["2"] / rates["images"]["2"]
    return [f"hybrid >= 50 times smaller than images on the embedded run: {smaller} times "
            f"({'met' if smaller >= 50 else 'NOT met'}); recipes: "
            f"{result['sizes']['recipes']['times_smaller_than_images']} times",
            f"hybrid loader >= 80% of images' samples/s with 2 workers: {share:.0%} "
            f"({'met' if share >= 0.8 else 'NOT met'})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="out/demo", help="an images dataset")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--seconds", type=float, default=8.0, help="loader timing window")
    parser.add_argument("--crop", type=int, default=224, help="loader crop (default 224)")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
        roots = {"images": Path(args.dataset)}
        for mode in MODES[1:]:
            roots[mode] = derive(Path(args.dataset), mode, Path(scratch) / mode)
        result = {"dataset": args.dataset, "crop": args.crop, "size": image_size(roots["images"]),
                  "machine": f"{platform.processor() or 'CPU'}, "
                             f"{len(os.sched_getaffinity(0))} cores",
                  "sizes": sizes(roots), "replay": replay_costs(roots["images"])}
        result["loader_samples_per_s"] = {
            mode: {str(w): loader_rate(root, w, args.seconds, args.crop) for w in WORKERS}
            for mode, root in roots.items()}
    result["goals"] = goals(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    (out / "bench-storage.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "bench-storage.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
