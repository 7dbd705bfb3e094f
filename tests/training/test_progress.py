"""Rank 0's progress bars over validation and scoring: a total and a rate also where the
loader is a stream of shards (no length), counted in its samples or groups."""

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

from training import loop
from training.distributed import Context


class Stream(IterableDataset):
    def __init__(self, count: int, groups: bool = False):
        self.count, self.groups = count, groups

    def __iter__(self):
        for number in range(self.count):
            yield {"ref_id": f"r{number}"} if self.groups else (torch.zeros(2), number)


def _bars(monkeypatch) -> list:
    bars = []

    class Recorded(loop.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)
    monkeypatch.setattr(loop, "tqdm", Recorded)
    return bars


@pytest.mark.parametrize("groups", [False, True])
def test_a_stream_is_counted_in_samples_against_their_total(monkeypatch, groups):
    bars = _bars(monkeypatch)
    loader = DataLoader(Stream(7, groups), batch_size=3,
                        collate_fn=(lambda batch: {"ref_id": [g["ref_id"] for g in batch]})
                        if groups else None)
    batches = list(loop.with_progress(loader, Context(0, 1, 0, torch.device("cpu")), "score",
                                      items=7))
    assert len(batches) == 3
    assert (bars[0].total, bars[0].n, bars[0].unit) == (7, 7, "sample")


def test_a_loader_with_a_length_is_counted_in_batches(monkeypatch):
    bars = _bars(monkeypatch)
    loader = DataLoader(list(range(7)), batch_size=3)
    assert len(list(loop.with_progress(loader, Context(0, 1, 0, torch.device("cpu")), "score",
                                       items=7))) == 3
    assert (bars[0].total, bars[0].n, bars[0].unit) == (3, 3, "batch")


def test_under_ddp_the_bar_counts_without_a_total(monkeypatch):
    """Ranks share whole shards: rank 0 may read all of a split of one shard, or none."""
    bars = _bars(monkeypatch)
    rank_0 = Context(0, 2, 0, torch.device("cpu"))
    list(loop.with_progress(DataLoader(Stream(7), batch_size=2), rank_0, "score", items=7))
    assert (bars[0].total, bars[0].n) == (None, 7)
