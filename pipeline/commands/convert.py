"""`iqa-factory convert SOURCE TARGET --store MODE [--keep-pngs TYPES]` and `iqa-factory materialize
SOURCE TARGET` (convert to images): a finished dataset rewritten in another storage mode, shard by
shard, into the files `generate --store MODE` writes for the same run: the same tars, byte for
byte, the same parquet indexes, the same plan digest.

A version the target keeps as a PNG and the source as its recipe is replayed, checked against
its SHA-256 and encoded; a version the source keeps as a PNG and the target as its recipe is
dropped only once its replay here gives the stored pixels (a `ConversionError` names the one
that does not: nothing is lost silently). So a dataset travels as recipes (the smallest copy)
and becomes, where it is trained on, the hybrid or images dataset that machine's loader wants.
Shards are independent: several run at once with `workers`, and a rerun skips the shards
already complete in TARGET."""

import json
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.commands.inspect_dataset import (
    ensemble_problems,
    sidecar_problems,
    sources_problems,
)
from pipeline.config import MODE_DEFAULTS, STORAGE_INPUTS, RunConfig, recorded_config
from pipeline.errors import PlanMismatchError, UnfinishedDatasetError
from pipeline.output_folder import overlap, refuse_foreign, refuse_unusable, remove_staged
from pipeline.plan import Plan, differences, finished_plan, persist_or_check, read_plan
from pipeline.processes import in_processes
from shards.layout import (
    DEFAULT_STORE,
    ENSEMBLE_FILE,
    FAILURES_FILE,
    MANIFEST_FILE,
    REPORT_FILE,
    SOURCES_FILE,
    RunFileError,
    labels_files,
    run_file,
    shard_paths,
    tar_path,
)
from shards.lease import Lease, live_writer
from shards.png import decode_png, encode_png
from shards.provenance import library_versions
from shards.reader import shard_problems, shard_stats
from shards.reads import read_ahead
from shards.replay import Pending, ReplayContext, ReplayError, changed_reference
from shards.schema import pixel_sha256
from shards.storage import Location, redact
from shards.store_modes import stores_pixels
from shards.tar_stream import VerifiedTar
from shards.writer import ShardWriter

COPIED_FILES = (SOURCES_FILE, FAILURES_FILE, ENSEMBLE_FILE)
WRITER_STATS = ("shard", "samples", "tar_bytes", "tar_sha256", "parquet_bytes",  # finish's own
                "parquet_sha256", "write_seconds")
# what a record that is not one of this project's raises as it is read
MALFORMED = (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError)


class ConversionError(ValueError):
    """A dataset that cannot be converted (no plan, incomplete, already in the target mode),
    or a version whose PNG cannot be dropped (its replay here differs from it)."""


@dataclass(frozen=True)
class Storage:
    """How a dataset stores its versions: its store mode and the types hybrid keeps PNGs of."""

    store: str = DEFAULT_STORE
    keep_pngs: tuple[int, ...] = ()

    @classmethod
    def of(cls, config: RunConfig) -> "Storage":
        return cls(config.store, config.keep_pngs)

    def keeps_png(self, record: dict) -> bool:
        return stores_pixels(self.store, record, self.keep_pngs)

    def describe(self) -> str:
        kept = f" --keep-pngs {','.join(map(str, self.keep_pngs))}" if self.keep_pngs else ""
        return f"{self.store}{kept}"


@dataclass(frozen=True)
class Job:
    """One shard to convert from `source` (stored as `was`, its plan `source_digest`) into
    `target` (stored as `becomes`) under the target plan `digest`."""

    source: str
    was: Storage
    target: str
    becomes: Storage
    index: int
    digest: str
    context: ReplayContext
    source_digest: str  # the source's plan, as read at the start: its shards' own


def _decoded(key: str, png: bytes) -> np.ndarray:
    """A sample's stored PNG, decoded; a ConversionError naming the sample where it is not
    one."""
    try:
        return decode_png(png)
    except ValueError as error:
        raise ConversionError(f"sample {key}: {error} (its shard is damaged)") from None


def _verify_drop(key: str, meta: dict, png: bytes, reference: np.ndarray,
                 context: ReplayContext) -> None:
    """Check that a stored version replays here into its PNG's pixels, or say which does not."""
    try:
        Pending(key, reference, meta, context).pixels()
    except ReplayError as error:
        raise ConversionError(f"{error}: its PNG is kept (convert to a mode that stores it)"
                              ) from error
    if pixel_sha256(_decoded(key, png)) != meta["sha256"]:
        raise ConversionError(f"sample {key}: its PNG's pixels are not the recorded SHA-256")


def _reference(references: dict[str, np.ndarray], key: str, meta: dict) -> np.ndarray:
    """A version's reference pixels, read before it in its shard (the spec's order)."""
    if meta["ref_id"] not in references:
        raise ConversionError(f"sample {key}: its reference {meta['ref_id']}_ref is not before "
                              "it in its shard")
    return references[meta["ref_id"]]


def convert_shard(job: Job) -> tuple[int, int]:
    """Write one shard of the target dataset: (versions replayed, PNGs dropped)."""
    source, target = Location.parse(job.source), Location.parse(job.target)
    stats = shard_stats(source, job.index)
    if stats.get("plan_digest") != job.source_digest:
        raise ConversionError(_source_changed(job.source, f"its shard {job.index} is of plan "
                                                          f"{str(stats.get('plan_digest'))[:12]}"))
    tar = VerifiedTar(source, tar_path(source, job.index, job.was.store),
                      stats.get("tar_sha256", ""))
    writer = ShardWriter(target, job.index, job.becomes.store)
    counts = Counter()
    references: dict[str, np.ndarray] = {}
    try:
        for sample in tar:
            try:
                meta, png = _converted(job, sample, references, counts)
            except Exception as error:
                tar.check()  # a tar changed since it was written is named as that first
                if isinstance(error, MALFORMED):
                    raise ConversionError(f"sample {sample['__key__']}: its record cannot be "
                                          f"read ({type(error).__name__}: {error})") from None
                raise
            writer.add(meta, png)
        paths = shard_paths(target, job.index)
        target.delete(paths["stats"])  # an earlier convert's: unfinished until its own
        for kind in ("sources", "failures"):  # before the stats, which finish the shard
            writer.write_list(kind, source.read_bytes(shard_paths(source, job.index)[kind]))
        writer.publish()
    except BaseException:
        writer.abort()
        raise
    writer.write_stats({**{key: value for key, value in stats.items()
                           if key not in WRITER_STATS}, "plan_digest": job.digest})
    return counts["replayed"], counts["dropped"]


def _converted(job: Job, sample: dict, references: dict[str, np.ndarray], counts: Counter
               ) -> tuple[dict, bytes | None]:
    """A source sample's record and the PNG the target keeps of it (None: its recipe); a
    reference's pixels are kept in `references` for the versions after it."""
    meta, png = json.loads(sample["json"]), sample.get("png")
    key, keep = sample["__key__"], job.becomes.keeps_png(meta)
    if meta["kind"] == "reference":
        references[meta["ref_id"]] = _decoded(key, png)
        if problem := changed_reference(key, references[meta["ref_id"]], meta):
            raise ConversionError(problem)
    elif png is None and keep:
        pending = Pending(key, _reference(references, key, meta), meta, job.context)
        png = encode_png(pending.pixels())
        counts["replayed"] += 1
    elif png is not None and not keep:
        _verify_drop(key, meta, png, _reference(references, key, meta), job.context)
        png = None
        counts["dropped"] += 1
    return meta, png


def _copy(source: Location, target: Location, path: str, to: str) -> None:
    if source.exists(path):
        target.write_bytes(to, source.read_bytes(path))


def _copy_sidecar(source: Location, target: Location, name: str, digest: str) -> None:
    """A relabel sidecar, its plan digest the target's: the same samples under the same keys,
    and readers check it against the plan of the shards they read. Its row groups are kept
    (relabel writes one a shard, which a reader of one shard reads alone: shards.sidecar)."""
    with source.fs.open_input_file(source.path(name)) as handle:
        parquet = pq.ParquetFile(handle)
        schema = parquet.schema_arrow
        metadata = {**(schema.metadata or {}), b"plan_digest": digest.encode()}
        with target.staged_output(target.path(name)) as stream, \
                pq.ParquetWriter(stream, schema.with_metadata(metadata)) as writer:
            for group in range(parquet.num_row_groups):
                writer.write_table(parquet.read_row_group(group))


def _source_changed(source_root: str, what: str) -> str:
    return (f"{redact(source_root)} changed while it was converted ({what}, not the plan read "
            "at the start: a generate --restart there?): nothing of it is kept as the "
            "target's; convert again once the source is finished")


def _check_source_unchanged(source: Location, digest: str) -> None:
    """A ConversionError where the source is no longer the dataset of plan `digest` that the
    conversion read (its plan, or its manifest's, changed; or a run writes it now)."""
    try:
        recorded = {"plan.json": read_plan(source).digest,
                    MANIFEST_FILE: run_file(source, MANIFEST_FILE).get("plan_digest")}
    except RunFileError as error:
        raise ConversionError(_source_changed(source.root, str(error))) from None
    changed = [f"its {name} is of plan {str(value)[:12]}" for name, value in recorded.items()
               if value != digest]
    if changed or (writer := live_writer(source)):
        raise ConversionError(_source_changed(
            source.root, "; ".join(changed) or f"a run writes it now: {writer}"))


def _source(source: Location) -> tuple[Plan, RunConfig]:
    """The source's plan and run configuration, refusing a dataset that is not a complete one
    written by generate."""
    try:
        plan = finished_plan(source)
    except UnfinishedDatasetError as error:
        raise ConversionError(str(error)) from None
    manifest = run_file(source, MANIFEST_FILE)
    config = recorded_config(manifest, redact(source.path(MANIFEST_FILE)))
    problems = (sources_problems(source, plan) + sidecar_problems(source, plan.digest)
                + ensemble_problems(source, config, str(manifest.get("ensemble_hash"))))
    if problems:  # copied as they are: a damaged one would pass for the target's own
        raise ConversionError(f"{source.root}: {'; '.join(problems)}")
    return plan, config


def stored_plan(plan: Plan, becomes: Storage) -> Plan:
    """The plan `generate` makes of the same inputs stored as `becomes` (the storage inputs
    only away from their defaults)."""
    inputs = {key: value for key, value in plan.inputs.items() if key not in STORAGE_INPUTS}
    chosen = {"store": becomes.store, "keep_pngs": becomes.keep_pngs}
    inputs.update({key: value for key, value in chosen.items() if value != MODE_DEFAULTS[key]})
    return replace(plan, inputs=inputs)


def _run_files(source: Location, target: Location, plan: Plan, config: RunConfig) -> None:
    """The manifest and report (the target's `config`: its storage and modes; its plan
    digest, where they came from) and the run's merged files, copied."""
    storage = {"store": config.store, "keep_pngs": list(config.keep_pngs)}
    manifest = run_file(source, MANIFEST_FILE)
    manifest["config"].update(storage, out=target.root)
    manifest.update(store=config.store, modes=config.modes(), plan_digest=plan.digest,
                    converted_from=source.root)
    # an images dataset made before the storage modes records none: every recipe the target
    # holds was then a PNG whose replay this machine verified
    manifest.setdefault("replay_libraries", library_versions())
    target.write_json(target.path(MANIFEST_FILE), manifest)
    for name in COPIED_FILES:
        _copy(source, target, source.path(name), target.path(name))
    for name in labels_files(source):  # relabel's: keyed by sample, made for the target now
        _copy_sidecar(source, target, name, plan.digest)
    if source.exists(source.path(REPORT_FILE)):
        report = run_file(source, REPORT_FILE)
        report.update(modes=config.modes(), converted_from=source.root)
        target.write_json(target.path(REPORT_FILE), report)


def _publish_run_files(source: Location, target: Location, plan: Plan, config: RunConfig,
                       converted: bool) -> None:
    """The target's run files from the source's, where shards were `converted` or the target
    is not sound; a finished target of this plan keeps its own, gaining only the source's
    newer label sidecars."""
    if converted or not _sound(target):
        _run_files(source, target, plan, config)
        for problem in sidecar_problems(target, plan.digest):  # a relabel of the target's
            print(f"note: {target.root}: {problem} (a relabel of the target, not of the "
                  "source: convert leaves it as it is)")
    else:  # a finished dataset of this plan: its own provenance stays
        added = [name for name in labels_files(source)
                 if not target.exists(target.path(name))]  # a relabel since
        for name in added:
            _copy_sidecar(source, target, name, plan.digest)
        print(f"note: {target.root} already holds this plan's dataset, every shard "
              "complete: nothing converted, its run files kept as they are"
              + (f" (the source's newer labels copied: {', '.join(added)})" if added
                 else ""))


def convert(source_root: str, target_root: str, store: str = DEFAULT_STORE,
            keep_pngs: tuple[int, ...] = (), workers: int = 1, take_over: bool = False,
            command: str = "convert") -> dict:
    """Convert the dataset at `source_root` into `target_root` stored as `store` (and
    `keep_pngs`); {shards, skipped, replayed, dropped}. The target is written under its lease
    (one writer at a time, as generate's, named `command` to the writers it refuses;
    `take_over` takes a stale one over); one holding another plan, or files that are no
    dataset's, is refused."""
    if workers < 1:
        raise ConversionError(f"workers must be at least 1, got {workers}")
    source, target = Location.parse(source_root), Location.parse(target_root)
    _refuse_overlap(source, target)
    writer = live_writer(source)
    if writer:  # (it would change under the conversion: a restart mixes two plans' shards)
        raise ConversionError(f"{redact(source.root)} is being written now ({writer}): "
                              "convert it once that run has ended")
    plan, config = _source(source)
    was = Storage.of(config)
    target_config = replace(config, out=target_root, store=store,
                            keep_pngs=tuple(keep_pngs))  # RunConfig checks them
    becomes = Storage.of(target_config)
    if becomes == was:
        raise ConversionError(f"{source.root} is already a{'n' * (store == 'images')} "
                              f"{was.describe()} dataset: nothing to convert")
    source_digest, plan = plan.digest, stored_plan(plan, becomes)
    refuse_unusable(target)
    with Lease(target, command).taken(take_over) as notices:
        for notice in notices:
            print(f"note: {notice}")
        refuse_foreign(target)
        remove_staged(target)
        _claim(target, plan)
        context = ReplayContext.of(source, verify=True)
        jobs = [Job(source_root, was, target_root, becomes, index, plan.digest,
                    context.for_shard(source, index), source_digest)
                for index in _unconverted(source, target, plan, becomes.store)]
        counts = list(tqdm(in_processes(convert_shard, jobs, workers), total=len(jobs),
                           unit="shard", desc=command))
        _check_source_unchanged(source, source_digest)  # before its run files are copied
        _publish_run_files(source, target, plan, target_config, converted=bool(jobs))
    return {"shards": plan.shard_count, "skipped": plan.shard_count - len(jobs),
            "replayed": sum(replayed for replayed, _ in counts),
            "dropped": sum(dropped for _, dropped in counts)}


def _unconverted(source: Location, target: Location, plan: Plan, store: str) -> list[int]:
    """The shards the target does not hold whole (each finished tar read, to hash it), or
    holds made of other references than the source's."""
    def redo(index: int) -> bool:
        return bool(shard_problems(target, index, plan.digest, store, verify_hash=True)
                    or not _same_references(source, target, index))
    shards = range(plan.shard_count)
    return [index for index, redone in zip(shards, read_ahead(redo, shards), strict=True)
            if redone]


def _sound(target: Location) -> bool:
    """Whether a target whose shards are all this conversion's is a dataset as sound as a
    source must be (its run files there and whole): they are then kept (a dataset generate
    wrote keeps its own provenance), or else written again."""
    try:
        _source(target)
    except (ConversionError, RunFileError):
        return False
    return True


def _same_references(source: Location, target: Location, index: int) -> bool:
    """Whether the target's shard was made of the source's shard's references (each one's
    status and pixels' SHA-256 as the two shards' sources lists record them). Two datasets of
    one plan differ where a source's file changed between their runs: a shard converted from
    the other one is converted again, never kept beside this one's run files."""
    def references(location: Location) -> list[tuple]:
        rows = json.loads(location.read_bytes(shard_paths(location, index)["sources"]))
        return sorted((row["ref_id"], row.get("status"), row.get("sha256")) for row in rows)
    try:
        return references(source) == references(target)
    except (OSError, ValueError, KeyError, TypeError):  # a list that cannot be read: remade
        return False


def _refuse_overlap(source: Location, target: Location) -> None:
    """A ConversionError where the target is the source, or one lies inside the other (the
    source would be read as it is written, or count the other's files as its own)."""
    found = overlap(source, target)
    if found == "same":
        raise ConversionError(f"{target.root} is the source itself: a conversion writes a new "
                              "dataset; name another TARGET (the source stays as it is)")
    if found == "nested":
        raise ConversionError(f"{target.root} and {source.root} lie one inside the other: "
                              "name a TARGET outside the source, and not holding it")


def _claim(target: Location, plan: Plan) -> None:
    """The target's plan written, or the one there checked to be this conversion's."""
    try:
        persist_or_check(plan, target)
    except PlanMismatchError:  # its advice (--restart, --out) is generate's
        theirs = read_plan(target)
        raise ConversionError(f"{target.root} holds another dataset's plan, not this "
                              f"conversion's ({'; '.join(differences(theirs, plan))}): choose "
                              "a new or empty TARGET, or remove that one first") from None


def materialize(source_root: str, target_root: str, workers: int = 1,
                take_over: bool = False) -> dict:
    """A recipes or hybrid dataset as the images one `generate --store images` writes."""
    return convert(source_root, target_root, DEFAULT_STORE, (), workers, take_over,
                   command="materialize")
