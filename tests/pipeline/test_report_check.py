"""report.json's check (pipeline/report_check.py) on hand-made reports: each field of its kind
(a count is a JSON integer of 0 or more: true is no count), and its counts those the shards
hold."""

from collections import Counter

import pytest

from pipeline.report_check import held_counts, report_count_problems, report_form_problems

SOUND = {"samples": 12, "distorted": 10, "sources": 3, "sources_ok": 2,
         "failures_by_reason": {"corrupt": 1}, "metrics_absent": [],
         "near_duplicates": [{"ref_id": "b", "of": "a", "bits": 3, "splits": ["train"]}]}


def test_a_sound_report_has_no_problem():
    assert report_form_problems(SOUND) == []


@pytest.mark.parametrize(("field", "value"), [
    ("samples", True), ("sources", False), ("failures_by_reason", {"corrupt": True}),
    ("samples", -1), ("samples", 1.0),
    ("near_duplicates", [{"ref_id": "b", "of": "a", "bits": -1, "splits": []}]),
    ("near_duplicates", [{"ref_id": "b", "of": "a", "bits": "3", "splits": []}]),
    ("near_duplicates", [{"ref_id": "b", "of": "a", "splits": []}]),
])
def test_a_field_not_of_its_kind_is_named(field, value):
    [problem] = report_form_problems({**SOUND, field: value})
    assert problem.startswith(f"report.json's {field} is {repr(value)[:60]}, not ")


def test_a_reader_asking_for_some_fields_is_not_refused_for_another_missing():
    partial = {"samples": 5}
    assert report_form_problems(partial, only=("samples",)) == []
    assert report_form_problems(partial) != []  # the whole check wants every required field


def test_the_counts_held_are_the_shards_sums_and_the_sources_their_lists_name():
    held = held_counts(Counter(samples=12, distorted=10), ["ok", "failed", "ok"], duplicates=2)
    assert held == {"samples": 12, "distorted": 10, "sources": 5, "sources_ok": 2}
    assert report_count_problems({**SOUND, "sources": 5}, held) == []
    [problem] = report_count_problems(SOUND, held)
    assert problem.startswith("report.json says sources 3 but the shards hold 5")
