"""The run's own files: the manifest and ensemble before the shards; after them, the merged
sources and failures, and the report."""

import json
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import RunConfig
from pipeline.plan import Plan
from shards.reader import SOURCES_FILE, shard_stats
from shards.schema import SOURCES_SCHEMA
from shards.storage import Location
from shards.writer import shard_paths


def write_run_files(location: Location, config: RunConfig, plan: Plan, ensemble, absent
                    ) -> None:
    """manifest.json and ensemble.json, written before any shard."""
    manifest = {"config": config.to_json(), "plan_digest": plan.digest,
                "shards": plan.shard_count, "references": len(plan.references),
                "ensemble_hash": ensemble.hash, "metrics_absent": list(absent),
                "format": "shared/spec/shards.md"}
    location.write_bytes(location.path("manifest.json"),
                         json.dumps(manifest, sort_keys=True, indent=1).encode())
    document = {**ensemble.to_json(), "metrics_absent": list(absent)}
    location.write_bytes(location.path("ensemble.json"),
                         json.dumps(document, sort_keys=True, indent=1).encode())


def merge(location: Location, plan: Plan) -> tuple[list[dict], list[dict], list[dict]]:
    """sources.parquet and failures.jsonl from every shard's own lists; returns (sources,
    failures, stats) for the report."""
    sources, failures, stats = [], [], []
    for index in range(plan.shard_count):
        paths = shard_paths(location, index)
        sources += json.loads(location.read_bytes(paths["sources"]))
        text = location.read_bytes(paths["failures"]).decode()
        failures += [json.loads(line) for line in text.splitlines() if line]
        stats.append(shard_stats(location, index))
    table = pa.Table.from_pylist(sources, schema=SOURCES_SCHEMA)
    with location.fs.open_output_stream(location.path(SOURCES_FILE)) as stream:
        pq.write_table(table, stream)
    location.write_bytes(location.path("failures.jsonl"), "".join(
        json.dumps(f, sort_keys=True) + "\n" for f in failures).encode())
    return sources, failures, stats


def build_report(sources, failures, stats, wall_seconds: float, absent: tuple[str, ...]) -> dict:
    seconds = Counter()
    for shard in stats:
        seconds.update(shard["seconds"])
    samples = sum(s["samples"] for s in stats)
    distorted = sum(s["distorted"] for s in stats)
    by_scenario = defaultdict(list)
    for shard in stats:
        for distortion_id, level, quality in shard["labels"]:
            by_scenario[f"{distortion_id:02d}-{level}"].append(quality)
    return {
        "sources": len(sources),
        "sources_ok": sum(s["status"] == "ok" for s in sources),
        "samples": samples,
        "distorted": distorted,
        "failures": len(failures),
        "failures_by_reason": dict(Counter(f["reason"] for f in failures)),
        "metrics_absent": list(absent),
        "wall_seconds": round(wall_seconds, 1),
        "samples_per_second": round(samples / wall_seconds, 2) if wall_seconds else None,
        "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "stage_images_per_second": {k: round(distorted / v, 2) for k, v in seconds.items() if v},
        "mean_quality_by_scenario": {k: round(sum(v) / len(v), 4)
                                     for k, v in sorted(by_scenario.items())},
    }


def summary_lines(report: dict, out: str) -> list[str]:
    lines = [
        f"dataset: {out}",
        f"sources: {report['sources']} ({report['sources_ok']} ok), samples: {report['samples']} "
        f"({report['distorted']} distorted), failures: {report['failures']}",
        f"time: {report['wall_seconds']} s, {report['samples_per_second']} samples/s",
    ]
    if report["failures_by_reason"]:
        lines.append("failures by reason: " + ", ".join(
            f"{reason} {count}" for reason, count in report["failures_by_reason"].items()))
    if report["metrics_absent"]:
        lines.append(f"labels without: {', '.join(report['metrics_absent'])} (weights missing)")
    return lines
