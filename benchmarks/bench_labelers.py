"""Benchmark the labelers: images per second for each metric and for all ten together at
512 x 384, batch sizes 1 and 16, beside a per-image loop of the public pyiqa toolbox on the
same hardware in the same run (pyiqa is installed for the benchmark only: `make
bench-labelers` puts it in .bench/ and on PYTHONPATH).

Where the LPIPS/DISTS ImageNet weights are absent, both sides run the deep metrics with the
same random backbone weights in a temporary TORCH_HOME (the cost is the same).
Writes bench-labelers.md and bench-labelers.json to --out.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torchvision
from device_timing import synchronize, timed
from report_files import write_report

import distortions
import labelers
from labelers import weights
from labelers.inputs import to_batch
from pipeline.embedded import embedded_photo
from pipeline.sizing import TargetSize, cover_and_crop

PYIQA_NAMES = {"gmsd": "gmsd", "fsim": "fsim", "vif": "vif", "cw_ssim": "cw_ssim",
               "nlpd": "nlpd", "ms_ssim": "ms_ssim", "mad": "mad", "dists": "dists",
               "lpips": "lpips"}
GOAL_RATIO, GOAL_GPU_PAIRS = 20.0, 200.0


def workload(count: int, size: TargetSize | None = None, photo: str = "astronaut"
             ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One reference (512 x 384 by default) and `count` distorted versions across the bank."""
    ref = cover_and_crop(embedded_photo(photo), size or TargetSize())
    scenarios = [(d.id, level) for d in distortions.all() if not d.learned
                 for level in (2, 4)]
    picks = [scenarios[i] for i in np.linspace(0, len(scenarios) - 1, count).astype(int)]
    return ref, [distortions.apply(ref, i, lv, seed=i * 10 + lv)[0] for i, lv in picks]


@contextlib.contextmanager
def environment_variable(name: str, value: str) -> Iterator[None]:
    """`name` set to `value` inside the block (this process and those it starts), as before
    after it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def random_backbones_if_absent() -> Iterator[bool]:
    """While the LPIPS/DISTS ImageNet weights are absent, a temporary TORCH_HOME with random
    AlexNet/VGG16 under the real names (yields True); the folder (760 MB) goes afterwards."""
    if not weights.missing(list(weights.BACKBONES)):
        yield False
        return
    with tempfile.TemporaryDirectory(prefix="bench-torch-home-") as home, \
            environment_variable("TORCH_HOME", home):
        weights.checkpoint_dir().mkdir(parents=True)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(),
                   weights.weight_path("lpips"))
        torch.save(torchvision.models.vgg16(weights=None).state_dict(),
                   weights.weight_path("dists"))
        yield True


def _rate(count: int, action, device: str) -> float:
    """Images/s of `action()` scoring `count` images, the clock stopping once the device has
    done its work (CUDA runs it after the call returns) and starting after earlier work."""
    where = torch.device(device)
    synchronize(where)
    return count / timed(lambda: (action(), synchronize(where)))


def ours(key: str, ref, dists, device: str) -> dict[str, float]:
    metric = labelers.metric_class(key)(device)
    ref_t, dist_t = to_batch(ref, device), to_batch(dists, device)
    metric.score(ref_t, dist_t[:2])  # warm-up
    one = _rate(len(dists), lambda: [metric.score(ref_t, dist_t[i:i + 1])
                                     for i in range(len(dists))], device)
    sixteen = _rate(len(dists), lambda: metric.score(ref_t, dist_t), device)
    return {"batch_1": one, "batch_16": sixteen}


PASS_SIZES = (1, 2, 4, 16)  # versions per CPU pass compared in `cpu_passes`


def cpu_passes(ref, dists, keys: tuple[str, ...] = labelers.METRICS) -> dict:
    """On the CPU, images/s of each metric of `keys` scoring the versions in one call with
    passes of each of PASS_SIZES, and of a Labeler of them all in their own passes (each
    metric's `cpu_chunk`) against passes of 16."""
    keys = list(keys)
    ref_t, dist_t = to_batch(ref, "cpu"), to_batch(dists, "cpu")
    per_metric = {}
    for key in keys:
        metric = labelers.metric_class(key)("cpu")
        metric.score(ref_t, dist_t[:2])  # warm-up
        per_metric[key] = {"own": metric.cpu_chunk}
        for size in PASS_SIZES:
            metric.cpu_chunk = size
            per_metric[key][str(size)] = _rate(
                len(dists), lambda m=metric: m.score(ref_t, dist_t), "cpu")
    labeler = labelers.Labeler(keys, "cpu", batch_size=16)
    labeler.score(ref, dists[:2])
    own = _rate(len(dists), lambda: labeler.score(ref, dists), "cpu")
    for metric in labeler.metrics.values():
        metric.cpu_chunk = 16
    sixteen = _rate(len(dists), lambda: labeler.score(ref, dists), "cpu")
    return {"metrics": per_metric, "labeler": {"own": own, "16": sixteen}, "keys": keys}


def pyiqa_loop(key: str, ref, dists, device: str, count: int) -> float | None:
    """Images per second of pyiqa scoring the first `count` pairs one at a time (None where it
    has no such metric or cannot build it here). Its deep metrics run without their learned layers
    (pretrained=False, which pyiqa would download; the cost is the same)."""
    if key not in PYIQA_NAMES:
        return None
    import pyiqa

    options = {"pretrained": False} if key in labelers.DEEP_METRICS else {}
    try:
        metric = pyiqa.create_metric(PYIQA_NAMES[key], device=device, as_loss=False, **options)
    except (OSError, RuntimeError) as error:
        print(f"pyiqa {key}: not measured ({type(error).__name__}: {error})", flush=True)
        return None
    to_unit = lambda img: torch.from_numpy(img).permute(2, 0, 1)[None].float().div(255).to(device)  # noqa: E731
    ref_t = to_unit(ref)
    metric(ref_t, to_unit(dists[0]))  # warm-up
    pairs = dists[:count]
    return _rate(len(pairs), lambda: [metric(ref_t, to_unit(d)) for d in pairs], device)


def run(device: str, count: int, pyiqa_count: int) -> dict:
    ref, dists = workload(count)
    rows = {}
    for key in labelers.METRICS:
        row = ours(key, ref, dists, device)
        row["pyiqa_loop"] = pyiqa_loop(key, ref, dists, device, pyiqa_count)
        row["ratio"] = row["batch_16"] / row["pyiqa_loop"] if row["pyiqa_loop"] else None
        rows[key] = row
        print(f"{device} {key:8s} " + json.dumps({k: v and round(v, 2) for k, v in row.items()}),
              flush=True)
    if device == "cpu":
        passes = cpu_passes(ref, dists)
        print("cpu passes " + json.dumps(passes["labeler"]), flush=True)
    labeler = labelers.Labeler(device=device, batch_size=16)
    labeler.score(ref, dists[:2])
    together = _rate(len(dists), lambda: labeler.score(ref, dists), device)
    pyiqa_seconds = sum(1 / r["pyiqa_loop"] for r in rows.values() if r["pyiqa_loop"])
    return {"device": device, "metrics": rows, "all_ten_batch_16": together,
            "pyiqa_all_available": 1 / pyiqa_seconds,
            "all_ten_ratio": together * pyiqa_seconds,
            **({"cpu_passes": passes} if device == "cpu" else {})}


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = ["# Labeler benchmark", "",
             f"Images per second at 512 x 384 (one reference, {result['images']} distorted "
             f"versions across the bank). pyiqa {result['pyiqa_version']} scores one pair per "
             f"call ({result['pyiqa_images']} pairs) in the same run. Machine: {m['cpu']}, "
             f"{m['cores']} cores, torch {m['torch']}, GPU: {m['gpu'] or 'none'}. "
             f"Backbones: {result['backbones']}. Batch 16: one call of 16 versions, which a "
             "metric scores on a CPU in passes of its `cpu_chunk` (2; CW-SSIM and VIF 4).", ""]
    for run_result in result["runs"]:
        lines += [f"## {run_result['device']}", "",
                  "| metric | batch 1 | batch 16 | pyiqa loop | ratio (batch 16 / pyiqa) |",
                  "|---|---|---|---|---|"]
        for key, r in run_result["metrics"].items():
            pyiqa_rate = f"{r['pyiqa_loop']:.2f}" if r["pyiqa_loop"] else "n/a"
            ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "n/a"
            lines.append(f"| {key} | {r['batch_1']:.2f} | {r['batch_16']:.2f} | {pyiqa_rate} | "
                         f"{ratio} |")
        together = run_result["all_ten_batch_16"]
        lines += ["", f"All ten together (Labeler, batch 16): **{together:.2f} images/s**; "
                  "pyiqa, the nine it has, one after another: "
                  f"{run_result['pyiqa_all_available']:.3f} images/s; ratio "
                  f"**{run_result['all_ten_ratio']:.1f}x** (goal {GOAL_RATIO:g}x"
                  + (f"; GPU goal {GOAL_GPU_PAIRS:g} pairs/s" if run_result["device"] == "cuda"
                     else "") + ").", ""]
        if "cpu_passes" in run_result:
            lines += cpu_passes_markdown(run_result["cpu_passes"])
    return "\n".join(lines)


def cpu_passes_markdown(passes: dict) -> list[str]:
    sizes = " | ".join(f"passes of {size}" for size in PASS_SIZES)
    lines = ["### Versions per CPU pass", "",
             "Images/s of one call of the versions, scored in passes of each size; own: the "
             "metric's `cpu_chunk`, the passes it takes.", "",
             f"| metric | own | {sizes} |", "|---|---|" + "---|" * len(PASS_SIZES)]
    for key, rates in passes["metrics"].items():
        lines.append(f"| {key} | {rates['own']} | "
                     + " | ".join(f"{rates[str(size)]:.2f}" for size in PASS_SIZES) + " |")
    labeler = passes["labeler"]
    lines += ["", f"All {len(passes['keys'])} together (Labeler): **{labeler['own']:.2f} "
              f"images/s** in their own passes, {labeler['16']:.2f} in passes of 16 "
              f"({labeler['own'] / labeler['16']:.2f}x).", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--pyiqa-images", type=int, default=4)
    args = parser.parse_args()
    if args.pyiqa_images > args.images:
        parser.error(f"--pyiqa-images {args.pyiqa_images} is more than the {args.images} "
                     "distorted versions (--images) there are to score")
    import pyiqa

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with random_backbones_if_absent() as random_backbones:
        result = {
            "images": args.images, "pyiqa_images": args.pyiqa_images,
            "pyiqa_version": getattr(pyiqa, "__version__", "?"),
            "backbones": "random (ImageNet weights absent)" if random_backbones else "ImageNet",
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "torch": torch.__version__,
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
                        else None},
            "runs": [run(device, args.images, args.pyiqa_images) for device in devices],
        }
    write_report(args.out, "bench-labelers", result, markdown(result))
    print(markdown(result))
    ratios = [r["ratio"] for r in result["runs"][0]["metrics"].values() if r["ratio"]]
    print(f"median per-metric ratio on the CPU: {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
