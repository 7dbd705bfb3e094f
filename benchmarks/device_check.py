"""The GPU proof in one run: every measurement the design rests on, on the device at hand.

    python benchmarks/device_check.py --out DIR [--device cuda|cpu] [--tiny] [--sections ...]

Sections (each writes its JSON as soon as it ends, so a run cut short keeps what it measured):
- environment: GPU, driver, torch, CUDA, CPUs;
- agreement: every metric on the device against the CPU on embedded photos (max differences);
- labelers: images/s per metric and for all ten (Labeler, memory-budget batches), peak GPU
  memory, pass size used, and where the time goes (profiler time per metric, top kernels);
- variants (device_variants.py): ways the labels or the denoiser's network might run faster
  on the device (VIF's correlations as tap sums, MS-SSIM's window sums as fused multiply-adds,
  the network in channels_last), each against the current code in one run: images/s of
  both, and the largest output difference;
- denoiser: types 8-12 through the bank (images/s), the network alone in batches, and the
  same recipe replayed on the device and on the CPU (largest pixel difference);
- training: the training loop's own epoch function (bf16 autocast + channels_last on CUDA) for
  resnet50 at 224 and nasnetalarge at 331: images/s and peak memory;
- pipeline (device_pool.py): the Ray-free shard worker in a process pool (one process per
  CPU but one), its labels and learned-denoiser network passes served by one process holding
  the Labeler and the denoiser on the device, two calls at once as the GPU actor serves them:
  labelled images/s end to end, and the seconds spent in those calls;
- repeat (device_pool.py): the pipeline's plan cut to two references, run twice, each from a
  labeler started afresh: samples with the same pixels and scores, bit for bit, in both;
- passes: whether a label depends on its batch: each metric's largest difference between
  two identical calls and between one pass and passes of an eighth, with cuDNN's default
  algorithms and with deterministic ones only (and the all-ten rate with those);
- loader: the training shard loader on the pipeline's shards, one worker per CPU but one;
- ddp: a pretraining run launched by torchrun on the pipeline's shards (NCCL on CUDA); two
  ranks where two GPUs are visible, one rank otherwise (and it says so);
- objectives: `train pretrain --objective contrastive | reconstruction | restoration` on the
  pipeline's shards, one short epoch each on the device: seconds, group images/s, the loss.

LPIPS/DISTS run with random backbone weights where the ImageNet files are absent (the cost is
the same; the agreement is then between devices, not against published values).
`--device cpu --tiny` runs every section in seconds on small inputs: `make test` keeps it
working between device sessions. Writes device-check.json and device-check.md to --out.
"""

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from bench_labelers import environment_variable, random_backbones_if_absent, workload
from bench_train import loader as shard_loader
from bench_train import past_prefetch
from device_plan import DATASET_SECTIONS, FULL, SECTIONS, TINY, Sizes
from device_pool import pipeline_speed, repeat
from device_report import has_error, markdown, merge_runs
from device_timing import guarded, labeler_rate, peak_mb, peak_reset, synchronize, timed
from device_variants import denoiser_batch, network_rate, variants

import distortions
import labelers
from distortions import denoiser
from labelers.base import DEVICE_TOLERANCE
from training.cli import POSITIVE
from training.distributed import Context
from training.loop import Run, _loss_function, train_epoch
from training.model import ModelConfig, build_model
from training.optim import OptimConfig, optimiser
from training.precision import Precision

LABEL_FREE = ("contrastive", "reconstruction", "restoration")
LEARNED = tuple(d.id for d in distortions.all() if d.learned)


# ---------------------------------------------------------------- environment

def physical_cores() -> int | None:
    """Distinct (package, core) pairs in /proc/cpuinfo: fewer than the CPUs where hardware
    threads share cores (the pool's processes then share them too); None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        if "core id" in fields:
            cores.add((fields.get("physical id"), fields["core id"]))
    return len(cores) or None


def environment(device: torch.device, sizes: Sizes) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpus": os.cpu_count(),
            "physical_cores": physical_cores(), "opencv": cv2.__version__,
            "device": str(device),
            "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    multiprocessors=props.multi_processor_count)
        try:
            query = subprocess.run(["nvidia-smi", "--query-gpu=driver_version",
                                    "--format=csv,noheader"], capture_output=True, text=True,
                                   timeout=20)
            info["driver"] = query.stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            info["driver"] = f"unknown ({error})"
    return info


# ---------------------------------------------------------------- agreement

def agreement(device: torch.device, sizes: Sizes) -> dict:
    """Each metric on `device` against the CPU, on versions of real photos."""
    pairs = [workload(sizes.agreement_versions, sizes.image, photo)
             for photo in sizes.agreement_photos]
    def compare(key: str) -> dict:
        on_cpu = labelers.Labeler([key], "cpu")
        on_device = labelers.Labeler([key], device)
        cpu = np.concatenate([on_cpu.score(ref, versions)[key] for ref, versions in pairs])
        other = np.concatenate([on_device.score(ref, versions)[key] for ref, versions in pairs])
        error = np.abs(other - cpu)
        allowed = DEVICE_TOLERANCE + DEVICE_TOLERANCE * np.abs(cpu)
        return {"max_abs": float(error.max()),
                "max_rel": float((error / np.maximum(np.abs(cpu), 1e-12)).max()),
                "within_tolerance": bool((error <= allowed).all()), "count": len(cpu)}

    rows = {key: guarded(f"agreement {key:8s}", lambda k=key: compare(k))
            for key in labelers.METRICS}
    return {"tolerance": f"atol {DEVICE_TOLERANCE:g} + rtol {DEVICE_TOLERANCE:g}",
            "metrics": rows,
            "all_within": all(r.get("within_tolerance", False) for r in rows.values())}


# ---------------------------------------------------------------- labelers

def _profile(labeler: labelers.Labeler, ref, versions, device) -> dict:
    """Device time per metric (the Labeler's record_function ranges) and the top kernels."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        labeler.score(ref, versions)
    events = profiler.key_averages()

    def device_ms(event, own: bool) -> float:
        name = ("self_" if own else "") + ("device_time_total" if device.type == "cuda"
                                            else "cpu_time_total")
        return round(getattr(event, name, 0.0) / 1000, 2)

    per_metric = {e.key.removeprefix("metric:"): {"device_ms": device_ms(e, False),
                                                  "cpu_ms": round(e.cpu_time_total / 1000, 2)}
                  for e in events if e.key.startswith("metric:")}
    kernels = sorted((e for e in events if not e.key.startswith("metric:")),
                     key=lambda e: device_ms(e, True), reverse=True)[:12]
    return {"per_metric": per_metric,
            "top_ops": [{"op": e.key[:80], "self_ms": device_ms(e, True), "calls": e.count}
                        for e in kernels]}


def labeler_speed(device: torch.device, sizes: Sizes) -> dict:
    ref, versions = workload(sizes.versions, sizes.image)
    rows = {key: guarded(f"labeler {key:8s}", lambda k=key: labeler_rate(
        labelers.Labeler([k], device), ref, versions, device)) for key in labelers.METRICS}
    everything = labelers.Labeler(device=device)
    together = guarded("labeler all ten", lambda: labeler_rate(everything, ref, versions,
                                                                device))
    return {"size": str(sizes.image), "versions": len(versions), "metrics": rows,
            "all_ten": together,
            "profile": guarded("profile", lambda: _profile(everything, ref, versions, device))}


def _largest_differences(first: labelers.Scores, second: labelers.Scores) -> dict:
    return {key: float(np.max(np.abs(first[key] - second[key]))) for key in first}


def pass_dependence(device: torch.device, sizes: Sizes) -> dict:
    """Whether a label depends on how it was batched: each metric's largest difference between
    two identical calls (the versions in one pass), and between one pass and passes of an
    eighth, with cuDNN's default algorithms and with only deterministic ones (where torch has
    none for an op, its warning is kept), and the all-ten rate with deterministic ones."""
    ref, versions = workload(sizes.versions, sizes.image)
    split = max(1, len(versions) // 8)

    def scores(batch: int) -> labelers.Scores:
        return labelers.Labeler(device=device, batch_size=batch).score(ref, versions)

    rows = {}
    for name, deterministic in (("default", False), ("deterministic", True)):
        with torch.backends.cudnn.flags(enabled=True, benchmark=False,
                                        deterministic=deterministic), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            try:
                one = scores(len(versions))
                rows[name] = {"same_call": _largest_differences(one, scores(len(versions))),
                              f"passes_of_{split}": _largest_differences(one, scores(split))}
                if deterministic:
                    rows[name]["all_ten"] = labeler_rate(labelers.Labeler(device=device),
                                                          ref, versions, device)
            finally:
                torch.use_deterministic_algorithms(False)
        rows[name]["warnings"] = sorted({str(w.message)[:160] for w in caught
                                         if "deterministic" in str(w.message)})
    return {"versions": len(versions), "split": split, **rows}


# ---------------------------------------------------------------- denoiser

def denoiser_speed(device: torch.device, sizes: Sizes) -> dict:
    ref = workload(1, sizes.image)[0]
    denoiser.use_denoiser(device=str(device))
    distortions.apply(ref, LEARNED[0], 3, seed=0)  # warm-up
    per_type = {}
    for distortion_id in LEARNED:
        count = sizes.denoise_images
        seconds = timed(lambda d=distortion_id, n=count: [
            distortions.apply(ref, d, 1 + i % 5, seed=i) for i in range(n)])
        per_type[distortions.get(distortion_id).name] = round(count / seconds, 2)
    network = denoiser.active_denoiser()
    batched, _ = network_rate(network.network, *denoiser_batch(ref, sizes.denoise_images,
                                                               device))
    replay = {}
    for distortion_id in LEARNED:
        made, recipe = distortions.apply(ref, distortion_id, 5, seed=distortion_id)
        denoiser.use_denoiser(device="cpu")
        on_cpu = distortions.replay(ref, recipe)
        denoiser.use_denoiser(device=str(device))
        difference = np.abs(made.astype(int) - on_cpu.astype(int))
        replay[distortions.get(distortion_id).name] = {
            "max_levels": int(difference.max()),
            "pixels_differing": float((difference > 0).mean())}
    return {"through_bank_images_per_s": per_type,
            "network_batched_images_per_s": batched,
            "batch": sizes.denoise_images, "replay_device_vs_cpu": replay,
            "identity": network.identity}


# ---------------------------------------------------------------- training

def _train_rate(device: torch.device, backbone: str, crop: int, batch: int, steps: int,
                precision: str) -> dict:
    context = Context(0, 1, 0, device)
    model = build_model(ModelConfig(backbone, init="random")).model
    resolved = Precision.resolve(precision, device)
    run = Run(context, model, OptimConfig(1e-4, 10, 1, batch), 0, Path(tempfile.mkdtemp()),
              {}, precision=resolved)
    resolved.prepare(model.to(device))
    optimizer, _ = optimiser(model, run.optim)
    images = torch.randint(0, 256, (batch, 3, crop, crop), dtype=torch.uint8)  # as loaded
    targets = torch.rand(batch)
    if device.type == "cuda":
        images, targets = images.pin_memory(), targets.pin_memory()

    def epoch(count: int) -> None:
        train_epoch(run, model, ((images, targets) for _ in range(count)), count,
                    _loss_function(run), optimizer)
        synchronize(device)

    epoch(2)  # warm-up: kernels chosen, allocator grown
    peak_reset(device)
    seconds = timed(lambda: epoch(steps))
    return {"backbone": backbone, "crop": crop, "batch": batch, "precision": resolved.name,
            "channels_last": resolved.channels_last, "steps": steps,
            "images_per_s": round(batch * steps / seconds, 1), "peak_mb": peak_mb(device)}


def training_speed(device: torch.device, sizes: Sizes) -> dict:
    rows = []
    for backbone, crop, batch, steps in sizes.train:
        for precision in (("auto", "fp32") if device.type == "cuda" else ("auto",)):
            named = {"backbone": backbone, "crop": crop, "batch": batch,
                     "precision": precision}
            rows.append({**named, **guarded("training", lambda b=backbone, c=crop, n=batch,
                                            s=steps, p=precision: _train_rate(
                                                device, b, c, n, s, p))})
    return {"runs": rows}


# ---------------------------------------------------------------- loader

def loader_speed(device: torch.device, sizes: Sizes, dataset: str | None) -> dict:
    """The training shard loader (read, PNG decode, crop) with one worker per CPU but one: the
    images/s it feeds a GPU. Timed after every worker has filled its prefetch queue."""
    if dataset is None:
        return {"skipped": "no dataset (the pipeline section did not run)"}
    workers = max(1, (os.cpu_count() or 2) - 1)
    batch = 64 if device.type == "cuda" else 4
    iterator = past_prefetch(shard_loader(dataset, sizes.ddp_crop, batch, workers))
    steps = 4 * workers
    seconds = timed(lambda: [next(iterator) for _ in range(steps)])
    return {"workers": workers, "batch": batch, "crop": sizes.ddp_crop,
            "images_per_s": round(batch * steps / seconds, 1)}


# ---------------------------------------------------------------- ddp

def _text(output: bytes | str | None) -> str:
    """What a timed-out subprocess printed (bytes even in text mode, or None)."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def _pretrain(launcher: list[str], dataset: str, sizes: Sizes, device: torch.device,
              options: list[str], crop: int, seconds: float = 300) -> tuple[dict, float, str]:
    """`train pretrain` on the pipeline's shards (one epoch at `crop`, the first reference
    held out for validation) under `launcher`: (its summary.json, seconds, the output's
    tail); a RuntimeError with the tail of what it printed where it runs past `seconds`."""
    refs = sorted({p.stem for p in Path(dataset).parent.joinpath("sources").iterdir()})
    out = Path(tempfile.mkdtemp(prefix="device-check-pretrain-"))
    command = [*launcher, "-m", "training", "pretrain", dataset, "--out", str(out),
               "--backbone", sizes.ddp_backbone, "--crop", str(crop), "--epochs", "1",
               "--val-refs", refs[0], "--val-limit", "8", "--workers", "1", "--init", "random",
               "--device", device.type, *options]
    started = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired as expired:  # where it stood, not only that it hung
        printed = "".join(_text(part) for part in (expired.stdout, expired.stderr))
        raise RuntimeError(f"{' '.join(command[:6])} ... did not end within {seconds:g} s; "
                           f"its output's tail: {printed[-1500:]}") from None
    summary = out / "summary.json"
    if result.returncode != 0 or not summary.is_file():
        raise RuntimeError(f"{' '.join(command[:6])} ... exited {result.returncode}: "
                           + (result.stdout + result.stderr)[-1500:])
    return (json.loads(summary.read_text()), round(time.perf_counter() - started, 1),
            result.stdout[-800:])


def ddp(device: torch.device, sizes: Sizes, dataset: str | None) -> dict:
    if dataset is None:
        return {"skipped": "no dataset (the pipeline section did not run)"}
    ranks = 2 if device.type == "cuda" and torch.cuda.device_count() >= 2 else 1
    if device.type == "cpu":
        ranks = 2  # gloo: two CPU ranks
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={ranks}"]
    summary, seconds, tail = _pretrain(launcher, dataset, sizes, device,
                                       ["--steps-per-epoch", "2", "--batch-size",
                                        str(4 * ranks)], sizes.ddp_crop)
    return {"ranks": ranks, "backend": "nccl" if device.type == "cuda" else "gloo",
            "note": ("one GPU visible: one NCCL rank (two ranks cannot share a GPU under NCCL)"
                     if device.type == "cuda" and ranks == 1 else ""),
            "seconds": seconds, "summary": summary["history"][-1], "tail": tail}


def objectives(device: torch.device, sizes: Sizes, dataset: str | None) -> dict:
    """Each label-free objective's pretraining, one epoch of 4 steps on the device: its
    epoch's seconds and images/s (the members of its groups: 2 views of a reference and its
    version for contrastive, at two scales; reference + version otherwise), its loss."""
    if dataset is None:
        return {"skipped": "no dataset (the pipeline section did not run)"}
    steps = 4

    def run(name: str) -> dict:
        summary, seconds, _ = _pretrain([sys.executable], dataset, sizes, device, [
            "--objective", name, "--steps-per-epoch", str(steps), "--batch-size",
            str(sizes.objective_batch), "--versions", "1"], sizes.objective_crop)
        epoch = summary["history"][-1]
        images = steps * sizes.objective_batch * (8 if name == "contrastive" else 2)
        return {"seconds": seconds, "epoch_seconds": round(epoch["seconds"], 2),
                "images_per_s": round(images / epoch["seconds"], 1),
                "train_loss": epoch["train_loss"],
                "skipped_nonfinite": epoch["skipped_nonfinite"],
                "notices": summary.get("notices", [])}

    rows = {name: guarded(f"objective {name}", lambda n=name: run(n)) for name in LABEL_FREE}
    return {"backbone": sizes.ddp_backbone, "crop": sizes.objective_crop,
            "batch": sizes.objective_batch, "steps": steps, "runs": rows}


@contextlib.contextmanager
def scratch_tmpdir() -> Iterator[None]:
    """Every temporary file of the check and of the processes it starts (datasets, random
    backbones, torchrun's logs) in one folder that goes when it ends."""
    with tempfile.TemporaryDirectory(prefix="device-check-") as scratch, \
            environment_variable("TMPDIR", scratch):
        tempfile.tempdir = scratch
        try:
            yield
        finally:
            tempfile.tempdir = None


STOPPED = "stopped by the time limit (SIGTERM, as device_check.sh's CHECK_SECONDS ran out)"
TIME_LIMIT = 124  # the check's exit status once stopped, as `timeout` gives it


class TimeLimit(BaseException):
    """SIGTERM, as `timeout` in device_check.sh sends at CHECK_SECONDS: the section running
    stops (a section's `except Exception` lets it through), those that ended are reported."""


@contextlib.contextmanager
def sigterm_stops_the_check() -> Iterator[None]:
    def stop(signum, frame):
        raise TimeLimit

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_sections(names: list[str], device: torch.device, sizes: Sizes, out: Path) -> dict:
    """Each section in turn, its figures (or its error) saved to out/device-check.json as it
    ends; a failing section is reported and the others still run. A time limit (TimeLimit)
    stops them: the section it cut short says so, and the stderr which it was."""
    with random_backbones_if_absent() as random_backbones:
        results = {"backbones": "random (ImageNet weights absent)" if random_backbones
                   else "ImageNet"}
        try:
            _run_each(names, device, sizes, out, results)
        except TimeLimit:
            running = next((name for name in names if name not in results), None)
            if running:
                results[running] = {"error": STOPPED}
                (out / "device-check.json").write_text(json.dumps(results, indent=1))
            print(f"device check: {STOPPED} in section {running or '(none: all had ended)'}; "
                  f"the sections that ended before it are in {out}", file=sys.stderr,
                  flush=True)
    return results


def _run_each(names: list[str], device: torch.device, sizes: Sizes, out: Path,
              results: dict) -> None:
    dataset = None
    for name in names:
        started = time.perf_counter()
        try:
            if name in DATASET_SECTIONS:
                results[name] = DATASET_RUNNERS[name](device, sizes, dataset)
            else:
                results[name] = RUNNERS[name](device, sizes)
            dataset = results[name].get("dataset", dataset)
        except Exception as error:
            results[name] = {"error": f"{type(error).__name__}: {error}",
                             "traceback": traceback.format_exc()[-3000:]}
        results[name]["section_seconds"] = round(time.perf_counter() - started, 1)
        print(f"== {name}: {results[name]['section_seconds']} s", flush=True)
        (out / "device-check.json").write_text(json.dumps(results, indent=1))
        if device.type == "cuda":  # what a section cached is no later one's budget
            try:  # after a CUDA error that poisons the context this raises too: the
                torch.cuda.empty_cache()  # sections in processes of their own still run
            except RuntimeError as error:
                print(f"== torch.cuda.empty_cache after {name}: {error}", flush=True)


def chosen_sections(text: str) -> list[str]:
    """The sections named (comma-separated) in the check's own order, environment first
    whether named or not (every run's results say where they were measured), the pipeline
    before those that read its dataset however they are named; an unknown name is refused at
    once."""
    names = {name for name in text.split(",") if name}
    unknown = sorted(names - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--sections: no section {', '.join(unknown)} (sections: "
                         f"{', '.join(SECTIONS)})")
    return [name for name in SECTIONS if name in names | {"environment"}]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--merge", type=Path, nargs="+",
                        help="merge these device-check.json files into bench-gpu.* in --out")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="small inputs (the CPU check)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--pipeline-refs", type=POSITIVE, metavar="N",
                        help="references in the pipeline section (a longer steady state)")
    parser.add_argument("--pipeline-processes", type=POSITIVE, metavar="N",
                        help="the pipeline pool's processes (default one per CPU but one; "
                             "more keep CPUs busy while some wait on labels)")
    parser.add_argument("--pipeline-overlap-bytes", type=int, metavar="N",
                        help="the most a pool process's reference may hold while its next is "
                             "made (0: one reference at a time, as until session 39)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge_runs(args.merge, args.out)
        return 0
    device, sizes = torch.device(args.device), TINY if args.tiny else FULL
    if args.pipeline_refs:
        sizes = replace(sizes, pipeline_refs=args.pipeline_refs)
    if args.pipeline_processes:
        sizes = replace(sizes, pipeline_processes=args.pipeline_processes)
    if args.pipeline_overlap_bytes is not None:
        sizes = replace(sizes, pipeline_overlap_bytes=args.pipeline_overlap_bytes)
    with scratch_tmpdir(), sigterm_stops_the_check():
        results = run_sections(chosen_sections(args.sections), device, sizes, args.out)
    (args.out / "device-check.md").write_text(markdown(results))
    print(markdown(results))
    if any(results.get(name) == {"error": STOPPED} for name in SECTIONS):
        return TIME_LIMIT
    return 1 if any(has_error(results[name]) for name in results if name in SECTIONS) else 0


RUNNERS = {"environment": environment, "agreement": agreement, "labelers": labeler_speed,
           "denoiser": denoiser_speed, "training": training_speed, "pipeline": pipeline_speed,
           "repeat": repeat, "passes": pass_dependence, "variants": variants}
DATASET_RUNNERS = {"loader": loader_speed, "ddp": ddp, "objectives": objectives}

if __name__ == "__main__":
    code = main()
    if code == TIME_LIMIT:  # at once: a stopped pool's queue to a process the signal ended
        sys.stdout.flush()  # holds the interpreter's exit (its feeder thread never ends)
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
