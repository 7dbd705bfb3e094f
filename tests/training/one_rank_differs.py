"""A rank unlike the others, for the DDP tests: `python -m tests.training.one_rank_differs
RANK WHAT ARGS...` is `python -m training ARGS...` where rank RANK alone
- `without-resume` runs without --resume (a node whose command line lacks it), or
- `exits` exits at once (status 3, no cleanup) as it fetches its first training batch (a
  rank that dies)."""

import os
import sys
from collections.abc import Iterable, Iterator

from training import label_free, loop, pretrain
from training.cli import main


def _exiting(batches: Iterable) -> Iterator:
    for _ in batches:
        os._exit(3)
    yield from ()


def _exiting_fit(run, train_batches, steps, validate, resume=False):
    return loop.fit(run, lambda epoch: _exiting(train_batches(epoch)), steps, validate, resume)


if __name__ == "__main__":
    rank, what, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if os.environ.get("RANK") == rank:
        if what == "without-resume":
            args = [arg for arg in args if arg != "--resume"]
        elif what == "exits":
            pretrain.fit = label_free.fit = _exiting_fit
        else:
            raise SystemExit(f"unknown WHAT {what!r}: without-resume or exits")
    sys.exit(main(args))
