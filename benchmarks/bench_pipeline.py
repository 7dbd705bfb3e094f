"""Benchmark the pipeline end to end: labelled samples per second on this machine, peak memory
of the driver and of the Ray processes, and a projection to the paper-scale dataset (23.1M
images) on N nodes of 16 CPUs + 1 GPU from the measured per-stage rates.

    python benchmarks/bench_pipeline.py --out docs [--synthetic 12] [--gpu-label-rate 200]

The embedded default always runs; --synthetic N adds a set of N references made from the
embedded photos (flips and crops). Labelling on a GPU is not measured here without a GPU: the
projection takes --gpu-label-rate (labelled images per second per GPU, all ten metrics; the
labeler benchmark's GPU figure when one was lent) and says so.
"""

import argparse
import json
import os
import platform
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import RunConfig
from pipeline.driver import ClusterOptions, generate
from pipeline.embedded import EMBEDDED_PHOTOS, embedded_photo

PAPER_IMAGES = 23_100_000
NODE_CPUS = 16


def _ray_processes_rss() -> int:
    """Total resident memory of the Ray processes (workers, raylet, GCS), from /proc (Linux)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"ray::" in command or b"raylet" in command or b"gcs_server" in command:
                status = (entry / "status").read_text()
                total += int(status.split("VmRSS:")[1].split()[0]) * 1024
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total


class PeakMemory(threading.Thread):
    """Samples the Ray processes' total RSS every 0.5 s; the driver's peak comes from
    getrusage."""

    def __init__(self):
        super().__init__(daemon=True)
        self.workers = 0
        self.running = True

    @property
    def driver(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def run(self) -> None:
        while self.running:
            self.workers = max(self.workers, _ray_processes_rss())
            time.sleep(0.5)


def synthetic_sources(count: int, folder: Path) -> str:
    """`count` 640 x 480 references cut and flipped from the embedded photos."""
    folder.mkdir(parents=True, exist_ok=True)
    photos = [embedded_photo(name) for name in EMBEDDED_PHOTOS]
    for i in range(count):
        photo = photos[i % len(photos)]
        top = (i * 37) % max(1, photo.shape[0] - 384)
        left = (i * 53) % max(1, photo.shape[1] - 512)
        crop = photo[top:top + 384, left:left + 512]
        crop = crop[:, ::-1] if (i // len(photos)) % 2 else crop
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"synthetic_{i:03d}.png")
    return str(folder)


def measure(name: str, sources: str, out: str) -> dict:
    config = RunConfig(sources=sources, out=out, shard_refs=1, allow_missing_metrics=True)
    memory = PeakMemory()
    memory.start()
    started = time.perf_counter()
    report = generate(config, ClusterOptions(restart=True))
    wall = time.perf_counter() - started
    memory.running = False
    memory.join()
    return {"name": name, "references": report["sources_ok"], "samples": report["samples"],
            "wall_seconds": round(wall, 1),
            "samples_per_second": round(report["samples"] / wall, 3),
            "stage_seconds": report["stage_seconds"],
            "metrics_absent": report["metrics_absent"],
            "peak_driver_mb": round(memory.driver / 2**20),
            "peak_ray_processes_mb": round(memory.workers / 2**20)}


def projection(run: dict, gpu_label_rate: float, nodes: list[int]) -> list[dict]:
    """Days to label 23.1M images: distortion + encoding on CPUs, labels on the GPUs."""
    distorted = run["samples"] - run["references"]
    cpu_seconds = sum(run["stage_seconds"].get(s, 0) for s in ("decode", "distort", "encode"))
    cpu_per_image = cpu_seconds / distorted
    rows = []
    for n in nodes:
        cpu_rate = n * (NODE_CPUS - 1) / cpu_per_image   # one CPU per node feeds the GPU actor
        gpu_rate = n * gpu_label_rate
        rate = min(cpu_rate, gpu_rate)
        rows.append({"nodes": n, "cpu_images_per_s": round(cpu_rate, 1),
                     "gpu_images_per_s": round(gpu_rate, 1),
                     "bound": "CPU" if cpu_rate < gpu_rate else "GPU",
                     "days": round(PAPER_IMAGES / rate / 86400, 1)})
    return rows


def markdown(result: dict) -> str:
    lines = ["# Pipeline benchmark", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{result['machine']['memory_gb']} GB, no GPU. Labels without "
             f"{', '.join(result['runs'][0]['metrics_absent']) or 'nothing'} (weights absent).",
             "", "| run | references | samples | wall s | samples/s | peak driver MB | "
             "peak Ray processes MB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['references']} | {r['samples']} | {r['wall_seconds']} | "
              f"{r['samples_per_second']} | {r['peak_driver_mb']} | {r['peak_ray_processes_mb']} |"
              for r in result["runs"]]
    lines += ["", f"Projection to {PAPER_IMAGES:,} images on nodes of {NODE_CPUS} CPUs + 1 GPU, "
              "from the per-image CPU cost measured above (decode, distort, encode, with the "
              "learned denoiser on the CPU) and an ASSUMED labelling rate of "
              f"{result['gpu_label_rate']} images/s per GPU ({result['gpu_rate_source']}):", "",
              "| nodes | CPU images/s | GPU images/s | bound | days |", "|---|---|---|---|---|"]
    lines += [f"| {p['nodes']} | {p['cpu_images_per_s']} | {p['gpu_images_per_s']} | {p['bound']}"
              f" | {p['days']} |" for p in result["projection"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--synthetic", type=int, default=0)
    parser.add_argument("--gpu-label-rate", type=float, default=200.0,
                        help="labelled images/s per GPU for the projection (default: the goal)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    runs = [measure("embedded default", "embedded", str(work / "embedded"))]
    if args.synthetic:
        runs.append(measure(f"synthetic x{args.synthetic}",
                            synthetic_sources(args.synthetic, work / "synthetic"),
                            str(work / "synthetic-out")))
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(),
                          "memory_gb": round(os.sysconf("SC_PHYS_PAGES")
                                             * os.sysconf("SC_PAGE_SIZE") / 2**30)},
              "runs": runs, "gpu_label_rate": args.gpu_label_rate,
              "gpu_rate_source": "the issue's goal; not measured without a GPU",
              "projection": projection(runs[-1], args.gpu_label_rate, [1, 4, 16, 64])}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-pipeline.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "bench-pipeline.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
