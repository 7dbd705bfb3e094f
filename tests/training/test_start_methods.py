"""DataLoader workers started another way than by fork (Python 3.14 starts them from a fork
server on Linux, macOS spawns them) get the training streams by pickle: they must yield what
forked workers yield, batch for batch."""

import pytest
import torch
from torch.utils.data import DataLoader

from shards.reader import read_sources
from shards.storage import Location
from training.group_data import MixedStream, collate_groups, group_dataset
from training.shard_data import ShardStream, StreamConfig, Target, distorted_index, split_shards
from training.transforms import Augment

pytestmark = pytest.mark.slow
BATCHES = 4


def _shard_stream(root) -> ShardStream:
    location = Location.parse(str(root))
    splits = {ref: "train" for ref in read_sources(location)["ref_id"].to_pylist()}
    shards = split_shards(location, distorted_index(location), splits, "train")
    return ShardStream(StreamConfig(str(root), shards, Target("quality"), Augment(crop=32),
                                    seed=4, train=True, shuffle_buffer=6))


def _mixed_groups(root) -> MixedStream:
    streams = [group_dataset(str(root), kind, crop=16, seed=3, flip=True)
               for kind in ("pair", "pair")]
    return MixedStream(streams, [3, 1], seed=3)


def _batches(stream, method: str, **options) -> list:
    """The first batches, copied out of the workers' shared memory."""
    loader = DataLoader(stream, batch_size=4, num_workers=2, multiprocessing_context=method,
                        **options)
    return [_copied(batch) for _, batch in zip(range(BATCHES), loader, strict=False)]


def _copied(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_copied(item) for item in value]
    return value


def _equal(one, other) -> bool:
    if isinstance(one, torch.Tensor):
        return torch.equal(one, other)
    if isinstance(one, dict):
        return one.keys() == other.keys() and all(_equal(one[k], other[k]) for k in one)
    if isinstance(one, list | tuple):
        return len(one) == len(other) and all(map(_equal, one, other))
    return one == other


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_workers_not_forked_yield_what_forked_ones_do(tiny_dataset, method):
    forked = _batches(_shard_stream(tiny_dataset), "fork")
    assert len(forked) == BATCHES
    assert _equal(_batches(_shard_stream(tiny_dataset), method), forked)
    groups = _batches(_mixed_groups(tiny_dataset), "fork", collate_fn=collate_groups)
    assert len(groups) == BATCHES
    assert _equal(_batches(_mixed_groups(tiny_dataset), method, collate_fn=collate_groups),
                  groups)
