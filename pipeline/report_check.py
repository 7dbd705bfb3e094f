"""What a finished run's report.json must be: a summary whose fields have their kinds
(shards.md: it gives the run's counts, failures and modes) and whose counts are those its
shards hold. One check for inspect and for the commands that take a finished dataset (convert
copies the report into its target)."""

from collections import Counter
from collections.abc import Iterable

from shards.layout import REPORT_FILE

REPORT_COUNTS = ("samples", "distorted")  # report.json's counts each shard's stats hold
REMEDY = "edited or damaged; rerun generate on the dataset to make it again"


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _names(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _tally(value: object) -> bool:
    return isinstance(value, dict) and all(_count(count) for count in value.values())


def _duplicates(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("ref_id"), str)
        and isinstance(item.get("of"), str) and _names(item.get("splits")) for item in value)


def _near_duplicates(value: object) -> bool:
    return _duplicates(value) and all(_count(item.get("bits")) for item in value)


def _versions(value: object) -> bool:
    return isinstance(value, dict) and all(_tally(versions) for versions in value.values())


# field -> (what it must be, in words; the test), those a report of every version holds
REQUIRED = {
    "samples": ("a count", _count), "distorted": ("a count", _count),
    "sources": ("a count", _count), "sources_ok": ("a count", _count),
    "failures_by_reason": ("a count by reason", _tally),
    "metrics_absent": ("a list of metric names", _names),
}
# and those an older report may lack
OPTIONAL = {
    "modes": ("an object of the generation modes", lambda value: isinstance(value, dict)),
    "failures": ("a count", _count),
    "pixel_duplicates": ("a list of {ref_id, of, splits}", _duplicates),
    "near_duplicates": ("a list of {ref_id, of, bits, splits}", _near_duplicates),
    "libraries_differing": ("a count of shards by library and version", _versions),
    "mean_quality_by_scenario": ("an object of Q by scenario",
                                 lambda value: isinstance(value, dict)),
}


def report_form_problems(report: dict, only: tuple[str, ...] | None = None) -> list[str]:
    """The fields of report.json (a JSON object) that are missing or not of their kind (of
    those named `only`, where a reader needs no other, each then optional)."""
    fields = {**REQUIRED, **OPTIONAL}
    required = REQUIRED if only is None else ()
    missing = [f"{REPORT_FILE} lacks the field {name!r}: {REMEDY}" for name in required
               if name not in report]
    wrong = [f"{REPORT_FILE}'s {name} is {repr(report[name])[:60]}, not {kind}: {REMEDY}"
             for name, (kind, test) in fields.items()
             if (only is None or name in only) and name in report and not test(report[name])]
    return missing + wrong


def stats_counts(stats: dict | None) -> Counter:
    """The REPORT_COUNTS a shard's stats give (none where one is no count: a problem the
    shard's own check names)."""
    stats = stats or {}
    return Counter({name: stats[name] for name in REPORT_COUNTS
                    if type(stats.get(name)) is int})


def held_counts(counts: Counter, statuses: Iterable[str | None], duplicates: int
                ) -> dict[str, int]:
    """report.json's counts as a dataset's sound shards give them: `counts` (REPORT_COUNTS
    summed over their stats), the `statuses` of the sources their lists name, and the byte
    `duplicates` the plan left out (sources too, in no shard)."""
    statuses = list(statuses)
    return {**{name: counts[name] for name in REPORT_COUNTS},
            "sources": len(statuses) + duplicates,
            "sources_ok": sum(status == "ok" for status in statuses)}


def report_count_problems(report: dict, held: dict[str, int]) -> list[str]:
    """Where a well-formed report.json's counts are not those its shards hold (`held`)."""
    return [f"{REPORT_FILE} says {name} {report[name]!r} but the shards hold {count}: "
            f"{REMEDY}" for name, count in held.items() if report[name] != count]
