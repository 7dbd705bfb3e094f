"""A resume's check of the sources of finished shards, on hand-built plans: which sources it
notes as unreadable now (docs/shards-spec-notes.md: a reference of a shard not made yet is made
from what its file holds now, so only finished shards' sources are named)."""

import pytest

from pipeline.plan import Plan, read_plan, record_plan
from pipeline.source_changes import check_modified_sources
from shards.storage import Location

from .conftest import lettered_plan

SIZES = (100, 200, 300)
TIMES = (1_000, 2_000, 3_000)


def _plan(mtimes: tuple) -> Plan:
    """Three references, one to a shard, listed with SIZES and `mtimes`."""
    sizes = tuple(None if mtime is None else size for size, mtime in zip(SIZES, mtimes,
                                                                          strict=True))
    return lettered_plan("abc", 1, source_bytes=sizes, source_mtimes=mtimes)


@pytest.mark.parametrize(("done", "noted"), [([0, 2], "/in/c.png"), ([0, 1], None), ([], None)])
def test_a_source_unreadable_now_is_noted_only_where_its_shard_is_finished(
        tmp_path, capsys, done, noted):
    location = Location.parse(str(tmp_path))
    record_plan(location, _plan(TIMES))
    unreadable_c = _plan((TIMES[0], TIMES[1], None))  # c (shard 2) cannot be listed now
    check_modified_sources(location, unreadable_c, config=None, done=done)
    out = capsys.readouterr().out
    if noted is None:
        assert "cannot be read now" not in out
    else:
        assert f"note: 1 source(s) of finished shards cannot be read now ({noted})" in out
    assert read_plan(location).source_mtimes == TIMES  # the earlier listing's, kept
