"""The device check's pipeline section: the Ray-free shard worker in a process pool (one
process per CPU but one), its labels and the learned types' network passes served by one
process holding the Labeler and the denoiser on the device, as many calls at once as the GPU
actor serves; the pixels handed over in shared memory, read in place as a Ray actor reads a
call's from the object store. Its repeat section runs one small plan twice, each from a
labeler started afresh, to say whether two runs write the same samples bit for bit."""

import contextlib
import gc
import multiprocessing
import os
import queue
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing import shared_memory
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from device_plan import Sizes
from synthetic import synthetic_sources

import distortions
import labelers
from distortions import denoiser
from distortions.threads import threads_in_use, use_one_thread
from labelers import weights
from labelers.ensemble import Ensemble
from labelers.ensemble import load as load_ensemble
from labelers.errors import LabelerError
from pipeline.config import RunConfig
from pipeline.plan import Plan, label_identity, persist_or_check
from pipeline.report import merge, write_run_files
from pipeline.scheduling import GPU_ACTOR_CONCURRENCY, layout
from pipeline.sources import list_sources
from pipeline.worker import OVERLAP_BYTES, produce_shard
from shards.reader import read_index
from shards.storage import Location

ANSWERED = ("score", "learned")  # the calls a pool process makes, each answered on its own queue


class Failed(NamedTuple):
    """A call the serving process could not answer, sent back in its place: a LabelerError or
    DistortionError (`expected`: the input's fault) is raised again in the pool process, as a
    Ray actor's reaches its shard task (recorded as label_failed or distortion_failed); any
    other error stops the section."""

    kind: str
    expected: bool
    message: str

    def raise_again(self):
        if not self.expected:
            raise RuntimeError(f"the labelling process failed: {self.message}")
        raise (LabelerError if self.kind == "score" else distortions.DistortionError)(
            self.message)


def _shard_worker(worker: int, shards: list[int], plan: dict, config: dict, ensemble: dict,
                  requests, answers, overlap_bytes: int) -> None:
    """A pool process: produce its shards, holding a reference of up to `overlap_bytes` while
    the next is made; labels and learned types come from the server. It sees no GPU, as a Ray
    shard task (num_gpus=0) does not."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    use_one_thread()  # as a shard task does: one CPU each
    plan_, config_ = Plan.from_json(plan), RunConfig.from_json(config)
    ensemble_, location = Ensemble.from_json(ensemble), Location.parse(config_.out)

    def ask(kind: str, *payload):  # (a score and a learned call may wait at once: the
        requests.put((kind, worker, *payload))  # labels of one reference, the next's network)
        answer = answers[kind].get()
        if isinstance(answer, Failed):
            answer.raise_again()
        return answer

    def score(ref: np.ndarray, versions: np.ndarray, _, ref_id: str) -> dict:
        with _shared(versions) as handle:
            return ask("score", ref, handle)

    samples, stages, cpu_start = 0, Counter(), time.process_time()  # after the imports
    for index in shards:
        outcome = produce_shard(index, plan_, config_, score, ensemble_, location, None,
                                lambda inputs: ask("learned", inputs),
                                overlap_bytes=overlap_bytes)
        samples += outcome.samples
        stages.update(outcome.seconds)
    requests.put(("done", worker, samples, dict(stages), time.process_time() - cpu_start,
                  threads_in_use()))


@contextlib.contextmanager
def _shared(array: np.ndarray) -> Iterator[tuple[str, tuple[int, ...], str]]:
    """`array` copied into shared memory, for the serving process to read in place (as a Ray
    actor reads a call's pixels from the object store, never unpickled), until answered."""
    block = shared_memory.SharedMemory(create=True, size=max(1, array.nbytes))
    try:
        np.ndarray(array.shape, array.dtype, buffer=block.buf)[...] = array
        yield block.name, array.shape, array.dtype.str
    finally:
        block.close()
        block.unlink()


def _score_shared(labeler: labelers.Labeler, ref: np.ndarray,
                  handle: tuple[str, tuple[int, ...], str]) -> dict:
    """The Labeler's scores of versions a pool process shared (`_shared`), read in place and
    read-only, as a Ray actor's call gets them from the object store (so the Labeler copies
    them as it does there)."""
    name, shape, dtype = handle
    block = shared_memory.SharedMemory(name=name)  # (the pool shares this process's resource
    try:                                           # tracker: its creator's unlink forgets it)
        shared = np.ndarray(shape, np.dtype(dtype), buffer=block.buf)
        shared.flags.writeable = False
        return dict(labeler.score(ref, shared))
    finally:
        with contextlib.suppress(BufferError):  # a view still held: freed with it
            block.close()


def _prefetch(requests, ready: queue.Queue, workers: list) -> None:
    """A thread: take requests off the pool's queue ahead of the device (a version's pixels
    come as shared memory), at most two waiting, as a threaded Ray actor receives its next
    call."""
    while True:
        try:
            ready.put(requests.get(timeout=5))
        except queue.Empty:
            if all(w.exitcode is not None for w in workers):
                ready.put(("dead", -1, [w.exitcode for w in workers]))
                return


def _serve(labeler: labelers.Labeler, requests, answers, workers: list,
           concurrency: int = GPU_ACTOR_CONCURRENCY) -> dict:
    """Answer the pool's requests until every worker is done, `concurrency` at once (threads
    sharing the Labeler, each pass sized to its share of the memory budget), as the GPU actor
    serves its calls; the seconds spent in calls of each kind, summed over the threads."""
    labeler.share_among(concurrency)
    threads = torch.get_num_threads()  # the labelling process's, as it serves
    ready: queue.Queue = queue.Queue(maxsize=concurrency)
    threading.Thread(target=_prefetch, args=(requests, ready, workers), daemon=True).start()
    lock = threading.Lock()
    busy = {"score": 0.0, "learned": 0.0}
    tally = _Tally()
    stopping = threading.Event()

    def answer() -> None:
        while not stopping.is_set():
            try:
                kind, worker, *payload = ready.get(timeout=0.2)
            except queue.Empty:
                continue
            with lock:
                if tally.settle(kind, payload, len(workers)):
                    stopping.set()
            if kind in ("done", "dead"):
                continue
            start = time.perf_counter()
            with lock:
                tally.since = start if tally.active == 0 else tally.since
                tally.active += 1
                tally.peak = max(tally.peak, tally.active)
            result, failure = _call(labeler, kind, payload)
            if failure:
                tally.failed = failure
                stopping.set()
            with lock:
                now = time.perf_counter()
                if kind == "score" and isinstance(result, dict):
                    tally.labelled += payload[1][1][0]  # the shared versions' count
                busy[kind] += now - start
                tally.active -= 1
                tally.occupied += now - tally.since if tally.active == 0 else 0.0
            answers[worker][kind].put(result)

    servers = [threading.Thread(target=answer) for _ in range(concurrency)]
    for server in servers:
        server.start()
    for server in servers:
        server.join()
    if tally.failed:
        raise RuntimeError(tally.failed)
    return {"samples": tally.samples, "concurrency": concurrency,
            "pool_stage_seconds": {k: round(v, 1) for k, v in tally.stages.items()},
            "pool_cpu_seconds": round(tally.cpu, 1), "pool_threads": tally.threads,
            "peak_concurrent": tally.peak,
            "busy_seconds": {k: round(v, 1) for k, v in busy.items()},
            "occupied_seconds": round(tally.occupied, 1),
            "while_all_worked": tally.all_worked,
            "serving_seconds": round(time.perf_counter() - tally.first, 1),
            "torch_threads": threads}


@dataclass
class _Tally:
    """What _serve's threads have seen (changed under their lock): the pool processes' figures
    and the calls in progress."""
    done: int = 0  # pool processes that ended, with their figures
    samples: int = 0
    first: float | None = None  # when the first request came
    failed: str | None = None  # what stops serving
    active: int = 0  # calls in progress
    peak: int = 0
    stages: Counter = field(default_factory=Counter)  # the pool processes' stage seconds
    cpu: float = 0.0
    threads: dict = field(default_factory=dict)  # the most threads each kind of pool work used
    occupied: float = 0.0  # seconds with a call in progress
    since: float = 0.0  # when the calls in progress began
    labelled: int = 0
    all_worked: dict | None = None  # the figures until the first pool process ended

    def settle(self, kind: str, payload: list, workers: int) -> bool:
        """A request's mark (a pool process's "done" with its figures, or "dead": every one
        ended); whether serving stops: all `workers` done, or a failure."""
        self.first = self.first or time.perf_counter()
        if kind == "done":
            self.all_worked = self.all_worked or self.while_all_worked()
            self.done += 1
            self.samples += payload[0]
            self.stages.update(payload[1])
            self.cpu += payload[2]
            self.threads.update({k: max(n, self.threads.get(k, 0))
                                 for k, n in payload[3].items()})
        if kind == "dead" and self.done < workers:
            self.failed = f"the pool processes ended early (exit codes {payload[0]})"
        return self.done == workers or bool(self.failed)

    def while_all_worked(self) -> dict:
        """The pipeline's figures from the first request until now, while every pool process
        kept the labelling process fed as a node's shard tasks do until a run's last shards:
        the rate a long run keeps, without the start or the tail of a short one."""
        now = time.perf_counter()
        seconds = now - self.first
        occupied = self.occupied + (now - self.since if self.active else 0.0)
        return {"seconds": round(seconds, 1), "labelled_images": self.labelled,
                "labelled_images_per_s": round(self.labelled / seconds, 1) if seconds else None,
                "labelling_process_occupied": round(occupied, 1)}


def _call(labeler: labelers.Labeler, kind: str, payload: list) -> tuple[object, str | None]:
    """(a call's answer, None), or where it failed (Failed, the traceback where the failure
    is not the input's fault: it stops the section). Every call is answered, so that the pool
    process never waits."""
    try:
        if kind == "score":
            return _score_shared(labeler, *payload), None
        with labeler.apart_from_measuring():  # as the labeler actor runs it: never while
            return distortions.run_learned(*payload), None  # the labeler measures
    except Exception as error:
        expected = isinstance(error, LabelerError | distortions.DistortionError)
        return (Failed(kind, expected, f"{type(error).__name__}: {error}"),
                None if expected else traceback.format_exc())


def pipeline_speed(device: torch.device, sizes: Sizes) -> dict:
    config, plan, ensemble = _pipeline_plan(sizes)
    location = Location.parse(config.out)
    as_laid_out = max(1, min((os.cpu_count() or 2) - 1, plan.shard_count))  # one per CPU but one
    processes = max(1, min(sizes.pipeline_processes or as_laid_out, plan.shard_count))
    denoiser.use_denoiser(device=str(device))
    _release_cached_memory(device)
    labeler = labelers.Labeler(config.metrics, device, allow_missing=True)
    overlap_bytes = sizes.pipeline_overlap_bytes
    overlap_bytes = OVERLAP_BYTES if overlap_bytes is None else overlap_bytes
    started = time.perf_counter()
    served = _pool_served(labeler, (plan, config, ensemble), processes, overlap_bytes)
    wall = time.perf_counter() - started
    merge(location, plan)  # sources.parquet: the dataset is complete, training can read it
    labelled = served["samples"] - len(plan.references)
    return {"references": len(plan.references), "shards": plan.shard_count,
            "processes": processes, "samples": served["samples"],
            # 0: one reference at a time in each process (as a shard task with CPU labelers)
            "overlap_bytes": overlap_bytes,
            # a pool --pipeline-processes sized otherwise than the driver lays a node out
            "pool_size_chosen": processes != as_laid_out,
            "labelled_images": labelled, "wall_seconds": round(wall, 1),
            "labelled_images_per_s": round(labelled / wall, 1),
            "labelling_process_busy": served["busy_seconds"],
            # the seconds in which it served at least one call (its calls' union)
            "labelling_process_occupied": served["occupied_seconds"],
            # where the pool's time went (wall seconds summed over its processes; label and
            # the learned types' wait on the labelling process) and its CPU time per image
            "pool_stage_seconds": served["pool_stage_seconds"],
            "pool_cpu_ms_per_image": round(1000 * served["pool_cpu_seconds"] / labelled, 1),
            "pool_threads": served["pool_threads"],  # OpenCV's and torch's, the most of any
            "labelling_concurrency": served["concurrency"],
            "labelling_threads": served["torch_threads"],  # torch's, as the GPU actor's
            "labelling_peak_concurrent": served["peak_concurrent"],
            "from_first_request_seconds": served["serving_seconds"],
            "while_all_worked": served["while_all_worked"],
            # each call's share of the memory budget (0 on a CPU): it sizes the passes
            "memory_budget_mb": round(labeler.memory_budget / 1e6, 1),
            "metrics": list(labeler.keys), "absent": list(labeler.absent),
            "dataset": config.out}


def _pipeline_plan(sizes: Sizes) -> tuple[RunConfig, Plan, Ensemble]:
    """The section's run: synthetic sources, its plan and run files written in a folder of
    its own, as generate writes them before its first shard."""
    work = Path(tempfile.mkdtemp(prefix="device-check-"))
    sources = synthetic_sources(sizes.pipeline_refs, work / "sources", sizes.image.width,
                                sizes.image.height)
    config = RunConfig(sources=sources, out=str(work / "dataset"), size=sizes.image,
                       shard_refs=sizes.pipeline_shard_refs,
                       distortion_ids=sizes.pipeline_distortions, levels=sizes.pipeline_levels,
                       metrics=sizes.pipeline_metrics, allow_missing_metrics=True)
    ensemble = load_ensemble(None)
    absent = tuple(weights.missing(config.metrics))
    plan = Plan.make(list_sources(config.sources), config, label_identity(ensemble.hash, absent))
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    write_run_files(location, config, plan, ensemble, absent)
    return config, plan, ensemble


def _pool_served(labeler: labelers.Labeler, run: tuple[Plan, RunConfig, Ensemble],
                 processes: int, overlap_bytes: int) -> dict:
    """The run's shards made by `processes` spawned pool processes (shard k, k + processes,
    ... each), their calls served here on torch's threads of a GPU actor (_serve); no pool
    process is left behind, whatever happens."""
    plan, config, ensemble = run
    spawn = multiprocessing.get_context("spawn")
    requests = spawn.Queue()
    answers = [{kind: spawn.Queue() for kind in ANSWERED} for _ in range(processes)]
    arguments = (plan.to_json(), config.to_json(), ensemble.to_json())
    workers = [spawn.Process(target=_shard_worker,
                             args=(k, list(range(k, plan.shard_count, processes)), *arguments,
                                   requests, answers[k], overlap_bytes), daemon=True)
               for k in range(processes)]
    for worker in workers:
        worker.start()
    threads, actor_threads = torch.get_num_threads(), layout(os.cpu_count() or 1, 1).threads
    torch.set_num_threads(actor_threads)  # as the GPU actor sets its own (LabelerActor)
    try:
        return _serve(labeler, requests, answers, workers)
    finally:  # a section that failed leaves no process behind to wait for
        torch.set_num_threads(threads)
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()


def _release_cached_memory(device: torch.device) -> None:
    """The memory an earlier section's tensors left in torch's cache handed back, so that a
    labeler's budget (half the memory free at its start) is what a fresh actor's process
    would get, not what is left beside an earlier labeler's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def repeat(device: torch.device, sizes: Sizes) -> dict:
    """The pipeline section's plan cut to two references, run twice: how many distorted
    samples have the same pixels and the same scores, bit for bit, in both (on a GPU a
    labeler's passes follow the memory free when it starts; on a CPU they never move), and
    each metric's largest difference."""
    small = replace(sizes, pipeline_refs=2)
    runs = [pipeline_speed(device, small) for _ in range(2)]
    first, second = (_samples(run["dataset"]) for run in runs)
    if first.keys() != second.keys():
        raise RuntimeError(f"the runs made different samples: {len(first)} and {len(second)}")
    differences: Counter = Counter()
    for key, (_, scores) in first.items():
        for metric, value in scores.items():
            other = second[key][1][metric]
            differences[metric] = max(differences[metric], abs(value - other))
    return {"references": small.pipeline_refs, "samples": len(first),
            "same_pixels": sum(first[k][0] == second[k][0] for k in first),
            "same_scores": sum(first[k][1] == second[k][1] for k in first),
            "largest_difference": dict(differences),
            "memory_budget_mb": [run["memory_budget_mb"] for run in runs]}


def _samples(dataset: str) -> dict[str, tuple[str, dict]]:
    """Each distorted sample's key -> (pixel SHA-256, scores) in a finished dataset."""
    rows = read_index(Location.parse(dataset), columns=["key", "kind", "sha256", "scores"],
                      kind="distorted").to_pylist()
    return {row["key"]: (row["sha256"], {k: v for k, v in row["scores"].items()
                                         if v is not None}) for row in rows}
