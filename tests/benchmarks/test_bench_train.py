"""bench_train times the loader from past what its workers prepared while they started."""

import itertools
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_train import past_prefetch


class _Counting(IterableDataset):
    """Each worker (or the process, without workers) counts 0, 1, 2, ..."""

    def __iter__(self):
        return itertools.count()


def test_timing_starts_past_each_workers_prefetch_queue():
    """Batches come from the workers in turn; with 2 workers that prepare 3 batches each, the
    first timed batch is worker 0's fourth (3), none of those made before timing began."""
    batches = DataLoader(_Counting(), batch_size=1, num_workers=2, prefetch_factor=3)
    iterator = past_prefetch(batches)
    assert next(iterator).item() == 3
    assert torch.equal(next(past_prefetch(DataLoader(_Counting(), batch_size=1))),
                       torch.tensor([0]))  # no workers: nothing made ahead
