"""The run files a resume reads to choose the shards it makes again: strikes.json (edited by
hand, as the README invites) and the merged failures list, damaged, are named with a remedy."""

import json

import pytest

from pipeline.output_folder import STRIKES_FILE
from pipeline.remakes import failures_of, pardoned_shards, strikes, undecoded_refs
from shards.layout import FAILURES_FILE, REPORT_FILE
from shards.reader import RunFileError
from shards.storage import Location

from .conftest import lettered_plan


@pytest.fixture
def location(tmp_path) -> Location:
    return Location.parse(str(tmp_path))


def test_strikes_are_read_as_written_and_none_without_the_file(location, tmp_path):
    assert strikes(location) == {}
    (tmp_path / STRIKES_FILE).write_text(json.dumps({"astronaut": 2, "coffee": 0}))
    assert strikes(location) == {"astronaut": 2, "coffee": 0}


@pytest.mark.parametrize(("text", "why"), [
    ('{"astronaut": 1,}', "is not JSON"),
    ("[1, 2]", "is not an object of reference ids and worker deaths"),
    ('{"astronaut": "2"}', "is not an object of reference ids and worker deaths"),
    ('{"astronaut": true}', "is not an object of reference ids and worker deaths"),
    ('{"astronaut": -1}', "is not an object of reference ids and worker deaths"),
])
def test_a_strikes_file_edited_wrong_is_named_with_the_remedy(location, tmp_path, text, why):
    (tmp_path / STRIKES_FILE).write_text(text)
    with pytest.raises(RunFileError, match=rf"{tmp_path / STRIKES_FILE} {why}.*: fix it, or "
                                           "delete it to try every reference it strikes out"):
        strikes(location)


@pytest.mark.parametrize("text", ['{"ref_id": "a"}\n{"ref_id": ', '{"ref_id": "a"}\n[1]\n',
                                  "\xff\xfe"])
def test_a_damaged_merged_failures_list_is_named_with_the_remedy(location, tmp_path, text):
    (tmp_path / REPORT_FILE).write_text("{}")
    (tmp_path / FAILURES_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(RunFileError, match=rf"{tmp_path / FAILURES_FILE} cannot be read as a "
                                           rf"failures list .*: delete it and {REPORT_FILE}"):
        failures_of(location, [0])
    (tmp_path / FAILURES_FILE).write_text('{"ref_id": "a"}\n\n{"ref_id": "b"}\n')
    assert failures_of(location, [0]) == [{"ref_id": "a"}, {"ref_id": "b"}]


QUARANTINED_B = [{"ref_id": "b", "reason": "quarantined"}, {"ref_id": "c", "reason": "corrupt"}]


@pytest.mark.parametrize(("struck", "remade"), [
    (None, [0]),  # strikes.json deleted: every quarantined reference is tried again
    ({"b": 1}, [0]),  # its count lowered below the two deaths that quarantine it
    ({"b": 2}, []),  # still struck out (README: a worker died on it twice)
    ({"b": 3}, []),
])
def test_a_shard_is_made_again_only_where_strikes_json_no_longer_strikes_its_reference_out(
        location, tmp_path, struck, remade):
    if struck is not None:
        (tmp_path / STRIKES_FILE).write_text(json.dumps(struck))
    plan = lettered_plan("abcd", shard_refs=2)  # b in shard 0, c (undecodable, not quarantined) too
    assert pardoned_shards(location, plan, [0, 1], QUARANTINED_B) == remade


def test_only_finished_shards_that_left_out_a_pardoned_reference_are_made_again(location):
    plan = lettered_plan("abcd", shard_refs=2)
    quarantined = [{"ref_id": "a", "reason": "quarantined"},
                   {"ref_id": "d", "reason": "quarantined"}]
    assert pardoned_shards(location, plan, [1], quarantined) == [1]  # shard 0 not finished
    assert pardoned_shards(location, plan, [], quarantined) == []
    not_quarantined = [{"ref_id": "a", "reason": "corrupt"}, {"ref_id": "d",
                                                              "reason": "label_failed"}]
    assert pardoned_shards(location, plan, [0, 1], not_quarantined) == []


def test_undecoded_refs_are_sources_left_out_whole_for_their_bytes_not_a_versions_failure():
    failures = [
        {"ref_id": "whole", "reason": "corrupt"},  # did not decode: left out whole
        {"ref_id": "chain", "reason": "distortion_failed", "key": "chain_c01", "chain": "[]"},
        {"ref_id": "noop", "reason": "no_effect", "key": "noop_c02", "chain": "[]"},
        {"ref_id": "distorted", "reason": "distortion_failed", "distortion_id": 3},
        {"ref_id": "unread", "reason": "unreadable"},
        {"ref_id": "struck", "reason": "quarantined"},
        {"ref_id": "labels", "reason": "label_failed"},
    ]
    assert undecoded_refs(failures) == {"whole"}
