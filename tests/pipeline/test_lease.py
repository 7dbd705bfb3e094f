"""One writer per output: a second driver is refused with the holder's name, a lease left by
a dead driver is taken over, a stale one only when asked, on local disk and on an object
store (pyarrow's in-memory filesystem stands in for one)."""

import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import ray

from distortions.canonical import canonical_digest
from pipeline.driver import ClusterOptions, generate
from pipeline.errors import PlanMismatchError
from shards import lease as lease_module
from shards.lease import (
    LEASE_FILE,
    STALE_SECONDS,
    WRITER_STALE_SECONDS,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    check_writer,
    live_writer,
)
from shards.reader import shard_problems
from shards.storage import Location


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture(params=["local", "object store"])
def location(request, tmp_path) -> Location:
    if request.param == "local":
        return Location.parse(str(tmp_path / "out"))
    return Location(pafs._MockFileSystem(), "bucket/out")


def test_a_second_driver_is_refused_naming_the_first(location):
    first = Lease(location)
    first.acquire()
    holder = re.escape(f"host {socket.gethostname()} pid {os.getpid()}")  # this process
    with pytest.raises(LeaseHeldError, match=holder):
        Lease(location).acquire()
    first.release()
    assert not location.exists(location.path(LEASE_FILE))
    second = Lease(location)
    assert second.acquire() == []
    second.release()


def test_the_lease_is_refreshed_every_30_s_while_held(location, monkeypatch):
    assert lease_module.REFRESH_SECONDS == 30  # the README's interval
    monkeypatch.setattr(lease_module, "REFRESH_SECONDS", 0.05)  # the same loop, shortened
    held = Lease(location)
    held.acquire()
    path = location.path(LEASE_FILE)
    first = json.loads(location.read_bytes(path))["refreshed"]
    deadline = time.monotonic() + 10
    while (latest := json.loads(location.read_bytes(path))["refreshed"]) == first:
        assert time.monotonic() < deadline, "the lease file was never refreshed"
        time.sleep(0.05)
    held.release()
    assert latest > first


def test_a_refresh_under_way_at_release_never_writes_the_lease_again(location,
                                                                     monkeypatch):
    monkeypatch.setattr(lease_module, "REFRESH_SECONDS", 0.05)
    refreshing, write = threading.Event(), Lease._write

    def slow_write(lease):  # a refresh's round trip to an object store
        if threading.current_thread() is not threading.main_thread():
            refreshing.set()
            time.sleep(0.3)
        write(lease)

    monkeypatch.setattr(Lease, "_write", slow_write)
    location.makedirs(location.path("shards"))  # a folder release leaves in place
    held = Lease(location)
    held.acquire()
    assert refreshing.wait(10)
    held.release()  # while the refresh writes
    time.sleep(0.5)
    assert not location.exists(location.path(LEASE_FILE))


def test_a_lease_left_by_a_dead_driver_on_this_host_is_taken_over(location):
    dead = Lease(location, holder={**Lease(location).holder, "pid": _dead_pid()})
    location.makedirs(location.root)
    dead._write()
    taker = Lease(location)
    [notice] = taker.acquire()
    assert "took over" in notice
    assert json.loads(location.read_bytes(location.path(LEASE_FILE)))["pid"] == taker.holder["pid"]
    taker.release()


def _race_for(out: str, barrier, won) -> None:
    barrier.wait()
    try:
        Lease(Location.parse(out)).acquire()
        won.put(os.getpid())
    except LeaseHeldError:
        won.put(None)


def test_of_two_drivers_taking_over_a_dead_drivers_lease_at_once_one_wins(tmp_path):
    """Both find the same lease of a dead driver and race to replace it: exactly one gets
    it, round after round (without the takeover marker both did, most rounds)."""
    context = multiprocessing.get_context("fork")
    for round_ in range(8):
        location = Location.parse(str(tmp_path / f"out{round_}"))
        location.makedirs(location.root)
        Lease(location, holder={**Lease(location).holder, "pid": _dead_pid()})._write()
        barrier, won = context.Barrier(2), context.Queue()
        racers = [context.Process(target=_race_for, args=(location.root, barrier, won))
                  for _ in range(2)]
        for racer in racers:
            racer.start()
        winners = [pid for pid in (won.get(timeout=60), won.get(timeout=60)) if pid]
        for racer in racers:
            racer.join()
        assert len(winners) == 1
        holder = json.loads(location.read_bytes(location.path(LEASE_FILE)))
        assert holder["pid"] == winners[0]
        assert sorted(os.listdir(location.root)) == [LEASE_FILE]  # no marker left


def test_a_takeover_after_another_is_refused_and_a_dead_takers_marker_is_passed_over(
        location):
    dead = Lease(location, holder={**Lease(location).holder, "pid": _dead_pid()})
    location.makedirs(location.root)
    dead._write()
    stale = dict(dead.holder)
    first, late = Lease(location), Lease(location)
    first.acquire()
    assert not late._take_over(stale)  # it read the dead one's lease before `first` wrote
    first.release()
    if location.atomic_rename:  # a marker whose driver died holding it, a minute ago
        dead._write()
        digest = canonical_digest(stale)[:16]
        left = location.path(f"{LEASE_FILE}.takeover-{digest}-0")
        location.write_bytes(left, b"{}")
        os.utime(left, (time.time() - 2 * lease_module.ABANDONED_MARKER_SECONDS,) * 2)
        assert late._take_over(stale)
        assert json.loads(location.read_bytes(location.path(LEASE_FILE)))["pid"] == os.getpid()
        assert sorted(os.listdir(location.root)) == [LEASE_FILE]  # the dead one's marker gone


def test_a_takeover_under_way_is_named_as_such(tmp_path):
    """A stale lease another driver holds the takeover marker of: refused, saying so (not
    naming the dead holder as the one that took it over)."""
    location = Location.parse(str(tmp_path / "out"))
    location.makedirs(location.root)
    dead = Lease(location, holder={**Lease(location).holder, "pid": _dead_pid()})
    dead._write()
    digest = canonical_digest(dead.holder)[:16]
    location.write_bytes(location.path(f"{LEASE_FILE}.takeover-{digest}-0"), b"{}")  # just now
    with pytest.raises(LeaseHeldError, match=r"the stale lease of iqa-factory generate on host "
                                             rf"\S+ pid "
                                             rf"{dead.holder['pid']}, .*: another driver is "
                                             r"taking it over now"):
        Lease(location).acquire()


def test_a_stale_lease_of_another_host_needs_take_over(location):
    stale = {"host": "elsewhere", "pid": 1, "started": 0.0,
             "refreshed": time.time() - 2 * lease_module.STALE_SECONDS}
    location.makedirs(location.root)
    location.write_bytes(location.path(LEASE_FILE), json.dumps(stale).encode())
    with pytest.raises(LeaseHeldError, match="--take-over"):
        Lease(location).acquire()
    taker = Lease(location)
    assert "took over" in taker.acquire(take_over=True)[0]
    taker.release()


@pytest.mark.parametrize("content", [b"", b"{garbage", b"[1, 2]", b'{"host": "x"}',
                                     b'{"host": "x", "pid": 1, "refreshed": "yesterday"}',
                                     b'{"host": "x", "pid": 1, "refreshed": true}',
                                     b'{"host": "x", "pid": 1, "refreshed": NaN}'])
def test_a_lease_file_that_names_no_holder_is_said_to_be_damaged(location, content):
    """Not a holder "host None pid None, last refreshed 1796205580 s ago": taken over as a
    stale one is, with --take-over."""
    location.makedirs(location.root)
    location.write_bytes(location.path(LEASE_FILE), content)
    with pytest.raises(LeaseHeldError) as refused:
        Lease(location).acquire()
    message = str(refused.value)
    assert "does not name: it is empty or damaged" in message and "--take-over" in message
    assert "None" not in message
    taker = Lease(location)
    assert "took over" in taker.acquire(take_over=True)[0]
    taker.release()


def test_a_driver_whose_lease_was_taken_over_stops_and_never_writes_over_it(location,
                                                                             monkeypatch):
    """A driver suspended past STALE_SECONDS wakes to find another holding its output: its
    refresh leaves the new lease alone, and `check` (before every shard it sends out, and
    before the merge) raises LeaseLostError naming the new holder."""
    monkeypatch.setattr(lease_module, "REFRESH_SECONDS", 0.05)
    woken = Lease(location)
    woken.acquire()
    woken.check()  # its own: nothing to say
    assert woken.held()
    taker = Lease(location, holder={**Lease(location).holder, "host": "elsewhere", "pid": 7})
    taker._write()  # as --take-over on another host writes it
    time.sleep(0.5)  # ten refresh periods
    assert json.loads(location.read_bytes(location.path(LEASE_FILE)))["host"] == "elsewhere"
    with pytest.raises(LeaseLostError, match=r"another driver took this run's lease over "
                                             r"\(iqa-factory generate on host elsewhere pid 7"):
        woken.check()
    assert not woken.held()  # what its strikes.json writes ask first
    woken.release()  # not its lease: left to its holder
    assert json.loads(location.read_bytes(location.path(LEASE_FILE)))["pid"] == 7


def test_a_takeover_by_a_holder_of_the_same_pid_is_still_a_takeover(location):
    """Containers on shared storage can share pids: a lease another host's driver of this
    pid wrote, or a later driver of this pid on this host, is not this driver's (a holder is
    its host, pid and start time)."""
    for other in ({"host": "elsewhere"}, {"started": time.time() + 100}):
        woken = Lease(location)
        woken.acquire()
        Lease(location, holder={**woken.holder, **other})._write()
        with pytest.raises(LeaseLostError, match="took this run's lease over"):
            woken.check()
        woken.release()  # not its lease: left to its holder
        location.delete(location.path(LEASE_FILE))


def test_a_stale_lease_whose_process_lives_on_this_host_is_not_taken_over(location):
    """Stale but alive here: a stopped or suspended driver that would write again as it
    wakes. --take-over says to stop it first, naming its pid."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = {"host": socket.gethostname(), "pid": sleeper.pid, "started": time.time(),
                 "refreshed": time.time() - 2 * lease_module.STALE_SECONDS}
        location.makedirs(location.root)
        location.write_bytes(location.path(LEASE_FILE), json.dumps(stale).encode())
        with pytest.raises(LeaseHeldError, match=rf"still exists on this host: stop it first "
                                                 rf"\(kill {sleeper.pid}\)"):
            Lease(location).acquire(take_over=True)
        with pytest.raises(LeaseHeldError, match=rf"looks stale, but its process still "
                                                 rf"exists on this host: stop it first "
                                                 rf"\(kill {sleeper.pid}"):
            Lease(location).acquire()  # not advised to rerun with --take-over
    finally:
        sleeper.kill()
        sleeper.wait()
    taker = Lease(location)  # its process gone: taken over at once, as a dead driver's
    assert "took over" in taker.acquire()[0]
    taker.release()


def test_a_pid_reused_by_a_later_process_is_not_the_holder_of_a_stale_lease(location):
    """After a reboot another process may hold the dead driver's pid: it started after the
    lease did (Linux's /proc tells when), so a stale lease is a dead driver's, taken over at
    once. A fresh lease is never judged by start times (a clock stepped forward shifts
    them): its holder is alive."""
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease = {"host": socket.gethostname(), "pid": later.pid,
                 "started": time.time() - 3600, "refreshed": time.time()}
        location.makedirs(location.root)
        location.write_bytes(location.path(LEASE_FILE), json.dumps(lease).encode())
        with pytest.raises(LeaseHeldError, match="being written by another driver"):
            Lease(location).acquire()
        _taken_over_at_once(location, {**lease, "refreshed": time.time()
                                       - 2 * lease_module.STALE_SECONDS})
    finally:
        later.kill()
        later.wait()


def _taken_over_at_once(location: Location, lease: dict) -> None:
    """`lease` in OUT is a dead driver's: a driver that starts takes it over, unasked."""
    location.makedirs(location.root)
    location.write_bytes(location.path(LEASE_FILE), json.dumps(lease).encode())
    taker = Lease(location)
    assert "took over the lease of a stopped driver" in taker.acquire()[0]
    taker.release()


def test_a_zombie_holder_is_a_dead_one(location):
    """A driver that exited but was not reaped still answers kill(pid, 0): it is dead."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{zombie.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    try:
        _taken_over_at_once(location, {"host": socket.gethostname(), "pid": zombie.pid,
                                       "started": time.time(), "refreshed": time.time()})
    finally:
        zombie.wait()


def test_the_merge_refuses_a_shard_of_another_plan(store_datasets, tmp_path):
    """What a driver that lost its lease may have left: a shard made under its plan among
    this run's. The merge names it instead of reporting a mixed dataset as finished."""
    import shutil

    from pipeline.plan import read_plan
    from pipeline.report import merge

    copy = tmp_path / "mixed"
    shutil.copytree(store_datasets["images"], copy)
    location = Location.parse(str(copy))
    plan = read_plan(location)
    merge(location, plan)  # its own shards: merged
    stats = copy / "shards" / "00001_stats.json"
    stats.write_text(json.dumps({**json.loads(stats.read_text()), "plan_digest": "e" * 64}))
    with pytest.raises(PlanMismatchError, match=r"shard 00001 was made under plan eeeeeeeeeeee, "
                                                rf"not this run's {plan.digest[:12]}"):
        merge(location, plan)


def test_a_run_of_another_plan_is_refused_before_it_removes_anything(store_datasets,
                                                                   tmp_path):
    """What a killed run of the output's plan staged stays for that plan's rerun to remove:
    a run of another plan is refused first, the folder as it was."""
    import dataclasses
    import shutil

    from pipeline.driver import _shards_to_make
    from pipeline.plan import read_plan

    copy = tmp_path / "killed"
    shutil.copytree(store_datasets["images"], copy)
    staged = copy / "shards" / "00001.tar.0123abcd4567.partial"
    staged.write_bytes(b"a killed run's tar")
    location = Location.parse(str(copy))
    plan = read_plan(location)
    other = dataclasses.replace(plan, inputs={**plan.inputs, "seed": plan.inputs["seed"] + 1})
    with pytest.raises(PlanMismatchError, match="holds another plan"):
        _shards_to_make(other, None, ClusterOptions(), location)
    assert staged.exists()


def test_a_live_lease_of_another_host_is_never_taken(location):
    live = {"host": "elsewhere", "pid": 1, "started": time.time(), "refreshed": time.time()}
    location.makedirs(location.root)
    location.write_bytes(location.path(LEASE_FILE), json.dumps(live).encode())
    with pytest.raises(LeaseHeldError, match="not stale"):
        Lease(location).acquire(take_over=True)


def test_generate_refuses_an_output_another_driver_holds(tmp_path, fast_config):
    config = fast_config("embedded", out=str(tmp_path / "held"))
    holder = Lease(Location.parse(config.out))
    holder.acquire()
    try:
        with pytest.raises(LeaseHeldError, match="being written by another driver"):
            generate(config, ClusterOptions(actors=1))
    finally:
        holder.release()
    assert not (tmp_path / "held" / "plan.json").exists()  # refused before writing anything


def test_a_shard_writes_only_while_its_driver_holds_a_fresh_lease(location):
    """check_writer, asked by a shard task before it writes into OUT: the lease of the driver
    that sent it out, refreshed lately, lets it write; a lease another driver took over, one
    its driver stopped refreshing half the stale time ago (suspended: the takeover may come
    any moment), or none (the run ended) does not."""
    lease = Lease(location)
    lease.acquire()
    sent_by = lease.identity()
    assert set(sent_by) == {"host", "pid", "started"}
    check_writer(location, sent_by)
    lease.holder["refreshed"] = time.time() - WRITER_STALE_SECONDS - 5
    lease._write()  # as a driver suspended since then left it
    with pytest.raises(LeaseLostError, match=r"last refreshed the lease \d+ s ago.*not published"):
        check_writer(location, sent_by)
    Lease(location, holder={**lease.holder, "host": "elsewhere", "pid": 7,
                            "refreshed": time.time()})._write()
    with pytest.raises(LeaseLostError, match=r"another driver holds its lease now "
                                             r"\(iqa-factory generate on host elsewhere pid 7"):
        check_writer(location, sent_by)
    location.delete(location.path(LEASE_FILE))
    with pytest.raises(LeaseLostError, match="its lease is gone"):
        check_writer(location, sent_by)


@pytest.mark.ray
def test_a_shard_task_whose_driver_lost_the_lease_publishes_nothing(local_ray, shifted_sources,
                                                                    fast_config, mae_ensemble):
    """The shard tasks of a suspended driver run on: one that ends after another driver took
    the output over raises LeaseLostError and leaves no file in OUT/shards; the same task sent
    under the lease that is still its driver's publishes its shard."""
    from pipeline.actors import ProgressActor, ShardTaskContext, shard_task
    from pipeline.plan import Plan, chosen, persist_or_check
    from pipeline.sources import list_sources

    folder, _ = shifted_sources(1)
    config = fast_config(str(folder), distortion_ids=(1,), levels=(1,), metrics=())
    plan = Plan.make(chosen(list_sources(config.sources), config), config)
    location = Location.parse(config.out)
    persist_or_check(plan, location)
    lease = Lease(location)
    lease.acquire()
    try:
        def run_shard() -> dict:
            progress = ProgressActor.remote([2])
            run = ShardTaskContext(config, mae_ensemble, config.out, [], [], progress, False,
                                   lease.identity())
            return ray.get(shard_task.remote(0, plan.part(0).to_json(), run))

        Lease(location, holder={**lease.holder, "host": "elsewhere", "pid": 7})._write()
        with pytest.raises(ray.exceptions.RayTaskError) as raised:
            run_shard()
        assert isinstance(raised.value.cause, LeaseLostError)
        assert "another driver holds its lease now (iqa-factory generate on host elsewhere" \
            in str(raised.value.cause)
        assert sorted(os.listdir(location.path("shards"))) == []
        lease._write()  # the lease is the driver's again
        assert run_shard()["samples"] == 2
        assert shard_problems(location, 0, plan.digest, config.store, verify_hash=True) == []
    finally:
        lease.release()


def test_inspect_of_a_dataset_being_written_names_its_writer(store_datasets, tmp_path):
    """No report.json while a fresh lease is held: a run under way, not one to resume."""
    from pipeline.commands.inspect_dataset import inspect

    under_way = tmp_path / "under_way"
    shutil.copytree(store_datasets["images"], under_way)
    (under_way / "report.json").unlink()
    location = Location.parse(str(under_way))
    holder = {"host": "node-7", "pid": 4242, "started": 1.0, "command": "generate"}
    location.write_bytes(location.path(LEASE_FILE),
                         json.dumps({**holder, "refreshed": time.time()}).encode())
    assert ("no report.json: a run is writing it now (iqa-factory generate on host node-7 pid "
            "4242" in " ".join(inspect(str(under_way))[1]))
    stale = time.time() - 2 * lease_module.STALE_SECONDS
    location.write_bytes(location.path(LEASE_FILE),
                         json.dumps({**holder, "refreshed": stale}).encode())
    assert ("no report.json: the run has not finished (rerun generate to resume)"
            in inspect(str(under_way))[1])
    gone = subprocess.Popen(["true"])  # a driver of this host killed: its lease still fresh
    gone.wait()
    location.write_bytes(location.path(LEASE_FILE), json.dumps(
        {**holder, "host": socket.gethostname(), "pid": gone.pid, "refreshed": time.time()}
    ).encode())
    assert ("no report.json: the run has not finished (rerun generate to resume)"
            in inspect(str(under_way))[1])


_UNWRITABLE_REFRESHES = """
import json, resource, signal, sys, time
from shards import lease as lease_module
from shards.lease import Lease
from shards.storage import Location

lease_module.REFRESH_SECONDS = 0.05
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
location = Location.parse(sys.argv[1])
held = Lease(location)
held.acquire()
first = json.loads(location.read_bytes(held.path))["refreshed"]
resource.setrlimit(resource.RLIMIT_FSIZE, (10, resource.RLIM_INFINITY))  # a full disk
time.sleep(0.6)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)  # room again
time.sleep(0.6)
print(json.loads(location.read_bytes(held.path))["refreshed"] > first)
held.release()
"""


def test_refreshes_that_cannot_write_warn_once_and_leave_no_staged_file(tmp_path):
    """Writes fail for real (the file size limit, as a full disk fails them): the driver says
    so once, not at every beat, each failed write drops its staged file, and the refreshes
    go on once there is room."""
    out = tmp_path / "out"
    out.mkdir()  # (release would remove a folder it made)
    done = subprocess.run([sys.executable, "-c", _UNWRITABLE_REFRESHES, str(out)],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "could not refresh" in warnings[0]
    assert "File too large" in warnings[0]
    assert sorted(path.name for path in out.iterdir()) == []  # released; nothing staged left


def test_a_conditional_put_the_store_refuses_is_an_os_error_naming_the_object(s3_bucket):
    """S3 answers the lease's conditional put with an error other than "it exists" (here: no
    such bucket; likewise denied, throttled, not supported): an OSError naming the object and
    the code, as pyarrow's own calls raise (the CLI reports those), not botocore's own."""
    elsewhere = Location.parse(s3_bucket.uri("out").replace(f"@{s3_bucket.name}/",
                                                            "@no-such-bucket/"))
    with pytest.raises(OSError, match="writing no-such-bucket/out/generate.lease only if "
                                      r"absent \(a conditional put\): S3 refused it "
                                      r"\(NoSuchBucket"):
        elsewhere.create_exclusive(elsewhere.path(LEASE_FILE), b"{}")


def test_a_lease_is_named_as_writing_until_it_is_stale_not_until_shards_stop_publishing(
        location):
    """live_writer names the holder of a lease refreshed within STALE_SECONDS (its docstring):
    a driver whose shard tasks publish nothing any more (WRITER_STALE_SECONDS) may still
    refresh and go on, and no other driver takes the output over before STALE_SECONDS."""
    location.makedirs(location.root)
    holder = {"host": "node-7", "pid": 4242, "started": 1.0, "command": "generate"}
    for age, named in ((WRITER_STALE_SECONDS + 5, True), (STALE_SECONDS - 5, True),
                       (STALE_SECONDS + 5, False)):
        location.write_bytes(location.path(LEASE_FILE), json.dumps(
            {**holder, "refreshed": time.time() - age}).encode())
        writer = live_writer(location)
        assert (writer is not None and "host node-7 pid 4242" in writer) is named, age


def test_a_lease_unreadable_for_a_moment_is_not_taken_for_lost(location):
    """Lease.check's docstring: a lease file that names no holder for a moment (a write under
    way, a store's brief hiccup) is not another driver's; the refresh writes it again."""
    lease = Lease(location)
    lease.acquire()
    try:
        location.write_bytes(lease.path, b"")
        lease.check()
        assert lease.held()
    finally:
        lease.release()
