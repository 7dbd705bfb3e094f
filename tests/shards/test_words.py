"""a_few: how a message names many things."""

from shards.words import a_few


def test_three_or_fewer_are_all_named():
    assert a_few([]) == ""
    assert a_few(["a"]) == "a"
    assert a_few(["a", "b", "c"]) == "a, b, c"


def test_more_than_three_end_in_an_ellipsis_after_the_separator():
    assert a_few(["a", "b", "c", "d"]) == "a, b, c, ..."
    assert a_few(["a", "b", "c", "d", "e"], "; ") == "a; b; c; ..."
    assert a_few(["a", "b", "c"], shown=2) == "a, b, ..."
