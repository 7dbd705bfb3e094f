"""What a writer of a dataset (generate, convert) makes sure of in its output folder, under its
lease, before it writes: that the folder is new or a dataset of this project (never someone
else's files overwritten), and that no file an interrupted writer staged is left."""

import pyarrow.fs as pafs

from pipeline.errors import ForeignOutputError
from shards.layout import (
    ENSEMBLE_FILE,
    FAILURES_FILE,
    MANIFEST_FILE,
    PLAN_FILE,
    REPORT_FILE,
    SHARDS_DIR,
    SOURCES_FILE,
)
from shards.storage import STAGED_SUFFIX, Location

STRIKES_FILE = "strikes.json"  # references worker processes died on (pipeline.actors)
# what a run writes beside its shards (--restart removes them with the shards)
RUN_FILES = (MANIFEST_FILE, ENSEMBLE_FILE, REPORT_FILE, SOURCES_FILE, FAILURES_FILE,
             PLAN_FILE, STRIKES_FILE)


def refuse_file(location: Location) -> None:
    """The output must be a folder (or nothing yet), not a file (checked before its lease)."""
    if location.fs.get_file_info(location.root).type == pafs.FileType.File:
        raise ForeignOutputError(f"{location.root} is a file, not a folder: choose another "
                                 "output folder")


def refuse_foreign(location: Location) -> None:
    """The folder must be new, or a dataset (its writers write plan.json before any other
    file): a shards folder or run file without a plan is someone else's, never cleared or
    overwritten."""
    if location.exists(location.path(PLAN_FILE)):
        return
    selector = pafs.FileSelector(location.root, allow_not_found=True)
    theirs = sorted(info.base_name for info in location.fs.get_file_info(selector)
                    if info.base_name in (*RUN_FILES, SHARDS_DIR))
    if theirs:
        raise ForeignOutputError(f"{location.root} holds {', '.join(theirs)} but no {PLAN_FILE}: "
                                 "not a dataset of iqa-factory; choose another output folder "
                                 "(nothing there was changed)")


def staged_files(location: Location) -> list[pafs.FileInfo]:
    """The files staged in shards/ and not (yet) renamed into place."""
    selector = pafs.FileSelector(location.path(SHARDS_DIR), allow_not_found=True)
    return [info for info in location.fs.get_file_info(selector)
            if info.base_name.endswith(STAGED_SUFFIX)]


def remove_staged(location: Location) -> None:
    """Files an interrupted writer staged (call under the lease: nobody else is writing)."""
    for info in staged_files(location):
        location.delete(info.path)
