"""`inspect --deep`'s seeded sample: distorted rows of every shard, read shard by shard."""

import pytest

from pipeline.commands import deep_check
from shards.reader import read_index
from shards.storage import Location


def _keys(rows: list[dict]) -> list[str]:
    return [row["key"] for row in rows]


def test_a_sample_as_large_as_the_dataset_is_every_distorted_row_with_its_shard(store_datasets):
    location = Location.parse(str(store_datasets["images"]))
    index = read_index(location, with_shard=True, kind="distorted")
    rows = deep_check._sample(location, index.num_rows + 5, seed=0)
    assert sorted(_keys(rows)) == sorted(index["key"].to_pylist())
    assert len({row["shard"] for row in rows}) == 2
    assert {(row["key"], row["shard"]) for row in rows} == set(
        zip(index["key"].to_pylist(), index["shard"].to_pylist(), strict=True))
    assert rows == [r for r in index.to_pylist() if r["key"] in set(_keys(rows))]  # index order


@pytest.mark.parametrize("count", [1, 4, 7])
def test_a_sample_is_count_distinct_distorted_rows_the_seed_decides(store_datasets, count):
    location = Location.parse(str(store_datasets["images"]))
    every = {row["key"]: row for row in
             read_index(location, with_shard=True, kind="distorted").to_pylist()}
    samples = [deep_check._sample(location, count, seed) for seed in range(6)]
    for rows in samples:
        assert len(set(_keys(rows))) == count
        assert all(every[row["key"]] == row for row in rows)
    assert deep_check._sample(location, count, 3) == samples[3]
    assert len({tuple(_keys(rows)) for rows in samples}) > 1


def test_only_the_sampled_shards_are_read_whole(store_datasets, monkeypatch):
    """Every shard's kind column is counted; the full rows are read of the shards the sample
    falls in only (a paper-scale index does not fit in memory as rows)."""
    location = Location.parse(str(store_datasets["images"]))
    read_whole = []

    def watched(location, shards=None, columns=None, **options):  # the real reader, watched
        read_whole.append((shards, columns))
        return read_index(location, shards, columns, **options)
    monkeypatch.setattr(deep_check, "read_index", watched)
    [row] = deep_check._sample(location, 1, seed=5)
    assert read_whole == [([row["shard"]], None)]
