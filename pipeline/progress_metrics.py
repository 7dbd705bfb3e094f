"""Ray custom metrics (exported through Ray's metrics endpoint, shown in the dashboard)."""

from functools import cache

from ray.util import metrics


@cache
def _instruments():
    return {
        "samples": metrics.Counter("iqa_samples_written", "Samples written to shards."),
        "failures": metrics.Counter("iqa_failures", "Sources or samples that failed."),
        "shards": metrics.Counter("iqa_shards_written", "Shards completed."),
        "stage_seconds": metrics.Counter("iqa_stage_seconds", "Seconds spent per stage.",
                                         tag_keys=("stage",)),
    }


def record_shard(outcome) -> None:
    """Count one finished shard's samples, failures and per-stage seconds (Ray's counters
    refuse increments of 0: a shard of only bad sources has none)."""
    instruments = _instruments()
    if outcome.samples:
        instruments["samples"].inc(outcome.samples)
    if outcome.failures:
        instruments["failures"].inc(len(outcome.failures))
    instruments["shards"].inc(1)
    for stage, seconds in outcome.seconds.items():
        if seconds > 0:
            instruments["stage_seconds"].inc(seconds, tags={"stage": stage})
