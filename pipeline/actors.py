"""Ray remote pieces: the labeler actor pool and the shard task."""

import os
import threading
from dataclasses import dataclass

import numpy as np
import ray
import torch

import distortions
from distortions.threads import use_one_thread
from labelers.ensemble import Ensemble
from labelers.errors import LabelerError
from labelers.labeler import Labeler
from pipeline.config import RunConfig
from pipeline.labeler_calls import REFUSED, RUN, CallLedger
from pipeline.plan import ShardPlan
from pipeline.progress_metrics import record_shard
from pipeline.worker import Guard, produce_shard
from shards.storage import Location


class _CallCounter:
    """Calls being served now and the most at once (an actor may serve several in threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = self.peak = self.calls = 0

    def __enter__(self):
        with self.lock:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)

    def __exit__(self, *exc):
        with self.lock:
            self.active -= 1


@ray.remote(max_restarts=-1, max_task_retries=3)
class LabelerActor:
    """Loads every metric once and scores raw pixels against their reference; on a GPU it
    also runs the learned denoiser. Started with max_concurrency > 1 it serves several shard
    tasks at once (threads), each pass sized to its share of the GPU memory budget."""

    def __init__(self, metrics: tuple[str, ...], allow_missing: bool, threads: int,
                 concurrency: int = 1):
        torch.set_num_threads(max(1, threads))
        self.counter = _CallCounter()
        context = ray.get_runtime_context()
        self.calls = CallLedger(context.get_actor_id(), context.was_current_actor_reconstructed)
        try:
            self.labeler = Labeler(metrics=metrics, allow_missing=allow_missing)
        except LabelerError as error:  # told by describe, in its own words: not an actor death
            self.unusable = error
            return
        self.unusable = None
        self.labeler.share_among(concurrency)

    def _usable(self) -> Labeler:
        """Its Labeler; the LabelerError that kept it from loading its metrics (a weight file
        that cannot be read on its node, say: at a restart too), raised again."""
        if self.unusable is not None:
            raise self.unusable
        return self.labeler

    def describe(self) -> dict:
        """Where it runs and what it computes (_usable's error where it cannot)."""
        self._usable()
        return {"device": str(self.labeler.device), "metrics": self.labeler.keys,
                "absent": self.labeler.absent, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "gpus": ray.get_gpu_ids(), "torch": torch.__version__,
                "torch_cuda": torch.version.cuda}

    def stats(self) -> dict:
        """Calls served and the most served at once."""
        return {"calls": self.counter.calls, "peak_concurrent": self.counter.peak}

    def denoise(self, inputs: list[distortions.LearnedInput],
                progress: "ray.actor.ActorHandle | None" = None, ref_id: str | None = None
                ) -> list:
        """The learned-denoiser network over a reference's prepared inputs, batched on this
        actor's device (its GPU); the noise and its estimate were made on the shard task. A
        call for `ref_id`, recorded with `progress` while it runs (pipeline.labeler_calls)."""
        labeler = self._usable()
        with self.calls.call(progress, ref_id, distortions.DistortionError), self.counter, \
                labeler.apart_from_measuring():
            return distortions.run_learned(inputs)

    def score_images(self, ref: np.ndarray, versions: np.ndarray,
                     progress: "ray.actor.ActorHandle | None" = None, shard: int = 0,
                     ref_id: str | None = None) -> dict[str, np.ndarray]:
        """Scores of N x H x W x 3 versions against `ref` (raw pixels: no decoding here); the
        progress actor hears of each part of them as it is labelled (for `shard`). A call
        for `ref_id`, recorded with `progress` while it runs (pipeline.labeler_calls)."""
        def labelled(count: int) -> None:
            if progress is not None:
                progress.add.remote(shard, count, 0)

        labeler = self._usable()
        with self.calls.call(progress, ref_id, LabelerError), self.counter:
            scores = labeler.score(ref, versions, labelled)
        return {key: np.asarray(values) for key, values in scores.items()}


QUARANTINE_STRIKES = 2  # worker deaths on one reference before it is left out


def merge_strikes(into: dict[str, int], more: dict[str, int]) -> None:
    """`more` strikes into `into`, each reference keeping its higher count (strikes only grow
    within a run, so the higher one is the later)."""
    for ref_id, count in more.items():
        into[ref_id] = max(count, into.get(ref_id, 0))


class ShardTally:
    """Where a run's planned samples stand: each is done once written or known never to be
    (its source or distortion failed). Shards being made count live, up to their planned
    samples (an attempt that died counted some already); a finished shard is settled at its
    planned samples and its real failures, so a retried shard counts once (a report that
    arrives after its shard was settled, from a labeler actor, is not counted again)."""

    def __init__(self, planned: list[int]):
        self.planned = planned                   # samples planned, by shard index
        self.settled: set[int] = set()
        self.failures = 0                        # of the settled shards
        self.live: dict[int, list[int]] = {}     # shard -> [done, failures] so far

    def add(self, shard: int, done: int, failures: int) -> None:
        if shard in self.settled:
            return
        counts = self.live.setdefault(shard, [0, 0])
        counts[0] += done
        counts[1] += failures

    def settle(self, shard: int, failures: int) -> None:
        """Shard `shard` finished, with `failures` recorded."""
        if shard in self.settled:
            return
        self.settled.add(shard)
        self.live.pop(shard, None)
        self.failures += failures

    def forget(self, shard: int) -> None:
        """Shard `shard`'s attempt died: its live counts are dropped (a retry counts again)."""
        self.live.pop(shard, None)

    def read(self) -> tuple[int, int]:
        """(samples done, failures) of the settled shards and, so far, the live ones."""
        live = [(min(done, self.planned[shard]), failures)
                for shard, (done, failures) in self.live.items()]
        settled = sum(self.planned[shard] for shard in self.settled)
        return (settled + sum(done for done, _ in live),
                self.failures + sum(failures for _, failures in live))


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressActor:
    """Samples and failures reported by shard tasks and labeler actors as they go (a
    ShardTally); and the reference each shard is making now, so that one on which workers die
    is quarantined.

    A reference still marked as being made when its shard begins another one (a retry starts
    the shard again) or when the driver hears the shard's worker died was being made by an
    attempt that died: it gets a strike. So does one whose call a labeler actor died on, alone
    (pipeline.labeler_calls: the calls each labeler runs now are kept here). At
    QUARANTINE_STRIKES it is no longer begun, and its calls are refused."""

    def __init__(self, planned: list[int], strikes: dict[str, int] | None = None):
        self.tally = ShardTally(planned)
        self.strikes = dict(strikes or {})  # ref_id -> attempts that died on it
        self.making: dict[int, str] = {}    # shard index -> ref_id being made
        self.labelling: dict[str, dict[int, tuple[str, bool]]] = {}  # labeler actor ->
        # {call number: (ref_id, run alone)} of the calls it runs now
        self.suspects: set[str] = set()     # refs a labeler died on beside others

    def attempt(self, shard: int) -> None:
        """An attempt at `shard` begins: what an earlier one that died counted is dropped
        (Ray retries a task whose worker died without the driver hearing of it)."""
        self.tally.forget(shard)

    def add(self, shard: int, done: int, failures: int) -> None:
        self.tally.add(shard, done, failures)

    def settle(self, shard: int, failures: int) -> None:
        self.tally.settle(shard, failures)

    def read(self) -> tuple[int, int, int]:
        """(samples done, failures, shards settled): the driver knows by the last that a
        restart (which begins afresh) lost what it had been told, and restores it."""
        return (*self.tally.read(), len(self.tally.settled))

    def restore(self, settled: dict[int, int], strikes: dict[str, int]) -> None:
        """What the driver told an earlier incarnation: the shards settled (with their
        failures) and the strikes."""
        for shard, failures in settled.items():
            self.tally.settle(shard, failures)
        merge_strikes(self.strikes, strikes)

    def begin(self, index: int, ref_id: str) -> bool:
        self.failed(index)
        if self.strikes.get(ref_id, 0) >= QUARANTINE_STRIKES:
            return False
        self.making[index] = ref_id
        return True

    def end(self, index: int) -> None:
        self.making.pop(index, None)

    def strike(self, ref_id: str) -> None:
        """A process died making `ref_id`: its shard's worker (failed), or a labeler actor on
        a call for it (labeler_restarted)."""
        self.strikes[ref_id] = self.strikes.get(ref_id, 0) + 1

    def shard_failed(self, index: int, died: bool = True) -> None:
        """The driver heard shard `index` failed: a strike where a process making it died
        (not where its code raised), and its live counts dropped."""
        if died:
            self.failed(index)
        else:
            self.making.pop(index, None)
        self.tally.forget(index)

    def failed(self, index: int) -> None:
        ref_id = self.making.pop(index, None)
        if ref_id is not None:
            self.strike(ref_id)

    def ledger(self) -> dict:
        return {"strikes": dict(self.strikes), "making": dict(self.making),
                "suspects": sorted(self.suspects)}

    def call_begins(self, actor: str, number: int, ref_id: str, alone: bool) -> str:
        """A labeler actor's call for `ref_id` runs now (`alone`: its other calls wait):
        REFUSED where the reference is struck out, RUN otherwise (recorded as running)."""
        if self.strikes.get(ref_id, 0) >= QUARANTINE_STRIKES:
            return REFUSED
        self.labelling.setdefault(actor, {})[number] = (ref_id, alone)
        return RUN

    def call_ends(self, actor: str, number: int) -> None:
        """The call ran to its end (a suspect's, alone: no longer a suspect)."""
        ref_id, alone = self.labelling.get(actor, {}).pop(number, (None, False))
        if alone:
            self.suspects.discard(ref_id)

    def labeler_restarted(self, actor: str) -> list[str]:
        """`actor`'s process died with the calls recorded as running: a strike where one
        was, suspects where several were (none where it died between calls). Returns the
        suspects, whose calls the restarted process runs alone."""
        running = {ref_id for ref_id, _ in self.labelling.pop(actor, {}).values()}
        if len(running) == 1:
            self.strike(*running)
        else:
            self.suspects |= running
        return sorted(self.suspects)


class ActorGuard(Guard):
    """The worker's Guard on a cluster: the progress actor keeps the count (each call waits
    for it, so the actor knows before work that may kill the process begins). `making` is
    the reference begun last here (whose learned types' network the labeler runs)."""

    def __init__(self, progress: "ray.actor.ActorHandle", index: int, lease_holder: dict):
        super().__init__(lease_holder)
        self.progress, self.index = progress, index
        self.making: str | None = None

    def begin(self, ref_id: str) -> bool:
        self.making = ref_id
        return ray.get(self.progress.begin.remote(self.index, ref_id))

    def end(self) -> None:
        ray.get(self.progress.end.remote(self.index))


def remote_result(ref: ray.ObjectRef, errors: type[Exception], timeout: float | None = None):
    """ray.get(ref); an `errors` the remote call raised (the input's fault, not the actor's)
    comes back as an `errors` in its own words, not Ray's traceback, and so does a call that
    has not answered within `timeout` seconds (cancelled where it still waits at the actor; one
    running there finishes, its answer dropped). It is raised afresh, outside the handler: no
    reference cycle (error, traceback, this frame) keeps the actor handles of this worker
    process, and with them the actors, alive."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref)
        why = f"the labeler actor did not answer within {timeout:g} s (--label-timeout)"
    except ray.exceptions.RayTaskError as error:
        if not isinstance(error.cause, errors):
            raise
        why = str(error.cause)
    raise errors(why)


def nearest_labeler(index: int, labelers: list, nodes: list[str], here: str):
    """A labeler on this task's node when there is one (the pixels then stay on the node),
    spread over them by shard index; any labeler otherwise."""
    local = [actor for actor, node in zip(labelers, nodes, strict=True) if node == here]
    pool = local or labelers
    return pool[index % len(pool)]


@dataclass(frozen=True)
class ShardTaskContext:
    """What every shard task of a run shares: the labeler actors (none in a label-free run)
    and the node each lives on, the progress actor, whether the labelers run the learned
    denoiser, the driver's lease identity (a shard is published only while it holds OUT's
    lease), how long a labeler call is waited for (None: no limit) and whether a shard makes
    its next reference while one's labels are awaited (labels on a GPU)."""
    config: RunConfig
    ensemble: Ensemble
    out: str
    labelers: list
    nodes: list[str]
    progress: "ray.actor.ActorHandle"
    denoise_on_actor: bool
    lease_holder: dict
    label_timeout: float | None = None
    overlap: bool = False


@ray.remote(max_retries=3)
def shard_task(index: int, plan: dict, run: ShardTaskContext) -> dict:
    """Produce one shard (`plan`: its part of the plan, ShardPlan.to_json); the labels (and, with
    run.denoise_on_actor, the learned-denoiser network) come from a labeler actor, on this node
    where one lives, each call waited for run.label_timeout seconds at most (then that work is
    recorded as failed); with run.overlap it makes its next reference meanwhile
    (pipeline.scheduling). Returns its summary."""
    use_one_thread()  # one CPU per shard task
    progress, label_timeout = run.progress, run.label_timeout
    ray.get(progress.attempt.remote(index))
    labeler = (nearest_labeler(index, run.labelers, run.nodes,
                               ray.get_runtime_context().get_node_id())
               if run.labelers else None)

    guard = ActorGuard(progress, index, run.lease_holder)

    def score_images(ref: np.ndarray, versions: np.ndarray, on_labelled, ref_id: str) -> dict:
        # the actor tells the progress actor itself as parts are labelled
        return remote_result(labeler.score_images.remote(ref, versions, progress, index,
                                                         ref_id), LabelerError, label_timeout)

    def on_progress(samples: int, failures: int, left_out: int) -> None:
        progress.add.remote(index, samples + left_out, failures)

    def on_actor(inputs: list[distortions.LearnedInput]) -> list:  # (for the ref made here)
        return remote_result(labeler.denoise.remote(inputs, progress, guard.making),
                             distortions.DistortionError, label_timeout)

    outcome = produce_shard(index, ShardPlan.from_json(plan), run.config, score_images,
                            run.ensemble, Location.parse(run.out), on_progress,
                            on_actor if run.denoise_on_actor else distortions.run_learned,
                            guard, None if run.overlap else 0)
    record_shard(outcome)
    return {"index": index, "samples": outcome.samples, "failures": len(outcome.failures),
            "seconds": outcome.seconds}
