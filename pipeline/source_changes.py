"""Sources modified in place since their shard was made. On a resume, a source of a finished
shard whose size or modification time differs from the earlier listing's is decoded again, as
its shard's worker did, and its pixels compared with the SHA-256 that shard recorded: a photo
replaced by another (of the same byte size too) is named rather than mixed in, while a file
only touched, encoded again without loss, or changed after the listing but before its shard
read it (the shard holds what it holds now) resumes. A source left out of its shard because it
could not be read or decoded (nothing of it there to mix) resumes whatever it holds now; where it
decodes now it is named, and --retry-unreadable makes its shard again. A source of a shard not
made yet is made from what it holds now."""

import json
import os
from dataclasses import replace

from tqdm import tqdm

from distortions.threads import use_one_thread
from pipeline.config import RunConfig
from pipeline.plan import Plan, PlannedReference, read_plan, record_plan, sources_changed
from pipeline.processes import in_processes
from pipeline.sources import printable
from pipeline.worker import ShardOutcome, prepare_reference
from shards.layout import shard_name, shard_paths
from shards.storage import Location
from shards.words import a_few


def _each(values: tuple, count: int) -> tuple:
    """A plan's per-reference listing values, None for each where it holds none (())."""
    return values or (None,) * count


def touched(old: Plan, new: Plan) -> list[int]:
    """Indices of the references whose modification time differs now, or is told now where
    the earlier listing could not (a dangling link since repaired); none where this listing
    cannot tell it, nor where the earlier plan kept no times at all."""
    if not old.source_mtimes:  # a plan from before times were kept: nothing to compare
        return []
    count = len(new.references)
    return [index for index, (before, after) in enumerate(
                zip(old.source_mtimes, _each(new.source_mtimes, count), strict=False))
            if after is not None and before != after]


def resized(old: Plan, new: Plan) -> list[int]:
    """Indices of the references whose file size differs now, where both listings told it."""
    count = len(new.references)
    return [index for index, (before, after) in enumerate(
                zip(_each(old.source_bytes, count), _each(new.source_bytes, count), strict=True))
            if None not in (before, after) and before != after]


def known_listing(old: Plan, new: Plan) -> Plan:
    """`new` with the earlier listing's size and time of each source this one cannot tell
    (unreadable now): recorded as None, a replacement made later would go unnoticed."""
    count = len(new.references)

    def kept(before: tuple, after: tuple) -> tuple:
        merged = tuple(now if now is not None else was for was, now in
                       zip(_each(before, count), _each(after, count), strict=True))
        return merged if any(value is not None for value in merged) else ()
    return replace(new, source_bytes=kept(old.source_bytes, new.source_bytes),
                   source_mtimes=kept(old.source_mtimes, new.source_mtimes))


# reasons a source is left out after it decoded: its pixels' SHA-256 is not recorded
LEFT_OUT_AFTER_DECODING = ("label_failed", "quarantined")


def _recorded(location: Location, shard: int) -> dict[str, dict]:
    """ref_id -> its row (status, reason, pixels' SHA-256) as its finished shard made it."""
    rows = json.loads(location.read_bytes(shard_paths(location, shard)["sources"]))
    return {row["ref_id"]: row for row in rows}


def _change(recorded: dict, now: dict, shard: str) -> str | None:
    """How a source that decoded when its shard was made differs now, in words (None: it
    gives the same pixels)."""
    if now["sha256"] == recorded["sha256"]:
        return None
    if now["status"] != "ok":
        return f"no longer decodes ({now['reason']}), where shard {shard} was made from it"
    return f"holds other pixels than shard {shard} was made from"


def changed_pixels(location: Location, plan: Plan, config: RunConfig, indices: list[int],
                   done: set[int]) -> tuple[list[str], list[int]]:
    """Of the references `indices` in a finished shard of `done`: in words, each whose source
    no longer gives the pixels its shard recorded; and the index of each left out because it
    could not be read or decoded (nothing of it is in its shard: it stays so, unless
    --retry-unreadable makes the shard again) that decodes now. One left out after it decoded
    (labels failed, quarantined) has no SHA-256 to compare, and is not decoded. They are
    decoded in a process per CPU where there are many (sources copied without their times:
    every one of a paper-scale run, hours in one process)."""
    in_done = [i for i in indices if i // plan.shard_refs in done]
    recorded = {shard: _recorded(location, shard)
                for shard in sorted({i // plan.shard_refs for i in in_done})}
    befores = [(index, recorded[index // plan.shard_refs].get(plan.references[index].ref_id, {}))
               for index in in_done]
    # no SHA-256 recorded to compare where it was left out after decoding (and a quarantined
    # one killed workers)
    befores = [(index, before) for index, before in befores
               if before.get("reason") not in LEFT_OUT_AFTER_DECODING]
    jobs = [(plan.references[index], config, index // plan.shard_refs) for index, _ in befores]
    decoded = in_processes(_decoded_row, jobs,
                           (os.cpu_count() or 1) if len(jobs) >= DECODE_HERE_BELOW else 1,
                           use_one_thread)  # a process per CPU, each on one thread
    changed, decodes_now = [], []
    for (index, before), now in zip(befores, tqdm(
            decoded, total=len(jobs), desc="modified sources checked", unit="source",
            leave=False, disable=len(jobs) < 20), strict=True):
        if not before.get("sha256"):  # it could not be read or decoded then
            if now["status"] == "ok":
                decodes_now.append(index)
        elif change := _change(before, now, shard_name(index // plan.shard_refs)):
            changed.append(f"{printable(plan.references[index].uri)} {change}")
    return changed, decodes_now


DECODE_HERE_BELOW = 64  # fewer sources to decode than this: here (a process takes ~2 s to start)


def _decoded_row(job: tuple[PlannedReference, RunConfig, int]) -> dict:
    """The sources row a reference gives now, as the worker of its shard makes it."""
    ref, config, shard = job
    return prepare_reference(ref, config, ShardOutcome(shard))[1]


def check_modified_sources(location: Location, plan: Plan, config: RunConfig,
                           done: list[int]) -> None:
    """On a resume (plan.json there, of the same digest): a PlanMismatchError naming the
    sources of finished shards that changed in place; else the listing's sizes and times are
    recorded, so that the next resume compares against these. A source left out as unreadable
    or undecodable that has changed and decodes now is named in a note."""
    previous = read_plan(location)
    modified = sorted(set(touched(previous, plan)) | set(resized(previous, plan)))
    changed, decodes_now = changed_pixels(location, plan, config, modified, set(done))
    if changed:
        raise sources_changed(location, changed, "since their shards were made")
    if decodes_now:
        names = [printable(plan.references[index].uri) for index in decodes_now]
        print(f"note: {len(names)} source(s) left out of finished shards as unreadable or "
              f"undecodable can be read now ({a_few(names)}): their shards stay as made "
              "unless --retry-unreadable makes them again")
    count = len(plan.references)
    unseen = [printable(ref.uri) for index, (ref, was, now) in enumerate(zip(
                  plan.references, _each(previous.source_mtimes, count),
                  _each(plan.source_mtimes, count), strict=True))
              if now is None and was is not None and index // plan.shard_refs in done]
    if unseen:
        print(f"note: {len(unseen)} source(s) of finished shards cannot be read now "
              f"({a_few(unseen)}): their shards stay as made, and their size and time as "
              "recorded")
    listed = known_listing(previous, plan)
    if (previous.source_bytes, previous.source_mtimes) != (listed.source_bytes,
                                                           listed.source_mtimes):
        record_plan(location, listed)
