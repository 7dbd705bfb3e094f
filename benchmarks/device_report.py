"""The device check's Markdown summary, and docs/bench-gpu.{json,md} merged from successive
runs (each section from the latest run that measured it)."""

import json
from pathlib import Path

from device_chart import chart
from device_plan import SECTIONS
from pipeline_rates import rate_once_started, rate_while_all_worked
from report_files import write_report


def _failed(row: dict, columns: int) -> str | None:
    """The table cells of a row whose measure failed (its error, then empty cells), or None."""
    if "error" not in row:
        return None
    return f"failed: {row['error'][:80]} |" + " |" * (columns - 1)


def markdown(results: dict) -> str:
    lines = ["# Device check", "", _environment_line(results.get("environment", {})), ""]
    lines += _labeler_lines(results.get("labelers", {}))
    lines += _variant_lines(results.get("variants", {}))
    lines += _agreement_lines(results.get("agreement", {}))
    lines += _denoiser_lines(results.get("denoiser", {}))
    lines += _training_lines(results.get("training", {}))
    lines += _pipeline_lines(results.get("pipeline", {}))
    lines += _repeat_lines(results.get("repeat", {}))
    lines += _batch_lines(results.get("passes", {}))
    lines += _pipeline_runs_lines(results.get("pipeline_runs", []))
    lines += _loader_lines(results.get("loader", {}))
    lines += _ddp_lines(results.get("ddp", {}))
    lines += _objective_lines(results.get("objectives", {}))
    for name in SECTIONS:
        if "error" in results.get(name, {}):
            lines += [f"**{name} failed**: {results[name]['error']}", ""]
    return "\n".join(lines)


def _environment_line(env: dict) -> str:
    return (f"{env.get('date')}: {env.get('gpu', 'CPU')} (driver {env.get('driver', '-')}), "
            f"torch {env.get('torch')}, CUDA {env.get('cuda')}, {env.get('cpus')} CPUs"
            + (f" ({env['physical_cores']} physical cores)" if env.get("physical_cores")
               else "") + f", Python {env.get('python')}.")


def _labeler_lines(speed: dict) -> list[str]:
    if "metrics" not in speed:
        return []
    profiled = speed.get("profile", {}).get("per_metric", {})
    lines = [f"## Labelers ({speed['size']}, {speed['versions']} versions of one "
             "reference)", "", "Images/s of each metric alone and of the Labeler with "
             "all ten; device ms: the profiler's device time of each metric inside one "
             "all-ten call (where the time goes).", "",
             "| metric | images/s | pass size | peak MiB | device ms |",
             "|---|---:|---:|---:|---:|"]
    for key, row in speed["metrics"].items():
        lines.append(f"| {key} | " + (_failed(row, 4) or (
            f"{row['images_per_s']} | {row['pass_size'][key]} | {row['peak_mb']} | "
            f"{profiled.get(key, {}).get('device_ms', '')} |")))
    together = speed["all_ten"]
    lines.append("| **all ten** | " + (_failed(together, 4) or (
        f"**{together['images_per_s']}** | | {together['peak_mb']} | |")))
    return [*lines, ""]


def _agreement_lines(agree: dict) -> list[str]:
    if "metrics" not in agree:
        return []
    return ["## Device against CPU", "", f"Tolerance {agree['tolerance']}.", "",
            "| metric | max abs | max rel | within |", "|---|---:|---:|---|",
            *(f"| {k} | " + (_failed(r, 3) or (
                f"{r['max_abs']:.2e} | {r['max_rel']:.2e} | {r['within_tolerance']} |"))
              for k, r in agree["metrics"].items()), ""]


def _denoiser_lines(noise: dict) -> list[str]:
    if "through_bank_images_per_s" not in noise:
        return []
    lines = ["## Denoiser (types 8-12)", "", "The network alone in batches of "
             f"{noise['batch']}: **{noise['network_batched_images_per_s']} images/s**. "
             "Through the bank one image at a time (noise, sigma estimate on the CPU, "
             "network) and the same recipe replayed on the CPU:", "",
             "| type | images/s | replay: most levels apart | pixels differing |",
             "|---|---:|---:|---:|"]
    for name, rate in noise["through_bank_images_per_s"].items():
        replay = noise["replay_device_vs_cpu"][name]
        lines.append(f"| {name} | {rate} | {replay['max_levels']} | "
                     f"{100 * replay['pixels_differing']:.1f}% |")
    return [*lines, ""]


def _training_lines(train: dict) -> list[str]:
    if "runs" not in train:
        return []
    return ["## Training step", "", "| backbone | crop | batch | precision | images/s | "
            "peak MiB |", "|---|---:|---:|---|---:|---:|",
            *(f"| {r['backbone']} | {r['crop']} | {r['batch']} | {r['precision']} | "
              + (_failed(r, 2) or f"{r['images_per_s']} | {r['peak_mb']} |")
              for r in train["runs"]), ""]


def _pipeline_lines(pipe: dict) -> list[str]:
    if "labelled_images_per_s" not in pipe:
        return []
    return ["## Pipeline end to end", "",
            f"{pipe['references']} references, {pipe['labelled_images']} labelled images "
            f"in {pipe['wall_seconds']} s with {pipe['processes']} shard processes"
            + _overlap_words(pipe) + ": "
            f"**{pipe['labelled_images_per_s']} labelled images/s**; the labelling "
            "process "
            + (f"served up to {pipe['labelling_concurrency']} call(s) at once "
               f"({pipe['labelling_peak_concurrent']} at the most), "
               if "labelling_concurrency" in pipe else "served one call at a time, ")
            + f"in calls for {pipe['labelling_process_busy']} s (summed)"
            + (f", {pipe['labelling_process_occupied']} s with a call in progress"
               if "labelling_process_occupied" in pipe else "")
            + (f"; {pipe['from_first_request_seconds']} s from its first request "
               f"({rate_once_started(pipe)} images/s once the pool had started)"
               if rate_once_started(pipe) else "") + "."
            + _all_worked_sentence(pipe)
            + (f" The pool's processes spent {pipe['pool_cpu_ms_per_image']} CPU ms per "
               f"labelled image (wall seconds by stage, summed over them: "
               f"{pipe['pool_stage_seconds']}; label and the learned types' network wait "
               "on the labelling process)" if "pool_cpu_ms_per_image" in pipe else "")
            + (f"; OpenCV and torch threads in each: {pipe['pool_threads']}"
               if "pool_threads" in pipe else ""),
            ""]


def _repeat_lines(again: dict) -> list[str]:
    if "samples" not in again:
        return []
    return ["## Two runs of one plan", "",
            f"{again['references']} references, {again['samples']} distorted samples, "
            "made twice, each run's labeler started afresh: the same pixels in "
            f"{again['same_pixels']}, the same scores bit for bit in "
            f"{again['same_scores']}; each metric's largest difference: "
            f"{again['largest_difference']}."
            + (f" Each call's memory budget: {again['memory_budget_mb']} MB."
               if "memory_budget_mb" in again else ""), ""]


def _loader_lines(feed: dict) -> list[str]:
    if "images_per_s" not in feed:
        return []
    return ["## Training loader", "", f"{feed['workers']} workers, batches of "
            f"{feed['batch']}, crop {feed['crop']}: **{feed['images_per_s']} images/s**.", ""]


def _ddp_lines(ranks: dict) -> list[str]:
    if "summary" not in ranks:
        return []
    return ["## Distributed pretraining", "", f"`torchrun` with {ranks['ranks']} "
            f"rank(s) over {ranks['backend']}: one epoch ran in {ranks['seconds']} s "
            f"(batches per rank {ranks['summary']['rank_batches']}). {ranks['note']}", ""]


def _objective_lines(section: dict) -> list[str]:
    runs = section.get("runs", {})
    if not runs:
        return []
    return ["## Label-free objectives", "",
            f"`train pretrain --objective ...`, {section['backbone']} at "
            f"{section['crop']} px, {section['steps']} steps of {section['batch']} groups, "
            "one process; images/s over the whole epoch (warm-up and validation "
            "included: a working check, not the GPU's rate):", "",
            "| objective | epoch s | images/s | train loss |",
            "|---|---|---|---|",
            *(f"| {name} | " + (_failed(r, 3) or (
                f"{r['epoch_seconds']} | {r['images_per_s']} | {r['train_loss']:.4g} |"))
              for name, r in runs.items()), ""]


def _as_a_node_runs(section: dict) -> bool:
    """Whether a section ran as a node runs: not a pipeline pool sized by --pipeline-processes,
    nor one whose processes made one reference at a time (--pipeline-overlap-bytes 0)."""
    return not section.get("pool_size_chosen") and section.get("overlap_bytes") != 0


def _measured(section) -> bool:
    """Whether a run measured all of a section: no error in it, not skipped (a section that
    reads the pipeline's dataset where none was made), and as a node runs."""
    return (isinstance(section, dict) and not has_error(section) and "skipped" not in section
            and _as_a_node_runs(section))


def _overlap_words(pipe: dict) -> str:
    """How each pool process went from one reference to the next (runs before session 39 made
    one at a time without saying so)."""
    if "overlap_bytes" not in pipe:
        return ""
    if pipe["overlap_bytes"] == 0:
        return " (each making one reference at a time)"
    return (" (each making its next reference while one's labels were awaited, one of up to "
            f"{pipe['overlap_bytes'] / 2**20:g} MiB held)")


def _all_worked_sentence(pipe: dict) -> str:
    if rate_while_all_worked(pipe) is None:
        return ""
    steady = pipe["while_all_worked"]
    return (f" While every one of the {pipe['processes']} pool processes worked (the first "
            f"{steady['seconds']} s from that request, until one ended): "
            f"**{steady['labelled_images_per_s']} labelled images/s**, the labelling process "
            f"with a call in progress {steady['labelling_process_occupied']} s of them.")


def pipeline_run_row(name: str, run: dict) -> dict:
    """One run's pipeline figures: whole wall, from the first request, the pool's CPU cost."""
    pipe = run["pipeline"]
    return {"run": name, "date": run.get("environment", {}).get("date"),
            "references": pipe["references"], "processes": pipe.get("processes"),
            "images_per_s": pipe["labelled_images_per_s"],
            "from_first_request": rate_once_started(pipe),
            "while_all_worked": rate_while_all_worked(pipe),
            "pool_cpu_ms_per_image": pipe.get("pool_cpu_ms_per_image")}


def _pipeline_runs_lines(rows: list[dict]) -> list[str]:
    """Every merged run's pipeline figures side by side (the latest alone hides how much
    one node's rate moves from run to run)."""
    if not rows:
        return []
    return ["## The pipeline in every run", "",
            "Labelled images/s over the whole run, from the labelling process's first "
            "request and while all the pool's processes worked (until the first ended: a "
            "long run's rate), and the shard pool's CPU ms per labelled image (blank: not "
            "measured then).", "",
            "| run | date | references | pool processes | images/s | from first request "
            "| while all worked | pool CPU ms/image |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
            *(f"| {r['run']} | {r['date']} | {r['references']} | {r.get('processes') or ''} | "
              f"{r['images_per_s']} | {r['from_first_request'] or ''} | "
              f"{r.get('while_all_worked') or ''} | {r['pool_cpu_ms_per_image'] or ''} |"
              for r in rows), ""]


def _variant_lines(tried: dict) -> list[str]:
    """The variants section: each candidate's images/s against the current code's, and how
    far its scores moved."""
    if "metrics" not in tried:
        return []
    lines = ["## Variants", "", f"Each metric alone ({tried['size']}, {tried['versions']} "
             "versions) as the labels are made now and as the variant would make them, and "
             "the denoiser's network (where measured) on the denoiser section's batch, in one "
             "run (benchmarks/device_variants.py).", "",
             "| what | variant | images/s now | images/s variant | speed-up | max abs "
             "difference |", "|---|---|---:|---:|---:|---:|"]
    for key, row in tried["metrics"].items():
        lines.append(f"| {key} | " + (_failed(row, 5) or (
            f"{row['variant']} | {row['current_images_per_s']} | "
            f"{row['variant_images_per_s']} | {row['speedup']} | "
            f"{row['max_abs_difference']:.1e} |")))
    sweep = tried.get("pass_sweep", {})
    if sweep:
        lines += ["", f"All ten over {2 * tried['versions']} versions in passes of each size "
                  "(images/s, peak MiB):", "", "| pass | images/s | peak MiB |",
                  "|---:|---:|---:|"]
        lines += [f"| {size} | " + (_failed(row, 2) or f"{row['images_per_s']} | "
                                    f"{row['peak_mb']} |") for size, row in sweep.items()]
    return [*lines, ""]


def _batch_lines(batching: dict) -> list[str]:
    """The passes section: each metric's largest score difference between calls and between
    pass sizes, with cuDNN's default algorithms and with deterministic ones."""
    if "deterministic" not in batching or "error" in batching["deterministic"]:
        return []
    modes = ("default", "deterministic")
    split = f"passes_of_{batching['split']}"
    lines = ["## A label and its batch", "",
             f"{batching['versions']} versions scored in one pass, again, and in passes of "
             f"{batching['split']}: each metric's largest difference, with cuDNN's default "
             "algorithms and with deterministic ones only.", "",
             "| metric | again | passes | again, deterministic | passes, deterministic |",
             "|---|---:|---:|---:|---:|"]
    for key in batching["default"]["same_call"]:
        lines.append(f"| {key} | " + " | ".join(
            f"{batching[mode][column][key]:.2g}" for mode in modes
            for column in ("same_call", split)) + " |")
    rate = batching["deterministic"].get("all_ten", {}).get("images_per_s")
    return [*lines, "", f"All ten with deterministic algorithms only: {rate} images/s. "
            f"Torch's warnings: {batching['deterministic']['warnings'] or 'none'}.", ""]


def has_error(figures) -> bool:
    """Whether a section, or any row in it, failed: a section is merged from the latest run
    that measured all of it."""
    if isinstance(figures, dict):
        return "error" in figures or any(has_error(value) for value in figures.values())
    if isinstance(figures, list):
        return any(has_error(value) for value in figures)
    return False


def merge_runs(files: list[Path], out: Path) -> None:
    """docs/bench-gpu.{json,md,png}: each section from the last of `files` (device-check.json
    of successive runs, oldest first) that measured all of it (_measured), with the run it
    came from and that run's machine (`machines`: the header names the environment section's);
    a pipeline run with a pool sized by hand, or made one reference at a time, is listed among
    the runs, never the one merged (the projection models the pool the driver lays out). The
    LPIPS/DISTS backbones are those of the run the labelers come from."""
    merged: dict = {"sources": {}, "machines": {}, "pipeline_runs": []}
    for path in files:
        run = json.loads(path.read_text())
        if "labelled_images_per_s" in run.get("pipeline", {}):  # it measured the pipeline
            merged["pipeline_runs"].append(pipeline_run_row(path.parent.name, run))
        for name in SECTIONS:
            if _measured(run.get(name)):
                merged[name] = run[name]
                merged["sources"][name] = (f"{path.parent.name} "
                                           f"({run.get('environment', {}).get('date')})")
                merged["machines"][name] = run.get("environment", {}).get("gpu")
        if _measured(run.get("labelers")):
            merged["backbones"] = run.get("backbones")
    origin = ", ".join(f"{name}: {source}" + _machine_unlike_the_header(merged, name)
                       for name, source in merged["sources"].items())
    drawn = chart(merged, out / "bench-gpu.png")
    write_report(out, "bench-gpu", merged, markdown(merged).replace(
        "# Device check", "# GPU benchmark (`benchmarks/device_check.sh`)", 1)
        + ("\n![Where the time goes: device ms by metric, the shard pool's ms by stage]"
           "(bench-gpu.png)\n" if drawn else "")
        + f"\nEach section from the latest run that measured it: {origin}. LPIPS/DISTS "
        f"backbones: {merged.get('backbones')}.\n")


def _machine_unlike_the_header(merged: dict, name: str) -> str:
    """Where a section was measured on another GPU than the one the header names, that GPU."""
    machine = merged["machines"].get(name)
    return f" on {machine}" if machine != merged["machines"].get("environment") else ""
