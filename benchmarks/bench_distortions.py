"""Benchmark the distortion bank: milliseconds per 512 x 384 image for each of the 165
scenarios and for lossless PNG encoding (the shards' encoder), on one CPU core (one thread
everywhere); and the PNG settings the shards could use, over the bank's outputs of one photo.

Writes bench-distortions.md and bench-distortions.json to --out. The goal (issue 2): median
scenario (distort + PNG encode) at or under 25 ms per core, none above 250 ms except the five
learned-denoiser types, which belong on a GPU.
"""

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np
import torch
from png_settings import bank_outputs, png_settings
from report_files import write_report

import distortions
from distortions.threads import use_one_thread
from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo
from pipeline.sizing import TargetSize, cover_and_crop
from shards.png import encode_png

GOAL_MEDIAN_MS = 25.0
GOAL_MAX_MS = 250.0


def _median_ms(repeats: int, action, *args) -> float:
    """Median wall time of action(*args) over `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action(*args)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(images: dict[str, np.ndarray], repeats: int, device: str) -> list[dict]:
    rows = []
    distortions.use_denoiser(None, device=device)
    for d in distortions.registered():
        for level in distortions.LEVELS:
            distort_ms, encode_ms = [], []
            for name, img in images.items():
                seed = distortions.derive_seed(0, name, d.id, level)
                out, _ = distortions.apply(img, d.id, level, seed)  # warm caches
                times = 1 if d.learned else repeats
                distort_ms.append(_median_ms(times, distortions.apply, img, d.id, level, seed))
                encode_ms.append(_median_ms(times, encode_png, out))
            rows.append({"id": d.id, "name": d.name, "level": level, "learned": d.learned,
                         "device": device if d.learned else "cpu",
                         "distort_ms": round(statistics.mean(distort_ms), 2),
                         "png_ms": round(statistics.mean(encode_ms), 2),
                         "total_ms": round(statistics.mean(distort_ms) +
                                           statistics.mean(encode_ms), 2)})
            print(f"{d.id:2d} {d.name:18s} L{level} {rows[-1]['total_ms']:8.1f} ms", flush=True)
    return rows


def summary(all_rows: list[dict]) -> dict:
    """The goals' figures over the paper's 165 scenarios; the added types (34 and up) apart."""
    paper = set(distortions.bank_ids("all"))
    rows = [r for r in all_rows if r["id"] in paper]
    added = [r["total_ms"] for r in all_rows if r["id"] not in paper]
    totals = [r["total_ms"] for r in rows]
    classic = [r for r in rows if not r["learned"]]
    return {
        "added_types_mean_total_ms": round(statistics.mean(added), 2) if added else None,
        "added_types_max_total_ms": max(added) if added else None,
        "median_total_ms": round(statistics.median(totals), 2),
        "median_png_ms": round(statistics.median(r["png_ms"] for r in rows), 2),
        "max_classic_total_ms": max(r["total_ms"] for r in classic),
        "learned_mean_total_ms": round(statistics.mean(
            r["total_ms"] for r in rows if r["learned"]), 1),
        "median_goal_met": statistics.median(totals) <= GOAL_MEDIAN_MS,
        "max_goal_met": all(r["total_ms"] <= GOAL_MAX_MS for r in classic),
        "slowest_ten_classic": sorted(classic, key=lambda r: -r["total_ms"])[:10],
    }


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "opencv": cv2.__version__, "threads": 1,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def learned_words(device: str, gpu: str | None) -> tuple[str, str]:
    """Where the learned denoiser's network ran, in the report's words: a remark on the
    timing, and how its scenarios' mean ends."""
    if device == "cpu":
        return "", "on this CPU; they belong on the GPU workers"
    return (f" (the learned denoiser's network on {device})",
            f"with their network on {device} ({gpu or 'no GPU named'}), as on the GPU workers")


def markdown(result: dict) -> str:
    s, m = result["summary"], result["machine"]
    device = next(r["device"] for r in result["rows"] if r["learned"])
    network_remark, learned_where = learned_words(device, m["gpu"])
    lines = [
        "# Distortion bank benchmark", "",
        f"Milliseconds per {result['size']} image on one CPU thread{network_remark}, mean over "
        f"{len(result['photos'])} embedded photos ({', '.join(result['photos'])}); "
        "distort = the distortion alone, png = lossless PNG encoding of its output (the shards' "
        "encoder and settings).", "",
        f"Machine: {m['cpu']}, {m['cores']} cores (1 thread used), Python {m['python']}, "
        f"torch {m['torch']}, OpenCV {m['opencv']}, GPU: {m['gpu'] or 'none'}.", "",
        f"- median scenario (distort + PNG): **{s['median_total_ms']} ms** "
        f"(goal <= {GOAL_MEDIAN_MS:g} ms: {'met' if s['median_goal_met'] else 'NOT met'})",
        f"- slowest non-learned scenario: **{s['max_classic_total_ms']} ms** "
        f"(goal <= {GOAL_MAX_MS:g} ms: {'met' if s['max_goal_met'] else 'NOT met'})",
        f"- learned denoiser scenarios (types 8-12): {s['learned_mean_total_ms']} ms on average "
        f"{learned_where}",
        f"- median PNG encode: {s['median_png_ms']} ms",
        f"- added types (ids 34 and up, outside the goals): {s['added_types_mean_total_ms']} ms "
        f"on average, {s['added_types_max_total_ms']} ms at most", "",
        "## Slowest ten, learned denoiser aside", "",
        "| id | name | level | distort ms | png ms | total ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['id']} | {r['name']} | {r['level']} | {r['distort_ms']} | {r['png_ms']} | "
              f"{r['total_ms']} |" for r in s["slowest_ten_classic"]]
    lines += ["", f"## PNG settings ({result['png_outputs']} outputs of "
              f"{result['photos'][0]})", "",
              "Mean ms per image to encode and to decode; bytes against the shards' settings.",
              "", "| settings | encode ms | decode ms | size |", "|---|---:|---:|---:|"]
    lines += [f"| {r['settings']} | {r['encode_ms']} | {r['decode_ms']} | "
              f"{r['size_vs_shards']} |" for r in result["png_settings"]]
    lines += ["", "## Every scenario (the paper's 165, then the added types)", "",
              "| id | name | L1 | L2 | L3 | L4 | L5 |", "|---|---|---|---|---|---|---|"]
    for d in distortions.registered():
        cells = [f"{r['total_ms']:.1f}" for r in result["rows"] if r["id"] == d.id]
        lines.append(f"| {d.id} | {d.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photos", type=int, default=3, help="how many embedded photos")
    parser.add_argument("--device", default="cpu", help="device for the learned denoiser")
    args = parser.parse_args()
    use_one_thread()
    size = TargetSize()
    names = list(EMBEDDED_PHOTOS)[: args.photos]
    images = {name: cover_and_crop(embedded_photo(name), size) for name in names}
    rows = measure(images, args.repeats, args.device)
    outputs = bank_outputs(images[names[0]])
    result = {"size": str(size), "photos": names, "machine": machine(), "rows": rows,
              "summary": summary(rows), "png_settings": png_settings(outputs),
              "png_outputs": len(outputs)}
    write_report(args.out, "bench-distortions", result, markdown(result))
    print(markdown(result).split("## All")[0])


if __name__ == "__main__":
    main()
