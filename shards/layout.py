"""Where a dataset's files are: its run files (plan.json, sources.parquet), its shards folder,
and each shard's tar and side files (parquet index, stats, sources, failures).

A shard's tar is `NNNNN.tar` in an images dataset and `NNNNN.tar.gz` (gzip, written
byte-reproducibly) in a recipes or hybrid one: there its versions are JSON records, whose tar
headers and padding (1,536 bytes for a 900-byte record) gzip takes to about 270 bytes, while
an images dataset's PNGs would not shrink and its loader would pay the decompression. Which
mode a dataset is in, its plan says (`store_of`); webdataset and `tar` read both forms."""

import fnmatch
import json
from collections.abc import Iterable, Mapping

import pyarrow.fs as pafs

from distortions.canonical import canonical_digest
from shards.storage import Location, redact

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"  # the run's configuration, written before any shard
ENSEMBLE_FILE = "ensemble.json"  # the ensemble a labelled run's Q was made with
REPORT_FILE = "report.json"  # written when a run ends: every planned shard was finished
SOURCES_FILE = "sources.parquet"
FAILURES_FILE = "failures.jsonl"
LABELS_FILES = "labels-*.parquet"  # relabel's sidecars (key, quality, shard), one per ensemble
STORE_MODES = ("images", "recipes", "hybrid")
DEFAULT_STORE = "images"
SPLITS = ("train", "val", "test")  # a reference's split (the spec's)
# what a plan's digest covers (duplicates only where a run left some out); the sources'
# listing (sizes, times) lies outside it
PLAN_IDENTITY = ("inputs", "references", "duplicates")
_TAR_SUFFIX = {"images": ".tar", "recipes": ".tar.gz", "hybrid": ".tar.gz"}
# each shard's side files: NNNNN + these (the same in every store mode)
SIDE_SUFFIXES = {"parquet": ".parquet", "stats": "_stats.json", "sources": "_sources.json",
                 "failures": "_failures.jsonl"}
SHARD_SUFFIXES = (*sorted(set(_TAR_SUFFIX.values())), *SIDE_SUFFIXES.values())  # every file's


def moved_splits(planned: Mapping[str, str], found: Iterable[tuple[str, str]]) -> list[str]:
    """"REF PLANNED -> FOUND", sorted and each once, for each (ref_id, split) of `found` that
    `planned` (ref_id -> split) puts in another split; references it does not hold are not
    its to judge."""
    return sorted({f"{ref} {planned[ref]} -> {split}" for ref, split in found
                   if ref in planned and planned[ref] != split})


class RunFileError(ValueError):
    """A run file (plan, manifest, report) is missing or not what generate writes."""


def run_file(location: Location, name: str) -> dict:
    """The JSON object of the run file `name` of a dataset; a RunFileError says what is wrong
    with it (missing, not JSON, not an object)."""
    if not location.exists(location.path(name)):
        raise RunFileError(f"no {name}: not a dataset written by generate or convert, or one "
                           "they have not finished beginning (the same command resumes it)")
    return _run_file_object(location, name)


def run_file_or_empty(location: Location, name: str) -> dict:
    """The run file `name` as run_file reads it, {} where the dataset has none."""
    return _run_file_object(location, name) if location.exists(location.path(name)) else {}


def _run_file_object(location: Location, name: str) -> dict:
    """The JSON object of a run file that is there (RunFileError: it is no JSON object)."""
    shown = redact(location.path(name))
    remedy = ("generate cannot resume it: --restart starts over" if name == PLAN_FILE
              else "rerun generate on the dataset to make it again")  # it rewrites the others
    try:
        data = json.loads(location.read_bytes(location.path(name)))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RunFileError(f"{shown} is not JSON ({error}): damaged; {remedy}") from error
    if not isinstance(data, dict):
        raise RunFileError(f"{shown} holds {type(data).__name__}, not an object: damaged; "
                           f"{remedy}")
    if name == PLAN_FILE and data.get("digest") != (held := plan_digest(data)):
        raise RunFileError(f"{shown}: its digest {str(data.get('digest'))[:12]} is not that of "
                           f"the plan it holds ({held[:12]}): edited or damaged, its shards "
                           f"cannot be told apart from another plan's; {remedy}")
    return data


def plan_digest(plan: dict) -> str:
    """The digest of a plan (a plan.json's object, or the fields a Plan writes): SHA-256 of
    its PLAN_IDENTITY fields as canonical JSON. Each shard's stats name it, so a reader never
    takes another plan's shard, nor a plan edited by hand, for this one."""
    identity = {name: plan[name] for name in PLAN_IDENTITY if name in plan}
    return canonical_digest(identity)


def check_store(store: str) -> str:
    """`store` when it is a storage mode; a clear error otherwise."""
    if store not in STORE_MODES:
        raise ValueError(f"store must be one of {', '.join(STORE_MODES)}, got {store!r}")
    return store


def compresses(store: str) -> bool:
    """Whether a dataset in mode `store` gzips its shard tars."""
    return _TAR_SUFFIX[check_store(store)] != ".tar"


def plan_file(location: Location) -> dict:
    """The dataset's plan.json ({} where it has none; a RunFileError where it is not a JSON
    object). Call it once per dataset, not once per shard."""
    return run_file_or_empty(location, PLAN_FILE)


def store_of(location: Location) -> str:
    """The storage mode a dataset was generated in (images where its plan names none, or where
    it has no plan)."""
    return plan_file(location).get("inputs", {}).get("store", DEFAULT_STORE)


def labels_file(ensemble_hash: str) -> str:
    """The sidecar `relabel` writes for the ensemble of this hash (matches LABELS_FILES)."""
    return f"labels-{ensemble_hash}.parquet"


def labels_files(location: Location) -> list[str]:
    """The names of the relabel sidecars beside a dataset's run files."""
    selector = pafs.FileSelector(location.root, allow_not_found=True)
    return sorted(info.base_name for info in location.fs.get_file_info(selector)
                  if fnmatch.fnmatch(info.base_name, LABELS_FILES))


def shard_count(references: int, shard_refs: int) -> int:
    """How many shards hold `references` at `shard_refs` a shard (the last may hold fewer)."""
    return -(-references // shard_refs)


def shard_name(index: int) -> str:
    return f"{index:05d}"


def shard_of(path: str) -> int:
    """The index of the shard a file of `shards/` belongs to (its name's leading digits)."""
    return int(path.rpartition("/")[2].partition(".")[0].partition("_")[0])


def shard_paths(location: Location, index: int) -> dict[str, str]:
    """The side files of shard `index` (the same in every store mode)."""
    base = location.path(SHARDS_DIR, shard_name(index))
    return {kind: base + suffix for kind, suffix in SIDE_SUFFIXES.items()}


def tar_path(location: Location, index: int, store: str) -> str:
    """Shard `index`'s tar in a dataset of mode `store`."""
    return location.path(SHARDS_DIR, shard_name(index)) + _TAR_SUFFIX[check_store(store)]


def shard_files(location: Location, index: int, store: str) -> dict[str, str]:
    """Every file of shard `index` in a dataset of mode `store`: its side files and "tar"."""
    return {**shard_paths(location, index), "tar": tar_path(location, index, store)}
