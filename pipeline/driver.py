"""The Ray driver: shard tasks on CPUs, a fixed pool of labeler actors, bounded in-flight
shards, retries, resume, a final sweep, progress and the report."""

import contextlib
import errno
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from labelers import weights
from labelers.ensemble import Ensemble
from labelers.ensemble import load as load_ensemble
from labelers.errors import LabelerError
from pipeline.actors import (
    LabelerActor,
    ProgressActor,
    ShardTaskContext,
    merge_strikes,
    shard_task,
)
from pipeline.config import RunConfig
from pipeline.duplicates import find_duplicates
from pipeline.errors import (
    ClusterAuthError,
    ClusterUnreachableError,
    LabelersUnavailableError,
    OutputFullError,
    ShardsFailedError,
)
from pipeline.output_folder import (
    STRIKES_FILE,
    clear_previous_run,
    refuse_foreign,
    refuse_inside_sources,
    refuse_unusable,
    remove_staged,
)
from pipeline.plan import Plan, chosen, label_identity, persist_or_check
from pipeline.reachability import check_reachable
from pipeline.remakes import failures_of, pardoned_shards, retried_shards, strikes
from pipeline.report import build_report, merge, summary_lines, write_run_files
from pipeline.scheduling import Layout, layout, layout_line
from pipeline.source_changes import check_modified_sources
from pipeline.sources import Listing, byte_limit, listing, skipped_note, unlisted_note
from pipeline.spill import SpillError
from pipeline.submit import AUTHENTICATION_ERRORS
from shards.layout import (
    FAILURES_FILE,
    REPORT_FILE,
    SOURCES_FILE,
    labels_files,
    shard_name,
)
from shards.lease import Lease
from shards.reader import NEVER_WRITTEN, shard_problems, shard_stats
from shards.reads import read_ahead
from shards.stopping import answer_sigterm, stop_point, stops_as_interrupts
from shards.storage import Location, redact

DASHBOARD_PORT = 8265
DASHBOARD_ATTEMPTS = 3  # starts of a local Ray whose dashboard port was taken meanwhile
# what Ray says where the dashboard port was taken after dashboard_port probed it: at its own
# check (ValueError), or as its dashboard process binds it (an Exception quoting its log)
DASHBOARD_PORT_TAKEN = ("already occupied", "Failed to find a valid port for dashboard")
PROGRESS_SECONDS = 2.0
STOP_SECONDS = 30.0  # for the shard tasks of a run that ends early to stop
ACTOR_START_SECONDS = 600  # loading ten metrics (VGG16 included) takes seconds, not minutes
ACTOR_STATS_SECONDS = 10.0  # for the labeler actors to report their calls at the end
# "1": labelers given a GPU that torch cannot use label on the CPU (GPUs declared to Ray on a
# machine without one, as the tests do); otherwise such a run stops (_check_devices)
FAKE_GPUS = "IQA_FACTORY_FAKE_GPUS"


@dataclass(frozen=True)
class ClusterOptions:
    """How the run uses Ray: actor count, in-flight shards (None: derived from resources)."""

    actors: int | None = None
    max_in_flight: int | None = None
    restart: bool = False
    verify: bool = False                   # a resume also checks every finished tar's SHA-256
    take_over: bool = False                # take a stale lease over
    retry_unreadable: bool = False         # on resume, remake shards that left out unread sources
    denoise_on_actors: bool | None = None  # None: when the cluster has GPUs
    # seconds a shard task waits for a labeler actor's answer (labels, the learned denoiser's
    # network) before it records that work as failed and goes on; None: as long as it takes
    label_timeout: float | None = None

    def __post_init__(self):
        for name in ("actors", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value} "
                                 "(leave it out for the default)")
        if self.label_timeout is not None and not 0 < self.label_timeout < math.inf:
            raise ValueError(f"--label-timeout must be a number of seconds above 0, got "
                             f"{self.label_timeout} (leave it out to wait as long as it takes)")


def _drop_stale_results(location: Location) -> None:
    """Shards about to be made: what the run's end made of the shards before them goes, and
    the run says so: the report (so the dataset reads as unfinished until the merge, should
    this run be stopped), sources.parquet and failures.jsonl (which the merge writes again
    from every shard's lists), and the relabel sidecars (they would miss or mislabel the new
    shards' samples)."""
    merged = [name for name in (REPORT_FILE, SOURCES_FILE, FAILURES_FILE)
              if location.exists(location.path(name))]
    for name in merged:
        location.delete(location.path(name))
    if merged:
        print(f"note: removed {', '.join(merged)} of the earlier run's end; this run's end "
              "writes them again")
    for name in labels_files(location):
        location.delete(location.path(name))
        print(f"note: removed {name}, made before these shards; relabel again when done")


def _start_ray() -> None:
    """A local Ray instance (dashboard on 127.0.0.1), or the cluster RAY_ADDRESS names (as
    inside a Ray job); nothing when the caller already started Ray."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        _check_cluster_answers(os.environ["RAY_ADDRESS"])
        context = ray.init()
    else:
        context = _start_local_ray()
    answer_sigterm()  # Ray's core worker put its own handler in place, which aborts
    if context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}" + _token_hint(), flush=True)


def _start_local_ray(ports: Callable[[], int] | None = None):
    """ray.init of a local instance with its dashboard on `ports()` (dashboard_port): where
    something binds that port between the probe and Ray's own check (Ray then refuses with
    ValueError 'already occupied'), or between that check and its dashboard process's bind
    (an Exception quoting the dashboard's log: 'Failed to find a valid port for dashboard'),
    Ray stops and starts again on another, a few times."""
    ports = ports or dashboard_port

    def start(port: int):  # "local": never a cluster another program started here
        return ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
                        dashboard_port=port, log_to_driver=False)
    for _ in range(DASHBOARD_ATTEMPTS - 1):
        port = ports()
        try:
            return start(port)
        except Exception as error:  # Ray raises a bare Exception for the later race
            if not any(said in str(error) for said in DASHBOARD_PORT_TAKEN):
                raise
            ray.shutdown()
            print(f"note: dashboard port {port} was taken as Ray started; trying another",
                  flush=True)
    return start(ports())


def dashboard_port(preferred: int = DASHBOARD_PORT) -> int:
    """`preferred` where nothing listens on it on 127.0.0.1, else a free port the system
    picks (another local Ray, or anything, holds it: Ray would stop with 'Failed to find a
    valid port for dashboard')."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free local port for the Ray dashboard")


def _check_cluster_answers(address: str) -> None:
    """Fail at once with a hint when the GCS at `address` (host:port) wants Ray's token and this
    client sends none; ray.init would retry for 20 s, print a GCS warning each second, and say
    only 'Failed to connect'. The probe is Ray's own GCS client (private API): anything it
    raises but these two errors is left for ray.init to report."""
    if "://" in address or address in ("auto", "local"):
        return
    try:
        from ray._raylet import GcsClient
        GcsClient(address=address)
    except AUTHENTICATION_ERRORS:
        raise ClusterAuthError.for_address(f"RAY_ADDRESS={address}") from None
    except ray.exceptions.RpcError as error:
        raise ClusterUnreachableError(f"no Ray cluster answers at RAY_ADDRESS={address} "
                                      f"({error}): is it running, and is the port open?") from None
    except Exception:  # a changed private API: ray.init speaks instead
        return


def _token_hint() -> str:
    """Ray 2.59+ guards a local dashboard with the token it saves in ~/.ray/auth_token."""
    if os.environ.get("RAY_AUTH_TOKEN") or (Path.home() / ".ray" / "auth_token").is_file():
        return " (it asks for Ray's token: `ray get-auth-token` prints it)"
    return ""


@contextlib.contextmanager
def _labeler_pool(config: RunConfig, plan: Layout, run_id: str) -> Iterator[tuple[list, list]]:
    """The labeler actors and the node each lives on (waits until they have loaded their
    metrics; none in a label-free run), killed when the run ends however it ends: a handle
    that a worker process still holds would otherwise keep them, and their GPUs, after it.
    Names carry the run's plan digest, so two runs on one cluster do not collide."""
    actors = [LabelerActor.options(name=f"labeler-{run_id}-{k}", max_concurrency=plan.concurrency,
                                   **plan.actor_resources)
              .remote(config.metrics, config.allow_missing_metrics, plan.threads,
                      plan.concurrency)
              for k in range(plan.actors)]
    try:
        described = _described(actors, plan)
        _check_devices(described)
        yield actors, [info["node_id"] for info in described]
    finally:
        for actor in actors:
            ray.kill(actor)


def _described(actors: list, plan: Layout) -> list[dict]:
    try:
        return ray.get([a.describe.remote() for a in actors], timeout=ACTOR_START_SECONDS)
    except ray.exceptions.GetTimeoutError:
        raise LabelersUnavailableError(
            f"{plan.actors} labeler actor(s) of {plan.actor_resources} each did not start within "
            f"{ACTOR_START_SECONDS} s on a cluster of {ray.cluster_resources()}: ask for fewer "
            "(--actors) or add nodes") from None
    except ray.exceptions.RayActorError as error:
        raise LabelersUnavailableError(f"a labeler actor failed to start: {error}") from error
    except ray.exceptions.RayTaskError as error:
        if not isinstance(error.cause, LabelerError):
            raise
        raise LabelersUnavailableError(f"a labeler actor could not load its metrics: "
                                       f"{error.cause}") from None


def _check_devices(described: list[dict]) -> None:
    """A LabelersUnavailableError where a labeler holds a GPU that torch cannot use on its
    node (a driver older than torch's CUDA needs): it would label on the CPU, many times
    slower, and nothing else would say so. FAKE_GPUS=1 lets it (GPUs declared to Ray on a
    machine without one, as the tests do)."""
    if os.environ.get(FAKE_GPUS) == "1":
        return
    for number, info in enumerate(described):
        if info["gpus"] and not info["device"].startswith("cuda"):
            built = (f"built for CUDA {info['torch_cuda']}" if info["torch_cuda"]
                     else "a build without CUDA")
            raise LabelersUnavailableError(
                f"labeler actor {number} holds GPU {info['gpus']} on node "
                f"{info['node_id'][:12]}, but torch {info['torch']} ({built}) cannot use it "
                "there: it would label on the CPU. Is the node's NVIDIA driver recent enough "
                "for that CUDA? (`nvidia-smi` on the node shows its driver and the CUDA it "
                "supports)")


def _check_weighed(config: RunConfig, ensemble, absent: tuple[str, ...]) -> None:
    """Stop before any work where the ensemble weighs none of the metrics computed: every
    version would be scored and then left without a Q."""
    computed = set(config.metrics) - set(absent)
    if config.labelled and not any(ensemble.weights.get(key, 0) > 0 for key in computed):
        weighed = sorted(key for key, weight in ensemble.weights.items() if weight > 0)
        unweighed = sorted(key for key in weighed if key in absent)
        remedy = (f"fetch the weights of {', '.join(unweighed)} (iqa-factory weights fetch)"
                  if unweighed else f"add one of {', '.join(weighed)} to --metrics")
        raise ValueError(f"the ensemble {ensemble.name} weighs none of the metrics computed "
                         f"({', '.join(sorted(computed))}), so no version would get a Q: "
                         f"{remedy}, name an ensemble that weighs them (--ensemble), or "
                         "--metrics none for a label-free run")


class _Progress:
    """The terminal bar, fed by the ProgressActor: the plan's samples done (written, or known
    never to be: it reaches the total when the run ends), with ETA, shards done and failures
    (those of shards an earlier run finished and the duplicates left out included, as in the
    summary); and the strikes it counts against references, kept in OUT/strikes.json."""

    def __init__(self, location: Location, plan: Plan, per_reference: int, done: list[int],
                 lease: Lease):
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.location, self.strikes_path = location, location.path(STRIKES_FILE)
        self.lease = lease  # strikes.json is written only while the output is this run's
        self.strikes = strikes(location)
        self.settled: dict[int, int] = {}  # shard -> failures, as told to the actor
        planned = [len(plan.shard(i)) * per_reference for i in range(plan.shard_count)]
        self.actor = ProgressActor.options(name=f"progress-{plan.digest[:8]}",
                                           scheduling_strategy=here).remote(planned, self.strikes)
        self.shards, self.done_shards = plan.shard_count, len(done)
        self.peak_in_flight = 0
        earlier = list(read_ahead(partial(shard_stats, location), done))  # an earlier run's
        self.written = sum(stats["samples"] for stats in earlier)
        self.offset = sum(planned[i] for i in done)
        self.earlier_failures = len(plan.duplicates) + sum(stats["failures"] for stats in earlier)
        self.bar = tqdm(total=sum(planned), initial=self.offset, unit="sample",
                        desc="generate", smoothing=0.1)
        self.bar.set_postfix(shards=f"{self.done_shards}/{self.shards}",
                             failures=self.earlier_failures)

    def refresh(self) -> None:
        """Update the bar; progress is cosmetic, so a lost progress actor only skips a beat.
        One that restarted (knowing fewer settled shards than the driver told it) is told
        again what it lost: the settled shards and the strikes."""
        try:
            samples, failures, settled = ray.get(self.actor.read.remote(),
                                                 timeout=PROGRESS_SECONDS)
        except (ray.exceptions.RayError, TimeoutError):
            return
        if settled < len(self.settled):
            self.actor.restore.remote(self.settled, self.strikes)
            return
        self.bar.n = self.offset + samples
        self.bar.set_postfix(shards=f"{self.done_shards}/{self.shards}",
                             failures=self.earlier_failures + failures)

    def shard_done(self, index: int, summary: dict) -> None:
        self.done_shards += 1
        self.settled[index] = summary["failures"]
        self.actor.settle.remote(index, summary["failures"])

    def shard_failed(self, index: int, died: bool = True) -> None:
        """Where a process making it `died` (_died), a strike for the reference the shard was
        making, if any (the strikes saved); its counts so far dropped. A progress actor that
        died meanwhile knew nothing to strike."""
        with contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(self.actor.shard_failed.remote(index, died))
        self.save_strikes()

    def save_strikes(self) -> None:
        """The actor's strikes, with those it may have lost in a restart, to strikes.json."""
        try:
            ledger = ray.get(self.actor.ledger.remote())
        except ray.exceptions.RayActorError:
            ledger = {"strikes": {}}
        merge_strikes(self.strikes, ledger["strikes"])
        if self.strikes and self.lease.held():
            try:
                self.location.write_bytes(self.strikes_path,
                                          json.dumps(self.strikes, sort_keys=True).encode())
            except OSError as error:  # (a full output: the run's own error says so)
                tqdm.write(f"warning: could not write {redact(self.strikes_path)} ({error}): "
                           "the strikes of this run are not kept")

    def close(self) -> None:
        self.refresh()
        self.save_strikes()
        self.bar.close()
        ray.kill(self.actor)  # its name is free at once for a rerun in this session


def _made_again(location: Location, plan: Plan, config: RunConfig, done: list[int],
                failures: list[dict], retry_unreadable: bool) -> list[int]:
    """The finished shards a resume makes again (pipeline.remakes), each named in a note: those
    that left out a quarantined reference no longer struck out, and with `retry_unreadable`
    those that left out a source whose read failed, or one that did not decode then and
    decodes now (`failures`: theirs)."""
    pardoned = pardoned_shards(location, plan, done, failures)
    if pardoned:
        print(f"note: making shard(s) {', '.join(map(shard_name, pardoned))} again: "
              f"references they left out as quarantined are no longer struck out in "
              f"{STRIKES_FILE}")
    retried = retried_shards(plan, config, done, failures) if retry_unreadable else []
    if retried:
        print(f"note: making shard(s) {', '.join(map(shard_name, retried))} again "
              "(--retry-unreadable): they left out sources that could not be read or decoded "
              "when they were made")
    return sorted(set(pardoned) | set(retried))


def _run_shards(todo, submit, max_in_flight, progress: _Progress, out: str
                ) -> dict[int, str]:
    """Run shards with at most max_in_flight at once; return those that failed, each with
    its error in a line. The most held in flight goes to progress.peak_in_flight. A shard
    that failed as the output `out` takes no more writes stops the run (OutputFullError):
    every other would fail as it."""
    pending, failed = {}, {}
    queue = list(todo)
    try:
        while queue or pending:
            while queue and len(pending) < max_in_flight:
                index = queue.pop(0)
                pending[submit(index)] = index
            progress.peak_in_flight = max(progress.peak_in_flight, len(pending))
            done, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_SECONDS)
            stop_point()
            progress.refresh()
            if not done:
                continue
            index = pending.pop(done[0])
            try:
                summary = ray.get(done[0])
            except (ray.exceptions.RayError, OSError) as error:
                if full := _output_full(error, out):
                    denied = full.errno in OUTPUT_DENIED_ERRNOS
                    raise OutputFullError(
                        f"{redact(out)} takes no more writes (shard {shard_name(index)}: "
                        f"{full}): the run stops here; "
                        + ("let this user write there" if denied else "make room there")
                        + " (or --out elsewhere) and run again to resume") from error
                failed[index] = _in_a_line(error)
                tqdm.write(f"shard {shard_name(index)} failed: {type(error).__name__}: {error}")
                progress.shard_failed(index, died=_died(error))
                continue
            progress.shard_done(index, summary)
    except BaseException:  # an interrupt, or the driver's own error
        _stop(list(pending))
        raise
    return failed


OUTPUT_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)  # no read gives
OUTPUT_DENIED_ERRNOS = (errno.EACCES, errno.EPERM)  # a read may give them: the output's only


def _output_full(error: Exception, out: str | None = None) -> OSError | None:
    """The OSError under a shard's failure where it says the output takes no more writes:
    full, out of quota, read-only, past its size limit, or (a file under `out` named in it)
    refusing this user (a worker node's own temporary folder filling up is that node's
    failure: SpillError)."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
    if isinstance(cause, SpillError) or not isinstance(cause, OSError):
        return None
    if cause.errno in OUTPUT_FULL_ERRNOS:
        return cause
    denied = cause.errno in OUTPUT_DENIED_ERRNOS and out is not None and any(
        f"{root}/" in f"{cause.filename or ''} {cause}"
        for root in {out.rstrip("/"), os.path.abspath(out), Location.parse(out).root})
    return cause if denied else None


def _in_a_line(error: Exception, most: int = 300) -> str:
    """A shard's error as its summary names it: the error a task raised (not Ray's wrapping
    traceback), its first line, at most `most` characters."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) else error
    lines = str(cause).strip().splitlines() or [""]
    text = f"{type(cause).__name__}: {lines[0]}".rstrip(": ")
    return text if len(text) <= most else text[:most - 3] + "..."


def failed_twice(failed: dict[int, str]) -> str:
    """What a run says of the shards that failed in their attempt and in the final sweep:
    each named with its last error (the scrolled-off lines above said them once)."""
    names = ", ".join(shard_name(index) for index in failed)
    causes = "; ".join(f"{shard_name(index)}: {why}" for index, why in failed.items())
    return f"shards {names} failed twice ({causes}); rerun to resume them"


def _died(error: Exception) -> bool:
    """Whether a shard failed as its own worker died making its reference, not as its code
    raised: an error such as a full disk says nothing of the reference, and a labeler actor
    that died on a call (a reference that crashes a metric) was a strike already, told by the
    actor's restart (pipeline.labeler_calls)."""
    return not isinstance(error, ray.exceptions.RayTaskError | OSError)


def _actor_calls(actors: list, timeout: float = ACTOR_STATS_SECONDS) -> list[dict]:
    """Each labeler actor's calls for the report. Every shard is settled by now: an actor that
    does not answer within `timeout` (its node lost for good, so it restarts for ever) is
    recorded as unavailable, never waited on."""
    asked = [actor.stats.remote() for actor in actors]
    answered, _ = ray.wait(asked, num_returns=len(asked), timeout=timeout)
    calls = []
    for reply in asked:
        if reply not in answered:
            calls.append({"unavailable": f"no answer within {timeout:g} s"})
            continue
        try:
            calls.append(ray.get(reply))
        except ray.exceptions.RayError as error:  # it died for good
            calls.append({"unavailable": f"{type(error).__name__}: {error}"})
    return calls


def _stop(tasks: list) -> None:
    """Stop shard tasks in flight when a run ends early, before the labeler actors and the
    lease go: no shard is written after the driver let go of the output, and none fails later
    against a killed actor (their errors are fetched here, so Ray reports none)."""
    if not tasks:
        return
    for task in tasks:
        ray.cancel(task, force=True)
    ray.wait(tasks, num_returns=len(tasks), timeout=STOP_SECONDS)
    for task in tasks:
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get(task, timeout=0)


def generate(config: RunConfig, options: ClusterOptions = ClusterOptions()) -> dict:
    """Run the plan of `config` into config.out, holding its lease (one writer per output)."""
    started = time.perf_counter()
    # stop before any work where deep weights are missing, unless allowed
    absent = weights.check_present(config.metrics, config.allow_missing_metrics)
    _check_weighed(config, load_ensemble(config.ensemble_file), absent)
    location = Location.parse(config.out)
    refuse_unusable(location)
    refuse_inside_sources(location, config.sources)
    with stops_as_interrupts():  # a SIGTERM, as a Ctrl-C, lets the lease go
        lease = Lease(location)
        ours = not ray.is_initialized()  # a caller's Ray (a test's, a notebook's) stays up
        try:
            with lease.taken(options.take_over) as notices:
                for notice in notices:
                    print(f"note: {notice}")
                stop_point()  # one that came as the lease was taken (held back: Lease.acquire)
                return _generate(config, options, location, absent, started, lease)
        finally:
            if ours and ray.is_initialized():  # here, where a Ctrl-C is the command's to
                ray.shutdown()                 # answer, not in an exit handler after it


def _checked(done: int, verify: bool) -> str:
    """What a resume checked of the finished shards it keeps."""
    if verify:
        return f" (their {done} tar(s), indexes and lists kept by their SHA-256)"
    return (f" (their {done} tar(s) kept by their sizes, their indexes and lists by their "
            "SHA-256; --verify hashes the tars too, reading them all)")


def _generate(config: RunConfig, options: ClusterOptions, location: Location,
              absent: tuple[str, ...], started: float, lease: Lease) -> dict:
    ensemble = load_ensemble(config.ensemble_file)
    listed = listing(config.sources)
    plan = _listed_plan(listed, config, ensemble, absent)
    todo, done, resumed = _shards_to_make(plan, config, options, location)
    write_run_files(location, config, plan, ensemble, absent)
    if resumed:
        print(f"resuming: {len(done)} of {plan.shard_count} shards done"
              + (_checked(len(done), options.verify) if done else ""))
    _say_what_labels_lack(config, ensemble, absent)
    if todo:
        written, scheduling = _make_shards(todo, done, plan, config, ensemble, options,
                                           location, lease)
    else:  # a rerun of a finished dataset: its lists merged again, no cluster needed
        print(f"note: all {plan.shard_count} shards are finished: nothing to make "
              "(Ray not started)")
        written, scheduling = None, None
    lease.check()
    tally = merge(location, plan)
    report = build_report(tally, time.perf_counter() - started, absent, config.modes(),
                          tally.samples if written is None else written)
    report["names_skipped"] = dict(listed.skipped)
    report["folders_unlisted"] = listed.unlisted
    if scheduling is not None:
        report["scheduling"] = scheduling
    location.write_json(location.path(REPORT_FILE), report)
    print("\n".join(summary_lines(report, config.out)))
    return report


def _largest_node_cpus() -> float | None:
    """The CPUs of the cluster's largest live node (None where Ray lists none)."""
    return max((node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]),
               default=None)


def _make_shards(todo: list[int], done: list[int], plan: Plan, config: RunConfig,
                 ensemble: Ensemble, options: ClusterOptions, location: Location,
                 lease: Lease) -> tuple[int, dict]:
    """Make the shards `todo` on Ray (started here unless the caller's is up), the cluster's
    reach of SOURCES and OUT checked first; returns (the samples of the shards `done` an
    earlier run finished, the scheduling for report.json: the layout, the most shards held in
    flight and each actor's calls). Raises ShardsFailedError if a shard failed twice."""
    _start_ray()
    check_reachable(plan, config.sources, config.out, lease.identity())
    _drop_stale_results(location)
    resources = ray.cluster_resources()
    scheduling = layout(resources.get("CPU", 1.0), int(resources.get("GPU", 0)),
                        options.actors, options.max_in_flight, config.labelled,
                        _largest_node_cpus())
    print(f"note: {layout_line(resources, scheduling)}")
    on_actors = options.denoise_on_actors
    if on_actors is None:
        on_actors = resources.get("GPU", 0) > 0
    with _labeler_pool(config, scheduling, plan.digest[:8]) as (actors, nodes):
        progress = _Progress(location, plan, 1 + config.versions_count, done, lease)
        run = ShardTaskContext(config, ensemble, config.out, actors, nodes, progress.actor,
                               on_actors and bool(actors), lease.identity(),
                               options.label_timeout, scheduling.overlap)

        def submit(index: int):
            lease.check()  # a driver whose output another took over sends nothing more out
            return shard_task.options(name=f"shard-{shard_name(index)}").remote(
                index, plan.part(index).to_json(), run)

        try:
            failed = _run_shards(todo, submit, scheduling.in_flight, progress, config.out)
            if failed:  # the final sweep: once more for every shard that did not complete
                failed = _run_shards(list(failed), submit, scheduling.in_flight, progress,
                                     config.out)
        finally:
            progress.close()
        actor_calls = _actor_calls(actors)
    if failed:
        raise ShardsFailedError(failed_twice(failed))
    return progress.written, {**scheduling.to_json(), "peak_in_flight": progress.peak_in_flight,
                              "actor_calls": actor_calls}


def _listed_plan(listed: Listing, config: RunConfig, ensemble: Ensemble,
                 absent: tuple[str, ...]) -> Plan:
    """The run's plan of the listed sources (what the listing skipped said first)."""
    if listed.skipped:
        print(f"note: {skipped_note(listed.skipped)}")
    if listed.unlisted:
        print(f"warning: folders of SOURCES that cannot be read, their images left out: "
              f"{unlisted_note(listed.unlisted)}")
    sources = chosen(listed.sources, config)
    identity = label_identity(ensemble.hash if config.labelled else None, absent)
    return Plan.make(sources, config, identity,
                     find_duplicates(sources, config.sources, byte_limit(config.max_pixels)))


def _shards_to_make(plan: Plan, config: RunConfig, options: ClusterOptions,
                    location: Location) -> tuple[list[int], list[int], bool]:
    """(the shards to make, those finished, whether an earlier run of the plan is resumed),
    with OUT readied: an earlier run's files cleared (--restart), staged leftovers removed,
    the plan written or checked, a resume's sources checked against its finished shards."""
    refuse_foreign(location)
    if options.restart:
        clear_previous_run(location)
    resumed = persist_or_check(plan, location, restart=options.restart)  # (another plan is
    remove_staged(location)                                 # refused, its staged files kept)
    shards = range(plan.shard_count)
    examined = read_ahead(lambda index: shard_problems(
        location, index, plan.digest, config.store, verify_hash=options.verify), shards)
    checked = list(zip(shards, tqdm(examined, total=len(shards), desc="finished shards checked",
                                    unit="shard", leave=False, disable=len(shards) < 100),
                       strict=True))
    todo = [index for index, problems in checked if problems]
    done = [index for index, problems in checked if not problems]
    if resumed:  # every finished shard checked, those to make again too: a remake that
        # stops leaves its shard as it was, finished
        for index, problems in checked:
            if problems and problems != [NEVER_WRITTEN]:
                print(f"note: shard {index:05d} is made again: {'; '.join(problems)}")
        check_modified_sources(location, plan, config, done)
        again = _made_again(location, plan, config, done, failures_of(location, done),
                            options.retry_unreadable)
        todo, done = sorted(todo + again), [i for i in done if i not in again]
    elif options.retry_unreadable:
        print("note: --retry-unreadable has nothing to read again: no earlier run of this "
              "plan in OUT")
    return todo, done, resumed


def _say_what_labels_lack(config: RunConfig, ensemble: Ensemble, absent: tuple[str, ...]) -> None:
    """Notes on the metrics the ensemble weighs that this run does not compute."""
    if absent:
        print(f"note: labels without {', '.join(absent)} (weights missing; Q renormalised)")
    unscored = sorted(set(ensemble.weights) - set(config.metrics)) if config.labelled else []
    if unscored:
        print(f"note: the ensemble {ensemble.name} also weighs {', '.join(unscored)}, which "
              "--metrics does not compute: Q is renormalised over the rest")
