"""`torchrun ... -m tests.training.dying_rank TRAIN-ARGS...`: `iqa-factory train` whose rank 1
is killed (SIGKILL, as the kernel's out-of-memory killer does) as soon as it has joined the
process group, while rank 0 takes the --out lease and tells the other ranks of it."""

import os
import signal
import sys
import time

from training import distributed
from training.cli import main

joined = distributed.start


def dying_start(device: str = "auto"):
    context = joined(device)
    if context.rank == 1:
        time.sleep(2)  # rank 0 meanwhile takes the lease and waits to send its outcome
        os.kill(os.getpid(), signal.SIGKILL)
    return context


if __name__ == "__main__":
    distributed.start = dying_start
    sys.exit(main(sys.argv[1:]))
