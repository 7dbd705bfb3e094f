"""Q added up by scenario (a distortion type at a level): what a shard's stats record of its
labels, and what the report's mean per scenario is made of.

A shard's stats hold `labels`, the number of its single-type versions (a chain has no type and
level of its own), and `quality_by_scenario`, {"01-1": [count, sum of Q]} over those with a Q
(a label-free run has none). Stats written before this form held the labels themselves, a list
of [id, level, Q] per version (116 kB a shard of 16 references, most of the time of reading
every shard's stats at paper scale): `recorded_sums` reads both forms.
"""

from collections.abc import Iterable

Label = tuple[int, int, float | None]  # (distortion id, level, Q or None)


def scenario(distortion_id: int, level: int) -> str:
    """The key of a type at a level: "01-1" .. "33-5"."""
    return f"{distortion_id:02d}-{level}"


def add_labels(sums: dict[str, list], labels: Iterable[Label]) -> None:
    """Add each label with a Q to its scenario's [count, sum]."""
    for distortion_id, level, quality in labels:
        if quality is None:
            continue
        entry = sums.setdefault(scenario(distortion_id, level), [0, 0.0])
        entry[0] += 1
        entry[1] += quality


def recorded_sums(stats: dict) -> dict[str, list]:
    """{scenario: [count, sum of Q]} of a shard's stats, in either form."""
    if isinstance(stats.get("labels"), list):  # stats written before the sums were
        sums: dict[str, list] = {}
        add_labels(sums, stats["labels"])
        return sums
    return stats.get("quality_by_scenario", {})
