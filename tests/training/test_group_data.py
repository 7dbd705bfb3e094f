"""The torch adapters over the shared reader: in a pass every group and sample goes to
exactly one (rank, DataLoader worker); resampled streams are functions of (seed, epoch, rank,
worker); batches of groups stack into tensors; the fine-tuning 'shards' loader reads the
named references' versions."""

from collections import Counter
from itertools import pairwise

import pytest
import torch
from torch.utils.data import DataLoader

from shards import open_dataset
from shards.order import Order
from shards.reader import read_index
from shards.storage import Location
from training.group_data import (
    MixedStream,
    collate_groups,
    group_dataset,
    sample_dataset,
)
from training.rated_datasets import DatasetLayoutError, shard_samples

from .conftest import write_tiny_dataset

WORLD, WORKERS = 2, 2


@pytest.fixture(scope="module")
def six_shards(tmp_path_factory):
    """The tiny dataset with one reference per shard: six shards for 2 ranks x 2 workers."""
    return write_tiny_dataset(tmp_path_factory.mktemp("six_shards"), shard_refs=1)


@pytest.fixture(scope="module")
def many_versions(tmp_path_factory):
    """Six shards of one reference each, with 60 versions per reference (more than the
    shuffle buffer of label-free training holds)."""
    return write_tiny_dataset(tmp_path_factory.mktemp("many_versions"), shard_refs=1,
                              size=(24, 24), distortion_ids=tuple(range(9, 29)))


def _distorted_keys(root, split=None) -> list[str]:
    return sorted(row["key"] for row in read_index(Location.parse(str(root))).to_pylist()
                  if row["kind"] == "distorted" and split in (None, row["split"]))


def _as_worker(monkeypatch, worker: int) -> None:
    """What a DataLoader worker sees (webdataset reads WORKER and NUM_WORKERS first)."""
    monkeypatch.setenv("WORKER", str(worker))
    monkeypatch.setenv("NUM_WORKERS", str(WORKERS))


@pytest.mark.parametrize("kind", ["pair", "chunk"])
def test_each_group_goes_to_exactly_one_rank_and_worker(six_shards, monkeypatch, kind):
    seen = {}
    for rank in range(WORLD):
        stream = group_dataset(str(six_shards), kind, crop=16, reading=Order(shuffle=4),
                               rank=rank, world_size=WORLD)
        for worker in range(WORKERS):
            _as_worker(monkeypatch, worker)
            seen[rank, worker] = [key for group in stream for key in
                                  [meta["key"] for meta in group["meta"]]]
    assert all(seen.values())  # six shards: every reader has work
    counts = Counter(key for keys in seen.values() for key in keys)
    assert sorted(counts) == _distorted_keys(six_shards) and set(counts.values()) == {1}


def test_dataloader_workers_split_each_rank_share(six_shards):
    keys = []
    for rank in range(WORLD):
        stream = sample_dataset(str(six_shards), "distorted", "train", rank=rank,
                                world_size=WORLD, decode=False)
        loader = DataLoader(stream, batch_size=None, num_workers=WORKERS,
                            collate_fn=lambda item: item["key"])
        keys += list(loader)
    assert sorted(keys) == _distorted_keys(six_shards, "train")


def test_resampled_streams_are_functions_of_seed_epoch_rank_and_worker(six_shards,
                                                                       monkeypatch):
    def first(rank: int, worker: int, epoch: int, seed: int = 7) -> list:
        _as_worker(monkeypatch, worker)
        stream = group_dataset(str(six_shards), "pair", crop=16, seed=seed,
                               reading=Order(shuffle=5, resampled=True, length=30),
                               rank=rank, world_size=WORLD)
        stream.set_epoch(epoch)
        return [(group["meta"][0]["key"], group["box"]) for group in stream]

    reference = first(0, 0, 0)
    assert len(reference) == 30 > len(_distorted_keys(six_shards)) / WORLD
    assert first(0, 0, 0) == reference
    for other in (first(1, 0, 0), first(0, 1, 0), first(0, 0, 1), first(0, 0, 0, seed=8)):
        assert other != reference


def test_groups_collate_into_tensors(tiny_dataset):
    stream = group_dataset(str(tiny_dataset), "chunk", crop=(16, 24), versions=3, views=2)
    batch = next(iter(DataLoader(stream, batch_size=2, collate_fn=collate_groups)))
    assert batch["reference"].shape == (2, 2, 3, 16, 24)
    assert batch["distorted"].shape == (2, 3, 2, 3, 16, 24)
    assert batch["distorted"].dtype == torch.uint8 and batch["box"].shape == (2, 2, 4)
    assert len(batch["meta"]) == 2 and len(batch["meta"][0]) == 3
    first = next(iter(open_dataset(str(tiny_dataset)).groups("chunk", crop=(16, 24),
                                                             versions=3, views=2)))
    assert torch.equal(batch["reference"][0],
                       torch.from_numpy(first["reference"]).permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="versions=n"):
        collate_groups([{"distorted": [1]}, {"distorted": [1, 2]}])


def test_a_split_of_another_name_fails_when_the_stream_is_made(tiny_dataset):
    with pytest.raises(ValueError, match=r"split must be one of train, val, test .*'holdout'"):
        group_dataset(str(tiny_dataset), "pair", "holdout")


def test_the_finetuning_shards_loader_reads_the_named_references(tiny_dataset):
    rows = [row for row in read_index(Location.parse(str(tiny_dataset))).to_pylist()
            if row["kind"] == "distorted" and row["ref_id"] in ("r1", "r4")]
    images = shard_samples(tiny_dataset, refs=("r1", "r4"))
    assert sorted((i.name, i.group, i.score) for i in images) == sorted(
        (row["key"], row["ref_id"], row["quality"]) for row in rows)
    assert all(image.pixels().shape == (48, 64, 3) for image in images)
    with pytest.raises(DatasetLayoutError, match=r"unknown reference ids \['nope'\]"):
        shard_samples(tiny_dataset, refs=("r1", "nope"))


def test_without_an_explicit_rank_webdataset_asks_the_environment(six_shards, monkeypatch):
    dataset = open_dataset(str(six_shards))
    explicit = [s["key"] for s in dataset.samples(order=Order(rank=1, world_size=WORLD))]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", str(WORLD))
    implicit = [s["key"] for s in dataset.samples(order=Order(rank=None, world_size=None))]
    assert implicit == explicit and 0 < len(explicit) < len(_distorted_keys(six_shards))


def _switches(items: list[str]) -> int:
    return sum(a != b for a, b in pairwise(items))


def test_interleaved_shards_mix_references_and_lose_nothing(six_shards):
    """Order.interleave reads that many shards at once: every sample still comes once, each
    reference's samples keep their order, and successive samples come from other references
    far more often than shard after shard (5 changes for 6 one-reference shards)."""
    def read(interleave: int, epoch: int = 0) -> list[tuple[str, str]]:
        order = Order(epoch=epoch, interleave=interleave)
        return [(sample["meta"]["ref_id"], sample["key"]) for sample in
                open_dataset(str(six_shards)).samples(order=order, decode=False)]

    plain, mixed = read(1), read(3)
    assert sorted(mixed) == sorted(plain) and len(set(mixed)) == len(mixed)
    for ref in {ref for ref, _ in plain}:
        assert [key for r, key in mixed if r == ref] == [key for r, key in plain if r == ref]
    assert _switches([ref for ref, _ in plain]) == 5
    assert _switches([ref for ref, _ in mixed]) > 15  # about 2/3 of 35 for three at once
    assert read(3) == mixed and read(3, epoch=1) != mixed
    with pytest.raises(ValueError, match="interleave"):
        Order(interleave=0)


def test_label_free_training_batches_of_pairs_hold_many_references(many_versions):
    """A shard yields each reference's pairs together: read one shard after another through
    a buffer of 16, a batch of 16 pairs held one or two references (CoAE wants pairs
    shuffled across references). Training reads pairs from 16 shards at once."""
    from training.label_free import SHUFFLE_GROUPS, training_reading

    def references_per_batch(reading: Order) -> float:
        stream = group_dataset(str(many_versions), "pair", crop=16, reading=reading,
                               rank=0, world_size=1)
        batches = list(DataLoader(stream, batch_size=16, collate_fn=collate_groups))
        return sum(len(set(batch["ref_id"])) for batch in batches) / len(batches)

    length = 160
    one_at_a_time = references_per_batch(Order(shuffle=SHUFFLE_GROUPS, resampled=True,
                                               length=length))
    assert one_at_a_time < 2.5  # 1.5 measured
    assert references_per_batch(training_reading("pair", length)) > 4  # of 6 (5.8 measured)
    assert training_reading("triplet", length).interleave > 1
    assert training_reading("chunk", length).interleave == 1


def test_streams_of_several_datasets_mix_by_their_groups_and_validate_each_once(tmp_path):
    """Two datasets (types 9 and 10 in one, 11 in the other: 24 and 12 train pairs): a
    training rank draws from each in proportion to its pairs, the same draws for the same
    (seed, epoch) and others for another epoch; a pass reads every val pair of both once."""
    first = write_tiny_dataset(tmp_path / "first", size=(24, 24))
    second = write_tiny_dataset(tmp_path / "second", size=(24, 24), distortion_ids=(11,))
    train = frozenset({"r0", "r1", "r2", "r3"})

    def mixed(reading: Order, refs: frozenset[str], epoch: int = 0) -> list[int]:
        streams = [group_dataset(str(root), "pair", None, reading, 0, 1, seed=3, refs=refs,
                                 crop=16) for root in (first, second)]
        stream = MixedStream(streams, [24, 12], seed=3)
        stream.set_epoch(epoch)
        return [group["meta"][0]["distortion_id"] for group in stream]

    drawn = mixed(Order(shuffle=4, resampled=True, length=300), train)
    assert len(drawn) == 300
    from_second = drawn.count(11)
    assert 100 - 3 * 8.2 < from_second < 100 + 3 * 8.2  # binomial(300, 1/3): 100 +- 3 sd
    assert drawn == mixed(Order(shuffle=4, resampled=True, length=300), train)
    assert drawn != mixed(Order(shuffle=4, resampled=True, length=300), train, epoch=1)
    assert Counter(mixed(Order(), frozenset({"r4"}))) == {9: 3, 10: 3, 11: 3}
    with pytest.raises(ValueError, match="weight"):
        MixedStream([], [], seed=0)
