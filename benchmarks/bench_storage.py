"""Benchmark the storage modes (generate --store images | recipes | hybrid) on an images
dataset (the embedded run, out/demo): every byte of each mode's dataset (tars, parquet indexes,
side and run files), projected to the paper's 140k references and 23.1M versions; pretraining
loader samples/s per mode (the real ShardStream under a DataLoader, 1, 2 and 8 workers); the
replay cost per distortion type against the PNG decode an images dataset pays, and the loader
rate those costs predict.

    python benchmarks/bench_storage.py --dataset out/demo --out docs [--seconds 8]

The recipes and hybrid datasets are made from the given one by `iqa-factory convert` (every
PNG it drops replayed and verified first; tests/pipeline/test_convert.py pins that a converted
dataset is, byte for byte, the one `generate --store` writes), and the time each conversion
takes is reported. Give it a fresh embedded run, made with this code.
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
from bench_train import past_prefetch
from paper_scale import PAPER_REFERENCES, PAPER_VERSIONS
from report_files import write_report
from torch.utils.data import DataLoader

import distortions
from pipeline.commands.convert import convert
from shards.layout import DEFAULT_STORE, SHARDS_DIR, STORE_MODES, store_of, tar_path
from shards.png import decode_png
from shards.reader import complete_shards, read_index, read_sources
from shards.schema import pixel_sha256
from shards.storage import Location
from shards.tar_stream import read_tar
from training.shard_data import ShardStream, StreamConfig, Target, distorted_index, split_shards
from training.transforms import Augment

LOADER_GOAL, SIZE_GOAL = 0.8, 50  # issue 11: hybrid at 80% of images' rate, 50x smaller
KEPT = "hybrid_kept"  # hybrid with --keep-pngs: the slow types the frontier says reach the goal
WORKERS = (1, 2, 8)


def converted(source: Path, store: str, target: Path, keep_pngs: tuple[int, ...] = ()
              ) -> tuple[Path, float]:
    """The dataset `generate --store store [--keep-pngs ...]` writes of the same run, made by
    `iqa-factory convert` from the images one (every dropped PNG's replay verified), and the
    seconds the conversion took."""
    started = time.perf_counter()
    convert(str(source), str(target), store, keep_pngs)
    return target, round(time.perf_counter() - started, 1)


def dataset_bytes(root: Path) -> dict[str, int]:
    """Every byte of a dataset: its tars, its parquet indexes, the shards' other files, the run
    files; and the references' PNGs (tar members' data) and sample counts."""
    spent = {"tars": 0, "indexes": 0, "side_files": 0, "run_files": 0, "reference_pngs": 0,
             "references": 0, "versions": 0}
    for path in sorted((root / SHARDS_DIR).iterdir()):
        kind = ("tars" if ".tar" in path.name else
                "indexes" if path.suffix == ".parquet" else "side_files")
        spent[kind] += path.stat().st_size
        if kind == "tars":
            with tarfile.open(path, "r:*") as tar:
                for member in tar.getmembers():
                    reference = member.name.partition(".")[0].endswith("_ref")
                    if reference and member.name.endswith(".png"):
                        spent["reference_pngs"] += member.size
                    if member.name.endswith(".json"):
                        spent["references" if reference else "versions"] += 1
    spent["run_files"] = sum(path.stat().st_size for path in root.iterdir() if path.is_file())
    spent["total"] = sum(spent[kind] for kind in ("tars", "indexes", "side_files",
                                                  "run_files"))
    return spent


def sizes(roots: dict[str, Path]) -> dict[str, dict]:
    """Per mode: the dataset's bytes (dataset_bytes), with their projection (projected)."""
    return projected({mode: dataset_bytes(root) for mode, root in roots.items()})


def projected(spent_by_mode: dict[str, dict]) -> dict[str, dict]:
    """Per mode: its dataset_bytes, per reference PNG and per version (every other byte,
    shared by the versions), and their projection to 140k references and 23.1M versions; each
    mode's ratios to images from unrounded bytes."""
    found, paper_bytes = {}, {}
    for mode, spent in spent_by_mode.items():
        per_ref = spent["reference_pngs"] / spent["references"]
        per_version = (spent["total"] - spent["reference_pngs"]) / spent["versions"]
        paper_bytes[mode] = PAPER_REFERENCES * per_ref + PAPER_VERSIONS * per_version
        found[mode] = {**spent,
                       "bytes_per_reference_png": round(per_ref),
                       "bytes_per_version": round(per_version),
                       "tar_bytes_per_version": round((spent["tars"] - spent["reference_pngs"])
                                                      / spent["versions"]),
                       "index_bytes_per_row": round(spent["indexes"] / (spent["references"]
                                                                        + spent["versions"])),
                       "paper_scale_tb": round(paper_bytes[mode] / 1e12, 3)}
    for mode in found:
        found[mode]["times_smaller_than_images"] = round(
            found["images"]["total"] / found[mode]["total"], 1)
        found[mode]["paper_times_smaller"] = round(paper_bytes["images"] / paper_bytes[mode], 1)
    return found


def loader_rate(root: Path, workers: int, seconds: float, crop: int, batch: int = 16) -> float:
    """Pretraining samples/s: ShardStream (`crop` px crops, verified replays) in a
    DataLoader, timed past what its workers prepared as they started."""
    location = Location.parse(str(root))
    splits = {ref: "train" for ref in read_sources(location)["ref_id"].to_pylist()}
    shards = split_shards(location, distorted_index(location), splits, "train")
    stream = ShardStream(StreamConfig(str(root), shards, Target("quality"), Augment(crop), seed=0,
                                      train=True, shuffle_buffer=100))
    loader = past_prefetch(DataLoader(stream, batch_size=batch, num_workers=workers))
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
        location, tar_path(location, complete_shards(location)[0], DEFAULT_STORE))}
    first = next(r for r in rows if r["kind"] == "reference")
    reference = decode_png(members[first["key"]])
    replay, decode, png_bytes = defaultdict(list), defaultdict(list), defaultdict(list)
    for row in rows:
        if row["kind"] != "distorted" or row["ref_id"] != first["ref_id"]:
            continue
        started = time.perf_counter()
        same = pixel_sha256(distortions.replay(reference, json.loads(row["recipe"])))
        replay[row["distortion_id"]].append(time.perf_counter() - started)
        started = time.perf_counter()
        decode_png(members[row["key"]])
        decode[row["distortion_id"]].append(time.perf_counter() - started)
        png_bytes[row["distortion_id"]].append(len(members[row["key"]]))
        if same != row["sha256"]:
            raise RuntimeError(f"{row['key']}: replay differs from the stored pixels")
    return [{"id": i, "name": distortions.get(i).name,
             "replay_ms": round(1e3 * float(np.mean(replay[i])), 1),
             "png_decode_ms": round(1e3 * float(np.mean(decode[i])), 1),
             "png_bytes": round(float(np.mean(png_bytes[i]))),
             "stored_in_hybrid": distortions.get(i).learned} for i in sorted(replay)]


def loader_model(result: dict) -> dict[str, float]:
    """The costs the prediction rests on, ms per sample: the images loader's CPU time (1
    worker), its mean PNG decode, the rest; the non-learned types' mean replay."""
    per_sample = 1e3 / result["loader_samples_per_s"]["images"]["1"]
    rows = result["replay"]
    decode = float(np.mean([row["png_decode_ms"] for row in rows]))
    replay = float(np.mean([row["replay_ms"] for row in rows if not row["stored_in_hybrid"]]))
    return {"per_sample_ms": per_sample, "decode_ms": decode, "other_ms": per_sample - decode,
            "replay_ms": replay}


def predicted_share(result: dict, stored: set[int]) -> float:
    """The images loader's rate share a dataset reaches that replays every type but `stored`:
    a sample costs the images loader's CPU time per sample (1 worker) with its PNG decode
    replaced by its type's replay, types drawn equally."""
    model = loader_model(result)
    cost = float(np.mean([row["png_decode_ms"] if row["id"] in stored else row["replay_ms"]
                          for row in result["replay"]]))
    return model["per_sample_ms"] / (model["other_ms"] + cost)


def frontier(result: dict) -> list[dict]:
    """Bytes against loader rate as types are stored as PNGs, slowest replay first (the
    learned denoiser's first: not portable): each step's stored types, predicted x smaller than
    images and predicted loader share, until the share reaches 80%."""
    rows = sorted(result["replay"], key=lambda row: (not row["stored_in_hybrid"],
                                                     -row["replay_ms"]))
    recipes, images = result["sizes"]["recipes"]["total"], result["sizes"]["images"]["total"]
    per_type = result["sizes"]["images"]["versions"] / len(rows)
    steps, stored = [], set()
    for row in [None, *rows]:
        if row is not None:
            stored.add(row["id"])
        share = predicted_share(result, stored)
        stored_bytes = sum(r["png_bytes"] for r in rows if r["id"] in stored) * per_type
        steps.append({"stored": len(stored), "ids": sorted(stored),
                      "last": row["name"] if row else None,
                      "times_smaller": round(images / (recipes + stored_bytes), 1),
                      "loader_share": round(share, 3)})
        if share >= LOADER_GOAL:
            break
    return steps


def markdown(result: dict) -> str:
    lines = ["# Storage modes: bytes, loader speed, replay cost", "",
             f"Measured on {result['machine']} with `make bench-storage` over "
             f"{result['dataset']} ({result['sizes']['images']['references']} references x "
             f"{result['sizes']['images']['versions'] // result['sizes']['images']['references']}"
             f" versions at {result['size']}).", "",
             "## Bytes", "",
             "Every file of each dataset: tars (gzipped in recipes and hybrid), parquet "
             "indexes, the shards' stats/sources/failures, plan, manifest and sources. "
             "A version's bytes are all but the references' PNGs, shared over the versions.", "",
             "| mode | dataset | tars | indexes | other files | reference PNG | bytes/version | "
             "x smaller | at 140k refs + 23.1M versions | x smaller there |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, s in result["sizes"].items():
        lines.append(f"| {label(result, mode)} | {s['total'] / 1e6:.2f} MB | "
                     f"{s['tars'] / 1e6:.2f} MB | "
                     f"{s['indexes'] / 1e6:.2f} MB | "
                     f"{(s['side_files'] + s['run_files']) / 1e6:.2f} MB | "
                     f"{s['bytes_per_reference_png']:,} | {s['bytes_per_version']:,} | "
                     f"{s['times_smaller_than_images']} | {s['paper_scale_tb']} TB | "
                     f"{s['paper_times_smaller']} |")
    recipes = result["sizes"]["recipes"]
    lines += ["", f"A recipes version: {recipes['tar_bytes_per_version']} bytes of gzipped tar "
              "(its record, and its share of the references' headers), "
              f"{recipes['index_bytes_per_row']} of parquet index row, the rest the shards' "
              "and the run's other files. Each dataset but images was made by `iqa-factory "
              "convert` from the images one, every PNG it drops replayed and verified first: "
              + ", ".join(f"{label(result, mode)} in {seconds} s" for mode, seconds
                          in result["convert_seconds"].items()) + " (1 process)."]
    lines += ["", f"## Pretraining loader (ShardStream, {result['crop']} px crops, batch 16, "
              "replays verified), samples/s",
              "", "| mode | " + " | ".join(f"{w} workers" for w in WORKERS) + " |",
              "|---|" + "---|" * len(WORKERS)]
    for mode, rates in result["loader_samples_per_s"].items():
        lines.append(f"| {label(result, mode)} | "
                     + " | ".join(f"{rates[str(w)]}" for w in WORKERS) + " |")
    lines += ["", f"## Replay cost per type (ms per {result['size']} version, mean of its "
              "levels)", "",
              "| id | type | replay + SHA-256 | PNG decode | PNG bytes | stored in hybrid |",
              "|---|---|---|---|---|---|"]
    for row in result["replay"]:
        lines.append(f"| {row['id']} | {row['name']} | {row['replay_ms']} | "
                     f"{row['png_decode_ms']} | {row['png_bytes']:,} | "
                     f"{'yes' if row['stored_in_hybrid'] else ''} |")
    model = loader_model(result)
    lines += ["", "## Bytes against loader rate", "",
              "Predicted from the tables above: a sample costs the images loader's CPU time "
              "per sample (1 worker) with its PNG decode replaced by its type's replay; types "
              "are stored as PNGs slowest replay first (the learned denoiser's first). "
              f"Per sample: {model['decode_ms']:.1f} ms of PNG decode on average, "
              f"{model['replay_ms']:.1f} ms of replay for the non-learned types, "
              f"{model['other_ms']:.1f} ms of the loader's other work. "
              "Predicted against measured (2 workers): " + "; ".join(
                  f"{label(result, mode)} {share:.0%} against {result['measured_share'][mode]:.0%}"
                  for mode, share in result["predicted_share"].items()) + ".", "",
              "| types stored | last one stored | x smaller than images | loader share |",
              "|---|---|---|---|"]
    lines += [f"| {step['stored']} | {step['last'] or '-'} | {step['times_smaller']} | "
              f"{step['loader_share']:.0%} |" for step in result["frontier"]]
    lines += ["", "## Goals", ""] + [f"- {goal}" for goal in result["goals"]]
    return "\n".join(lines) + "\n"


def kept_types(result: dict) -> list[int]:
    """The types beyond the learned denoiser's whose PNGs the first frontier step that reaches
    the loader goal keeps (empty where none reaches it)."""
    learned = {row["id"] for row in result["replay"] if row["stored_in_hybrid"]}
    reaching = next((step for step in result["frontier"] if step["loader_share"] >= LOADER_GOAL),
                    None)
    return sorted(set(reaching["ids"]) - learned) if reaching else []


def label(result: dict, mode: str) -> str:
    if mode == KEPT:
        return "hybrid --keep-pngs " + ",".join(map(str, result["keep_pngs"]))
    return mode


def goals(result: dict) -> list[str]:
    """Each mode's size and loader share against issue 11's goals for hybrid."""
    lines = [f"goals: hybrid >= {SIZE_GOAL} times smaller than images on the embedded run, and "
             f"its loader >= {LOADER_GOAL:.0%} of images' samples/s with 2 workers"]
    for mode in ("hybrid", KEPT, "recipes"):
        if mode not in result["measured_share"]:
            continue
        smaller = result["sizes"][mode]["times_smaller_than_images"]
        share = result["measured_share"][mode]
        lines.append(f"{label(result, mode)}: {smaller} times smaller "
                     f"({'met' if smaller >= SIZE_GOAL else 'NOT met'}), loader {share:.0%} of "
                     f"images' ({'met' if share >= LOADER_GOAL else 'NOT met'})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="out/demo", help="an images dataset")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--seconds", type=float, default=8.0, help="loader timing window")
    parser.add_argument("--crop", type=int, default=224, help="loader crop (default 224)")
    args = parser.parse_args()
    started = time.perf_counter()
    if store_of(Location.parse(args.dataset)) != DEFAULT_STORE:
        parser.error(f"{args.dataset} is not an images dataset")
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as scratch:
        roots, seconds = {"images": Path(args.dataset)}, {}
        for mode in STORE_MODES[1:]:
            roots[mode], seconds[mode] = converted(Path(args.dataset), mode, Path(scratch) / mode)

        def rates(root: Path) -> dict[str, float]:
            return {str(w): loader_rate(root, w, args.seconds, args.crop) for w in WORKERS}
        result = {"dataset": args.dataset, "crop": args.crop, "size": image_size(roots["images"]),
                  "machine": f"{platform.processor() or 'CPU'}, "
                             f"{len(os.sched_getaffinity(0))} cores",
                  "sizes": sizes(roots), "replay": replay_costs(roots["images"]),
                  "loader_samples_per_s": {mode: rates(root) for mode, root in roots.items()},
                  "convert_seconds": seconds}
        result["frontier"] = frontier(result)
        result["keep_pngs"] = kept_types(result)
        if result["keep_pngs"]:
            roots[KEPT], seconds[KEPT] = converted(Path(args.dataset), "hybrid",
                                                   Path(scratch) / KEPT,
                                                   tuple(result["keep_pngs"]))
            result["loader_samples_per_s"][KEPT] = rates(roots[KEPT])
            result["sizes"] = sizes(roots)
    loader = result["loader_samples_per_s"]
    result["measured_share"] = {mode: round(loader[mode]["2"] / loader["images"]["2"], 3)
                                for mode in loader}
    learned = {row["id"] for row in result["replay"] if row["stored_in_hybrid"]}
    stored = {"recipes": set(), "hybrid": learned, KEPT: learned | set(result["keep_pngs"])}
    result["predicted_share"] = {mode: round(predicted_share(result, stored[mode]), 3)
                                 for mode in loader if mode != "images"}
    result["goals"] = goals(result)
    result["seconds"] = round(time.perf_counter() - started, 1)
    write_report(Path(args.out), "bench-storage", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
