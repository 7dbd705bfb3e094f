"""A worker node dies while it runs shard work; the job still completes with every sample
exactly once (task retries, actor restarts, the final sweep). A reference on which the worker
process dies twice is quarantined, and the run completes without it. A progress actor that
restarts is told again what it lost."""

import errno
import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors, list_tasks

from labelers.errors import LabelerError
from pipeline.actors import (
    QUARANTINE_STRIKES,
    ActorGuard,
    LabelerActor,
    ProgressActor,
    remote_result,
)
from pipeline.commands.inspect_dataset import inspect
from pipeline.driver import (
    ClusterOptions,
    _output_full,
    _Progress,
    _run_shards,
    failed_twice,
    generate,
)
from pipeline.errors import OutputFullError
from pipeline.labeler_calls import REFUSED_CALL, CallLedger
from pipeline.plan import Plan
from pipeline.sources import list_sources
from pipeline.spill import SpillError
from pipeline.worker import produce_shard
from shards.layout import shard_paths
from shards.lease import Lease
from shards.reader import read_index
from shards.stopping import stops_as_interrupts
from shards.storage import Location
from tests.conftest import lose_a_signal

pytestmark = [pytest.mark.ray, pytest.mark.slow]
WAIT_SECONDS = 180
# enough one-reference shards that the state API (which hears of tasks about a second late)
# sees one running before the run ends
NODE_LOSS_REFERENCES = 8


def _running_shard_tasks_on(node_id: str) -> list:
    return [task for task in list_tasks(filters=[("state", "=", "RUNNING")])
            if task.name.startswith("shard-") and task.node_id == node_id]


def test_losing_a_worker_node_loses_and_duplicates_nothing(shifted_sources, fast_config):
    folder, ensemble = shifted_sources(NODE_LOSS_REFERENCES)
    config = fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble),
                         distortion_ids=(1, 8, 13), levels=(1, 3, 5))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=3)
    ray.init(address=cluster.address)
    try:
        cluster.wait_for_nodes()
        outcome = {}
        run = threading.Thread(target=lambda: outcome.update(
            report=generate(config, ClusterOptions(actors=1, max_in_flight=2))))
        run.start()
        deadline = time.monotonic() + WAIT_SECONDS
        while not _running_shard_tasks_on(doomed.node_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        victims = _running_shard_tasks_on(doomed.node_id)
        assert victims, "no shard task was running on the node before it was removed"
        cluster.remove_node(doomed)
        cluster.add_node(num_cpus=3)
        run.join(WAIT_SECONDS)
        assert not run.is_alive(), "the run did not finish after the node was lost"
    finally:
        ray.shutdown()
        cluster.shutdown()

    per_reference = 1 + len(config.scenarios)
    assert outcome["report"]["samples"] == NODE_LOSS_REFERENCES * per_reference
    keys = read_index(Location.parse(config.out)).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == NODE_LOSS_REFERENCES * per_reference
    assert inspect(config.out)[1] == []


def _kill_while_making(ref_id: str, done: threading.Event, kills: list[int]) -> None:
    """Kill (SIGKILL) the worker process of shard 0 each time it begins `ref_id`, as the
    kernel's OOM killer or a crashing decoder would. After a kill the ledger still says
    `ref_id` until the retry begins its first reference: no second kill before that."""
    armed = True
    while not done.is_set():
        time.sleep(0.1)
        actors = list_actors(filters=[("class_name", "=", "ProgressActor"),
                                      ("state", "=", "ALIVE")])
        if not actors:
            continue
        making = ray.get(ray.get_actor(actors[0].name).ledger.remote())["making"].get(0)
        running = [task for task in list_tasks(filters=[("state", "=", "RUNNING")])
                   if task.name == "shard-00000" and task.worker_pid]
        if making == ref_id and armed and running:
            os.kill(running[0].worker_pid, signal.SIGKILL)
            kills.append(running[0].worker_pid)
            armed = False
        elif making != ref_id:
            armed = True


def _kill_the_labeler_twice(stats: Path, done: threading.Event, killed: list) -> None:
    """Kill the run's labeler actor once `stats` (a first shard's) exists, and again 1.5 s
    later (Ray restarts it each time)."""
    while not done.is_set() and not stats.exists():
        time.sleep(0.05)
    for _ in range(2):
        names = [name for name in ray.util.list_named_actors() if name.startswith("labeler-")]
        if done.is_set() or not names:
            return
        ray.kill(ray.get_actor(names[0]), no_restart=False)
        killed.append(names[0])
        time.sleep(1.5)


@pytest.mark.slow
def test_a_labeler_killed_on_two_cpus_restarts_and_the_run_completes(shifted_sources,
                                                                      fast_config):
    """On 2 CPUs the labeler holds one and a shard task the other. With a second shard task
    queued for a CPU, that task took the dead labeler's, its restart waited for one for ever,
    and every shard task waited on it: the run hung (here, its label calls time out). A
    reference whose calls the labeler died in twice is left out, as ever."""
    folder, ensemble = shifted_sources(6)
    config = fast_config(str(folder), shard_refs=1, ensemble_file=str(ensemble),
                         distortion_ids=(1, 13), levels=(1, 5), metrics=("mae", "gmsd"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_the_labeler_twice, args=(
        Path(shard_paths(Location.parse(config.out), 0)["stats"]), done, killed))
    killer.start()
    try:
        report = generate(config, ClusterOptions(label_timeout=60))
    finally:
        done.set()
        killer.join()
        ray.shutdown()
    assert len(killed) == 2
    failures = [json.loads(line) for line in
                (Path(config.out) / "failures.jsonl").read_text().splitlines()]
    assert not [failure for failure in failures if "--label-timeout" in failure["detail"]]
    assert report["failures"] == len(failures) <= 1
    assert report["samples"] == (6 - len(failures)) * (1 + len(config.scenarios))
    assert inspect(config.out)[1] == []


def test_a_reference_that_kills_its_worker_twice_is_quarantined(shifted_sources, fast_config,
                                                                capsys):
    folder, ensemble = shifted_sources(3)  # p0 p1 p2 in one shard; p1 kills its worker
    config = fast_config(str(folder), shard_refs=3, ensemble_file=str(ensemble),
                         distortion_ids=(1, 8, 13), levels=(1, 3, 5))
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)  # the state API needs it
    done, kills, outcome = threading.Event(), [], {}
    watcher = threading.Thread(target=_kill_while_making, args=("p1", done, kills))
    watcher.start()
    try:
        outcome["report"] = generate(config, ClusterOptions(actors=1))
    finally:
        done.set()
        watcher.join()
        ray.shutdown()
    assert len(kills) == 2  # the third attempt never began p1
    report = outcome["report"]
    assert report["failures_by_reason"] == {"quarantined": 1}
    per_reference = 1 + len(config.scenarios)
    keys = read_index(Location.parse(config.out)).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 2 * per_reference
    assert {key.split("_")[0] for key in keys} == {"p0", "p2"}
    strikes = json.loads((Path(config.out) / "strikes.json").read_text())
    assert strikes == {"p1": 2}
    assert inspect(config.out)[1] == []

    # the strikes outlive the run: the shard made again (its stats gone) leaves p1 out again,
    # with no kill this time; a plain rerun keeps the finished shard as it is
    assert _rerun(config, remake=True)["failures_by_reason"] == {"quarantined": 1}
    assert _rerun(config)["samples_this_run"] == 0
    # once strikes.json is deleted (as the README says), a plain rerun makes p1: the shard
    # that left it out is made again
    (Path(config.out) / "strikes.json").unlink()
    capsys.readouterr()
    assert _rerun(config)["failures_by_reason"] == {}
    assert "note: making shard(s) 00000 again: references they left out as quarantined" \
        in capsys.readouterr().out
    keys = read_index(Location.parse(config.out)).column("key").to_pylist()
    assert {key.split("_")[0] for key in keys} == {"p0", "p1", "p2"}
    assert inspect(config.out)[1] == []


def _rerun(config, remake: bool = False) -> dict:
    if remake:
        Path(shard_paths(Location.parse(config.out), 0)["stats"]).unlink()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        return generate(config, ClusterOptions(actors=1))
    finally:
        ray.shutdown()


def test_a_restarted_progress_actor_is_told_again_the_shards_settled_and_the_strikes(
        shifted_sources, fast_config):
    folder, _ = shifted_sources(3)
    config = fast_config(str(folder), shard_refs=1)
    plan = Plan.make(list_sources(config.sources), config)
    out = Location.parse(config.out)
    out.makedirs(out.root)
    (Path(config.out) / "strikes.json").write_text(json.dumps({"p2": 1}))  # an earlier run's
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        progress = _Progress(out, plan, per_reference=7, done=[], lease=Lease(out))
        progress.shard_done(0, {"failures": 2})
        assert ray.get(progress.actor.begin.remote(1, "p1"))
        progress.shard_failed(1)  # the attempt making p1 died: a strike
        ray.kill(progress.actor, no_restart=False)  # it restarts from its first arguments
        deadline = time.monotonic() + WAIT_SECONDS
        while _settled_shards(progress.actor) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the restarted actor, which knows of no settled shard
        while progress.bar.n != 7 and time.monotonic() < deadline:
            progress.refresh()
        assert progress.bar.n == 7  # shard 0's 7 samples, settled before the restart
        assert "failures=2" in progress.bar.postfix
        assert ray.get(progress.actor.ledger.remote())["strikes"] == {"p1": 1, "p2": 1}
        ray.kill(progress.actor)  # for good: the driver goes on without it, strikes kept
        while _settled_shards(progress.actor) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        progress.shard_failed(2)
        progress.close()
    finally:
        ray.shutdown()
    assert json.loads((Path(config.out) / "strikes.json").read_text()) == {"p1": 1, "p2": 1}


def test_strikes_only_for_a_worker_that_died_and_a_retry_counts_afresh(
        shifted_sources, fast_config):
    """A shard task that raised (its labeler actor gone for good, a full disk) says nothing of
    the reference it was making: only a worker death is a strike against it."""
    folder, _ = shifted_sources(2)
    config = fast_config(str(folder), shard_refs=1)
    plan = Plan.make(list_sources(config.sources), config)
    out = Location.parse(config.out)
    out.makedirs(out.root)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    lease = Lease(out)
    lease.acquire()
    try:
        progress = _Progress(out, plan, per_reference=7, done=[], lease=lease)
        assert ray.get(progress.actor.begin.remote(0, "p0"))
        progress.shard_failed(0, died=False)  # it raised
        assert ray.get(progress.actor.begin.remote(0, "p0"))  # its retry: no strike either
        assert ray.get(progress.actor.ledger.remote())["strikes"] == {}
        assert ray.get(progress.actor.begin.remote(1, "p1"))
        progress.shard_failed(1)  # its worker died making p1
        assert ray.get(progress.actor.ledger.remote())["strikes"] == {"p1": 1}
        # an attempt whose worker died and that Ray retried: its counts go as the next begins
        ray.get(progress.actor.add.remote(1, 5, 1))
        assert ray.get(progress.actor.read.remote()) == (5, 1, 0)
        ray.get(progress.actor.attempt.remote(1))
        assert ray.get(progress.actor.read.remote()) == (0, 0, 0)
        strikes = Path(config.out) / "strikes.json"
        assert json.loads(strikes.read_text()) == {"p1": 1}
        theirs = {"host": "elsewhere", "pid": 7, "started": 0.0, "refreshed": time.time()}
        Path(lease.path).write_text(json.dumps(theirs))  # another driver took the output over
        strikes.write_text(json.dumps({"theirs": 1}))
        assert ray.get(progress.actor.begin.remote(0, "p0"))
        progress.shard_failed(0)
        progress.close()  # a driver that lost its lease writes no strikes.json over theirs
        assert json.loads(strikes.read_text()) == {"theirs": 1}
    finally:
        ray.shutdown()
        lease.release()


def test_the_driver_strikes_only_for_a_shard_whose_own_worker_died():
    """Its worker died making the reference; not an error its code raised (a full disk says
    nothing of the reference), and not a labeler actor's death, which the shard told as a
    strike against the reference of the call that died (the next test)."""
    from pipeline.driver import _died

    errors = ray.exceptions
    assert _died(errors.WorkerCrashedError())
    assert not _died(errors.RayTaskError("shard_task", "", errors.ActorDiedError()))
    assert not _died(errors.RayTaskError("shard_task", "",
                                         errors.ActorUnavailableError("gone", None)))
    assert not _died(errors.RayTaskError("shard_task", "", OSError(28, "No space left")))
    assert not _died(errors.RayTaskError("shard_task", "", ValueError("bad")))
    assert not _died(OSError(5, "Input/output error"))


# the labeler actor's own restarts and retries (Ray resubmits the calls it held)
LABELER_RESTARTS = {key: LabelerActor._default_options[key]
                    for key in ("max_restarts", "max_task_retries")}


@ray.remote(num_cpus=0)
class _DiesOnPoison:
    """A labeler actor whose process exits while it scores `poison` (a reference that crashes
    a metric), its calls recorded as LabelerActor records them (pipeline.labeler_calls)."""

    def __init__(self, poison: str):
        context = ray.get_runtime_context()
        self.calls = CallLedger(context.get_actor_id(), context.was_current_actor_reconstructed)
        self.poison = poison

    def score(self, progress, ref_id: str, versions: int, seconds: float = 0.0) -> dict:
        with self.calls.call(progress, ref_id, LabelerError):
            time.sleep(seconds)
            if ref_id == self.poison:
                os._exit(1)
            return {"mae": np.zeros(versions), "gmsd": np.zeros(versions)}


def test_a_labeler_that_dies_beside_other_calls_strikes_only_the_reference_that_killed_it():
    """Calls of several shards wait at one actor, two run at once; one reference kills its
    process. Ray resubmits every call it held: the poison's then runs alone, and the calls
    that wait for their turn meanwhile are not taken as running, so its deaths alone strike
    it; its next call is refused (a LabelerError, which its shard records), not run to kill
    the actor again, and every other call, queued or beside it, returns its scores."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        progress = ProgressActor.remote([10])
        labeler = _DiesOnPoison.options(max_concurrency=2, **LABELER_RESTARTS).remote("poison")
        # (a review's case: the thread beside the poison's lone turn takes a queued call,
        # which waits for its turn without being taken as running when the poison kills)
        names = ["poison", *(f"innocent{k}" for k in range(8))]
        calls = {name: labeler.score.remote(progress, name, 3, 0.5 if name == "poison"
                                            else 1.0) for name in names}
        results = {}
        for name, call in calls.items():
            try:
                results[name] = ray.get(call, timeout=WAIT_SECONDS)
            except Exception as error:  # (the caller's typed error, or Ray's)
                results[name] = error
        assert isinstance(results.pop("poison"), LabelerError)
        innocent = [name for name in names if name != "poison"]
        assert {name: list(scores) for name, scores in results.items()} == {
            name: ["mae", "gmsd"] for name in innocent}
        with pytest.raises(LabelerError, match=re.escape(REFUSED_CALL)):
            ray.get(labeler.score.remote(progress, "poison", 3))
        ledger = ray.get(progress.ledger.remote())
        assert ledger["strikes"] == {"poison": QUARANTINE_STRIKES}
        assert not set(ledger["suspects"]) & set(innocent)
    finally:
        ray.shutdown()


def test_a_reference_whose_labels_kill_the_labeler_is_left_out_and_its_shard_completes(
        shifted_sources, fast_config, mae_ensemble):
    """The shard makes p2 here while p1's labels are awaited: the labeler's process dies on
    p1's call, alone, so p1 is struck (twice, as Ray retries the call), not p2, the reference
    the shard was making meanwhile; p1's next call is refused and the shard completes without
    it (its failure recorded), where it used to fail."""
    folder, _ = shifted_sources(3)
    config = fast_config(str(folder), shard_refs=3, distortion_ids=(1,), levels=(1,))
    plan = Plan.make(list_sources(config.sources), config)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        progress = ProgressActor.remote([len(plan.shard(0)) * 2])
        labeler = _DiesOnPoison.options(**LABELER_RESTARTS).remote("p1")

        def score_images(ref, versions, on_labelled, ref_id):
            return remote_result(labeler.score.remote(progress, ref_id, len(versions)),
                                 LabelerError)

        outcome = produce_shard(0, plan, config, score_images, mae_ensemble,
                                Location.parse(config.out), guard=ActorGuard(progress, 0, None))
        assert ray.get(progress.ledger.remote())["strikes"] == {"p1": QUARANTINE_STRIKES}
        assert [(f["ref_id"], f["reason"]) for f in outcome.failures] == [("p1", "label_failed")]
        assert REFUSED_CALL in outcome.failures[0]["detail"]
        assert outcome.references == 2
    finally:
        ray.shutdown()


@ray.remote(num_cpus=0)
class _Labeler:
    """Stands in for a labeler actor at the run's end: answers, hangs, or is gone."""

    def __init__(self, hangs: bool):
        self.hangs = hangs

    def stats(self) -> dict:
        if self.hangs:
            time.sleep(60)
        return {"calls": 3, "peak_concurrent": 1}


def test_the_run_ends_without_the_calls_of_a_labeler_that_cannot_answer():
    """A labeler actor whose node is lost for good restarts for ever: the report records it
    as unavailable rather than wait on it (the run once never ended)."""
    from pipeline.driver import _actor_calls

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        fine, hanging, gone = (_Labeler.remote(hangs) for hangs in (False, True, False))
        ray.get(gone.__ray_ready__.remote())
        ray.kill(gone, no_restart=True)  # takes effect a moment later
        with pytest.raises(ray.exceptions.RayActorError):
            for _ in range(WAIT_SECONDS * 10):
                ray.get(gone.stats.remote())
                time.sleep(0.1)
        calls = _actor_calls([fine, hanging, gone], timeout=2)
    finally:
        ray.shutdown()
    assert calls[0] == {"calls": 3, "peak_concurrent": 1}
    assert calls[1] == {"unavailable": "no answer within 2 s"}
    assert calls[2]["unavailable"].startswith("ActorDiedError")


def _settled_shards(actor) -> int | None:
    try:
        return ray.get(actor.read.remote())[2]
    except ray.exceptions.RayActorError:
        return None


class _InterruptedProgress:
    """The driver's progress as a Ctrl-C finds it: the interrupt arrives at its next beat."""
    peak_in_flight = 0

    def refresh(self):
        raise KeyboardInterrupt


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm lost in a finalizer"])
def test_an_interrupted_run_stops_its_shard_tasks_before_it_lets_go(tmp_path, stop):
    """Also where the SIGTERM's interrupt was lost (see shards.stopping): the loop's next
    turn raises it."""
    written = tmp_path / "late.txt"
    lost = stop != "ctrl-c"

    @ray.remote
    def slow_shard(index: int) -> dict:
        time.sleep(5)
        written.write_text(str(index))  # a shard published after the driver let go
        return {"failures": 0}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        started = []

        def submit(index):
            started.append(slow_shard.remote(index))
            if lost:
                lose_a_signal()
            return started[-1]

        progress = _QuietProgress() if lost else _InterruptedProgress()
        with pytest.raises(KeyboardInterrupt), stops_as_interrupts():
            _run_shards([0, 1, 2], submit, 2, progress, str(tmp_path))
        assert len(started) == 2
        for task in started:  # stopped by the time _run_shards gives the interrupt back
            assert ray.wait([task], timeout=0)[0] == [task]
            with pytest.raises(ray.exceptions.TaskCancelledError):
                ray.get(task)
        time.sleep(6)
        assert not written.exists()
    finally:
        ray.shutdown()


class _QuietProgress:
    """The driver's progress, for shard tasks that report to no progress actor."""
    peak_in_flight = 0

    def __init__(self):
        self.done, self.failed = [], []

    def refresh(self):
        pass

    def shard_done(self, index, summary):
        self.done.append(index)

    def shard_failed(self, index, died=True):
        self.failed.append(index)


def test_the_shards_that_failed_twice_are_named_with_their_errors():
    """The run's last line names each shard that failed in the sweep with its own error (the
    task's, not Ray's traceback around it): the lines that said it first have scrolled
    away by the end of a long run."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        @ray.remote(max_retries=0)
        def shard(index: int) -> dict:
            if index == 1:
                raise ValueError("shard 1's plan is stale\n(second line)")
            if index == 3:
                os._exit(1)  # its worker dies
            return {"failures": 0}

        failed = _run_shards([0, 1, 2, 3], shard.remote, 2, _QuietProgress(), "/nowhere")
    finally:
        ray.shutdown()
    assert sorted(failed) == [1, 3]
    assert failed[1] == "ValueError: shard 1's plan is stale"
    assert failed[3].startswith(("WorkerCrashedError", "RayActorError"))
    message = failed_twice({1: failed[1], 3: failed[3]})
    assert message.startswith("shards 00001, 00003 failed twice (00001: ValueError: shard 1's "
                              "plan is stale; 00003: ")
    assert message.endswith("); rerun to resume them")


def _stopped_at_shard_1(shard, out: Path, said: str) -> None:
    """Shards 0..3 run one at a time by the remote `shard`: shard 1's failure stops the run
    with an OutputFullError naming `out` and saying `said` (a pattern), no shard sent after
    it, shard 0 done."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sent, progress = [], _QuietProgress()

        def submit(index):
            sent.append(index)
            return shard.remote(index)
        with pytest.raises(OutputFullError,
                           match=rf"{out} takes no more writes \(shard 00001: {said}"):
            _run_shards([0, 1, 2, 3], submit, 1, progress, str(out))
    finally:
        ray.shutdown()
    assert sent == [0, 1] and progress.done == [0]


def test_a_full_output_stops_the_run_at_the_first_shard_that_meets_it(tmp_path):
    """Shard 1's write fails for real as a full disk fails it (past the file size limit:
    EFBIG): the run stops there, naming the output and the error, and sends no other shard
    out to compute its whole shard and fail the same way (nor sweeps them again)."""
    out = tmp_path / "out"
    out.mkdir()

    @ray.remote(max_retries=0)
    def shard(index: int) -> dict:
        import resource
        import signal as signals

        location = Location.parse(str(out))
        if index == 1:
            signals.signal(signals.SIGXFSZ, signals.SIG_IGN)
            limits = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (10, limits[1]))
            try:
                location.write_bytes(location.path("00001.tar"), bytes(100))
            finally:
                resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        return {"failures": 0}

    _stopped_at_shard_1(shard, out, r"\[Errno 27\] .*File too large\): the run stops here; "
                        "make room there")
    assert list(out.iterdir()) == []  # the failed write left nothing behind
    # a worker node's own temporary folder filling up is that node's failure, not OUT's
    assert _output_full(SpillError(errno.ENOSPC, "no space")) is None
    assert _output_full(OSError(errno.ENOSPC, "no space")).errno == errno.ENOSPC
    assert _output_full(OSError(errno.EACCES, "denied")) is None


def test_an_output_refusing_this_user_stops_the_run_at_the_first_shard_that_meets_it(
        tmp_path):
    """A shards folder made unwritable mid-run (chmod a-w): shard 1's open() of its staged
    tar raises EACCES as it does for any user but root (who is let write, so the error is
    raised here as open() raises it): the run stops at the first shard refused, naming the
    output, the error and what to do, not after every shard has failed twice. A permission
    error on another path (a source, a cache) is the shard's own failure; pyarrow's wording
    of the output's is the output's."""
    out = tmp_path / "out"
    staged = f"{out}/shards/00001.tar.0123456789ab.partial"

    @ray.remote(max_retries=0)
    def shard(index: int) -> dict:
        if index == 1:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), staged)
        return {"failures": 0}

    _stopped_at_shard_1(shard, out, r"\[Errno 13\] Permission denied.*\): the run stops "
                        "here; let this user write there")
    denied = PermissionError(errno.EACCES, "Permission denied", staged)
    assert _output_full(denied, str(out)) is denied
    assert _output_full(denied, f"file://{out}") is denied
    worded = PermissionError(errno.EPERM, f"Failed to open local file '{staged}'")  # pyarrow's
    assert _output_full(worded, str(out)) is worded
    assert _output_full(PermissionError(errno.EACCES, "Permission denied", "/src/a.png"),
                        str(out)) is None
    assert _output_full(PermissionError(errno.EACCES, "denied", f"{out}-old/x"),
                        str(out)) is None
