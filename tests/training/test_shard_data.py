import shutil

import pytest
import torch

from shards.dataset import open_dataset
from shards.layout import SOURCES_FILE
from shards.storage import Location
from training.shard_data import (
    ShardStream,
    StreamConfig,
    Target,
    agreed_splits,
    distorted_index,
    held_out,
    limited_split,
    reference_splits,
    references_up_to,
    split_shards,
)
from training.transforms import Augment

CROP = Augment(crop=32)


def _stream(root, name, train, splits=None, rank=0, world=1, epoch=0, target="quality",
            limit=None):
    location = Location.parse(str(root))
    index = distorted_index(location)
    shards = limited_split(location, index, split_shards(
        location, index, splits or reference_splits(open_dataset(str(root))), name), limit, seed=1)
    stream = ShardStream(StreamConfig(str(root), shards, Target(target), CROP, seed=1,
                                      train=train, shuffle_buffer=8), rank, world)
    stream.set_epoch(epoch)
    return shards, stream


def _targets(stream, count: int) -> list[float]:
    return [target.item() for _, (_, target) in zip(range(count), stream, strict=False)]


def test_splits_come_from_sources_with_overrides(tiny_dataset):
    dataset = open_dataset(str(tiny_dataset))
    splits = reference_splits(dataset, val_refs=("r1",), exclude_refs=("r0",))
    assert splits == {"r0": "excluded", "r1": "val", "r2": "train", "r3": "train",
                      "r4": "val", "r5": "test"}
    with pytest.raises(ValueError, match="unknown reference ids"):
        reference_splits(dataset, val_refs=("nope",))
    with pytest.raises(ValueError, match=r"\['r1'\] are given to both --val-refs and "
                                         "--exclude-refs"):
        reference_splits(dataset, val_refs=("r1", "r2"), exclude_refs=("r1",))
    assert held_out({"r0": "train", "r1": "train"}, ("r1", "gone"), ("r9",)) == {
        "r0": "train", "r1": "val"}  # ids it lacks left out, never added


def test_splits_without_sources_parquet_come_from_the_shards_indexes(tiny_dataset, tmp_path):
    """A resume can drop sources.parquet: the splits are the references' own (their rows in
    the indexes), the same as sources.parquet gave."""
    expected = reference_splits(open_dataset(str(tiny_dataset)))
    copy = shutil.copytree(tiny_dataset, tmp_path / "copy")
    (copy / SOURCES_FILE).unlink()
    assert reference_splits(open_dataset(str(copy))) == expected


def test_split_shards_count_only_distorted_samples_of_the_split(tiny_dataset):
    dataset = open_dataset(str(tiny_dataset))
    index = distorted_index(dataset.location)
    train = split_shards(dataset.location, index, reference_splits(dataset), "train")
    assert train.samples == 4 * 6
    assert len(train.urls) == 2  # r0-r2 in shard 0, r3 in shard 1
    val = split_shards(dataset.location, index, reference_splits(dataset), "val")
    assert (val.samples, len(val.urls)) == (6, 1)


def test_evaluation_streams_split_every_sample_once_across_ranks(tiny_dataset):
    splits = reference_splits(open_dataset(str(tiny_dataset)),
                              val_refs=("r0", "r3", "r4"))
    seen = []
    for rank in range(2):
        _, stream = _stream(tiny_dataset, "val", False, splits, rank, 2)
        seen.append([float(target) for _, target in stream])
    assert (len(seen[0]), len(seen[1])) == (6, 12)  # shard 0 holds r0; shard 1 r3 and r4
    assert sum(len(s) for s in seen) == 18



def test_a_validation_limit_keeps_whole_references_whatever_the_ranks(tiny_dataset):
    """--val-limit 10 of 18 samples (three references of 6): the first two references of a
    seeded order, 12 samples, read in full however many ranks share them; a limit the split
    is within keeps it whole."""
    splits = reference_splits(open_dataset(str(tiny_dataset)), val_refs=("r0", "r3", "r4"))
    samples = {}
    for world in (1, 2, 3):
        read = []
        for rank in range(world):
            shards, stream = _stream(tiny_dataset, "val", False, splits, rank, world, limit=10)
            read += [float(target) for _, target in stream]
        assert len(shards.refs) == 2 and shards.samples == len(read) == 12
        samples[world] = sorted(read)
    assert samples[1] == samples[2] == samples[3]
    assert references_up_to({"a": 6, "b": 6, "c": 6}, 18, seed=1) == {"a", "b", "c"}
    assert references_up_to({"a": 6, "b": 6, "c": 6}, None, seed=1) == {"a", "b", "c"}
    assert len(references_up_to({"a": 6, "b": 6, "c": 6}, 7, seed=1)) == 2


def test_training_stream_is_endless_seeded_and_skips_references(tiny_dataset):
    _, stream = _stream(tiny_dataset, "train", True)
    first = _targets(stream, 60)
    again = _targets(stream, 60)
    assert len(first) == 60 > 24  # more than the split holds: it resamples shards
    assert first == again
    stream.set_epoch(1)
    other = _targets(stream, 60)
    assert other != first
    assert all(0 < q < 1 for q in first)  # references (no Q) never appear
    view, _ = next(iter(stream))
    assert view.shape == (3, 32, 32) and view.dtype == torch.uint8  # normalised on the device


def test_class_targets_and_absent_metrics(tiny_dataset):
    _, stream = _stream(tiny_dataset, "val", False, target="level")
    levels = sorted(int(target) for _, target in stream)
    assert levels == [0, 0, 1, 1, 2, 2]
    assert Target("distortion").outputs == 33
    _, stream = _stream(tiny_dataset, "val", False, target="lpips")
    with pytest.raises(ValueError, match="has no lpips"):
        next(iter(stream))
    with pytest.raises(ValueError, match="target must be one of"):
        Target("psnr")


def test_a_training_epoch_shorter_than_its_open_shards_reads_a_share_of_each(tiny_dataset):
    """An epoch of `per_worker` samples per loader worker over 16 shards open at once reads
    that over their samples of each drawn shard (shards.order.share_to_spread: the split's
    samples over its shards make a shard's); all where it reads them whole; evaluation reads
    every shard once, whole."""
    import dataclasses

    shards, stream = _stream(tiny_dataset, "train", True)
    per_shard = shards.samples / len(shards.urls)
    assert stream._order().share == 1.0  # no epoch length given: whole
    for per_worker, share in ((4, 4 / (16 * per_shard)), (10_000, 1.0)):
        stream.config = dataclasses.replace(stream.config, per_worker=per_worker)
        assert stream._order().share == pytest.approx(min(1.0, share))
    _, evaluation = _stream(tiny_dataset, "train", False)
    assert evaluation._order().share == 1.0 and not evaluation._order().resampled


def _index_bytes_per_row(table) -> float:
    """The index's bytes a row in memory, each shard's dictionary of ensemble hashes aside (one
    64-character hash a shard: 0.6 MB at the paper's 8,750 shards)."""
    dictionaries = sum(chunk.dictionary.nbytes for chunk in table["ensemble_hash"].chunks)
    return (table.nbytes - dictionaries) / table.num_rows


def test_the_distorted_index_rank_0_holds_is_the_readmes_size_at_paper_scale(tiny_dataset):
    """The README's size of the distorted index at 23.1M rows is this index's bytes a row, its
    ref ids' characters (2 here) taken as 8, and with the scores a metric target or
    --ensemble reads (13 float64 a row and their validity bits)."""
    import re
    from pathlib import Path

    from training.shard_data import LABEL_COLUMNS, SCORED_COLUMNS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    stated = re.search(r"distorted index \(([\d.]+) GB at 23\.1M rows of 8-character ref ids, "
                       r"([\d.]+) GB with\s+the scores", readme)
    assert stated, "the README's size of the distorted index is not where this test reads it"
    location = Location.parse(str(tiny_dataset))
    for columns, figure in ((LABEL_COLUMNS, stated.group(1)), (SCORED_COLUMNS, stated.group(2))):
        table = distorted_index(location, columns=columns)
        characters = sum(map(len, table["ref_id"].to_pylist())) / table.num_rows
        projected = 23.1e6 * (_index_bytes_per_row(table) - characters + 8)
        assert float(figure) == round(projected / 1e9, 1), (columns, projected)


def test_ids_of_the_same_pixels_are_read_in_the_most_held_out_split_of_them():
    """A re-encoded copy (another id, the same pixels' SHA-256) in another split than its
    original: both in the more held-out one, within one dataset and across datasets, also
    through a chain (x shares pixels with y in one dataset and its id with x in another);
    ids without a recorded hash are agreed by id alone."""
    splits, notices = agreed_splits([{"a": "train", "b": "val", "c": "train"}],
                                    [{"a": "h1", "b": "h1", "c": "h2"}])
    assert splits == [{"a": "val", "b": "val", "c": "train"}]
    assert notices == ["1 reference id(s) are, by id or by pixels, in different splits (a): "
                       "each is in the most held-out one of its copies, never trained on in "
                       "one place and validated on in another"]
    chained, _ = agreed_splits(
        [{"x": "train", "w": "train"}, {"x": "val", "y": "test"}, {"v": "train"}],
        [{"x": "h"}, {"x": "k", "y": "k"}, {"v": "h"}])
    assert chained == [{"x": "test", "w": "train"}, {"x": "test", "y": "test"}, {"v": "test"}]
    assert agreed_splits([{"a": "train", "b": "test"}], [{}]) == (
        [{"a": "train", "b": "test"}], [])
    assert agreed_splits([{"a": "train"}, {"a": "excluded"}])[0] == [{"a": "excluded"},
                                                                     {"a": "excluded"}]


def _train_stream_of_a_copy(tmp_path, store_datasets) -> tuple:
    """(a copy of the images dataset, a stream of its train split as pretraining opens it)."""
    root = tmp_path / "d"
    shutil.copytree(store_datasets["images"], root)
    dataset = open_dataset(str(root))
    shards = split_shards(dataset.location, distorted_index(dataset.location), dataset.splits,
                          "train")
    return root, ShardStream(StreamConfig(str(root), shards, Target("quality"), CROP,
                                          train=False, plan=dataset.plan_digest))


def test_a_training_stream_refuses_shards_made_again_under_another_plan(tmp_path,
                                                                       store_datasets):
    """A training run's next epoch after a `generate --restart` under other options read the
    new shards, another ensemble's Q, silently: its stream reads the plan it opened only."""
    import json

    from shards.reader import DatasetChangedError

    root, stream = _train_stream_of_a_copy(tmp_path, store_datasets)
    assert next(iter(stream))
    for stats in (root / "shards").glob("*_stats.json"):
        stats.write_text(json.dumps({**json.loads(stats.read_text()), "plan_digest": "0" * 64}))
    with pytest.raises(DatasetChangedError, match="made again under another plan"):
        next(iter(stream))


def test_a_training_stream_whose_shards_are_deleted_says_the_dataset_is_being_made_again(
        tmp_path, store_datasets):
    """A `generate --restart` during an epoch deletes the shards folder: training stopped on
    the store's bare `[Errno 2] Failed to open local file '.../shards/00000.tar'`."""
    from shards.reader import DatasetChangedError

    root, stream = _train_stream_of_a_copy(tmp_path, store_datasets)
    for tar in (root / "shards").glob("*.tar"):
        tar.unlink()
    with pytest.raises(DatasetChangedError, match=r"is gone \(.*\.tar.*start it again"):
        next(iter(stream))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_references_stop_once_their_counts_reach_the_limit_exactly(seed):
    """references_up_to's docstring: references are taken "until their counts reach
    `limit`": two of 6 samples reach 12, so no third is taken, whatever the seed's order."""
    assert len(references_up_to({"a": 6, "b": 6, "c": 6}, 12, seed=seed)) == 2
    assert len(references_up_to({"a": 6, "b": 6, "c": 6}, 13, seed=seed)) == 3
