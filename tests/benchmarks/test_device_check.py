"""The device check's CPU rehearsal: every section runs on small inputs, so the script a
session lent a GPU runs in one call keeps working between such sessions."""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import labelers
from pipeline.worker import OVERLAP_BYTES
from shards.boxes import half_shape, misfit

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_device_check_runs_every_section_on_the_cpu(tmp_path):
    # the temporary folder of the check and its children (short: sockets live there too)
    scratch = Path(tempfile.mkdtemp(prefix="dc-"))
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "TMPDIR": str(scratch)}
    try:
        run = subprocess.run(["bash", "benchmarks/device_check.sh", "--device", "cpu", "--tiny"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        # torch's compile cache stays where torch put it, to be reused by the next run
        left = sorted(p.name for p in scratch.iterdir() if not p.name.startswith("torchinductor_"))
    finally:
        shutil.rmtree(scratch)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((tmp_path / "device-check.json").read_text())
    sections = ("environment", "labelers", "variants", "training", "denoiser", "pipeline",
                "repeat", "passes", "loader", "agreement", "ddp", "objectives")
    assert [name for name in sections if "error" in results[name]] == []
    # the CPU against itself: every metric exactly equal
    assert all(row["max_abs"] == 0 for row in results["agreement"]["metrics"].values())
    tried = results["variants"]["metrics"]  # each variant computes the metric it replaces:
    assert set(tried) == {"vif", "ms_ssim", "denoiser network", "two calls at once"}
    assert tried["two calls at once"]["max_abs_difference"] < 1e-12  # one labeler, two threads
    assert tried["vif"]["max_abs_difference"] < 1e-12  # float64 sums (a CPU's own route)
    assert tried["ms_ssim"]["max_abs_difference"] < 1e-12  # float64, one rounding less a tap
    assert tried["denoiser network"]["max_abs_difference"] < 1e-5  # float32, NHWC kernels
    assert all(row["variant_images_per_s"] > 0 for row in tried.values())
    sweep = results["variants"]["pass_sweep"]  # 3 versions: passes of 1 (3 // 4, at least
    assert list(sweep) == ["1", "3", "6"]      # one), 1, 3 and 6 (JSON's keys are strings)
    assert all(row["pass_size"] == {key: int(size) for key in row["pass_size"]}
               for size, row in sweep.items())
    pipeline = results["pipeline"]  # 2 references x 3 types x 2 levels, every one labelled
    assert pipeline["labelled_images"] == 2 * 3 * 2 and pipeline["samples"] == 2 * (1 + 6)
    assert pipeline["labelling_concurrency"] == 2  # the GPU actor's two calls at once
    assert 1 <= pipeline["labelling_peak_concurrent"] <= 2  # (one pool process on 2 CPUs)
    assert pipeline["pool_threads"] == {"opencv": 1, "torch": 1}  # one CPU each, as a task
    assert pipeline["overlap_bytes"] == OVERLAP_BYTES  # as a shard task makes its references
    assert pipeline["labelling_threads"] == 1  # torch's, as the GPU actor (pipeline.scheduling)
    again = results["repeat"]  # a CPU's passes never move: the same bits twice
    assert again["samples"] == 2 * 3 * 2
    assert again["same_pixels"] == again["same_scores"] == again["samples"]
    assert set(again["largest_difference"]) == {"mae", "gmsd"}
    assert not any(again["largest_difference"].values())
    assert again["memory_budget_mb"] == [0, 0]  # a CPU's passes follow no memory budget
    batching = results["passes"]  # a CPU's call repeats itself; MAE and GMSD in any batch
    for mode in ("default", "deterministic"):
        assert set(batching[mode]["same_call"]) == set(labelers.METRICS)
        assert not any(batching[mode]["same_call"].values())
        passes = batching[mode][f"passes_of_{batching['split']}"]
        assert passes["mae"] == passes["gmsd"] == 0
        assert max(passes.values()) < 1e-6  # the README's batch bounds, float32 networks too
    assert batching["deterministic"]["all_ten"]["images_per_s"] > 0
    # the calls' union: no longer than their sum, nor than the time it served
    occupied, summed = pipeline["labelling_process_occupied"], pipeline["labelling_process_busy"]
    assert 0 < occupied <= sum(summed.values()) + 0.1
    assert occupied <= pipeline["from_first_request_seconds"] + 0.1
    # until the first pool process ended: on 2 CPUs the only one, so every labelled image
    steady = pipeline["while_all_worked"]
    assert steady["labelled_images"] == 12 if pipeline["processes"] == 1 \
        else 0 <= steady["labelled_images"] <= 12
    assert 0 < steady["seconds"] <= pipeline["from_first_request_seconds"] + 0.1
    images, seconds = steady["labelled_images"], steady["seconds"]  # seconds to the tenth
    assert images / (seconds + 0.05) - 0.05 <= steady["labelled_images_per_s"] \
        <= images / max(seconds - 0.05, 1e-9) + 0.05
    assert 0 < steady["labelling_process_occupied"] <= steady["seconds"] + 0.1
    assert results["ddp"]["ranks"] == 2 and results["ddp"]["summary"]["rank_batches"] == [2, 2]
    runs = results["objectives"]["runs"]  # every label-free objective trained its 4 steps
    assert sorted(runs) == ["contrastive", "reconstruction", "restoration"]
    assert all(math.isfinite(r["train_loss"]) and r["skipped_nonfinite"] == 0
               for r in runs.values())
    assert set(results["labelers"]["metrics"]) == set(results["agreement"]["metrics"])
    report = (tmp_path / "device-check.md").read_text()
    assert "## Pipeline end to end" in report
    assert f"While every one of the {pipeline['processes']} pool processes" in report
    assert "(each making its next reference while one's labels were awaited, one of up to " \
           f"{OVERLAP_BYTES / 2**20:g} MiB held)" in report
    assert left == []  # nothing left behind (760 MB of random backbones were, once)


def test_a_run_of_some_sections_says_where_it_ran_and_merges(tmp_path, monkeypatch):
    """Every run measures `environment` first, named or not; a run's JSON without it (cut
    short) still merges into bench-gpu.*, each section from the latest run that has it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_check import chosen_sections
    from device_report import merge_runs

    assert chosen_sections("pipeline,loader") == ["environment", "pipeline", "loader"]
    # the loader reads the pipeline's dataset: named first, it would find none and skip
    assert chosen_sections("loader,pipeline,loader") == ["environment", "pipeline", "loader"]
    assert chosen_sections("environment,ddp") == ["environment", "ddp"]
    with pytest.raises(SystemExit, match="no section gpu"):
        chosen_sections("pipeline,gpu")
    first, second = tmp_path / "run1" / "device-check.json", tmp_path / "run2" / "device-check.json"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_text(json.dumps({"environment": {"date": "2026-11-30"},
                                 "loader": {"workers": 15, "batch": 64, "crop": 224,
                                            "images_per_s": 1000.0}}))
    second.write_text(json.dumps({"loader": {"workers": 15, "batch": 64, "crop": 224,
                                             "images_per_s": 1200.0}}))
    merge_runs([first, second], tmp_path)
    merged = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert merged["loader"]["images_per_s"] == 1200.0
    assert merged["sources"] == {"environment": "run1 (2026-11-30)", "loader": "run2 (None)"}


def test_a_pretraining_that_hangs_is_reported_with_where_it_stood(tmp_path, monkeypatch):
    """The CPU check's two-rank pretraining once ran its 300 s out (once in many CI runs):
    the section's error then holds the tail of what the run printed, not only that it hung."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    from device_check import _pretrain
    from device_plan import TINY

    (tmp_path / "sources").mkdir()
    (tmp_path / "sources" / "r0.json").write_text("{}")
    hanging = [sys.executable, "-c", "import sys, time; print('rank 1 waits at validation'); "
               "sys.stdout.flush(); time.sleep(60)"]
    with pytest.raises(RuntimeError, match="did not end within 2 s; its output's tail: "
                                           "rank 1 waits at validation"):
        _pretrain(hanging, str(tmp_path / "shards"), TINY, torch.device("cpu"), [], 32,
                  seconds=2)


@pytest.mark.slow
def test_a_labelling_call_that_fails_is_answered_not_waited_on(monkeypatch, tmp_path):
    """The pipeline section's serving process answers a call it cannot serve: a LabelerError
    (the input's fault) reaches the pool process, which records that reference's versions as
    label_failed and goes on, as a shard task does with the Ray actor's; any other error ends
    the section at once, its pool processes stopped (never waited on until the timeout)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    import torch
    from device_plan import TINY
    from device_pool import pipeline_speed

    import labelers
    from labelers.errors import LabelerError

    score, calls = labelers.Labeler.score, []

    def failing_once(self, ref, versions, on_progress=None):
        calls.append(1)
        if len(calls) == 1:
            raise LabelerError("vif: the reference is flat")
        return score(self, ref, versions, on_progress)

    monkeypatch.setattr(labelers.Labeler, "score", failing_once)
    result = pipeline_speed(torch.device("cpu"), TINY)
    assert result["samples"] == 2 * (1 + 6) - (1 + 6)  # one reference left out, with versions
    failures = [json.loads(line) for line in (Path(result["dataset"]) / "failures.jsonl")
                .read_text().splitlines()]
    assert {f["reason"] for f in failures} == {"label_failed"}
    assert "vif: the reference is flat" in failures[0]["detail"]

    def broken(self, ref, versions, on_progress=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(labelers.Labeler, "score", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        pipeline_speed(torch.device("cpu"), TINY)
    import multiprocessing
    assert multiprocessing.active_children() == []


def test_a_section_with_a_failed_row_is_shown_and_not_merged_over_a_whole_one(tmp_path,
                                                                               monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_report import markdown, merge_runs

    row = {"images_per_s": 300.0, "peak_mb": 1.0, "pass_size": {"mae": 64}}
    whole = {"size": "512x384", "versions": 64, "metrics": {"mae": row},
             "all_ten": {"images_per_s": 300.0, "peak_mb": 1.0}}
    failed = {**whole, "metrics": {"mae": {"error": "OutOfMemoryError: CUDA out of memory"}}}
    assert "| mae | failed: OutOfMemoryError: CUDA out of memory | | | |" in markdown(
        {"labelers": failed})
    runs = []
    for number, section in enumerate((whole, failed), start=1):
        runs.append(tmp_path / f"run{number}" / "device-check.json")
        runs[-1].parent.mkdir()
        runs[-1].write_text(json.dumps({"labelers": section}))
    merge_runs(runs, tmp_path)
    merged = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert merged["labelers"] == whole and merged["sources"]["labelers"] == "run1 (None)"


@pytest.mark.parametrize("name", ["FULL", "TINY"])
def test_the_objectives_crop_gives_contrastive_views_at_half_scale(name):
    # Re-IQA's second view lies at least 0.70 h below the first, so two h-high views need
    # h + ceil(0.7 h) rows; contrastive draws them on the image halved too (its default), and
    # the rule training checks references by agrees (run 4 failed it at 128 on 384 rows)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import device_plan
    sizes = getattr(device_plan, name)
    half = half_shape((sizes.image.height, sizes.image.width))
    crop = sizes.objective_crop
    assert crop + math.ceil(0.7 * crop) <= half[0] and crop <= half[1]
    assert misfit(half, (crop, crop), views=2) is None


def test_the_merged_device_runs_chart_where_the_time_goes(tmp_path, monkeypatch):
    """bench-gpu.png's bars are the committed runs' figures: each metric's device ms, and the
    pool's stage seconds per labelled image in ms; the Markdown shows the picture."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_chart import chart
    from device_report import merge_runs

    runs = sorted((ROOT / "docs" / "device").glob("run*/device-check.json"),
                  key=lambda path: int(path.parent.name.removeprefix("run")))
    merge_runs(runs, tmp_path)
    merged = json.loads((tmp_path / "bench-gpu.json").read_text())
    figure = chart(merged, tmp_path / "again.png")
    assert (tmp_path / "bench-gpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Where the time goes" in (tmp_path / "bench-gpu.md").read_text()
    left, right = figure.axes
    profile = merged["labelers"]["profile"]["per_metric"]
    drawn = {tick.get_text(): bar.get_width()
             for tick, bar in zip(left.get_yticklabels(), left.patches, strict=True)}
    assert drawn == {key: row["device_ms"] for key, row in profile.items()}
    pipeline = merged["pipeline"]
    drawn = {tick.get_text(): bar.get_width()
             for tick, bar in zip(right.get_yticklabels(), right.patches, strict=True)}
    assert drawn == pytest.approx({stage: 1000 * seconds / pipeline["labelled_images"]
                                   for stage, seconds in pipeline["pool_stage_seconds"].items()})
    assert chart({"sources": {}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_merged_report_lists_the_pipeline_of_every_run(tmp_path, monkeypatch):
    """The latest run alone hides how much a node's rate moves: every committed run that
    measured the pipeline is a row, with its figures as that run's JSON gives them."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_report import merge_runs

    runs = sorted((ROOT / "docs" / "device").glob("run*/device-check.json"),
                  key=lambda path: int(path.parent.name.removeprefix("run")))
    merge_runs(runs, tmp_path)
    text = (tmp_path / "bench-gpu.md").read_text()
    table = text.split("## The pipeline in every run", 1)[1].split("\n\n")[2].splitlines()[2:]
    expected = []
    for path in runs:
        pipe = json.loads(path.read_text()).get("pipeline", {})
        if "labelled_images_per_s" in pipe:
            expected.append((path.parent.name, pipe["references"],
                             pipe["labelled_images_per_s"], pipe.get("pool_cpu_ms_per_image")))
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in table]
    assert [(c[0], int(c[2]), float(c[4]), float(c[7]) if c[7] else None) for c in cells] \
        == expected
    for c, path in zip(cells, (ROOT / "docs" / "device" / c[0] for c in cells), strict=True):
        pipe = json.loads((path / "device-check.json").read_text())["pipeline"]
        assert c[3] == str(pipe.get("processes") or "")
        if c[5]:  # images over the seconds from the first request, to the tenth
            assert float(c[5]) == pytest.approx(
                pipe["labelled_images"] / pipe["from_first_request_seconds"], abs=0.05)


def test_a_time_limit_stops_the_section_running_and_reports_those_that_ended(
        tmp_path, monkeypatch, capsys):
    """`timeout` (CHECK_SECONDS) sends SIGTERM: the section it falls in is named as stopped,
    the sections that ended keep their figures in the JSON and the Markdown, none starts
    after it, and this process's SIGTERM handler is as before."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import contextlib
    import signal

    import device_check

    def times_out(device, sizes):  # as timeout does, from outside the section's own code
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the section")

    runners = {**device_check.RUNNERS, "environment": lambda device, sizes: {"cpus": 2},
               "agreement": times_out, "labelers": lambda device, sizes: {"started": True}}
    monkeypatch.setattr(device_check, "RUNNERS", runners)
    monkeypatch.setattr(device_check, "random_backbones_if_absent",
                        lambda: contextlib.nullcontext(False))
    monkeypatch.setattr(sys, "argv", ["device_check.py", "--out", str(tmp_path), "--device",
                                      "cpu", "--sections", "agreement,labelers"])
    handler = signal.getsignal(signal.SIGTERM)
    assert device_check.main() == device_check.TIME_LIMIT == 124
    assert signal.getsignal(signal.SIGTERM) == handler
    results = json.loads((tmp_path / "device-check.json").read_text())
    assert results["environment"]["cpus"] == 2
    assert results["agreement"] == {"error": device_check.STOPPED}
    assert "labelers" not in results
    report = (tmp_path / "device-check.md").read_text()
    assert f"**agreement failed**: {device_check.STOPPED}" in report
    assert f"{device_check.STOPPED} in section agreement" in capsys.readouterr().err


@pytest.mark.slow
def test_the_pipeline_section_runs_the_pool_of_the_size_asked_for(tmp_path):
    """--pipeline-processes sizes the pool (a device run can set 15 against 19 side by side);
    with two processes on two shards, the rate while all worked stops at the first's end."""
    scratch = Path(tempfile.mkdtemp(prefix="dc-"))
    try:
        run = subprocess.run(
            [sys.executable, "benchmarks/device_check.py", "--out", str(tmp_path), "--device",
             "cpu", "--tiny", "--sections", "pipeline", "--pipeline-processes", "2"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}",
                 "TMPDIR": str(scratch)})
    finally:
        shutil.rmtree(scratch)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    pipeline = json.loads((tmp_path / "device-check.json").read_text())["pipeline"]
    assert pipeline["processes"] == 2 and pipeline["shards"] == 2
    # a pool of another size than one per CPU but one is never merged as the node's pipeline
    assert pipeline["pool_size_chosen"] == (max(1, min((os.cpu_count() or 2) - 1, 2)) != 2)
    steady = pipeline["while_all_worked"]
    assert 0 <= steady["labelled_images"] <= pipeline["labelled_images"] == 12
    assert steady["seconds"] <= pipeline["from_first_request_seconds"] + 0.1


def test_a_pool_sized_by_hand_is_listed_but_not_merged_as_the_nodes_pipeline(tmp_path,
                                                                             monkeypatch):
    """The projection models the pool the driver lays out on a node: a later run with
    --pipeline-processes (19 against 15, say) shows in the every-run table, while the merged
    pipeline section, and so the node rate, stays the run of the default pool."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_report import merge_runs

    def pipeline(processes: int, rate: float, chosen: bool) -> dict:
        return {"references": 135, "processes": processes, "labelled_images": 22275,
                "labelled_images_per_s": rate, "from_first_request_seconds": 90.0,
                "wall_seconds": 100.0, "labelling_process_busy": {"score": 140.0},
                "pool_size_chosen": chosen}

    runs = []
    for name, section in (("run1", pipeline(15, 200.0, False)),
                          ("run2", pipeline(19, 230.0, True))):
        (tmp_path / name).mkdir()
        runs.append(tmp_path / name / "device-check.json")
        runs[-1].write_text(json.dumps({"environment": {"date": "2026-12-04"},
                                        "pipeline": section}))
    merge_runs(runs, tmp_path)
    merged = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert merged["pipeline"]["processes"] == 15 and merged["sources"]["pipeline"].startswith(
        "run1")
    assert [(row["run"], row["processes"]) for row in merged["pipeline_runs"]] == [
        ("run1", 15), ("run2", 19)]


def test_a_later_run_that_skipped_a_section_or_made_one_reference_at_a_time_keeps_the_merge(
        tmp_path, monkeypatch):
    """A run whose pipeline failed skips the sections that read its dataset, and a run with
    --pipeline-overlap-bytes 0 (the Makefile's at-a-time comparison, run after the default)
    is not how a node runs: neither replaces what an earlier run measured. The LPIPS/DISTS
    backbones come with the labelers' run, and a section measured on another GPU than the
    header's says so."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from bench_pipeline import gpu_rates
    from device_report import merge_runs

    labelers = {"size": "512x384", "versions": 64, "metrics": {},
                "all_ten": {"images_per_s": 300.0, "peak_mb": 1.0}}
    loader = {"workers": 15, "batch": 64, "crop": 224, "images_per_s": 1800.0}

    def pipeline(rate: float, overlap: int) -> dict:
        return {"references": 135, "processes": 15, "labelled_images": 22275,
                "labelled_images_per_s": rate, "from_first_request_seconds": 90.0,
                "wall_seconds": 100.0, "labelling_process_busy": {"score": 140.0},
                "overlap_bytes": overlap}

    runs = {"run1": {"environment": {"date": "d1", "gpu": "NVIDIA H200"}, "labelers": labelers,
                     "backbones": "random", "pipeline": pipeline(230.0, 1 << 26),
                     "loader": loader},
            "run2": {"environment": {"date": "d2", "gpu": "NVIDIA H100"},
                     "pipeline": {"error": "RuntimeError: no"},
                     "loader": {"skipped": "no dataset (the pipeline section did not run)"}},
            "run3": {"environment": {"date": "d3", "gpu": "NVIDIA H100"},
                     "pipeline": pipeline(180.0, 0)}}
    paths = []
    for name, run in runs.items():
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "device-check.json")
        paths[-1].write_text(json.dumps(run))
    merge_runs(paths, tmp_path)
    merged = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert merged["loader"] == loader and merged["sources"]["loader"] == "run1 (d1)"
    assert merged["pipeline"]["labelled_images_per_s"] == 230.0
    assert [row["run"] for row in merged["pipeline_runs"]] == ["run1", "run3"]
    assert merged["backbones"] == "random"
    text = (tmp_path / "bench-gpu.md").read_text()
    assert "## Training loader" in text and "d3: NVIDIA H100" in text
    assert "loader: run1 (d1) on NVIDIA H200" in text and "LPIPS/DISTS backbones: random" in text
    rates = gpu_rates(tmp_path / "bench-gpu.json")
    assert rates["node_rate_wall"] == 230.0
    assert rates["source"].startswith("measured on NVIDIA H200")


def test_the_pool_hands_the_labeler_read_only_pixels_as_the_object_store_does(monkeypatch):
    """A Ray actor's call gets its versions zero-copy from the object store, read-only, and
    the Labeler copies them: the pool's labelling process pays the same copy."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import numpy as np
    from device_pool import _score_shared, _shared

    class Recording(labelers.Labeler):
        def score(self, ref, dists, on_progress=None):
            seen.append(dists.flags.writeable)
            return super().score(ref, dists, on_progress)

    seen = []
    rng = np.random.default_rng(1)
    ref, versions = (rng.integers(0, 256, shape, dtype=np.uint8)
                     for shape in ((32, 48, 3), (3, 32, 48, 3)))
    with _shared(versions) as handle:
        scores = _score_shared(Recording(["mae"], "cpu"), ref, handle)
    assert seen == [False]
    expected = labelers.Labeler(["mae"], "cpu").score(ref, versions)["mae"]
    assert scores["mae"].tobytes() == expected.tobytes()


def test_the_chart_of_a_pipeline_that_did_not_time_its_start_says_so(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from device_chart import chart

    pipeline = {"processes": 3, "labelled_images": 40, "pool_cpu_ms_per_image": 12.5,
                "pool_stage_seconds": {"distort": 2.0, "label": 1.0}}
    right = chart({"pipeline": pipeline}, tmp_path / "untimed.png").axes[1]
    assert right.get_title() == ("shard pool: 3 processes, its rate once started not timed\n"
                                 "(12.5 CPU ms each)")
    timed = {**pipeline, "from_first_request_seconds": 16.0}  # 40 images / 16 s
    right = chart({"pipeline": timed}, tmp_path / "timed.png").axes[1]
    assert right.get_title().startswith("shard pool: 3 processes, 2.5 labelled images/s once "
                                        "started\n")
