"""Benchmark the pipeline end to end: labelled samples per second on this machine, peak memory
of the driver and of the Ray processes, and a projection to the paper-scale dataset (23.1M
images) on N nodes of 16 CPUs + 1 GPU: from the end-to-end rate measured on an H200 node
(docs/bench-gpu.json) when there is one, else from the per-stage CPU rates here and an ASSUMED
labelling rate.

    python benchmarks/bench_pipeline.py --out docs [--synthetic 12] [--projection-only]

The embedded default always runs; --synthetic N adds a set of N references made from the
embedded photos (flips and crops); --projection-only keeps the measured runs and redoes the
projection (after a new docs/bench-gpu.json).
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

from paper_scale import PAPER_VERSIONS
from pipeline_rates import rate_once_started, rate_while_all_worked
from report_files import write_report
from synthetic import synthetic_sources

from pipeline.config import RunConfig
from pipeline.driver import ClusterOptions, generate
from pipeline.scheduling import layout

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


def gpu_rates(path: Path) -> dict | None:
    """The measured H200 figures (docs/bench-gpu.json, written from `device_check.sh` runs),
    or None where no GPU has been measured."""
    if not path.is_file():
        return None
    gpu = json.loads(path.read_text())
    pipe = gpu["pipeline"]
    started = rate_once_started(pipe)
    # a long run's rate: while every shard process kept the GPU fed (where a run timed it)
    steady = rate_while_all_worked(pipe)
    return {"label_rate": gpu["labelers"]["all_ten"]["images_per_s"],
            "label_source": gpu["sources"]["labelers"],  # maybe not the pipeline's run
            "node_rate": steady or started,
            "node_rate_basis": "while all its shard processes worked, as in a long run"
                               if steady else "from its labelling process's first request",
            "node_rate_started": started if steady else None,
            "node_rate_wall": pipe["labelled_images_per_s"],
            "source": f"measured on {_machine_of(gpu, 'pipeline')} "
                      f"({gpu['sources']['pipeline']}, "
                      f"{path.name}; its labelling process served "
                      f"{pipe.get('labelling_concurrency', 1)} call(s) at once"
                      f"{_overlap_said(pipe.get('overlap_bytes'))})"}


def _machine_of(gpu: dict, section: str) -> str:
    """The GPU of the run a merged section came from (merges before runs named theirs: the
    header's)."""
    return gpu.get("machines", {}).get(section) or gpu["environment"]["gpu"]


def _overlap_said(overlap_bytes: int | None) -> str:
    """How the measured pool's shard processes overlapped their references, against the
    driver's layout on a GPU node (pipeline.scheduling: the next reference made while the
    labels of one are awaited)."""
    if overlap_bytes:
        return (f"; each shard process made its next reference meanwhile, up to "
                f"{overlap_bytes:,} bytes")
    held = ("a run from before shard tasks overlapped their references" if overlap_bytes is None
            else "run with --pipeline-overlap-bytes 0")
    return (f"; its shard processes held one reference at a time ({held}), where the "
            "driver's shard tasks make the next one meanwhile: the rate the driver's layout "
            "reaches is not measured yet")


def projection(run: dict, gpu: dict | None, assumed_label_rate: float,
               nodes: list[int]) -> dict:
    """Hours to label 23.1M images on nodes of 16 CPUs + 1 GPU, laid out as the driver lays
    them out (pipeline.scheduling: one GPU actor serving 2 calls, 15 shard tasks). Each node
    works on its own: shard tasks use the labeler on their node. With a GPU measurement the
    node rate is the measured end-to-end rate of such a node; without, the smaller of its CPU
    rate (from this machine's decode, distort and encode seconds per image, in its shard
    tasks) and an ASSUMED labelling rate."""
    node = layout(NODE_CPUS, 1)
    distorted = run["samples"] - run["references"]
    # the learned denoiser's network ("network") runs on the node's GPU: not a CPU cost there
    cpu_seconds = sum(run["stage_seconds"].get(s, 0) for s in ("decode", "distort", "encode"))
    cpu_rate = node.in_flight / (cpu_seconds / distorted)
    if gpu:
        node_rate, label_rate, source = gpu["node_rate"], gpu["label_rate"], gpu["source"]
    else:
        label_rate, source = assumed_label_rate, "ASSUMED (no GPU measured)"
        node_rate = min(cpu_rate, label_rate)
    rows = [{"nodes": n, "images_per_s": round(n * node_rate, 1),
             "hours": round(PAPER_VERSIONS / (n * node_rate) / 3600, 1)} for n in nodes]
    # a run from before the network was timed apart counts it in distort
    return {"layout": node.to_json(), "cpu_rate_this_machine": round(cpu_rate, 1),
            "network_apart": "network" in run["stage_seconds"],
            "node_rate_wall": gpu["node_rate_wall"] if gpu else None,
            "node_rate_basis": gpu["node_rate_basis"] if gpu else None,
            "node_rate_started": gpu["node_rate_started"] if gpu else None,
            "label_source": gpu["label_source"] if gpu else None,
            "label_rate": label_rate, "node_rate": node_rate, "source": source, "rows": rows}


def markdown(result: dict) -> str:
    plan = result["projection"]
    lines = ["# Pipeline benchmark", "",
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"{result['machine']['memory_gb']} GiB, no GPU. Labels without "
             f"{', '.join(result['runs'][0]['metrics_absent']) or 'nothing'} (weights absent).",
             "", "| run | references | samples | wall s | samples/s | peak driver MiB | "
             "peak Ray processes MiB |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['references']} | {r['samples']} | {r['wall_seconds']} | "
              f"{r['samples_per_second']} | {r['peak_driver_mb']} | {r['peak_ray_processes_mb']} |"
              for r in result["runs"]]
    lines += ["", f"## Projection to {PAPER_VERSIONS:,} images", "",
              f"Nodes of {NODE_CPUS} CPUs + 1 GPU laid out as the driver does "
              f"({plan['layout']['max_in_flight']} shard tasks, one GPU actor serving "
              f"{plan['layout']['actor_concurrency']} calls). Node rate "
              f"**{plan['node_rate']} labelled images/s**"
              + (f" {plan['node_rate_basis']}" if plan.get("node_rate_basis") else "")
              + f", {plan['source']}"
              + (f" ({plan['node_rate_started']} from the first request)"
                 if plan.get("node_rate_started") else "")
              + (f" ({plan['node_rate_wall']} counting the start of its process pool)"
                 if plan.get("node_rate_wall") else "") + "; the labeler alone "
              f"labels {plan['label_rate']} images/s "
              + (f"on that GPU ({plan['label_source']})" if plan.get("label_source")
                 else "there") + ", and this machine's decode, distort and encode seconds per "
              + ("image (the learned denoiser's network left to the GPU)"
                 if plan.get("network_apart") else "image (learned denoiser on the CPU)")
              + f" would allow {plan['cpu_rate_this_machine']} images/s from "
              f"{plan['layout']['max_in_flight']} cores.", "",
              "| nodes | images/s | hours |", "|---|---|---|"]
    lines += [f"| {p['nodes']} | {p['images_per_s']} | {p['hours']} |" for p in plan["rows"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--synthetic", type=int, default=0)
    parser.add_argument("--gpu-label-rate", type=float, default=200.0,
                        help="ASSUMED labelled images/s per GPU node where docs/bench-gpu.json "
                             "holds no measurement")
    parser.add_argument("--projection-only", action="store_true",
                        help="keep the runs of OUT/bench-pipeline.json, redo the projection")
    args = parser.parse_args()
    if args.projection_only:
        result = json.loads((args.out / "bench-pipeline.json").read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as scratch:
            work = Path(scratch)
            runs = [measure("embedded default", "embedded", str(work / "embedded"))]
            if args.synthetic:
                runs.append(measure(f"synthetic x{args.synthetic}",
                                    synthetic_sources(args.synthetic, work / "synthetic"),
                                    str(work / "synthetic-out")))
        result = {"machine": {"cpu": platform.processor() or platform.machine(),
                              "cores": os.cpu_count(),
                              "memory_gb": round(os.sysconf("SC_PHYS_PAGES")
                                                 * os.sysconf("SC_PAGE_SIZE") / 2**30)},
                  "runs": runs}
    result.pop("gpu_label_rate", None), result.pop("gpu_rate_source", None)
    result["projection"] = projection(result["runs"][-1], gpu_rates(args.out / "bench-gpu.json"),
                                      args.gpu_label_rate, [1, 4, 8, 16, 64])
    write_report(args.out, "bench-pipeline", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
