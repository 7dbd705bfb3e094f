"""A relabel sidecar's rows of one shard, read from the row groups that hold them (found once
from the footer's statistics), against the rows themselves."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shards.schema import SIDECAR_SCHEMA
from shards.sidecar import Sidecar, SidecarError, quality_problem
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


def test_a_sidecar_replaced_while_it_is_read_is_an_error_not_another_ensembles_q(tmp_path):
    """Its ensemble (what every record read through it is named) was read as it was opened:
    a file copied over it mid-read, another ensemble's Q, was read on as the first's. Each
    shard's read checks the file is still the one opened, whatever its size."""
    location = Location.parse(str(tmp_path))
    for now in ([_rows(1, 6), _rows(0, 2)], [_rows(0, 4), _rows(1, 4), _rows(2, 4)]):
        with pq.ParquetWriter(tmp_path / NAME, SCHEMA) as writer:
            for shard in range(3):
                writer.write_table(_rows(shard, 4))
        sidecar = Sidecar(location, NAME)
        assert sidecar.metadata.ensemble_hash == "abc" and sidecar.qualities(0)
        other = SCHEMA.with_metadata({"ensemble_hash": "def", "metrics_used": '["gmsd"]'})
        pq.write_table(pa.concat_tables(now).cast(other), tmp_path / NAME)
        with pytest.raises(SidecarError, match=f"{NAME} was replaced or deleted while it was "
                                               "read"):
            sidecar.qualities(1)
    (tmp_path / NAME).unlink()
    with pytest.raises(SidecarError, match="replaced or deleted"):
        sidecar.qualities(2)


def test_a_sample_given_two_qs_is_an_error_naming_it(tmp_path):
    """dict() kept the last of a key's rows: a Q of the sidecar's choosing, silently."""
    twice = pa.concat_tables([_rows(0, 3), _rows(0, 1)])
    pq.write_table(twice, tmp_path / NAME)
    with pytest.raises(SidecarError, match=f"{NAME} gives sample s0_v000 more than one Q "
                                           r"\(1 such row\(s\)\)"):
        Sidecar(Location.parse(str(tmp_path)), NAME).qualities(0)


def test_q_of_exactly_0_or_1_is_a_label_not_a_problem():
    """labels.md: Q is clipped to [0,1], so both ends are Qs a relabel writes (a version
    every metric scores as its reference's, one no metric finds anything of); past them, or
    NaN, is a problem."""
    ends = pa.table({"key": ["a", "b", "c"], "quality": [0.0, 1.0, 0.5]})
    assert quality_problem(ends) is None
    for outside in (-1e-9, 1 + 1e-9, float("nan")):
        table = pa.table({"key": ["a", "b"], "quality": [0.5, outside]})
        assert quality_problem(table).startswith("sample b has Q ")
