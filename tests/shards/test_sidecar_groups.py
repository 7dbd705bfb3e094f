"""A relabel sidecar's rows of one shard, read from the row groups that hold them (found once
from the footer's statistics), against the rows themselves."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shards.schema import SIDECAR_SCHEMA
from shards.sidecar import Sidecar
from shards.storage import Location

NAME = "labels-abc.parquet"
SCHEMA = SIDECAR_SCHEMA.with_metadata({"ensemble_hash": "abc",
                                       "metrics_used": json.dumps(["gmsd"])})


def _rows(shard: int, count: int) -> pa.Table:
    keys = [f"s{shard}_v{i:03d}" for i in range(count)]
    quality = np.random.default_rng(shard).random(count)
    return pa.table({"key": keys, "quality": quality,
                     "shard": np.full(count, shard, np.int32)}, schema=SCHEMA)


def _expected(tables: list[pa.Table], shard: int) -> dict[str, float]:
    rows = pa.concat_tables(tables).to_pylist()
    return {row["key"]: row["quality"] for row in rows if row["shard"] == shard}


def test_each_shards_rows_come_from_its_row_groups_even_split_over_two(tmp_path):
    tables = [_rows(0, 5), _rows(1, 7), _rows(2, 3)]
    with pq.ParquetWriter(tmp_path / NAME, SCHEMA) as writer:
        writer.write_table(tables[0])
        writer.write_table(tables[1], row_group_size=4)  # shard 1 in two row groups
        writer.write_table(tables[2])
    sidecar = Sidecar(Location.parse(str(tmp_path)), NAME)
    assert sidecar._shard_groups == {0: [0], 1: [1, 2], 2: [3]}
    for shard in (0, 1, 2, 9):
        assert sidecar.qualities(shard) == _expected(tables, shard)


def test_a_sidecar_whose_row_groups_do_not_name_one_shard_is_read_by_filter(tmp_path):
    tables = [_rows(0, 5), _rows(1, 7)]
    pq.write_table(pa.concat_tables(tables), tmp_path / NAME)  # one row group for both
    sidecar = Sidecar(Location.parse(str(tmp_path)), NAME)
    assert sidecar._shard_groups is None
    assert sidecar.qualities(1) == _expected(tables, 1)


def test_a_sidecar_replaced_after_its_footer_was_read_is_read_as_it_is_now(tmp_path):
    with pq.ParquetWriter(tmp_path / NAME, SCHEMA) as writer:
        for shard in range(3):
            writer.write_table(_rows(shard, 4))
    sidecar = Sidecar(Location.parse(str(tmp_path)), NAME)
    assert sidecar._shard_groups == {0: [0], 1: [1], 2: [2]}
    now = [_rows(1, 6), _rows(0, 2)]  # another layout
    pq.write_table(pa.concat_tables(now), tmp_path / NAME)
    assert sidecar.qualities(1) == _expected(now, 1)
