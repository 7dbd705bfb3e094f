"""Q added up by scenario: every version with a Q counts, a Q of 0 as much as any other."""

from pipeline.scenario_quality import add_labels, recorded_sums


def test_a_q_of_zero_is_counted_and_only_a_missing_q_is_left_out():
    labels = [(1, 1, 0.0), (1, 1, 0.5), (1, 2, None), (33, 5, 1.0)]
    sums: dict[str, list] = {}
    add_labels(sums, labels)
    assert sums == {"01-1": [2, 0.5], "33-5": [1, 1.0]}
    assert recorded_sums({"labels": [list(label) for label in labels]}) == sums
