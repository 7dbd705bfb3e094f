"""A training job killed part-way, for the resume tests: fetching a chosen batch raises.
`python -m tests.training.crashing EPOCH BATCH ARGS...` is `python -m training ARGS...`
whose pretraining crashes fetching batch BATCH (1-based) of epoch EPOCH (under torchrun)."""

import sys
from collections.abc import Callable, Iterable, Iterator

from training import label_free, loop, pretrain
from training.cli import main


class Crash(Exception):
    """The stand-in for a killed job."""


def crashing_at(batches: Iterable, number: int) -> Iterator:
    """`batches`, until fetching batch `number` (1-based) raises Crash."""
    for index, batch in enumerate(batches, start=1):
        if index == number:
            raise Crash(f"crashed fetching batch {number}")
        yield batch


def crashing_fit(epoch: int, batch: int) -> Callable:
    """`loop.fit`, crashing when it fetches batch `batch` of epoch `epoch`."""

    def fit(run, train_batches, steps, validate, resume=False):
        def batches(current: int) -> Iterable:
            stream = train_batches(current)
            return crashing_at(stream, batch) if current == epoch else stream

        return loop.fit(run, batches, steps, validate, resume)

    return fit


if __name__ == "__main__":
    pretrain.fit = label_free.fit = crashing_fit(int(sys.argv[1]), int(sys.argv[2]))
    sys.exit(main(sys.argv[3:]))
