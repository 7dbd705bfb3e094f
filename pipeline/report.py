"""The run's own files: the manifest and ensemble before the shards; after them, the merged
sources and failures, and the report."""

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from labelers.ensemble import Ensemble
from labelers.registry import metric_versions, package_version
from pipeline.config import MODE_DEFAULTS, RunConfig
from pipeline.errors import PipelineError, PlanMismatchError
from pipeline.likeness import NEAR_BITS, LookAlikes
from pipeline.plan import Plan
from pipeline.scenario_quality import recorded_sums
from pipeline.sources import UNREADABLE, printable, skipped_note, unlisted_note
from shards.layout import (
    DEFAULT_STORE,
    ENSEMBLE_FILE,
    FAILURES_FILE,
    MANIFEST_FILE,
    SOURCES_FILE,
    shard_name,
    shard_paths,
)
from shards.provenance import NOT_REPLAYED, library_versions
from shards.reader import ShardListsError, shard_lists, shard_stats
from shards.reads import read_ahead
from shards.schema import SOURCES_SCHEMA
from shards.storage import Location, redact


def write_run_files(location: Location, config: RunConfig, plan: Plan, ensemble: Ensemble,
                    absent: Iterable[str]) -> None:
    """manifest.json and, in a labelled run, ensemble.json, written before any shard
    (credentials in the sources or output URI are redacted)."""
    absent = tuple(absent)
    settings = {**config.to_json(), "sources": redact(config.sources), "out": redact(config.out)}
    manifest = {"config": settings, "plan_digest": plan.digest, "modes": config.modes(),
                "shards": plan.shard_count, "references": len(plan.references),
                "ensemble_hash": ensemble.hash if config.labelled else None,
                "metrics_absent": list(absent), "format": "shared/spec/shards.md",
                "store": config.store, "replay_libraries": library_versions(),
                "package_version": package_version("iqa-factory"),
                "metric_versions": metric_versions(  # of the metrics that score
                    tuple(key for key in config.metrics if key not in absent))}
    location.write_json(location.path(MANIFEST_FILE), manifest)
    if not config.labelled:
        return
    document = {**ensemble.to_json(), "metrics_used": metrics_used(ensemble, config, absent),
                "metrics_absent": list(absent)}
    location.write_json(location.path(ENSEMBLE_FILE), document)


def metrics_used(ensemble: Ensemble, config: RunConfig, absent: Iterable[str]) -> list[str]:
    """The ensemble's metrics Q is made of in this run (labels.md: the ensemble file records
    them): those --metrics computes whose weights are here; the weights renormalised over
    them."""
    return [key for key in ensemble.weights if key in config.metrics and key not in absent]


@dataclass
class Tally:
    """What the report needs, added up shard by shard (each shard's stats hold Q summed by
    scenario, so the driver's memory does not grow with the dataset)."""

    sources: int = 0
    sources_ok: int = 0
    samples: int = 0
    distorted: int = 0
    failures: Counter = field(default_factory=Counter)  # reason -> count
    seconds: Counter = field(default_factory=Counter)
    quality_sum: Counter = field(default_factory=Counter)  # "id-level" -> sum of Q
    quality_count: Counter = field(default_factory=Counter)
    first_with_pixels: dict = field(default_factory=dict)  # pixel SHA-256 -> (ref_id, split)
    pixel_duplicates: list = field(default_factory=list)
    look_alikes: LookAlikes = field(default_factory=LookAlikes)
    near_duplicates: list = field(default_factory=list)
    libraries: dict = field(default_factory=dict)  # library -> Counter(version -> shards)

    def add(self, stats: dict, sources: list[dict], failures: list[dict]) -> None:
        self.add_sources(sources, failures)
        self.samples += stats["samples"]
        self.distorted += stats["distorted"]
        self.seconds.update(stats["seconds"])
        recorded = stats.get("libraries") or {}  # none before they were kept
        here = library_versions()
        for name in here.keys() | recorded.keys():
            self.libraries.setdefault(name, Counter())[_shard_version(recorded, name, here)] += 1
        for scenario, (count, total) in recorded_sums(stats).items():
            self.quality_count[scenario] += count
            self.quality_sum[scenario] += total

    def add_sources(self, sources: list[dict], failures: list[dict]) -> None:
        """Count sources and failures; note references whose sized pixels repeat an earlier
        one's (the same image in other bytes: a re-encoded copy), and those of other pixels
        that look like an earlier one (pipeline.likeness: a copy re-encoded with loss,
        resized or edited)."""
        self.sources += len(sources)
        self.sources_ok += sum(row["status"] == "ok" for row in sources)
        self.failures.update(failure["reason"] for failure in failures)
        for row in sources:
            if row["status"] != "ok":
                continue
            if row["sha256"] in self.first_with_pixels:
                of, split = self.first_with_pixels[row["sha256"]]
                self.pixel_duplicates.append({"ref_id": row["ref_id"], "of": of,
                                              "splits": sorted({split, row["split"]})})
                continue
            self.first_with_pixels[row["sha256"]] = (row["ref_id"], row["split"])
            if row.get("phash") is None:  # (flat, or of a shard made before they were hashed)
                continue
            if alike := self.look_alikes.add((row["ref_id"], row["split"]), row["phash"]):
                (of, split), bits = alike
                self.near_duplicates.append({"ref_id": row["ref_id"], "of": of, "bits": bits,
                                             "splits": sorted({split, row["split"]})})

    def libraries_differing(self, recorded: dict) -> dict[str, dict]:
        """{library: {version: shards}} of the shards made with another version of a library
        than `recorded` (the manifest's): on another node, or before a resume; NOT_RECORDED
        the shards that record no version of a library or code this code records one of (made
        before it was recorded), "None" those that record it absent."""
        return {name: {str(version): count
                       for version, count in versions.items() if version != recorded.get(name)}
                for name, versions in sorted(self.libraries.items())
                if set(versions) - {recorded.get(name)}}


NOT_RECORDED = "not recorded"  # libraries_differing's version of shards that record none


def _shard_version(recorded: dict, name: str, here: dict) -> str | None:
    """A shard's version of library or code `name` (`recorded`: its stats' libraries):
    NOT_RECORDED where it records none of one this code has (`here`: made before that was
    recorded), None where it records it absent."""
    if name in recorded:
        return recorded[name]
    return NOT_RECORDED if here.get(name) is not None else None


# sources.parquet's rows per row group: one group per shard made a file of 8,751 groups at
# paper scale, 2.2-2.9 s to read where one group takes 0.1-0.2 s
SOURCES_ROW_GROUP = 1 << 16


def _lists_of(location: Location, index: int
              ) -> tuple[dict, list[dict], list[dict]] | ShardListsError:
    """A finished shard's stats and its sources and failures lists, or the error that says
    how the lists are not what the stats count."""
    stats = shard_stats(location, index)
    try:
        return (stats, *shard_lists(location, shard_paths(location, index), stats))
    except ShardListsError as error:
        return error


def merge(location: Location, plan: Plan) -> Tally:
    """sources.parquet and failures.jsonl from every shard's own lists, written as the shards
    are read and published when all are (a merge that fails leaves the earlier files as they
    were); returns the tally for the report."""
    tally, pending = Tally(), []
    with location.staged_output(location.path(SOURCES_FILE)) as sources_stream, \
            pq.ParquetWriter(sources_stream, SOURCES_SCHEMA) as sources_writer, \
            location.staged_output(location.path(FAILURES_FILE)) as failures_stream:
        shards = range(plan.shard_count)
        lists = tqdm(read_ahead(partial(_lists_of, location), shards), total=len(shards),
                     desc="shards' lists merged", unit="shard", leave=False,
                     disable=len(shards) < 100)  # (a minute or two at the paper's scale)
        for index, read in zip(shards, lists, strict=True):
            if isinstance(read, ShardListsError):  # changed since the shard was done
                raise PipelineError(f"{location.root}: shard {shard_name(index)}: {read}; "
                                    "nothing merged: run generate again to make it anew")
            stats, sources, failures = read
            if stats.get("plan_digest") != plan.digest:  # another driver's, written meanwhile
                raise PlanMismatchError(f"{location.root}: shard {shard_name(index)} was made "
                                         f"under plan {str(stats.get('plan_digest'))[:12]}, "
                                         f"not this run's {plan.digest[:12]}: another driver "
                                         "wrote this output; nothing merged")
            pending += sources
            if len(pending) >= SOURCES_ROW_GROUP:
                sources_writer.write_table(pa.Table.from_pylist(pending, schema=SOURCES_SCHEMA))
                pending = []
            failures_stream.write("".join(json.dumps(f, sort_keys=True) + "\n"
                                          for f in failures).encode())
            tally.add(stats, sources, failures)
        sources, failures = duplicate_records(plan)
        sources_writer.write_table(pa.Table.from_pylist(pending + sources,
                                                        schema=SOURCES_SCHEMA))
        failures_stream.write("".join(json.dumps(f, sort_keys=True) + "\n"
                                      for f in failures).encode())
        tally.add_sources(sources, failures)
    return tally


def duplicate_records(plan: Plan) -> tuple[list[dict], list[dict]]:
    """The sources rows and failures of the sources left out as byte duplicates: each is in
    the split of the reference it repeats, with no shard."""
    if not plan.duplicates:
        return [], []
    split = {reference.ref_id: reference.split for reference in plan.references}
    kind = plan.inputs.get("source_kind", MODE_DEFAULTS["source_kind"])
    rows, failures = [], []
    for duplicate in plan.duplicates:
        uri = printable(duplicate.uri)
        rows.append({"ref_id": duplicate.ref_id, "uri": uri, "shard": None,
                     "split": split[duplicate.of], "status": "duplicate",
                     "reason": "duplicate", "conversions": [], "source_kind": kind})
        failures.append({"ref_id": duplicate.ref_id, "uri": uri, "reason": "duplicate",
                         "detail": f"the same bytes as {duplicate.of}: recorded once"})
    return rows, failures


def build_report(tally: Tally, wall_seconds: float, absent: tuple[str, ...],
                 modes: dict | None = None, earlier_samples: int = 0) -> dict:
    """The run's report; `earlier_samples` (in shards an earlier run finished) are in the
    counts but not in the rate of this run."""
    made = tally.samples - earlier_samples
    return {
        "modes": modes or {},
        "sources": tally.sources,
        "sources_ok": tally.sources_ok,
        "samples": tally.samples,
        "distorted": tally.distorted,
        "failures": sum(tally.failures.values()),
        "failures_by_reason": dict(tally.failures),
        "metrics_absent": list(absent),
        "wall_seconds": round(wall_seconds, 1),
        "samples_per_second": round(made / wall_seconds, 2) if wall_seconds else None,
        "samples_this_run": made,
        "stage_seconds": {k: round(v, 1) for k, v in tally.seconds.items()},
        "stage_images_per_second": {k: round(tally.distorted / v, 2)
                                    for k, v in tally.seconds.items() if v},
        "mean_quality_by_scenario": {k: round(tally.quality_sum[k] / tally.quality_count[k], 4)
                                     for k in sorted(tally.quality_count)},
        "pixel_duplicates": tally.pixel_duplicates,
        "near_duplicates": tally.near_duplicates,
        # manifest.json records this driver's versions (shards.provenance.library_versions)
        "libraries_differing": tally.libraries_differing(library_versions()),
    }


def modes_line(modes: dict) -> str:
    """The generation modes a run set (those unset or empty left out), on one line."""
    return "modes: " + ", ".join(f"{key} {value}" for key, value in modes.items()
                                 if value not in (None, (), []))


def summary_lines(report: dict, out: str) -> list[str]:
    lines = [
        f"dataset: {redact(out)}",
        f"sources: {report['sources']} ({report['sources_ok']} ok), samples: {report['samples']} "
        f"({report['distorted']} distorted), failures: {report['failures']}",
        f"time: {report['wall_seconds']} s, {report['samples_per_second']} samples/s",
    ]
    if report["modes"]:
        lines.append(modes_line(report["modes"]))
    if report["failures_by_reason"]:
        lines.append("failures by reason: " + ", ".join(
            f"{reason} {count}" for reason, count in report["failures_by_reason"].items()))
    if report["failures_by_reason"].get(UNREADABLE):
        lines.append(f"note: {report['failures_by_reason'][UNREADABLE]} source(s) could not be "
                     f"read (failures.jsonl names them): the same command with "
                     "--retry-unreadable tries them again")
    across = [d for d in report["pixel_duplicates"] if len(d["splits"]) > 1]
    if report["pixel_duplicates"]:
        lines.append(f"warning: {len(report['pixel_duplicates'])} references are the same "
                     f"pixels as another in other bytes ({len(across)} across splits): "
                     "report.json pixel_duplicates lists them")
    if report.get("near_duplicates"):
        lines.append("warning: " + near_duplicates_note(report["near_duplicates"]))
    if report["metrics_absent"]:
        lines.append(f"labels without: {', '.join(report['metrics_absent'])} (weights missing)")
    if report.get("libraries_differing"):
        lines.append("warning: " + libraries_differing_message(report))
    if report.get("names_skipped"):
        lines.append("note: " + skipped_note(Counter(report["names_skipped"])))
    if report.get("folders_unlisted"):
        lines.append("warning: folders of SOURCES that cannot be read, their images left out: "
                     + unlisted_note(report["folders_unlisted"]))
    return lines


def near_duplicates_note(near: list[dict]) -> str:
    """What report.json's near_duplicates holds, on one line."""
    across = [d for d in near if len(d["splits"]) > 1]
    example = (across or near)[0]
    return (f"{len(near)} reference(s) look like another (perceptual hashes at most "
            f"{NEAR_BITS} bits apart: a copy re-encoded, resized or edited; {len(across)} across "
            f"splits; e.g. {example['ref_id']} like {example['of']}, {example['bits']} bit(s) "
            "apart): report.json near_duplicates lists them; remove the copies of one photo")


def libraries_differing_message(report: dict) -> str:
    """What report.json's libraries_differing means for the dataset's store mode."""
    message = (f"shards were made with other library versions or code than manifest.json "
               f"records ({_differing_text(report['libraries_differing'])}): a rerun on the "
               "recorded versions would not give their bytes, and other code may have scored "
               "or distorted them otherwise")
    if replay_differs(report):
        message += (", and their recipes replay only on those versions (a reader elsewhere "
                    "stops at the first replay whose SHA-256 differs)")
    return message


def _differing_text(differing: dict) -> str:
    """'numpy 1.0 in 2 shards, scipy, torch not recorded in 1 shard': the libraries whose
    shards record none named together, by the shards that record none."""
    def shards(count: int) -> str:
        return f"{count} shard{'s' if count > 1 else ''}"
    named, unrecorded = [], {}
    for name, versions in differing.items():
        for version, count in versions.items():
            if version == NOT_RECORDED:
                unrecorded.setdefault(count, []).append(name)
            else:
                named.append(f"{name} {version} in {shards(count)}")
    return ", ".join(named + [f"{', '.join(names)} {NOT_RECORDED} in {shards(count)}"
                              for count, names in unrecorded.items()])


def replay_differs(report: dict) -> bool:
    """Whether readers of the dataset replay recipes and a library or code that a replay runs
    differs between its shards (not only the labelers', the pipeline's or the version)."""
    return replays_recipes(report.get("modes", {})) and any(
        name not in NOT_REPLAYED for name in report.get("libraries_differing") or {})


def replays_recipes(modes: dict) -> bool:
    """Whether readers of a dataset made in these modes replay versions from recipes."""
    return modes.get("store", DEFAULT_STORE) != DEFAULT_STORE
