"""The run files a resume reads to choose the shards it makes again: strikes.json (edited by
hand, as the README invites) and the merged failures list, damaged, are named with a remedy."""

import json

import pytest

from pipeline.output_folder import STRIKES_FILE
from pipeline.remakes import failures_of, strikes
from shards.layout import FAILURES_FILE, REPORT_FILE
from shards.reader import RunFileError
from shards.storage import Location


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
