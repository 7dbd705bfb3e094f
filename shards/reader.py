"""Reading a dataset: which shards are complete, the parquet index, the tar URLs for
WebDataset readers."""

import functools
import hashlib
import json
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from shards.layout import (
    DEFAULT_STORE,
    PLAN_FILE,
    REPORT_FILE,
    SHARDS_DIR,
    SIDE_SUFFIXES,
    SOURCES_FILE,
    RunFileError,
    plan_file,
    shard_count,
    shard_files,
    shard_name,
    shard_paths,
    store_of,
    tar_path,
)
from shards.lease import writing_now
from shards.reads import read_ahead
from shards.schema import CHAIN_TYPE, chain_of
from shards.storage import STAGED_SUFFIX, HashingStream, Location, json_lines, redact
from shards.tar_stream import TAR_CHANGED, read_tar


class DamagedShardError(ValueError):
    """Finished shards (their stats written) of the dataset's plan whose files are not the ones
    the stats describe: a tar or parquet missing, a tar of another size (a tar cut at a member
    boundary reads as a valid, shorter one, so a reader alone would not notice)."""


class DatasetChangedError(ValueError):
    """A dataset changed under its reader: a shard whose stats name another plan than the
    one it was opened under (made again, `generate --restart`), a shard's file gone, or, while
    a run writes it, a shard made again as it was read."""


class DamagedRunFileError(RunFileError):
    """A run file a reader needs (sources.parquet) cannot be read as what generate writes."""


STATS_NAME = re.compile(r"([0-9]+)" + re.escape(SIDE_SUFFIXES["stats"]))
SOURCES_COLUMNS = ("ref_id", "shard", "split", "status")  # what the readers take from it


def shards_listing(location: Location) -> dict[str, int]:
    """File name -> byte size of every file in the shards folder: one listing (one request,
    or one per thousand files, on an object store)."""
    folder = location.path(SHARDS_DIR)
    try:
        listed = location.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except NotADirectoryError:
        raise ShardsFolderError(f"{folder} is a file, not the folder of a dataset's "
                                "shards") from None
    return {info.base_name: info.size for info in listed if info.type == pafs.FileType.File}


class ShardsFolderError(FileNotFoundError):
    """A dataset's shards folder that is something else."""


def odd_entries(location: Location) -> dict[str, str]:
    """Name -> what it is, of each entry in the shards folder that is no readable file: a
    folder, a pipe or device, and (locally) a link to nothing or a loop of links, which the
    store's listing leaves out: none is a shard's file, a planned name among them reads as
    missing."""
    folder = location.path(SHARDS_DIR)
    if location.fs.type_name != "local":
        selector = pafs.FileSelector(folder, allow_not_found=True)
        return {info.base_name: "a folder" for info in location.fs.get_file_info(selector)
                if info.type == pafs.FileType.Directory}
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return {}
    return {entry.name: _odd_kind(entry.path) for entry in entries
            if not os.path.isfile(entry.path)}


def _odd_kind(path: str) -> str:
    if os.path.isdir(path):
        return "a folder"
    if os.path.islink(path):  # (isdir and isfile follow links: this one leads nowhere)
        return "a link to nothing or a loop of links"
    return "no regular file (a pipe, socket or device)"


def _stats_indices(names: Iterable[str]) -> list[int]:
    """The shards whose stats file is among `names`: a shard's own name only, not another
    file ending the same way (`._00000_stats.json`, a macOS copy's, is no shard's)."""
    return sorted(int(match[1]) for name in names if (match := STATS_NAME.fullmatch(name))
                  and match[1] == shard_name(int(match[1])))


def shards_with_stats(location: Location) -> list[int]:
    """Indices of the shards whose stats file exists, whatever run wrote them."""
    return _stats_indices(shards_listing(location))


def misplaced(stats: dict, index: int) -> str | None:
    """Where shard `index`'s stats are another shard's (its files renamed, or two shards'
    swapped by a copy): readers choosing shards by their references would miss them."""
    recorded = stats.get("shard", index)
    if recorded == index:
        return None
    return (f"its stats are shard {recorded!r}'s: its files were renamed or swapped with "
            "another shard's")


def shard_states(location: Location, plan: dict | None = None
                 ) -> tuple[list[int], dict[int, str]]:
    """(complete, damaged) shards of the dataset's plan (`plan`, its plan.json where the
    caller read it; read here otherwise). Complete: the stats file exists (written last),
    names the plan where the dataset has one (a shard left by another run is never read as
    part of this one), and the tar and parquet it describes are there, the tar
    of the recorded size. Damaged: index -> what is wrong, for the other finished shards of
    the plan, and, once a run of the plan has ended (report.json), for every planned shard
    that is not complete (a finished dataset never reads as a smaller one). Stats outside the
    plan's shards are no part of it. Reads each stats file and lists the folder once; reads
    no tar."""
    plan = plan_file(location) if plan is None else plan
    store = plan.get("inputs", {}).get("store", DEFAULT_STORE)
    planned = planned_shards(plan)
    # before the listing: a run that ends after it is one unfinished (its last shards, not
    # listed, are not lost)
    finished = planned is not None and location.exists(location.path(REPORT_FILE))
    sizes = shards_listing(location)
    complete, damaged = [], {}
    if finished:
        damaged = dict.fromkeys(range(planned), "stats missing: the finished dataset lost it")
    indices = [index for index in _stats_indices(sizes) if planned is None or index < planned]
    read = read_ahead(functools.partial(_stats_or_error, location), indices)
    for index, stats in zip(indices, read, strict=True):
        if stats is None:  # gone since the listing (a --restart deleting the shards)
            continue
        damaged.pop(index, None)
        if isinstance(stats, Exception):
            damaged[index] = f"stats are not a JSON object ({stats})"
            continue
        if plan.get("digest") is not None and stats.get("plan_digest") != plan["digest"]:
            if finished:
                damaged[index] = f"stats of another plan ({str(stats.get('plan_digest'))[:12]})"
            continue
        if problem := misplaced(stats, index):
            damaged[index] = problem
            continue
        names = {kind: path.rpartition("/")[2]
                 for kind, path in shard_files(location, index, store).items()}
        missing = [kind for kind in ("tar", "parquet") if names[kind] not in sizes]
        if missing:
            damaged[index] = f"{' and '.join(missing)} missing"
        elif problem := (tar_size_problem(sizes[names["tar"]], stats)
                         or index_size_problem(sizes[names["parquet"]], stats)):
            damaged[index] = problem
        else:
            complete.append(index)
    return complete, damaged


def stray_files(location: Location, planned: int, store: str,
                listed: dict[str, int] | None = None) -> list[str]:
    """Files in the shards folder (`listed`, where the caller listed it: shards_listing) that
    belong to none of the plan's `planned` shards in mode `store` (a staged `.partial` of a
    run under way aside)."""
    expected = {path.rpartition("/")[2] for index in range(planned)
                for path in shard_files(location, index, store).values()}
    return sorted(name for name in (shards_listing(location) if listed is None else listed)
                  if name not in expected and not name.endswith(STAGED_SUFFIX))


def planned_shards(plan: dict) -> int | None:
    """How many shards a plan.json's plan has (None: no plan, or not one)."""
    try:
        return shard_count(len(plan["references"]), int(plan["inputs"]["shard_refs"]))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def complete_shards(location: Location) -> list[int]:
    """Indices of the complete shards of the dataset's plan (`shard_states`)."""
    return shard_states(location)[0]


def damage_message(location: Location, damaged: dict[int, str]) -> str:
    listed = "; ".join(f"{shard_name(i)}: {why}" for i, why in sorted(damaged.items())[:5])
    more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
    return (f"{location.root}: {len(damaged)} finished shard(s) do not match their stats "
            f"({listed}{more}); `iqa-factory inspect` lists them, and generate with the "
            "same options remakes them")


def shard_stats(location: Location, index: int) -> dict:
    """A shard's stats; a ValueError where the file is not a JSON object."""
    stats = json.loads(location.read_bytes(shard_paths(location, index)["stats"]))
    if not isinstance(stats, dict):
        raise ValueError(f"a JSON {type(stats).__name__}, not an object")
    return stats


def _stats_or_error(location: Location, index: int) -> dict | ValueError | None:
    """A shard's stats, the error that says why they are not a JSON object, or None where the
    file is gone (removed since the folder was listed)."""
    try:
        return shard_stats(location, index)
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as error:
        return error


OPEN_AGAIN = "open it again (a training run: start it again)"  # a dataset changed under its reader
STATS_KEPT = 64  # shards whose stats one stream remembers (more than it reads at once)
STREAM_STATS = ("samples", "tar_sha256", "parquet_bytes", "parquet_sha256", "libraries",
                "plan_digest")  # what a stream asks


class StatsReader:
    """shard index -> the STREAM_STATS of its stats, those of the last STATS_KEPT shards kept:
    what a stream asks of a shard more than once (the versions its replays name, a sidecar's
    plan, the count and hash it checks at the shard's end) is read once, one round trip on an
    object store (and not its per-version labels, kept 64 times over). With `plan` (the digest
    the dataset was opened under), a DatasetChangedError where a shard's stats name another:
    its samples are never read as the opened dataset's. `current` reads them again as the
    shard's tar is opened."""

    def __init__(self, location: Location, plan: str | None = None):
        self.location, self.plan = location, plan
        self._kept: OrderedDict[int, dict] = OrderedDict()

    def __call__(self, index: int) -> dict:
        if index in self._kept:
            self._kept.move_to_end(index)
            return self._kept[index]
        return self._keep(index, self._read(index))

    def current(self, index: int) -> dict:
        """The shard's stats read now, as its tar is opened: a DatasetChangedError where they
        are not those kept from an earlier read (the shard was made again since, by a
        `generate --restart` or a resume: read on, its samples would pass under the old
        stats' replays, labels and rows until its hash failed at its end, a training epoch
        later say)."""
        now, before = self._read(index), self._kept.get(index)
        if before is not None and now != before:
            changed = ", ".join(sorted(name for name in set(now) | set(before)
                                       if now.get(name) != before.get(name)))
            writer = writing_now(self.location)
            raise DatasetChangedError(
                f"{redact(self.location.root)}: shard {shard_name(index)} was made again "
                f"since this stream first read it (its stats' {changed} changed"
                + (f"; {writer}" if writer else "") + f"); {OPEN_AGAIN}")
        return self._keep(index, now)

    def _keep(self, index: int, stats: dict) -> dict:
        self._kept[index] = stats
        self._kept.move_to_end(index)
        while len(self._kept) > STATS_KEPT:
            self._kept.popitem(last=False)
        return stats

    def _read(self, index: int) -> dict:
        stats = shard_stats(self.location, index)
        if self.plan is not None and stats.get("plan_digest") != self.plan:
            raise DatasetChangedError(
                f"{redact(self.location.root)}: shard {shard_name(index)} is now of plan "
                f"{str(stats.get('plan_digest'))[:12]}, not the plan {self.plan[:12]} it was "
                "opened under: the dataset was made again under another plan (generate "
                f"--restart) while it was read; {OPEN_AGAIN}")
        return {name: stats[name] for name in STREAM_STATS if name in stats}


def shard_gone(location: Location, error: FileNotFoundError) -> DatasetChangedError:
    """The error for a file of a shard that was complete when its dataset was opened and is
    gone as it is read (`error`, naming it): `generate --restart` deletes the shards folder."""
    writer = writing_now(location)
    return DatasetChangedError(
        f"{redact(location.root)}: a shard complete when the dataset was opened is gone "
        f"({error}): " + (f"the dataset is being made again ({writer})" if writer else
                          "the dataset was made again or removed while it was read")
        + f"; {OPEN_AGAIN}")


def remade_while_read(location: Location, error: Exception, writer: str
                      ) -> DatasetChangedError:
    """The error for a shard whose files no longer match the stats its reader read (`error`)
    while `writer` (writing_now) writes the dataset: a resume making it again renames its new
    tar and parquet into place before it writes their stats, not damage."""
    return DatasetChangedError(
        f"{redact(location.root)}: a shard changed as it was read, and {writer}: that run is "
        f"making the shard again, it is not damaged (the reader found: {error}); {OPEN_AGAIN} "
        "once that run has ended")


def tar_size_problem(size: int | None, stats: dict) -> str | None:
    """What is wrong with a shard's tar of `size` bytes by its stats (None: the size they
    record)."""
    if size == stats.get("tar_bytes"):
        return None
    return f"tar is {size} bytes, its stats say {stats.get('tar_bytes')}"


def index_size_problem(size: int | None, stats: dict) -> str | None:
    """What is wrong with a shard's parquet index of `size` bytes by its stats (None: the
    size they record, or stats written before they recorded it)."""
    if "parquet_bytes" not in stats or size == stats["parquet_bytes"]:
        return None
    return f"parquet is {size} bytes, its stats say {stats['parquet_bytes']}"


INDEX_CHANGED = ("parquet index differs from its stats' SHA-256 (changed after it was written; "
                 "generate with the run's options makes it again)")


def index_problem(data: bytes, stats: dict) -> str | None:
    """What is wrong with a shard's parquet index of bytes `data` by its stats (None: their
    size and SHA-256, or stats written before they recorded them, and its row count, the
    stats' samples)."""
    if problem := index_size_problem(len(data), stats):
        return problem
    recorded = stats.get("parquet_sha256")
    if recorded and hashlib.sha256(data).hexdigest() != recorded:
        return INDEX_CHANGED
    rows = pq.read_metadata(pa.BufferReader(data)).num_rows
    return (f"stats say {stats.get('samples')} samples, parquet has {rows}"
            if stats.get("samples") != rows else None)


def tar_sha256(location: Location, path: str) -> str:
    with location.open_stream(path) as stream:
        return HashingStream(stream).hexdigest_to_end()


@dataclass(frozen=True)
class ShardExamination:
    """What examining a shard found: its problems (none: a complete shard of the plan) and
    the stats, failures list, parquet index and sources list it read on the way (None where
    it could not read them), for a caller with more to check of the shard not to read them
    again."""
    problems: list[str]
    stats: dict | None = None
    failures: list[dict] | None = None
    index: bytes | None = None  # the parquet index's bytes
    sources: list[dict] | None = None


SHARD_FILES = ("tar", "parquet", "stats", "sources", "failures")
NEVER_WRITTEN = f"missing {', '.join(SHARD_FILES)}"  # a shard no run has finished or begun


def examine_shard(location: Location, index: int, digest: str | None, store: str,
                  verify_hash: bool = False) -> ShardExamination:
    """Why shard `index` of a dataset in mode `store` is not a complete shard of the plan
    `digest` (no problem when it is): its files (the merge needs its sources and failures
    lists too, and they must hold what the stats count), its stats' plan digest, its parquet
    row count and its tar's byte size against the stats, and with `verify_hash` the tar's
    SHA-256 too (reads the whole tar). Reads the stats and each list once."""
    paths = shard_files(location, index, store)
    missing = [kind for kind in SHARD_FILES if not location.exists(paths[kind])]
    if missing:
        return ShardExamination([f"missing {', '.join(missing)}"])
    try:
        stats = shard_stats(location, index)
        index_bytes = location.read_bytes(paths["parquet"])
        if problem := index_problem(index_bytes, stats):
            return ShardExamination([problem], stats)
    except (ValueError, OSError, pa.ArrowException) as error:
        return ShardExamination([f"stats or parquet unreadable ({type(error).__name__}: "
                                 f"{error})"])
    try:
        sources, failures = shard_lists(location, paths, stats)
        problems = []
    except ShardListsError as error:
        sources, failures, problems = None, None, [str(error)]
    if digest is not None and stats.get("plan_digest") != digest:
        problems.append(f"made under plan {str(stats.get('plan_digest'))[:12]}, not this "
                        f"run's {digest[:12]}")
    if problem := misplaced(stats, index):
        problems.append(problem)
    if problem := tar_size_problem(location.fs.get_file_info(paths["tar"]).size, stats):
        problems.append(problem)
    elif verify_hash and tar_sha256(location, paths["tar"]) != stats.get("tar_sha256"):
        problems.append(TAR_CHANGED)
    return ShardExamination(problems, stats, failures, index_bytes, sources)


def shard_problems(location: Location, index: int, digest: str | None, store: str,
                   verify_hash: bool = False) -> list[str]:
    """The problems `examine_shard` finds (empty for a complete shard of the plan)."""
    return examine_shard(location, index, digest, store, verify_hash).problems


class ShardListsError(ValueError):
    """A shard's sources or failures list that is not what its stats count."""


def shard_lists(location: Location, paths: dict[str, str], stats: dict
                ) -> tuple[list[dict], list[dict]]:
    """A shard's sources rows and failures, checked against its stats: each list's SHA-256,
    a row per source, the references made and the failures they count (a hash or count the
    stats of an older shard lack is not compared); a ShardListsError naming what is wrong."""
    listed = {kind: location.read_bytes(paths[kind]) for kind in ("sources", "failures")}
    try:
        sources = json.loads(listed["sources"])
        failures = json_lines(listed["failures"])
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ShardListsError(f"sources or failures list unreadable ({error})") from None
    if not isinstance(sources, list) or not all(
            isinstance(row, dict) and "ref_id" in row for row in sources) or not all(
            isinstance(failure, dict) for failure in failures):
        raise ShardListsError("sources or failures list holds other than its rows")
    made = sum(row.get("status") == "ok" for row in sources)
    counted = {"sources": (len(sources), "sources"), "references": (made, "references made"),
               "failures": (len(failures), "failures")}
    wrong = [f"{count} {what}, its stats {stats[name]}"
             for name, (count, what) in counted.items()
             if isinstance(stats.get(name), int) and stats[name] != count]
    if wrong:
        raise ShardListsError(f"its lists hold {', '.join(wrong)}")
    changed = [kind for kind, data in listed.items() if stats.get(f"{kind}_sha256") not in
               (None, hashlib.sha256(data).hexdigest())]
    if changed:
        raise ShardListsError(f"its {' and '.join(changed)} list's SHA-256 is not the one its "
                              "stats record: changed since the shard was written")
    return sources, failures


def no_complete_shard(location: Location) -> FileNotFoundError:
    """The error for a dataset without a complete shard: the run writing it, where one is
    (its first shard is not done yet); else why, where shards are there; for a folder that is
    no dataset (neither plan.json nor a shards folder), that, and its dataset where it is a
    dataset's shards folder (the usual slip)."""
    if writer := writing_now(location):
        return FileNotFoundError(f"no complete shard in {location.path(SHARDS_DIR)} yet: "
                                 f"{writer}; open it again once its first shard is written")
    if not any(location.exists(location.path(name)) for name in (PLAN_FILE, SHARDS_DIR)):
        parent, _, name = location.root.rstrip("/").rpartition("/")
        inside = name == SHARDS_DIR and parent and location.exists(f"{parent}/{PLAN_FILE}")
        dataset = redact(parent) if location.fs.type_name == "local" else "its parent"
        return FileNotFoundError(
            f"{redact(location.root)} is not a dataset written by generate or convert (it has "
            f"no {PLAN_FILE})" + (f": it is the shards folder of a dataset, give {dataset}"
                                  if inside else ""))
    stale = len(shards_with_stats(location))
    why = (f": its {stale} finished shards were made under another plan (or before shards "
           "recorded their plan); run generate again, with --restart" if stale else "")
    return FileNotFoundError(f"no complete shard in {location.path(SHARDS_DIR)}{why}")


def read_index(location: Location, shards: list[int] | None = None,
               columns: list[str] | None = None, with_shard: bool = False,
               kind: str | None = None, stats_of: Callable[[int], dict] | None = None,
               each: Callable[[pa.Table], pa.Table] | None = None) -> pa.Table:
    """The parquet index of the given (default: every complete) shard, concatenated, each
    checked against its stats (`checked_index`; `stats_of`: shard -> its stats, for a caller
    that has read them); with `with_shard` a `shard` column says which shard each row came
    from; with `kind`, only the rows of that kind (kept shard by shard: no second copy of
    every row; `columns` must hold kind); `each` makes of every shard's table, as it is
    read, what is kept of it."""
    tables = []
    for index, table in shard_indexes(location, shards, columns, kind, stats_of):
        if each is not None:
            table = each(table)
        if with_shard:
            table = table.append_column("shard", pa.array([index] * len(table), pa.int32()))
        tables.append(table)
    if not tables:
        raise no_complete_shard(location)
    # shards written before the ssim column read beside newer ones (a null ssim)
    return pa.concat_tables(tables, promote_options="permissive")


def shard_indexes(location: Location, shards: list[int] | None = None,
                  columns: list[str] | None = None, kind: str | None = None,
                  stats_of: Callable[[int], dict] | None = None
                  ) -> Iterator[tuple[int, pa.Table]]:
    """(shard, its parquet index) of the given (default: every complete) shards in order, as
    `read_index` reads them, one at a time (the next ones read ahead)."""
    indices = complete_shards(location) if shards is None else list(shards)
    stats_of = stats_of or functools.partial(shard_stats, location)
    read = read_ahead(lambda index: checked_index(location, index, stats_of(index)), indices)
    for index, index_bytes in zip(indices, read, strict=True):
        table = parse_index(index_bytes, columns)
        yield index, (table if kind is None else table.filter(pc.equal(table["kind"], kind)))


def checked_index(location: Location, index: int, stats: dict) -> bytes:
    """The bytes of shard `index`'s parquet index, checked against its `stats`: a
    DamagedShardError names the file where they are not the size and SHA-256 recorded."""
    path = shard_paths(location, index)["parquet"]
    data = location.read_bytes(path)
    if problem := index_problem(data, stats):
        raise DamagedShardError(f"{redact(path)}: {problem}")
    return data


def parse_index(data: bytes, columns: list[str] | None = None) -> pa.Table:
    """A shard's parquet index of bytes `data` (`columns` of it), each distorted row's `chain`
    derived from its distortion_id and level where the shard was written before chains were
    recorded."""
    parquet = pq.ParquetFile(pa.BufferReader(data))
    if columns is not None and "chain" not in columns:
        return parquet.read(columns=columns)
    stored = "chain" in parquet.schema_arrow.names
    needed = None if columns is None else list(dict.fromkeys(
        [c for c in columns if c != "chain" or stored] + ["distortion_id", "level"]))
    table = parquet.read(columns=needed)
    rows = table.select([c for c in ("chain", "distortion_id", "level") if c in
                         table.column_names]).to_pylist()
    chain = pa.array([chain_of(row) for row in rows], CHAIN_TYPE)
    table = (table.set_column(table.column_names.index("chain"), "chain", chain) if stored
             else table.append_column("chain", chain))
    return table if columns is None else table.select(columns)


def read_sources(location: Location) -> pa.Table:
    """sources.parquet: every pristine source with its ref_id, shard, split and status."""
    path = location.path(SOURCES_FILE)
    if not location.exists(path):
        raise FileNotFoundError(f"{path} does not exist: is {location.root} a finished dataset?")
    rebuild = "generate with the same options rebuilds it from the shards' own lists"
    try:
        with location.fs.open_input_file(path) as handle:
            table = pq.read_table(handle)
    except (pa.ArrowException, OSError) as error:
        raise DamagedRunFileError(f"{path} cannot be read as parquet ({error}): damaged; "
                                  f"{rebuild}") from error
    missing = [name for name in SOURCES_COLUMNS if name not in table.column_names]
    if missing:
        raise DamagedRunFileError(f"{path} lacks the columns {missing}: damaged; {rebuild}")
    return table


def tar_members(location: Location, path: str, read: bool = True,
                keys: set[str] | None = None) -> dict[str, dict]:
    """key -> {extension: bytes} of a shard tar in memory (only the samples of `keys` where
    given), in member order (bytes are None when `read` is False), read through the shared
    streaming reader (shards.tar_stream); readers that need not hold a shard use
    shards.open_dataset."""
    select = None if keys is None else (lambda name: name.partition(".")[0] in keys)
    return {sample["__key__"]: {name: value for name, value in sample.items()
                                if not name.startswith("__")}
            for sample in read_tar(location, path, select, keep_bytes=read)}


def tar_urls(location: Location, shards: list[int] | None = None) -> list[str]:
    """Paths of the complete shards' tars, for webdataset.WebDataset."""
    indices = complete_shards(location) if shards is None else shards
    store = store_of(location)
    return [tar_path(location, index, store) for index in indices]
