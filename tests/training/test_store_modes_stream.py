"""Pretraining reads a recipes or hybrid dataset as it reads the images one (issue 11): the
same first batches from ShardStream, replayed on the DataLoader's workers."""

import torch
from torch.utils.data import DataLoader

from shards.reader import read_sources
from shards.storage import Location
from training.shard_data import ShardStream, StreamConfig, Target, distorted_index, split_shards
from training.transforms import Augment


def _batches(root, workers: int, count: int = 2) -> list[list[torch.Tensor]]:
    location = Location.parse(str(root))
    splits = {ref: "train" for ref in read_sources(location)["ref_id"].to_pylist()}
    shards = split_shards(location, distorted_index(location), splits, "train")
    stream = ShardStream(StreamConfig(str(root), shards, Target("quality"), Augment(crop=48),
                                      seed=4, train=True, shuffle_buffer=6))
    loader = DataLoader(stream, batch_size=6, num_workers=workers)
    return [batch for _, batch in zip(range(count), loader, strict=False)]


def test_first_batches_are_identical_in_every_mode(store_datasets):
    for workers in (0, 2):
        expected = _batches(store_datasets["images"], workers)
        assert len(expected) == 2 and expected[0][0].shape == (6, 3, 48, 48)
        for store in ("recipes", "hybrid"):
            got = _batches(store_datasets[store], workers)
            for mine, theirs in zip(got, expected, strict=True):
                assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1])
