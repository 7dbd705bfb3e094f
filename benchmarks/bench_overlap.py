"""Benchmark a shard process that makes its next reference while one's labels are awaited
against one that makes one reference at a time (produce_shard(..., overlap_bytes=0), as until
session 39): the device check's pipeline section (benchmarks/device_pool.py) on this machine's
CPU, one pool process and one labelling process (one torch thread), a shard of 10 references,
8 types x 3 levels, labelled by MAE, GMSD, SSIM and MS-SSIM, chosen so that a reference takes
the labelling process about as long as the pool process (where the two wait on each other
most). Rounds alternate the two, so that the machine's drift falls on both.

    python benchmarks/bench_overlap.py --out docs [--rounds 3]

The rates count from the labelling process's first request (the processes' start left out).
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from device_plan import TINY, Sizes
from device_pool import pipeline_speed
from report_files import write_report

from pipeline.sizing import TargetSize

SIZES = replace(TINY, image=TargetSize(384, 288), pipeline_refs=10, pipeline_shard_refs=10,
                pipeline_distortions=(1, 2, 3, 4, 13, 16, 22, 29), pipeline_levels=(1, 3, 5),
                pipeline_metrics=("mae", "gmsd", "ssim", "ms_ssim"), pipeline_processes=1)
MODES = {"one reference at a time": 0, "next made meanwhile": None}


def run_once(sizes: Sizes, overlap_bytes: int | None) -> dict:
    """One pipeline run; its rate from the first request and where the time went."""
    result = pipeline_speed(torch.device("cpu"), replace(sizes,
                                                         pipeline_overlap_bytes=overlap_bytes))
    seconds = result["from_first_request_seconds"]
    return {"labelled_images": result["labelled_images"], "seconds": seconds,
            "images_per_s": round(result["labelled_images"] / seconds, 1),
            "labelling_busy_seconds": result["labelling_process_busy"]["score"],
            "pool_stage_seconds": result["pool_stage_seconds"],
            "overlap_bytes": result["overlap_bytes"], "dataset": result["dataset"]}


def measure(sizes: Sizes, rounds: int) -> dict:
    """Each mode `rounds` times, alternating; their datasets left in the temporary folder."""
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(rounds):
        for mode, overlap_bytes in MODES.items():
            runs[mode].append(run_once(sizes, overlap_bytes))
    rates = {mode: statistics.median(run["images_per_s"] for run in done)
             for mode, done in runs.items()}
    return {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                       f"Python {platform.python_version()}, torch {torch.__version__}",
            "references": sizes.pipeline_refs, "image": str(sizes.image),
            "distortions": list(sizes.pipeline_distortions),
            "levels": list(sizes.pipeline_levels), "metrics": list(sizes.pipeline_metrics),
            "rounds": rounds, "runs": runs, "median_images_per_s": rates,
            "speed_up": round(rates["next made meanwhile"]
                              / rates["one reference at a time"], 2)}


def median_of(runs: list[dict], figure) -> float:
    """The median over `runs` of figure(run), to 2 decimals."""
    return round(statistics.median(figure(run) for run in runs), 2)


def markdown(result: dict) -> str:
    lines = ["# A shard's next reference made while one's labels are awaited", "",
             f"The device check's pipeline section on this CPU ({result['machine']}): one pool "
             f"process and one labelling process, {result['references']} references of "
             f"{result['image']} in one shard, types {result['distortions']} at levels "
             f"{result['levels']}, labelled by {', '.join(result['metrics'])}; "
             f"{result['rounds']} rounds, the modes alternating. Rates from the labelling "
             "process's first request; label = the pool process's wait for labels.", "",
             "| mode | labelled images/s (median) | runs (images/s) | labelling busy s "
             "(median) | pool's label wait s (median) |", "|---|---:|---|---:|---:|"]
    for mode, runs in result["runs"].items():
        lines.append(f"| {mode} | {result['median_images_per_s'][mode]} | "
                     f"{', '.join(str(r['images_per_s']) for r in runs)} | "
                     f"{median_of(runs, lambda r: r['labelling_busy_seconds'])} | "
                     f"{median_of(runs, lambda r: r['pool_stage_seconds']['label'])} |")
    lines += ["", f"Made meanwhile: **{result['speed_up']} times** the rate of one reference at "
              "a time. Both modes write the same shard (`tests/pipeline/test_worker.py`).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the labelling process on one CPU, the pool process on another
    with tempfile.TemporaryDirectory(prefix="bench-overlap-") as scratch:
        tempfile.tempdir = scratch  # the runs' sources and datasets go with it
        try:
            result = measure(SIZES, args.rounds)
        finally:
            tempfile.tempdir = None
    for runs in result["runs"].values():
        for run in runs:
            run.pop("dataset")
    write_report(args.out, "bench-overlap", result, markdown(result))
    print(markdown(result))
    print(json.dumps(result["median_images_per_s"]))


if __name__ == "__main__":
    main()
