"""One writer per output: a lease file in OUT that a driver creates before any work, refreshes
while it runs and removes at the end. A second driver is refused with the holder's name.
(Generate's driver and the commands that rewrite a dataset hold LEASE_FILE; a training run
holds TRAIN_LEASE_FILE in its --out folder: its checkpoints and summaries are one run's too.)

The lease is created exclusively: O_EXCL locally, a conditional put (If-None-Match: *) on S3,
so of two drivers started in the same instant one wins. pyarrow's other object stores (GCS)
offer no conditional put: there the lease is checked, then written, which catches a second
driver started later but not two in the same instant. A lease whose holder stopped refreshing
it (a killed driver) is stale: one left by a dead process on this host is taken over at once,
any other after `--take-over` (never while its process is alive on this host: a stopped or
suspended driver would wake to write again). Taking over is exclusive too: of the drivers that
found the same stale lease, the one that creates the takeover marker named after it (as the
lease is created) and then still finds that lease writes its own; the others are refused.

A driver whose lease another took over (it was suspended, or cut off from the storage, for
longer than STALE_SECONDS) finds out at its next refresh or `check` and stops: LeaseLostError
before it sends another shard out or merges. A refresh reads the lease before it writes, so it
does not write over the new holder's (but for a moment between the two, on every store). The
shard tasks it sent out before it stopped ask `check_writer` before they write into OUT: a
shard whose driver let go of the lease, lost it, or has not refreshed it for half the stale
time is not published (the driver may be suspended, and its lease taken over any moment)."""

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from distortions.canonical import canonical_digest
from shards.stopping import interrupts_held
from shards.storage import Location, redact

LEASE_FILE = "generate.lease"
TRAIN_LEASE_FILE = "train.lease"
REFRESH_SECONDS = 30.0
RELEASE_WAIT_SECONDS = 60  # the longest release waits for a refresh's write to end
STALE_SECONDS = 5 * REFRESH_SECONDS
# a takeover marker lives for milliseconds: one older was left by a driver that died holding it
ABANDONED_MARKER_SECONDS = 60.0
TAKEOVER_MARKERS = 8  # abandoned markers passed over before a takeover gives up
# a shard task publishes nothing under a lease older than this: a takeover needs STALE_SECONDS,
# so the shard lands at least this long before another driver could hold the output
WRITER_STALE_SECONDS = STALE_SECONDS / 2


class LeaseError(RuntimeError):
    """The output is, or became, another writer's; the message says whose and what to do."""


class LeaseHeldError(LeaseError):
    """Another driver is writing this output."""


class LeaseLostError(LeaseError):
    """Another driver took this driver's lease over: the output is no longer this run's."""


IDENTITY = ("host", "pid", "started")  # what names a holder ("refreshed" moves)


def _holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
            "refreshed": time.time()}


def _alive_here(holder: dict, stale: bool) -> bool | None:
    """Whether the holder's process is alive, where it ran on this host (None elsewhere). A
    zombie is dead; so, where its lease is stale, is a process of its pid that started after
    the lease did (the pid reused, after a reboot say: a fresh lease is never judged by start
    times, which a clock stepped forward would shift)."""
    if holder.get("host") != socket.gethostname():
        return None
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    state, started = _process_state(int(holder["pid"]))
    if state in ("Z", "X"):
        return False
    return not (stale and started is not None
                and started > float(holder.get("started", 0)) + PID_CLOCK_SLACK)


PID_CLOCK_SLACK = 2.0  # seconds: /proc's start time counts in clock ticks since boot


def _process_state(pid: int) -> tuple[str | None, float | None]:
    """Process `pid`'s state letter (Z: a zombie) and when it started (seconds since the
    epoch), from Linux's /proc; (None, None) where that cannot be read (another system)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text()
                    .splitlines() if line.startswith("btime "))
        return fields[0], boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None, None


def _age(holder: dict) -> float | None:
    """Seconds since `holder` last refreshed its lease (None: the lease names no time: it is
    empty or damaged)."""
    refreshed = holder.get("refreshed")
    if isinstance(refreshed, bool) or not isinstance(refreshed, int | float) or \
            not math.isfinite(refreshed):
        return None
    return time.time() - refreshed


def _describe(holder: dict, file_name: str = LEASE_FILE) -> str:
    age = _age(holder)
    if age is None:
        return f"a holder its lease file {file_name} does not name: it is empty or damaged"
    command = f"iqa-factory {holder['command']} on " if holder.get("command") else ""
    return (f"{command}host {holder.get('host')} pid {holder.get('pid')}, last refreshed "
            f"{age:.0f} s ago")


def _refusal(root: str, current: dict, take_over: bool, file_name: str = LEASE_FILE,
             writer: str = "driver") -> str | None:
    """Why the lease `current` is not to be taken over, in words (None: take it over): one of
    a dead process on this host is taken at once, a stale one elsewhere after --take-over,
    never one whose process lives on this host (it would write again as it wakes)."""
    age = _age(current)
    stale = age is None or age > STALE_SECONDS
    alive = _alive_here(current, stale)
    if alive is False or (take_over and stale and alive is None):
        return None
    stop = f"stop it first (kill {current.get('pid')})"
    holder = _describe(current, file_name)
    if take_over and stale:
        return (f"{root} is held by {holder}, whose process still exists on this "
                f"host: {stop}; it would write again as it wakes")
    if take_over:
        return (f"{root} is being written by {holder}: not stale, not taken over; wait for "
                "it, or write to another output folder")
    hint = (f"It looks stale, but its process still exists on this host: {stop}, then rerun."
            if stale and alive else
            "It looks stale: if that driver is gone, rerun with --take-over." if stale else
            "Wait for it, or write to another output folder.")
    return f"{root} is being written by another {writer} ({holder}). {hint}"


@dataclass
class Lease:
    location: Location
    command: str = "generate"  # the iqa-factory command writing, named to the writers refused
    file_name: str = LEASE_FILE
    on_lost: Callable[[], None] | None = None  # told (on the refresh thread) once it is lost
    holder: dict = field(default_factory=_holder)
    _stop: threading.Event = field(default_factory=threading.Event)
    _made_root: bool = False  # OUT did not exist before this lease: gone again if left empty
    _lost: threading.Event = field(default_factory=threading.Event)
    _lost_message: str = ""
    _refresher: threading.Thread | None = None

    def __post_init__(self):
        self.holder.setdefault("command", self.command)

    @property
    def _writer(self) -> str:
        """What its holders are called in messages: generate's drivers, training runs."""
        return "driver" if self.file_name == LEASE_FILE else "run"

    @property
    def _unrefreshed(self) -> str:
        """What an unrefreshed lease leads to, for its warning."""
        if self.file_name == LEASE_FILE:
            return f"shard tasks publish nothing once it is {WRITER_STALE_SECONDS:.0f} s old"
        return f"another run may take the output over once it is {STALE_SECONDS:.0f} s old"

    @property
    def path(self) -> str:
        return self.location.path(self.file_name)

    @interrupts_held()
    def acquire(self, take_over: bool = False) -> list[str]:
        """Take the lease or raise LeaseHeldError; returns notices (a stale lease taken over).
        Whole: an interrupt meanwhile comes after it (shards.stopping.interrupts_held), where
        one inside it would leave a lease written and not `acquired`, never let go."""
        self._made_root = not self.location.exists(self.location.root)
        self.location.makedirs(self.location.root)
        notices = []
        if not self._create():
            current = self._read()
            refusal = _refusal(self.location.root, current, take_over, self.file_name,
                               self._writer)
            if refusal:
                raise LeaseHeldError(refusal)
            notices.append(f"took over the lease of a stopped {self._writer} "
                           f"({_describe(current, self.file_name)})")
            if not self._take_over(current):
                now = self._read()
                who = (f"another {self._writer} took it over first "
                       f"({_describe(now, self.file_name)})" if now != current
                       else f"another {self._writer} is taking it over now")
                raise LeaseHeldError(f"{self.location.root}: the stale lease of "
                                     f"{_describe(current, self.file_name)}: {who}; wait for "
                                     "it, or write to another output folder")
        self._refresher = threading.Thread(target=self._refresh, daemon=True)
        self._refresher.start()
        return notices

    @interrupts_held()
    def release(self) -> None:
        """Stop refreshing (a refresh under way finishes first: it would write the lease
        again after its deletion), then delete the lease where it is still this driver's.
        Whole, as `acquire` is: an interrupt meanwhile comes after it."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join(RELEASE_WAIT_SECONDS)
        if self._ours(self._read()):
            self.location.delete(self.path)
        if self._made_root and self.location.is_empty_dir(self.location.root):
            self.location.fs.delete_dir(self.location.root)  # a run refused before writing

    def _take_over(self, stale: dict) -> bool:
        """Write this driver's lease over `stale`, unless another driver does first: the one
        that creates the next takeover marker named after `stale` exclusively (passing over
        markers a dead driver left) and then still finds `stale` there writes."""
        digest = canonical_digest(stale)[:16]
        markers = [self.location.path(f"{self.file_name}.takeover-{digest}-{attempt}")
                   for attempt in range(TAKEOVER_MARKERS)]
        for marker in markers:
            if self.location.create_exclusive(marker, json.dumps(self.holder).encode()):
                break
            if not self._abandoned(marker):
                return False  # another driver is taking it over now
        else:
            return False
        try:
            if self._read() != stale:  # another driver took it over before this marker
                return False
            self._write()
            for left in markers[:markers.index(marker)]:  # passed over: their drivers died
                self.location.delete(left)
            return True
        finally:
            self.location.delete(marker)

    def _abandoned(self, marker: str) -> bool:
        info = self.location.fs.get_file_info(marker)
        if info.type == pafs.FileType.NotFound:  # its driver finished with it just now
            return True
        return info.mtime is not None and (
            time.time() - info.mtime.timestamp() > ABANDONED_MARKER_SECONDS)

    def _create(self) -> bool:
        """Create the lease file; False if it exists."""
        return self.location.create_exclusive(self.path, json.dumps(self.holder).encode())

    def _read(self) -> dict:
        """The holder the lease file names ({} where it names none: empty or damaged)."""
        try:
            holder = json.loads(self.location.read_bytes(self.path))
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _write(self) -> None:
        self.location.write_bytes(self.path, json.dumps(self.holder).encode())

    def _ours(self, lease: dict) -> bool:
        return _same_holder(lease, self.holder)

    def identity(self) -> dict:
        """What names this driver's lease, for the shard tasks it sends out (check_writer)."""
        return {name: self.holder[name] for name in IDENTITY}

    def check(self) -> None:
        """LeaseLostError where another driver holds the lease now (one that is unreadable
        for a moment is not taken for lost: the refresh writes it again)."""
        if self._lost.is_set():
            raise LeaseLostError(self._lost_message)
        current = self._read()
        if current and not self._ours(current):
            self._lost_message = (f"{self.location.root}: another {self._writer} took this "
                                  f"run's lease over ({_describe(current, self.file_name)}); "
                                  "this run stops and writes nothing more: the output is that "
                                  f"{self._writer}'s now")
            self._lost.set()
            raise LeaseLostError(self._lost_message)

    @contextlib.contextmanager
    def taken(self, take_over: bool = False) -> Iterator[list[str]]:
        """The lease for the block (`acquire`'s notices given to it), let go however the block
        ends: also where an interrupt comes as `acquire` returns, before the block begins."""
        try:
            yield self.acquire(take_over)
        finally:
            if self.acquired:
                self.release()

    @property
    def acquired(self) -> bool:
        """Whether `acquire` took it (and `release` has it to let go)."""
        return self._refresher is not None

    def held(self) -> bool:
        """Whether this driver still holds the lease (`check` without the error)."""
        try:
            self.check()
        except LeaseLostError:
            return False
        return True

    def _refresh(self) -> None:
        failing = False  # a warning where a refresh fails after one that did not
        while not self._stop.wait(REFRESH_SECONDS):
            if not self.held():  # never written over the new holder's: `check` tells the driver
                if self.on_lost is not None:
                    self.on_lost()
                return
            self.holder["refreshed"] = time.time()
            try:
                self._write()
                failing = False
            except OSError as error:  # storage briefly unreachable: the next beat tries again
                if not failing:
                    print(f"warning: could not refresh {redact(self.path)} ({error}); "
                          f"{self._unrefreshed}", file=sys.stderr)
                failing = True


def _same_holder(lease: dict, holder: dict) -> bool:
    return all(lease.get(name) == holder[name] for name in IDENTITY)


def check_writer(location: Location, holder: dict) -> None:
    """LeaseLostError unless OUT's lease is still `holder`'s (Lease.identity) and refreshed
    within WRITER_STALE_SECONDS: what a shard task asks before it writes into OUT, so that the
    tasks of a driver that ended, lost its output or stopped refreshing (suspended, cut off
    from the storage) publish nothing that another driver's run could be mixed with."""
    why = writer_refusal(location, holder)
    if why:
        raise LeaseLostError(f"{location.root}: {why}; this shard is not published")


def live_writer(location: Location) -> str | None:
    """Who writes `location` now, in words: the holder of a lease refreshed within the stale
    time whose process, where it ran on this host, still lives (None: no lease, a stale or
    unreadable one, or one whose driver was killed here)."""
    path = location.path(LEASE_FILE)
    if not location.exists(path):
        return None
    holder = Lease(location)._read()
    age = _age(holder)
    fresh = age is not None and age <= STALE_SECONDS
    return _describe(holder) if fresh and _alive_here(holder, False) is not False else None


def writing_now(location: Location) -> str | None:
    """"a run is writing it now (its holder)" where `live_writer` names one (None: none): how
    `inspect` and the readers name the run a dataset is being written by."""
    writer = live_writer(location)
    return f"a run is writing it now ({writer})" if writer else None


def writer_refusal(location: Location, holder: dict) -> str | None:
    """Why a shard task of the driver `holder` names must not publish into OUT (None: it may)."""
    path = location.path(LEASE_FILE)
    if not location.exists(path):
        return ("its lease is gone (the run ended or was stopped, or this node does not share "
                "the folder with the driver's)")
    current = Lease(location)._read()
    if not current:
        return "its lease cannot be read"
    if not _same_holder(current, holder):
        return f"another driver holds its lease now ({_describe(current)})"
    age = _age(current)
    if age is None:
        return "its lease names no refresh time: damaged"
    if age > WRITER_STALE_SECONDS:
        return (f"its driver last refreshed the lease {age:.0f} s ago by this node's clock "
                "(suspended, cut off from the storage, unable to write it (its warnings say "
                "why: a full disk?), or its clock is that far behind this node's): another "
                "driver may take the output over")
    return None
