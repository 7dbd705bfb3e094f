"""What a writer of a dataset (generate, convert) makes sure of in its output folder, under its
lease, before it writes: that the folder is new or a dataset of this project (never someone
else's files overwritten), and that no file an interrupted writer staged is left."""

import fnmatch
import os
import re

import pyarrow.fs as pafs

from pipeline.errors import ForeignOutputError, OutputPathError
from pipeline.sources import EMBEDDED, EMBEDDED_PREFIX
from shards.layout import (
    ENSEMBLE_FILE,
    FAILURES_FILE,
    LABELS_FILES,
    MANIFEST_FILE,
    PLAN_FILE,
    REPORT_FILE,
    SHARD_SUFFIXES,
    SHARDS_DIR,
    SIDE_SUFFIXES,
    SOURCES_FILE,
    labels_files,
)
from shards.lease import LEASE_FILE
from shards.storage import STAGED_SUFFIX, Location, file_in_the_way, redact
from shards.words import a_few

STRIKES_FILE = "strikes.json"  # references worker processes died on (pipeline.actors)
# what a run writes beside its shards (--restart removes them with the shards)
RUN_FILES = (MANIFEST_FILE, ENSEMBLE_FILE, REPORT_FILE, SOURCES_FILE, FAILURES_FILE,
             PLAN_FILE, STRIKES_FILE)


URL_CUTS = "#?"  # where a URL's path ends: webdataset opens a local tar's path as a URL


def refuse_unusable(location: Location) -> None:
    """The output must be a folder (or nothing yet), not a file, and (local) a path whose
    tars plain webdataset can open (checked before its lease)."""
    if location.fs.get_file_info(location.root).type == pafs.FileType.File:
        raise ForeignOutputError(f"{location.root} is a file, not a folder: choose another "
                                 "output folder")
    local = location.fs.type_name == "local"
    if local and (blocking := file_in_the_way(location.root)) is not None:
        raise ForeignOutputError(f"{blocking} is a file where a folder is wanted: "
                                 f"{location.root} cannot be made there; choose another "
                                 "output folder, or move the file")
    cut = next((char for char in location.root if char in URL_CUTS), None)
    if cut is not None and local:
        raise OutputPathError(f"{location.root}: webdataset reads a tar's path as a URL, which "
                              f"ends at the {cut!r}, so readers of its shards would look for "
                              "another file: choose an output folder without '#' or '?'")


def overlap(first: Location, second: Location) -> str | None:
    """"same" where two locations are one folder, "nested" where one lies inside the other
    (local paths compared with their links resolved), None where they are apart."""
    if type(first.fs) is not type(second.fs):
        return None
    paths = [os.path.realpath(where.root) if isinstance(where.fs, pafs.LocalFileSystem)
             else where.root.rstrip("/") for where in (first, second)]
    if paths[0] == paths[1]:
        return "same"
    inside = any(inner.startswith(outer.rstrip("/") + "/")
                 for inner, outer in (paths, paths[::-1]))
    return "nested" if inside else None


def refuse_inside_sources(location: Location, sources: str) -> None:
    """The output must be apart from a folder (or object-store prefix) of sources: inside
    it, a run's own files would be listed as sources (its images: another plan on resume);
    holding it, the sources would sit among the dataset's files."""
    if sources == EMBEDDED or sources.startswith(EMBEDDED_PREFIX) or (
            "://" not in sources and not os.path.isdir(sources)):
        return  # the embedded photos (whatever folder of that name is here), or a list file
    if overlap(location, Location.parse(sources)):
        raise OutputPathError(f"{location.root} and the sources {redact(sources)} are one "
                              "folder or lie one inside the other: a run's files would be "
                              "listed as its sources; choose an output folder outside the "
                              "sources, and not holding them")


def refuse_foreign(location: Location) -> None:
    """The folder must be new, or a dataset (its writers write plan.json before any other
    file): a shards folder or run file without a plan is someone else's, never cleared or
    overwritten."""
    if location.exists(location.path(PLAN_FILE)):
        return
    selector = pafs.FileSelector(location.root, allow_not_found=True)
    names = sorted(info.base_name for info in location.fs.get_file_info(selector))
    theirs = [name for name in names if name in (*RUN_FILES, SHARDS_DIR)]
    if theirs:
        raise ForeignOutputError(f"{location.root} holds {', '.join(theirs)} but no {PLAN_FILE}: "
                                 "not a dataset of iqa-factory; choose another output folder "
                                 "(nothing there was changed)")
    others = [name for name in names  # (a run's own: its lease, files it staged; dotfiles)
              if not name.startswith((LEASE_FILE, ".")) and not _staged_run_file(name)]
    if others:
        print(f"note: {redact(location.root)} holds {len(others)} file(s) or folder(s) of its "
              f"own ({a_few(others)}): the dataset is written beside them, never over them "
              "(generate's --restart leaves them too)")


# what a run (or a writer it interrupted) leaves in shards/: NNNNN.tar[.gz], .parquet,
# _stats.json, _sources.json, _failures.jsonl, each maybe staged (.<attempt>.partial), and a
# storage probe stopped before it deleted its file (pipeline.reachability)
RUN_SHARD_FILE = re.compile(rf"(\d{{5,}}({'|'.join(map(re.escape, SHARD_SUFFIXES))})"
                            r"|probe-[0-9a-f]+\.partial)(\.[0-9a-f]+\.partial)?")


def clear_previous_run(location: Location) -> None:
    """--restart: remove the shards, run files and relabel sidecars an earlier run left in
    OUT, and say so. A file or folder in shards/ that no run writes is someone's: the restart
    is refused, nothing removed, rather than deleting it with the folder."""
    shards = location.path(SHARDS_DIR)
    listed = location.fs.get_file_info(pafs.FileSelector(shards, allow_not_found=True))
    theirs = sorted(info.base_name for info in listed
                    if info.type != pafs.FileType.File or not RUN_SHARD_FILE.fullmatch(
                        info.base_name))
    if theirs:
        raise ForeignOutputError(f"--restart: {shards} holds {len(theirs)} file(s) or "
                                 f"folder(s) no run writes ({a_few(theirs)}): move them out first "
                                 "(nothing was removed)")
    location.delete(location.path(REPORT_FILE))  # first: the run is no longer finished, so
    for name in labels_files(location):            # one stopped here is an unfinished run
        location.delete(location.path(name))
        print(f"restart: removed {name} (a relabel of the previous run's samples)")
    if listed:
        finished = sum(info.base_name.endswith(SIDE_SUFFIXES["stats"]) for info in listed)
        location.fs.delete_dir(shards)
        print(f"restart: removed {shards} ({finished} finished shards of the previous run)")
    for name in RUN_FILES:
        location.delete(location.path(name))


def staged_files(location: Location) -> list[pafs.FileInfo]:
    """The files staged in shards/, and those of run files and relabel sidecars beside them,
    not (yet) renamed into place (no other file of the folder is ever counted)."""
    def listed(folder: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(folder, allow_not_found=True)
        return [info for info in location.fs.get_file_info(selector)
                if info.type == pafs.FileType.File and info.base_name.endswith(STAGED_SUFFIX)]
    return [*(info for info in listed(location.root) if _staged_run_file(info.base_name)),
            *listed(location.path(SHARDS_DIR))]


def _staged_run_file(name: str) -> bool:
    final = name.removesuffix(STAGED_SUFFIX).rpartition(".")[0]  # less the attempt's id
    return final in RUN_FILES or fnmatch.fnmatch(final, LABELS_FILES)


def remove_staged(location: Location) -> None:
    """Files an interrupted writer staged (call under the lease: nobody else is writing)."""
    for info in staged_files(location):
        location.delete(info.path)
