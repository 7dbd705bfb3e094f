"""docs/bench-gpu.png, for people who would rather look than read: where a node's time goes on
the GPU machine. Left, each metric's device time inside one all-ten labelling call; right, the
shard pool's process time per labelled image, by stage."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from pipeline_rates import rate_once_started


def chart(merged: dict, path: Path) -> Figure | None:
    """The two panels from merged device figures (bench-gpu.json), saved to `path`; None,
    and nothing written, where neither section was measured."""
    profile = merged.get("labelers", {}).get("profile", {}).get("per_metric", {})
    pipeline = merged.get("pipeline", {})
    if not profile and "pool_stage_seconds" not in pipeline:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    if profile:
        by_time = sorted(profile, key=lambda key: profile[key]["device_ms"])
        left.barh(by_time, [profile[key]["device_ms"] for key in by_time], color="steelblue")
        together = merged["labelers"]["all_ten"]["images_per_s"]
        left.set_title(f"device ms per {merged['labelers']['versions']} versions "
                       f"({merged['labelers']['size']}); all ten: {together} images/s",
                       fontsize=9)
        left.set_xlabel("ms (torch profiler, one all-ten call)")
    if "pool_stage_seconds" in pipeline:
        stages = pipeline["pool_stage_seconds"]
        per_image = {stage: 1000 * seconds / pipeline["labelled_images"]
                     for stage, seconds in stages.items()}
        order = sorted(per_image, key=per_image.get)
        right.barh(order, [per_image[stage] for stage in order], color="darkorange")
        right.set_title(_pool_title(pipeline), fontsize=9)
        right.set_xlabel("process ms per labelled image (label, network: waits on the GPU)")
    for axes in (left, right):
        axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return figure


def _pool_title(pipeline: dict) -> str:
    """The pool's size, its rate once started (where the run timed it) and its CPU ms."""
    rate = rate_once_started(pipeline)
    started = ("its rate once started not timed" if rate is None
               else f"{rate:.1f} labelled images/s once started")
    return (f"shard pool: {pipeline['processes']} processes, {started}\n"
            f"({pipeline['pool_cpu_ms_per_image']} CPU ms each)")
