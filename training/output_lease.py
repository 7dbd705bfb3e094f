"""One training run per output folder: the run's lease on its --out (shards.lease, the file
TRAIN_LEASE_FILE, as generate holds its output's), and the stop of a run whose lease another
run took over."""

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from shards.lease import TRAIN_LEASE_FILE, Lease
from shards.stopping import interrupt, signal_as_interrupt, stop_point
from shards.storage import Location
from training.distributed import Context, computed_on_main, print_notices

LEASE_LOST_SIGNAL = signal.SIGUSR1  # sent to the main thread where another run took --out
LEASE_LOST_REASON = "lease lost"


def _stop_for_a_lost_lease(signum, frame) -> None:
    interrupt(LEASE_LOST_REASON)


def _interrupt_main() -> None:
    """LEASE_LOST_SIGNAL to the main thread: a KeyboardInterrupt there, even in a blocking
    call (a SIGINT would not do: a job started in the background ignores it)."""
    signal.pthread_kill(threading.main_thread().ident, LEASE_LOST_SIGNAL)


@contextmanager
def sole_writer(out: str | os.PathLike, command: str, context: Context) -> Iterator[None]:
    """The run's lease on its --out folder (TRAIN_LEASE_FILE, as generate holds its output's):
    a second run into the same folder while this one lives is refused (LeaseHeldError, before
    it removes or writes a file: two runs' checkpoints, summaries and logs would mix); one left
    by a run killed on this host, or not refreshed for STALE_SECONDS elsewhere, is taken over,
    and a run whose lease another took over (it was suspended that long) stops
    (LeaseLostError; in the main thread). Rank 0 holds it, in the process group `context`
    (distributed.started): its refusal reaches every rank, which would otherwise wait on it
    in their first collective. Each training command's function takes it first (pretrain,
    finetune, evaluate, predict_images, probe): a program that calls one holds the folder as
    the command line does."""
    if not out:
        yield
        return
    if not context.is_main:  # rank 0 holds it; its refusal is raised here too
        computed_on_main(context, lambda: None)
        yield
        return
    main_thread = threading.current_thread() is threading.main_thread()
    lease = Lease(Location.parse(os.fspath(out)), f"train {command}", TRAIN_LEASE_FILE,
                  on_lost=_interrupt_main if main_thread else None)
    # the handler stays until the refresh has stopped: a lease lost meanwhile is no default
    # SIGUSR1, which would kill the process
    with signal_as_interrupt(LEASE_LOST_SIGNAL, _stop_for_a_lost_lease, LEASE_LOST_REASON):
        try:
            print_notices(context, computed_on_main(context,
                                                    lambda: lease.acquire(take_over=True)))
            stop_point()  # one that came as the lease was taken (held back: Lease.acquire)
            yield
            stop_point()  # a lost lease whose interrupt a finalizer dropped: raised here
        except KeyboardInterrupt:
            if lease.acquired:
                lease.check()  # LeaseLostError where the interrupt is the lease lost: said so
            raise
        finally:
            if lease.acquired:  # (also where telling the other ranks failed: a peer gone)
                lease.release()
