"""`python -m tests.training.workers_die_at_release ARGS...` is `python -m training ARGS...`
where, as a run that was stopped lets go of its --out's lease, its DataLoader workers die of a
SIGTERM first: the order torchrun's SIGTERM to a rank's process group can take (the workers'
deaths reach the rank as SIGCHLD while it winds down), held still here."""

import multiprocessing
import subprocess
import sys
import time

from shards.lease import Lease, _process_state
from training.cli import main

_release = Lease.release


def _dead(pid: int) -> bool:
    """Whether `pid` died (a zombie: not reaped, as torch's SIGCHLD check finds it; gone)."""
    return _process_state(pid)[0] in ("Z", "X", None)


def _after_the_workers_died(lease: Lease) -> None:
    workers = multiprocessing.active_children()
    if not workers:
        raise SystemExit("no DataLoader workers were left to die as the lease was let go")
    # from another process: a worker's SIGTERM from its rank makes it exit quietly (torch)
    subprocess.run(["kill", "-TERM", *(str(worker.pid) for worker in workers)], check=True)
    while not all(_dead(worker.pid) for worker in workers):
        time.sleep(0.01)
    time.sleep(0.5)  # their SIGCHLD is answered by now
    _release(lease)


if __name__ == "__main__":
    Lease.release = _after_the_workers_died
    sys.exit(main(sys.argv[1:]))
