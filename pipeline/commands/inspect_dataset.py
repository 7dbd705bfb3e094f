"""`iqa-factory inspect OUT`: a dataset's summary, and a validation that every shard's tar,
parquet and stats agree and that the counts match the plan."""

import json
import tarfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from distortions.canonical import canonical_json
from labelers.ensemble import parsed as parse_ensemble
from labelers.errors import LabelerError
from pipeline.commands.deep_check import deep_check, record_differences
from pipeline.commands.storage_check import storage_summary
from pipeline.config import RunConfig, manifest_config, recorded_config
from pipeline.output_folder import staged_files
from pipeline.plan import Plan, differences, label_identity, read_plan
from pipeline.processes import in_processes
from pipeline.report import (
    libraries_differing_message,
    modes_line,
    near_duplicates_note,
    replay_differs,
)
from pipeline.report_check import (
    held_counts,
    report_count_problems,
    report_form_problems,
    stats_counts,
)
from shards.layout import (
    DEFAULT_STORE,
    ENSEMBLE_FILE,
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    REPORT_FILE,
    SOURCES_FILE,
    labels_file,
    labels_files,
    moved_splits,
    run_file,
    shard_name,
    tar_path,
)
from shards.lease import writing_now
from shards.reader import (
    DamagedRunFileError,
    RunFileError,
    ShardExamination,
    examine_shard,
    odd_entries,
    parse_index,
    read_index,
    read_sources,
    shards_listing,
    stray_files,
    tar_sha256,
)
from shards.sidecar import SidecarError, SidecarMetadata, quality_problem
from shards.storage import Location, redact
from shards.store_modes import stores_pixels
from shards.tar_stream import TAR_CHANGED, ChangedTarError, VerifiedTar
from shards.words import a_few

IMAGE_MEMBERS = ("json", "png")
# the tar bytes a checking process is given at least: one starts in about 2 s (its imports),
# and checks about 750 MB/s (16 shards of 42 MB on this 2-core machine: 0.9 s in one process,
# 2.5 s in two, their start included)
BYTES_PER_PROCESS = 2 << 30


Listing = list[tuple[str, tuple[str, ...]]]  # (key, its member extensions, sorted), in order
Records = dict[str, dict | None]  # key -> its parsed .json record (None: none, or unreadable)


def _listing(samples: Iterable[dict]) -> tuple[Listing, Records]:
    listing, records = [], {}
    for sample in samples:
        listing.append((sample["__key__"], tuple(sorted(name for name in sample
                                                        if not name.startswith("__")))))
        records[sample["__key__"]] = _parsed(sample.get("json"))
    return listing, records


def _parsed(data: bytes | None) -> dict | None:
    try:
        record = json.loads(data) if data is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def verified_listing(location: Location, index: int, store: str, sha256: str | None
                     ) -> tuple[Listing, Records] | str:
    """The listing and records of a shard's tar read once, its bytes hashed as they stream
    past: the problem instead where they are not `sha256` (its stats') or the tar cannot be
    read."""
    path = tar_path(location, index, store)
    try:
        return _listing(VerifiedTar(location, path, sha256))
    except ChangedTarError:
        return TAR_CHANGED
    except (tarfile.TarError, OSError) as error:  # where it stopped, the hash says why
        if tar_sha256(location, path) != sha256:
            return TAR_CHANGED
        return f"tar unreadable ({type(error).__name__}: {error})"


def _misstored(listing: Listing, rows: list[dict], store: str,
               keep_pngs: tuple[int, ...]) -> list[str]:
    """Keys whose members are not what the store mode keeps: .png and .json, or (a version
    kept as its recipe) .json alone."""
    expected = {row["key"]: IMAGE_MEMBERS if stores_pixels(store, row, keep_pngs) else
                ("json",) for row in rows}
    return [key for key, members in listing if key in expected and members != expected[key]]


@dataclass(frozen=True)
class ShardCheck:
    """What checking one shard needs (sent to a worker process: the plan's part of it only)."""

    location: Location
    digest: str
    index: int
    splits: tuple[tuple[str, str], ...]  # (ref_id, split) of the references planned in it
    per_reference: int  # samples a reference makes: itself and its versions
    store: str = DEFAULT_STORE
    keep_pngs: tuple[int, ...] = ()

    @classmethod
    def of(cls, location: Location, plan: Plan, index: int, per_reference: int,
           store: str = DEFAULT_STORE, keep_pngs: tuple[int, ...] = ()) -> "ShardCheck":
        return cls(location, plan.digest, index,
                   tuple((ref.ref_id, ref.split) for ref in plan.shard(index)), per_reference,
                   store, keep_pngs)


# ref_id -> (its shard, its status, its pixels' SHA-256) in a list
Routes = dict[str, tuple[int | None, str, str | None]]


def checked_shard(job: ShardCheck) -> tuple[list[str], Counter, Routes]:
    """(the shard's problems (none: it is sound), each naming the shard: its files, plan,
    sizes and tar SHA-256 against its stats, then its members against the parquet index and
    the plan; the REPORT_COUNTS its stats give (0 for one that is no count: a problem of its
    own); the routes its sources list gives): its stats, lists and tar are each read once."""
    examination = examine_shard(job.location, job.index, job.digest, job.store)
    problems = [f"shard {shard_name(job.index)}: {problem}" for problem in
                examination.problems or _content_problems(job, examination)]
    routes = {row["ref_id"]: (job.index, row.get("status"), row.get("sha256"))
              for row in examination.sources or ()}
    failures = (examination.stats or {}).get("failures")
    counted = stats_counts(examination.stats) + Counter(
        {"failures": failures} if type(failures) is int else {})
    return problems, counted, routes


def _content_problems(job: ShardCheck, examination: ShardExamination) -> list[str]:
    """What is wrong inside a shard whose files agree with its stats: its tar's records
    against its parquet rows, the store mode, the plan and the recorded failures."""
    stats, location, index = examination.stats, job.location, job.index
    read = verified_listing(location, index, job.store, stats.get("tar_sha256"))
    if isinstance(read, str):
        return [read]
    listing, records = read
    rows = parse_index(examination.index).to_pylist()  # (chains derived)
    problems = []
    if [key for key, _ in listing] != [row["key"] for row in rows]:
        problems.append("tar members and parquet rows differ")
    elif differing := record_differences(rows, records):
        problems.append(f"{len(differing)} record(s) of the tar differ from the index, e.g. "
                        f"{differing[0]}")
    misstored = _misstored(listing, rows, job.store, job.keep_pngs)
    if misstored:
        problems.append(f"{len(misstored)} samples lack or hold a PNG against the store mode "
                        f"{job.store} (first {misstored[0]})")
    planned = dict(job.splits)
    strangers = {row["ref_id"] for row in rows} - set(planned)
    if strangers:
        problems.append(f"references not in its plan: {sorted(strangers)}")
    problems += _split_problems(planned, rows, examination.sources or ())
    if not isinstance(stats.get("failures"), int):
        return [*problems, "its stats record no failures count"]
    references = {row["ref_id"] for row in rows if row["kind"] == "reference"}
    problems += _count_problems(stats, rows, len(references))
    # the failed versions of the references written (one left out whole may have lost some
    # versions before its labels failed: its failures count no sample of the tar)
    version_failures = sum(failure.get("ref_id") in references
                           for failure in examination.failures)
    expected = len(references) * job.per_reference - version_failures
    if len(rows) != expected:
        problems.append(f"{len(rows)} samples, but the plan and the recorded failures account "
                        f"for {expected}")
    return problems


def _split_problems(planned: dict[str, str], rows: list[dict], sources: list[dict]
                    ) -> list[str]:
    """Where the shard's records or its sources list (which the run's end merges into
    sources.parquet, where readers take the splits from) put a planned reference in another
    split than the plan: a training reference would be read as a test one."""
    problems = []
    for what, entries in (("records", rows), ("sources list", sources)):
        moved = moved_splits(planned, ((entry.get("ref_id"), entry.get("split"))
                                       for entry in entries))
        if moved:
            problems.append(f"its {what} put {len(moved)} reference(s) in another split than "
                            f"the plan ({a_few(moved)}): changed after it was written")
    return problems


def _count_problems(stats: dict, rows: list[dict], references: int) -> list[str]:
    """Where the stats' counts are not the parquet's: references, distorted samples, and the
    labels of the single-type versions (a version of a chain has no type of its own); a
    count the stats of an older shard do not hold is not compared."""
    counts = {"references": references, "distorted": len(rows) - references,
              "labels": sum(row["kind"] == "distorted" and len(row["chain"]) == 1
                            for row in rows)}
    recorded = {name: stats[name] for name in counts if name in stats}
    if "labels" in recorded:
        labels = recorded["labels"]
        recorded["labels"] = len(labels) if isinstance(labels, list) else labels
    return [f"its stats count {recorded[name]} {name}, its parquet {counts[name]}"
            for name in recorded if recorded[name] != counts[name]]


DAMAGE = (KeyError, TypeError, ValueError, AttributeError)  # what a mangled field raises


def _damaged(name: str, error: Exception) -> RunFileError:
    """The named run file's damage, from what reading a field of it raised."""
    if isinstance(error, RunFileError):
        return error
    if isinstance(error, KeyError):
        return RunFileError(f"{name} lacks the field {error}: damaged")
    return RunFileError(f"{name} is damaged ({type(error).__name__}: {error})")


def _read_manifest(location: Location) -> tuple[dict, RunConfig, str]:
    """The run's manifest, its configuration and its ensemble hash."""
    manifest = run_file(location, MANIFEST_FILE)
    config = recorded_config(manifest, redact(location.path(MANIFEST_FILE)))
    try:
        return manifest, config, str(manifest["ensemble_hash"])
    except DAMAGE as error:
        raise _damaged(MANIFEST_FILE, error) from error


def _shards_checked(location: Location, plan: Plan, config: RunConfig, workers: int
                    ) -> tuple[list[str], Counter, dict]:
    """Every planned shard checked (`checked_shard`, in up to `workers` processes), and the
    files in shards/ that belong to none: (problems, counts, routes)."""
    jobs = [ShardCheck.of(location, plan, index, 1 + config.versions_count, config.store,
                          config.keep_pngs) for index in range(plan.shard_count)]
    shard_problems, counts, routes = [], Counter(), {}
    listed = shards_listing(location)  # (its files' bytes size the processes)
    processes = min(workers, sum(size or 0 for size in listed.values()) // BYTES_PER_PROCESS)
    checked = in_processes(checked_shard, jobs, processes)
    for problems, counted, routed in tqdm(checked, total=len(jobs),
                                          desc="shards checked", unit="shard", leave=False,
                                          disable=len(jobs) < 4):  # each tar read and hashed
        shard_problems, counts = shard_problems + problems, counts + counted
        routes.update(routed)
    stray = stray_files(location, plan.shard_count, config.store, listed)
    if stray:
        shard_problems.append(
            f"{len(stray)} file(s) in shards/ belong to none of the plan's {plan.shard_count} "
            f"shards ({a_few(stray)}): left by "
            "another run or copied in; remove them")
    if odd := odd_entries(location):
        named = [f"{name}: {kind}" for name, kind in sorted(odd.items())]
        shard_problems.append(
            f"{len(odd)} entr{'y is' if len(odd) == 1 else 'ies are'} in shards/ that no "
            f"shard file can be ({a_few(named, separator='; ')}): remove them")
    return shard_problems, counts, routes


def inspect(out: str, deep: int = 0, sample_seed: int = 0, workers: int = 1
            ) -> tuple[list[str], list[str]]:
    """(summary lines, problems) of the dataset in `out`, its shards checked in `workers`
    processes; with `deep` > 0 that many versions (drawn with `sample_seed`) are also
    replayed from their recipes and re-scored (pipeline.commands.deep_check)."""
    location = Location.parse(out)
    if not location.exists(location.root):
        return [], [f"{redact(out)} does not exist"]
    try:
        plan = read_plan(location)
        manifest, config, ensemble_hash = _read_manifest(location)
    except RunFileError as error:
        return [], [f"{redact(out)}: {error}"]
    shard_problems, counts, routes = _shards_checked(location, plan, config, workers)
    lines = [f"dataset {redact(out)}: {len(plan.references)} references in "
             f"{plan.shard_count} shards, plan {plan.digest[:12]}, ensemble {ensemble_hash}",
             modes_line(config.modes())]
    held = None if shard_problems else held_counts(  # what sound shards hold
        counts, (route[1] for route in routes.values()), len(plan.duplicates))
    report_lines, problems = _report(location, held)
    problems += ensemble_problems(location, config, ensemble_hash)
    if location.exists(location.path(REPORT_FILE)):  # the run finished: its merged lists
        problems += sources_problems(location, plan, routes)
        if not shard_problems:
            problems += failures_problems(location, counts["failures"] + len(plan.duplicates))
    # first: a manifest edited against the plan (the shards are counted by its grid)
    lines = lines + report_lines
    problems = manifest_problems(manifest, plan, config) + shard_problems + problems
    if not shard_problems:  # every planned shard complete; a sidecar matches a whole dataset
        shards = list(range(plan.shard_count))
        problems += sidecar_problems(location, plan.digest, shards)
        storage_lines, storage_problems = storage_summary(location, config.store, shards,
                                                          counts["samples"])
        lines, problems = lines + storage_lines, problems + storage_problems
    lines += _staged_note(location)
    if deep:
        deep_lines, deep_problems = deep_check(location, deep, sample_seed,
                                               keep_pngs=config.keep_pngs)
        lines, problems = lines + deep_lines, problems + deep_problems
    return lines, problems


def manifest_problems(manifest: dict, plan: Plan, config: RunConfig) -> list[str]:
    """Where a read manifest.json (what readers and training take the run's grid and modes
    from) is not the run of plan.json (which the shards' stats name by its digest): its plan
    digest, counts, store and modes (where it records them), and the plan inputs its
    configuration and labels make (as generate makes them), in words."""
    planned = {"plan_digest": plan.digest, "shards": plan.shard_count,
               "references": len(plan.references)}
    modes = manifest.get("modes") if isinstance(manifest.get("modes"), dict) else {}
    configured = {"store": config.store,  # a field or mode an older manifest lacks: not
                  **{f"modes.{name}": value for name, value in config.modes().items()}}
    recorded = {**manifest, **{f"modes.{name}": value for name, value in modes.items()}}
    differing = [f"{name} {recorded[name]!r}, {whose} {value!r}"
                 for whose, expected in (("the plan's", planned), ("its config's", configured))
                 for name, value in expected.items()
                 if name in recorded and canonical_json(recorded[name]) != canonical_json(value)]
    try:  # (a plan made before it held what Q means: its inputs alone)
        labels = (label_identity(manifest.get("ensemble_hash"), manifest.get("metrics_absent"))
                  if "ensemble_hash" in plan.inputs else {})
        rule = {"split_by": plan.inputs["split_by"]} if (
            config.split_by_name and "split_by" in plan.inputs) else {}  # (ids it holds)
        made = Plan({**config.plan_inputs(), **rule, **labels}, plan.references,
                    plan.duplicates)
        differing += [f"config {change}" for change in differences(plan, made)]
    except (TypeError, ValueError) as error:  # metrics_absent not a list of names
        differing.append(f"its labels are not readable ({error})")
    if not differing:
        return []
    return [f"{MANIFEST_FILE} is not the run of {PLAN_FILE} ({a_few(differing, separator='; ')})"
            ": edited or damaged; rerun generate on the dataset to write it again"]


def ensemble_problems(location: Location, config: RunConfig, ensemble_hash: str) -> list[str]:
    """What is wrong with a labelled run's ensemble.json, the ensemble its Q was made with
    (inspect --deep makes each sampled version's Q again under it), in words: missing, not an
    ensemble, or another one than the manifest names."""
    if not config.labelled:
        return []
    path, remedy = location.path(ENSEMBLE_FILE), "rerun generate on the dataset to write it again"
    if not location.exists(path):
        return [f"no {ENSEMBLE_FILE}: the ensemble the run's Q was made with is not recorded; "
                f"{remedy}"]
    try:
        recorded = parse_ensemble(location.read_bytes(path), ENSEMBLE_FILE).hash
    except (OSError, ValueError, LabelerError) as error:
        return [f"{ENSEMBLE_FILE} is damaged ({error}); {remedy}"]
    if recorded != ensemble_hash:
        return [f"{ENSEMBLE_FILE} holds ensemble {recorded}, not the run's {ensemble_hash} "
                f"({MANIFEST_FILE}); {remedy}"]
    return []


def _staged_note(location: Location) -> list[str]:
    """A line on the files a writer staged (in shards/, or of a run file) and has not renamed
    into place: a run under way, or one interrupted (the next generate or convert of the
    folder removes them)."""
    staged = staged_files(location)
    if not staged:
        return []
    megabytes = sum(info.size for info in staged) / 1e6
    return [f"note: {len(staged)} staged file(s) ({megabytes:.1f} MB, e.g. "
            f"{staged[0].base_name}) are no part of the dataset: a write under way, "
            "or one interrupted (the next generate or convert of this folder removes them)"]


def _report(location: Location, held: dict[str, int] | None
            ) -> tuple[list[str], list[str]]:
    """report.json's summary lines and problems (absent: the run has not finished); `held`:
    its counts as the shards give them (None where a shard is not sound), which its own
    must equal."""
    if not location.exists(location.path(REPORT_FILE)):
        return [], ["no report.json: " + (writing_now(location) or
                                          "the run has not finished (rerun generate to "
                                          "resume)")]
    try:
        report = run_file(location, REPORT_FILE)
    except RunFileError as error:
        return [], [str(error)]
    if form := report_form_problems(report):
        return [], form
    lines = [f"samples {report['samples']} ({report['distorted']} distorted), sources ok "
             f"{report['sources_ok']}/{report['sources']}, failures "
             f"{report['failures_by_reason']}"]
    if report["metrics_absent"]:
        lines.append(f"labels without: {', '.join(report['metrics_absent'])}")
    problems = report_count_problems(report, held or {})
    if not (held or report)["samples"]:
        problems.append(f"no sample: none of the {report['sources']} sources could be "
                        "used (their reasons are in failures.jsonl)")
    problems += [f"{d['ref_id']} is the same pixels as {d['of']} in another split "
                 f"({' and '.join(d['splits'])}): remove one of the two sources"
                 for d in report.get("pixel_duplicates", ()) if len(d["splits"]) > 1]
    if any(len(d["splits"]) > 1 for d in report.get("near_duplicates", ())):
        lines.append("warning: " + near_duplicates_note(report["near_duplicates"]))
    if report.get("libraries_differing"):  # a problem where readers replay them
        (problems if replay_differs(report) else lines).append(
            libraries_differing_message(report))
    return lines, problems


def sources_problems(location: Location, plan: Plan, routes: Routes | None = None
                     ) -> list[str]:
    """Where sources.parquet, which readers take the splits from, is not one row per planned
    source (duplicates included) in the plan's split, or (given the shards' lists' `routes`)
    routes a source otherwise."""
    try:
        table = read_sources(location)
    except (FileNotFoundError, DamagedRunFileError) as error:
        return [f"{error}"]
    split = {reference.ref_id: reference.split for reference in plan.references}
    expected = {**split, **{d.ref_id: split[d.of] for d in plan.duplicates}}
    rows = table.select(["ref_id", "split"]).to_pylist()
    listed = Counter(row["ref_id"] for row in rows)
    if listed != Counter(list(expected)):
        unplanned = sorted(set(listed) - set(expected))[:3]
        absent = sorted(set(expected) - set(listed))[:3]
        return [f"{SOURCES_FILE} lists {len(rows)} sources, the plan {len(expected)} (not "
                f"planned: {unplanned}, not listed: {absent}, listed twice: "
                f"{sorted(ref for ref, count in listed.items() if count > 1)[:3]}): damaged; "
                "generate with the same options rebuilds it"]
    moved = moved_splits(expected, ((row["ref_id"], row["split"]) for row in rows))
    if moved:
        return [f"{SOURCES_FILE} puts {len(moved)} sources in another split than the plan "
                f"({', '.join(moved[:3])}): damaged; generate with the same options rebuilds "
                "it"]
    if routes is None:
        return []
    return _routing_problems(plan, table.select(["ref_id", "shard", "status", "sha256"]),
                            routes)


def failures_problems(location: Location, held: int) -> list[str]:
    """Where failures.jsonl, merged from the shards' lists and the plan's duplicates, does
    not hold the `held` failures they do, or its reasons are not the report's tally."""
    remedy = "edited or damaged; rerun generate on the dataset to merge it again"
    try:
        failures = location.read_json_lines(location.path(FAILURES_FILE))
    except FileNotFoundError:
        return [f"no {FAILURES_FILE}: the run's failures are not listed; {remedy}"]
    except (ValueError, UnicodeDecodeError) as error:
        return [f"{FAILURES_FILE} is not JSON lines ({error}): {remedy}"]
    if len(failures) != held:
        return [f"{FAILURES_FILE} lists {len(failures)} failures, the shards' lists and the "
                f"plan's duplicates {held}: {remedy}"]
    reasons = Counter(failure.get("reason") if isinstance(failure, dict) else None
                      for failure in failures)
    try:
        tallied = run_file(location, REPORT_FILE)["failures_by_reason"]
    except (RunFileError, KeyError, TypeError):
        return []  # the report's own problems are named by _report
    if reasons != tallied:
        return [f"{FAILURES_FILE} lists failures by reason {dict(reasons)}, {REPORT_FILE} "
                f"{tallied}: {remedy}"]
    return []


def _routing_problems(plan: Plan, table: pa.Table, routes: Routes) -> list[str]:
    """Where sources.parquet's shard, status or pixels' SHA-256 of a source (how readers
    choose the shards to open and the references to read, and what the reference is) is not
    its shard's own list's (`routes`; a duplicate: no shard, the SHA-256 not compared); a
    shard whose list cannot be read is named by its own check."""
    lists = {**{d.ref_id: (None, "duplicate", None) for d in plan.duplicates}, **routes}

    def differs(row: dict) -> bool:
        shard, status, sha256 = lists[row["ref_id"]]
        return ((row["shard"], row["status"]) != (shard, status)
                or (sha256 is not None and row["sha256"] != sha256))
    differing = [f"{row['ref_id']} {row['status']} in shard {row['shard']} (pixels "
                 f"{str(row['sha256'])[:8]}), its shard's list: {lists[row['ref_id']][1]} in "
                 f"shard {lists[row['ref_id']][0]} (pixels {str(lists[row['ref_id']][2])[:8]})"
                 for row in table.to_pylist() if row["ref_id"] in lists and differs(row)]
    return [f"{SOURCES_FILE} routes {len(differing)} sources otherwise than their shards' "
            f"lists ({'; '.join(differing[:3])}): readers would miss their samples; damaged, "
            "generate with the same options rebuilds it"] if differing else []


def sidecar_problems(location: Location, digest: str, shards: list[int] | None = None
                     ) -> list[str]:
    """Problems of relabel's sidecars: each must hold one finite Q for every distorted sample
    of the dataset (the plan `digest`'s, as readers require; of its complete shards, or of
    `shards` where the caller knows them complete), under the ensemble its name says."""
    names = labels_files(location)
    if not names:
        return []
    try:
        index = read_index(location, shards, columns=["key", "kind"], with_shard=True,
                           kind="distorted")
    except (OSError, ValueError):
        return []  # the shards' own problems are reported by checked_shard
    expected = index.select(["key", "shard"])
    scored = _scored_metrics(location)
    return [problem for name in names
            for problem in _sidecar_problems(location, name, expected, digest, scored)]


def _scored_metrics(location: Location) -> set[str] | None:
    """The metrics the run scored (its manifest's, less the report's metrics_absent); None
    where its run files cannot say (their own problems are reported apart)."""
    try:
        config = manifest_config(location)
        absent = run_file(location, REPORT_FILE).get("metrics_absent", [])
        return set(config.metrics) - set(absent)
    except (RunFileError, TypeError, AttributeError):
        return None


def _sidecar_problems(location: Location, name: str, expected: pa.Table, digest: str,
                      scored: set[str] | None = None) -> list[str]:
    """A sidecar's problems; `expected`: the dataset's distorted samples' key and shard (a
    table: 23.1M keys at paper scale, compared in Arrow, never as Python objects), `scored`:
    the metrics the run scored (None: unknown)."""
    try:
        with location.fs.open_input_file(location.path(name)) as handle:
            table = pq.read_table(handle)
        placement = _placement_problem(
            table.select(["key", "shard"] if "shard" in table.column_names else ["key"]),
            expected)
        quality = quality_problem(table)
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as error:
        return [f"{name} is unreadable ({type(error).__name__}: {error}): relabel again"]
    try:
        metadata = SidecarMetadata.of(table.schema, name)
    except SidecarError as error:
        return [str(error)]
    made_for = metadata.plan_digest  # none: a sidecar made before
    problems = []
    if name != labels_file(str(metadata.ensemble_hash)):
        problems.append(f"{name} records ensemble {metadata.ensemble_hash or 'none'}, not the "
                        "one its name says")
    unscored = sorted(set(metadata.metrics_used or ()) - scored) if scored is not None else []
    if unscored:
        problems.append(f"{name} says its Q is made of {', '.join(unscored)}, which this "
                        "dataset never scored: relabel again")
    if made_for and made_for != digest:
        problems.append(f"{name} was made for another dataset (plan {made_for[:12]}, this one "
                        f"{digest[:12]}): readers refuse it; relabel again")
    if placement:
        problems.append(f"{name} {placement}")
    if quality:
        problems.append(f"{name}: {quality}: relabel again")
    return problems


def _placement_problem(labelled: pa.Table, expected: pa.Table) -> str:
    """'' where the sidecar (`labelled`: its key and, where it has one, shard columns) labels
    each distorted sample of the dataset once, filed under the sample's shard; else what
    differs."""
    key = labelled["key"]
    text = key.type.value_type if pa.types.is_dictionary(key.type) else key.type
    if pa.types.is_string(text) or pa.types.is_large_string(text):  # as the index's keys
        labelled = labelled.set_column(0, "key", key.cast(pa.string()))
    if mismatch := _key_mismatch(labelled, expected):
        return f"labels {mismatch}: relabel again"
    if "shard" in labelled.column_names and (elsewhere := _filed_elsewhere(labelled, expected)):
        return f"files {elsewhere}: readers would find no Q for them; relabel again"
    return ""


def _key_mismatch(labelled: pa.Table, expected: pa.Table) -> str:
    """'' where the sidecar's keys are the dataset's distorted samples', each once; else how
    many it labels against how many there are, and the first (in key order) of the samples it
    misses and of the keys it labels that the dataset does not hold."""
    distinct = pc.count_distinct(labelled["key"]).as_py()
    missing = expected.join(labelled.select(["key"]), "key", join_type="left anti")["key"]
    unknown = labelled.join(expected.select(["key"]), "key", join_type="left anti")["key"]
    if distinct == labelled.num_rows and not len(missing) and not len(unknown):
        return ""
    return (f"{distinct} samples ({labelled.num_rows} rows) but the dataset has "
            f"{expected.num_rows} distorted ones"
            + (f" (first missing {pc.min(missing).as_py()})" if len(missing) else "")
            + (f" (first unknown {pc.min(unknown).as_py()})" if len(unknown) else ""))


def _filed_elsewhere(labelled: pa.Table, expected: pa.Table) -> str:
    """'' where each label is filed under its sample's shard; else how many are not and the
    first of them in key order."""
    pairs = labelled.rename_columns(["key", "filed"]).join(expected, "key")
    differs = pc.fill_null(pc.not_equal(pairs["filed"], pairs["shard"]), True)  # null: no shard
    wrong = pairs.filter(differs).sort_by("key")
    if not wrong.num_rows:
        return ""
    first = wrong.slice(0, 1).to_pylist()[0]
    return (f"{wrong.num_rows} label(s) under another shard than their samples' (e.g. "
            f"{first['key']} in shard {first['filed']}, its sample in shard {first['shard']})")


