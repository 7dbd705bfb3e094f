"""Finished shards made again when a run resumes.

A reference on which worker processes died twice is left out of its shard as quarantined (the
strikes kept in OUT/strikes.json across reruns). Deleting that file, or lowering a reference's
count in it, tries the reference again: the finished shards that left out a reference no
longer struck out are made again on the next run. With --retry-unreadable, so are the finished
shards that left out a source whose read failed (a network or NFS hiccup, a file restored
since), or one that did not decode and decodes now (a file repaired): it is read again,
with the rest of its shard."""

from functools import partial

from tqdm import tqdm

from pipeline.actors import QUARANTINE_STRIKES
from pipeline.config import RunConfig
from pipeline.output_folder import STRIKES_FILE
from pipeline.plan import Plan
from pipeline.source_changes import LEFT_OUT_AFTER_DECODING
from pipeline.sources import UNREADABLE
from pipeline.worker import ShardOutcome, prepare_reference
from shards.layout import FAILURES_FILE, REPORT_FILE, shard_paths
from shards.reader import RunFileError
from shards.reads import read_ahead
from shards.storage import Location, redact


def strikes(location: Location) -> dict[str, int]:
    """OUT/strikes.json: worker deaths counted against each reference ({} without the file);
    a RunFileError names the file where it is not such an object (it may be edited by hand)."""
    path = location.path(STRIKES_FILE)
    remedy = "fix it, or delete it to try every reference it strikes out again"
    try:
        struck = location.read_json_or_empty(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise RunFileError(f"{redact(path)} is not JSON ({error}): {remedy}") from None
    if not isinstance(struck, dict) or not all(
            type(count) is int and count >= 0 for count in struck.values()):
        raise RunFileError(f"{redact(path)} is not an object of reference ids and worker "
                           f'deaths (e.g. {{"astronaut": 2}}): {remedy}')
    return struck


def pardoned_shards(location: Location, plan: Plan, done: list[int],
                    failures: list[dict]) -> list[int]:
    """The shards of `done` that left out a reference as quarantined which strikes.json no
    longer strikes out (`failures`: theirs, failures_of)."""
    struck = strikes(location)
    left_out = {failure["ref_id"] for failure in failures
                if failure.get("reason") == "quarantined"}
    return _shards_of(plan, {ref_id for ref_id in left_out
                             if struck.get(ref_id, 0) < QUARANTINE_STRIKES}, done)


def retried_shards(plan: Plan, config: RunConfig, done: list[int],
                   failures: list[dict]) -> list[int]:
    """The shards of `done` that left out a source because its bytes could not be read, or
    could not be decoded and decode now (each decoded again here, as its worker would)."""
    planned = {ref.ref_id: (position, ref) for position, ref in enumerate(plan.references)}
    finished = set(done)
    undecoded = [planned[ref_id] for ref_id in sorted(undecoded_refs(failures))
                 if ref_id in planned and planned[ref_id][0] // plan.shard_refs in finished]
    decodes_now = {ref.ref_id for position, ref in tqdm(
                       undecoded, desc="undecoded sources tried", unit="source", leave=False,
                       disable=len(undecoded) < 20)
                   if prepare_reference(ref, config, ShardOutcome(position // plan.shard_refs))
                   [0] is not None}
    return _shards_of(plan, unread_refs(failures) | decodes_now, done)


def undecoded_refs(failures: list[dict]) -> set[str]:
    """The ref_ids `failures` left out, whole, because their bytes did not decode (corrupt,
    too small, ...): not a version's failure, nor a source unread or left out after it
    decoded."""
    return {failure["ref_id"] for failure in failures
            if "distortion_id" not in failure and "key" not in failure
            and failure.get("reason") not in (UNREADABLE, *LEFT_OUT_AFTER_DECODING)}


def unread_refs(failures: list[dict]) -> set[str]:
    """The ref_ids `failures` left out because their bytes could not be read (nothing of
    them is in their shards)."""
    return {failure["ref_id"] for failure in failures if failure.get("reason") == UNREADABLE}


def _shards_of(plan: Plan, ref_ids: set[str], done: list[int]) -> list[int]:
    """The shards of `done` that hold any of the references `ref_ids` in the plan."""
    return sorted({position // plan.shard_refs for position, ref in enumerate(plan.references)
                   if ref.ref_id in ref_ids} & set(done))


def failures_of(location: Location, done: list[int]) -> list[dict]:
    """The failures of the finished shards `done`: the merged list where the last run ended
    (report.json written; one file), else each finished shard's own."""
    if location.exists(location.path(REPORT_FILE)):
        paths = [location.path(FAILURES_FILE)]
    else:
        paths = [shard_paths(location, index)["failures"] for index in done]
    return [failure for failures in read_ahead(partial(_failures_list, location), paths)
            for failure in failures]


def _failures_list(location: Location, path: str) -> list[dict]:
    """A failures list's records (none where the file is not there); a RunFileError names
    the file where it cannot be read."""
    if not location.exists(path):
        return []
    try:
        failures = location.read_json_lines(path)
    except (ValueError, UnicodeDecodeError) as error:
        failures = error
    if isinstance(failures, list) and all(isinstance(failure, dict) for failure in failures):
        return failures
    why = f"({failures})" if isinstance(failures, Exception) else "(a line is not an object)"
    raise RunFileError(f"{redact(path)} cannot be read as a failures list {why}: delete it "
                       f"and {REPORT_FILE}, and the run's end writes them again from the "
                       "shards' own lists")
