"""`iqa-factory materialize OUT_RECIPES OUT_IMAGES`: a recipes or hybrid dataset turned into
an images one, every version replayed from its reference and recipe, checked against its
SHA-256 and encoded as `generate --store images` encodes it: the same tars, byte for byte, and
the same parquet indexes, as generating with --store images (the same plan without the store
mode, so the same plan digest). Shards are independent: several run at once with `workers`,
and a rerun skips the shards already complete in OUT_IMAGES."""

import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from pipeline.config import MODE_DEFAULTS, STORAGE_INPUTS
from pipeline.encoding import decode_png, encode_png
from pipeline.plan import Plan, persist_or_check
from shards.layout import (
    DEFAULT_STORE,
    PLAN_FILE,
    SOURCES_FILE,
    shard_paths,
    store_of,
    tar_path,
)
from shards.reader import complete_shards, shard_problems, shard_stats
from shards.replay import MANIFEST_FILE, Pending, ReplayContext
from shards.storage import Location
from shards.tar_stream import read_tar
from shards.writer import ShardWriter

COPIED_FILES = (SOURCES_FILE, "failures.jsonl", "ensemble.json")
WRITER_STATS = ("shard", "samples", "tar_bytes", "tar_sha256", "write_seconds")  # finish's own


class MaterializeError(ValueError):
    """A dataset that cannot be materialized (not a recipes or hybrid dataset, incomplete)."""


@dataclass(frozen=True)
class Job:
    """One shard to materialize: from `source` (in mode `store`) into `target` under the images
    plan `digest`."""

    source: str
    store: str
    target: str
    index: int
    digest: str
    context: ReplayContext


def images_plan(plan: Plan) -> Plan:
    """The plan `generate --store images` makes of the same inputs: without the storage
    inputs (the store mode, the types a hybrid dataset keeps PNGs of)."""
    inputs = {key: value for key, value in plan.inputs.items() if key not in STORAGE_INPUTS}
    return Plan(inputs, plan.references, plan.duplicates)


def materialize_shard(job: Job) -> int:
    """Write one shard of the images dataset; the number of versions replayed."""
    source, target = Location.parse(job.source), Location.parse(job.target)
    writer = ShardWriter(target, job.index)
    replayed = 0
    try:
        references = {}
        for sample in read_tar(source, tar_path(source, job.index, job.store)):
            meta, png = json.loads(sample["json"]), sample.get("png")
            if meta["kind"] == "reference":
                references[meta["ref_id"]] = decode_png(png)
            elif png is None:
                pending = Pending(sample["__key__"], references[meta["ref_id"]], meta,
                                  job.context)
                png, replayed = encode_png(pending.pixels()), replayed + 1
            writer.add(meta, png)
        stats = shard_stats(source, job.index)
        writer.finish({**{key: value for key, value in stats.items()
                          if key not in WRITER_STATS}, "plan_digest": job.digest})
    except BaseException:
        writer.abort()
        raise
    for kind in ("sources", "failures"):
        _copy(source, target, shard_paths(source, job.index)[kind],
              shard_paths(target, job.index)[kind])
    return replayed


def _copy(source: Location, target: Location, path: str, to: str) -> None:
    if source.exists(path):
        target.write_bytes(to, source.read_bytes(path))


def _checked_plan(source: Location) -> Plan:
    """The source's plan, refusing a dataset that is not a complete recipes or hybrid one."""
    if not source.exists(source.path(PLAN_FILE)):
        raise MaterializeError(f"{source.root} has no {PLAN_FILE}: not a dataset written by "
                               "generate")
    if store_of(source) == DEFAULT_STORE:
        raise MaterializeError(f"{source.root} is already an images dataset: nothing to "
                               "materialize")
    plan = Plan.from_json(json.loads(source.read_bytes(source.path(PLAN_FILE))))
    missing = sorted(set(range(plan.shard_count)) - set(complete_shards(source)))
    if missing:
        raise MaterializeError(f"{source.root}: shards {missing} are not complete; finish the "
                               "run (generate resumes) first")
    return plan


def _run_files(source: Location, target: Location, plan: Plan, origin: str) -> None:
    """The manifest (store images, the images plan's digest), the report and the run's
    merged files, copied."""
    manifest = json.loads(source.read_bytes(source.path(MANIFEST_FILE)))
    for key in STORAGE_INPUTS:
        manifest["config"][key] = manifest["modes"][key] = MODE_DEFAULTS[key]
    manifest["store"] = DEFAULT_STORE
    manifest.update(plan_digest=plan.digest, materialized_from=origin)
    target.write_bytes(target.path(MANIFEST_FILE),
                       json.dumps(manifest, sort_keys=True, indent=1).encode())
    for name in COPIED_FILES:
        _copy(source, target, source.path(name), target.path(name))
    if source.exists(source.path("report.json")):
        report = json.loads(source.read_bytes(source.path("report.json")))
        report["modes"].update({key: MODE_DEFAULTS[key] for key in STORAGE_INPUTS})
        report["materialized_from"] = origin
        target.write_bytes(target.path("report.json"),
                           json.dumps(report, sort_keys=True, indent=1).encode())


def materialize(source_root: str, target_root: str, workers: int = 1) -> dict:
    """Materialize the dataset at `source_root` into `target_root`; {shards, skipped,
    replayed}. A target holding another plan is refused (persist_or_check)."""
    if workers < 1:
        raise MaterializeError(f"workers must be at least 1, got {workers}")
    source, target = Location.parse(source_root), Location.parse(target_root)
    plan = images_plan(_checked_plan(source))
    persist_or_check(plan, target)
    context, store = ReplayContext.of(source, verify=True), store_of(source)
    todo = [Job(source_root, store, target_root, index, plan.digest, context)
            for index in range(plan.shard_count)
            if shard_problems(target, index, plan.digest, DEFAULT_STORE)]
    replayed = sum(tqdm(_made(todo, workers), total=len(todo), unit="shard",
                        desc="materialize"))
    _run_files(source, target, plan, source.root)
    return {"shards": plan.shard_count, "skipped": plan.shard_count - len(todo),
            "replayed": replayed}


def _made(todo: list[Job], workers: int):
    """Each job's replayed count as its shard is done: here, or in `workers` processes."""
    if workers == 1:
        yield from map(materialize_shard, todo)
        return
    # spawned, not forked: a fork of a process whose torch threads are running can hang
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(materialize_shard, todo)
