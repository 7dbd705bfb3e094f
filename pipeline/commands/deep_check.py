"""`inspect --deep`: a seeded sample of a dataset's distorted samples replayed and re-scored.

Each sampled version is made again from its stored reference and recipe, and its pixels'
SHA-256 compared with the one recorded (a version a recipes or hybrid dataset stores as its
recipe: replayed through the reader, which checks it against the recorded SHA-256); its Q is
made again from its raw scores under the run's ensemble; its pair is scored again on this
machine and the raw scores compared with the stored ones. A
learned-denoiser version made on another device than this one may differ by one intensity
level (recorded device vs this one): that is reported, not counted as a problem."""

import json
import tarfile
from collections.abc import Callable
from functools import partial

import numpy as np
import pyarrow as pa
from tqdm import tqdm

import distortions
from distortions.denoiser import active_denoiser
from labelers import Labeler, weights
from labelers.base import DEVICE_TOLERANCE
from labelers.ensemble import Ensemble
from labelers.ensemble import parsed as parse_ensemble
from labelers.errors import LabelerError
from shards.keys import reference_key
from shards.layout import ENSEMBLE_FILE, store_of, tar_path
from shards.png import decode_png
from shards.reader import (
    DamagedShardError,
    no_complete_shard,
    read_index,
    shard_indexes,
    tar_members,
)
from shards.replay import (
    Pending,
    ReplayContext,
    ReplayError,
    changed_reference,
    labels_problem,
)
from shards.schema import INDEX_SCHEMA, chain_of, index_row, pixel_sha256
from shards.storage import Location
from shards.store_modes import stores_pixels


def _sample(location: Location, count: int, seed: int) -> list[dict]:
    """`count` distorted rows of the index (each with its shard), seeded. The shards' kind
    columns are counted first and only the sampled shards read whole: a paper-scale index
    (23.1M rows) does not fit in memory as rows."""
    distorted = {shard: table.num_rows for shard, table in
                 shard_indexes(location, columns=["kind"], kind="distorted")}
    if not distorted:
        raise no_complete_shard(location)
    shards, counts = np.array(list(distorted), np.int64), np.array(list(distorted.values()))
    starts = np.cumsum(counts) - counts
    total = int(counts.sum())
    picks = np.sort(np.random.default_rng(seed).choice(total, min(count, total), replace=False))
    of_shard = np.searchsorted(starts, picks, side="right") - 1
    sampled = np.unique(of_shard)
    if not len(sampled):
        return []
    # one table of the sampled shards, as read_index makes it (a shard written before a
    # metric's column reads beside newer ones with a null score)
    table = read_index(location, [int(shards[i]) for i in sampled], with_shard=True,
                       kind="distorted")
    offsets = np.cumsum(counts[sampled]) - counts[sampled]  # each sampled shard's first row
    rows = picks - starts[of_shard] + offsets[np.searchsorted(sampled, of_shard)]
    return table.take(rows).to_pylist()


def _pixels(location: Location, tar: str, keys: set[str]
            ) -> dict[str, tuple[np.ndarray | None, dict | None]]:
    """The stored pixels (None for a version stored as its recipe only) and the record of
    `keys` in the shard tar `tar`; only those members are read."""
    members = tar_members(location, tar, keys=keys)
    return {key: (_decoded(key, parts["png"]) if "png" in parts else None,
                  json.loads(parts["json"]) if "json" in parts else None)
            for key, parts in members.items()}


def _decoded(key: str, png: bytes) -> np.ndarray:
    """A sample's stored PNG, decoded; a ValueError naming the sample where it is not one."""
    try:
        return decode_png(png)
    except ValueError as error:
        raise ValueError(f"sample {key}: {error} (changed after it was written)") from None


def record_differences(rows: list[dict], records: dict[str, dict | None]) -> list[str]:
    """Where versions' records in their tar (`records`: key -> the parsed .json, None where
    it holds none; what readers read and replay) are not their index rows (what counts,
    splits and this check's sample read): a problem naming the fields of each."""
    problems, compared = [], []
    for row in rows:
        record = records.get(row["key"])
        if not isinstance(record, dict):
            problems.append(f"{row['key']}: its tar holds no readable .json record of it")
            continue
        try:  # as read_index reads a shard made before chains were recorded: chain derived
            compared.append((row, index_row({**record, "chain": chain_of(record)})))
        except (KeyError, TypeError, ValueError) as error:
            problems.append(f"{row['key']}: its tar record is not a sample's "
                            f"({type(error).__name__}: {error})")
    for row, indexed in zip((row for row, _ in compared),
                            _as_indexed([as_read for _, as_read in compared]), strict=True):
        differing = ([name for name, value in indexed.items() if row.get(name) != value]
                     if isinstance(indexed, dict) else [indexed])
        if differing:
            problems.append(f"{row['key']}: its tar record and its index row differ in "
                            f"{', '.join(differing)} (changed after it was written)")
    return problems


def _as_indexed(rows: list[dict]) -> list[dict | str]:
    """The rows as the index schema stores them (one conversion for all: a fiftieth of a
    millisecond each); one that does not fit the schema is named by why."""
    try:
        return pa.Table.from_pylist(rows, schema=INDEX_SCHEMA).to_pylist()
    except (pa.ArrowException, TypeError, ValueError):
        return [_one_indexed(row) for row in rows]


def _one_indexed(row: dict) -> dict | str:
    try:
        return pa.Table.from_pylist([row], schema=INDEX_SCHEMA).to_pylist()[0]
    except (pa.ArrowException, TypeError, ValueError) as error:
        return f"types the index cannot hold ({type(error).__name__})"


def label_problem(row: dict) -> str | None:
    """Where the labels of an index row are not those of the recipe it holds (as JSON text):
    shards.replay.labels_problem."""
    try:
        recipe = json.loads(row["recipe"])
    except (TypeError, ValueError) as error:
        return f"{row['key']}: its recipe names no distortion ({type(error).__name__}: {error})"
    return labels_problem(row["key"], row, recipe)


Q_TOLERANCE = 1e-6  # Q made again from raw scores a GPU gave as float32: a few ulps apart


def run_ensemble(location: Location) -> Ensemble | None:
    """The ensemble the run's Q was made with (ensemble.json); None for a label-free run or
    one whose file cannot be read (inspect names it: ensemble_problems)."""
    path = location.path(ENSEMBLE_FILE)
    try:
        return parse_ensemble(location.read_bytes(path), path) if location.exists(path) else None
    except (OSError, ValueError, LabelerError):
        return None


def q_of_scores_problem(row: dict, ensemble: Ensemble | None) -> str | None:
    """Where a version's Q is not its ensemble's Q of its raw scores (of the metrics it
    records using): a label changed after it was made, in its tar and its index alike."""
    if ensemble is None or row["quality"] is None or row["ensemble_hash"] != ensemble.hash:
        return None
    scores = row["scores"] or {}
    used = row["metrics_used"] or list(ensemble.weights)
    try:
        again = float(ensemble.quality({key: np.array([scores[key]]) for key in used
                                         if scores.get(key) is not None})[0][0])
    except LabelerError as error:
        return f"{row['key']}: its Q cannot be made again from its raw scores ({error})"
    if abs(again - row["quality"]) <= Q_TOLERANCE:
        return None
    return (f"{row['key']}: its Q {row['quality']:.6g} is not {again:.6g}, its ensemble's Q of "
            "its raw scores (changed after it was made)")


def _recipe_only(row: dict, reference: np.ndarray, context: ReplayContext
                 ) -> tuple[str | None, str, np.ndarray | None]:
    """(a problem or None, a note, its pixels) of a version stored as its recipe: replayed
    through the reader, which verifies its SHA-256."""
    try:
        pixels = Pending(row["key"], reference, {**row, "recipe": json.loads(row["recipe"])},
                         context).pixels()
    except ReplayError as error:
        return str(error), "replay differs", None
    return None, "replayed exactly (stored as its recipe)", pixels


def _replay(row: dict, reference: np.ndarray, stored: np.ndarray) -> tuple[str | None, str]:
    """(a problem or None, a note) for one replayed version."""
    recipe = json.loads(row["recipe"])
    try:
        distortions.check_recipe(recipe)
        again = distortions.replay(reference, recipe)
    except distortions.DistortionError as error:
        return f"{row['key']}: its recipe cannot be replayed: {error}", "recipe refused"
    if pixel_sha256(again) == row["sha256"] == pixel_sha256(stored):
        return None, "replayed exactly"
    largest = int(np.abs(again.astype(int) - stored.astype(int)).max())
    made_on = next((link["params"]["device"] for link in recipe.get("chain", [recipe])
                     if link["params"].get("device")), None)  # a composed recipe's links
    here = active_denoiser().spec.device if made_on else None
    if made_on and made_on != here and largest <= 1:
        return None, f"replayed within 1 level (made on {made_on}, replayed on {here})"
    return (f"{row['key']}: replay differs from the stored pixels (up to {largest} levels)",
            "replay differs")


def _rescore(row: dict, reference: np.ndarray, stored: np.ndarray, labeler: Labeler
             ) -> str | None:
    scores = labeler.score(reference, stored[None])
    for key in labeler.keys:
        recorded, again = row["scores"][key], float(scores[key][0])
        if recorded is None or abs(again - recorded) > DEVICE_TOLERANCE * (1 + abs(recorded)):
            return f"{row['key']}: {key} scores {again:.6g} here, {recorded} stored"
    return None


def _check_version(row: dict, pixels: dict, changed: dict,
                   shard_context: Callable[[], ReplayContext], store: str,
                   keep_pngs: tuple[int, ...], labeler: Labeler | None,
                   ensemble: Ensemble | None) -> tuple[list[str], str]:
    """(problems, note) of one sampled version against its shard's `pixels`."""
    if row["ref_id"] in changed:
        return [], "reference changed"
    reference = pixels[reference_key(row["ref_id"])][0]
    stored, record = pixels[row["key"]]
    differs = record_differences([row], {row["key"]: record})
    if differs:  # readers replay the record: the index's copy would check another
        return differs, "record differs from the index"
    if mislabelled := label_problem(row):
        return [mislabelled], "labels differ from the recipe"
    if stored is None and stores_pixels(store, row, keep_pngs):
        return ([f"{row['key']}: its tar holds no PNG of it, though the store mode {store} "
                 f"keeps one"], "PNG missing")
    if stored is None:
        problem, note, stored = _recipe_only(row, reference, shard_context())
    else:
        problem, note = _replay(row, reference, stored)
    if stored is None:
        return [problem], note
    rescored = _rescore(row, reference, stored, labeler) if labeler else None
    # (a raw score changed is named as that: its Q, made of it, differs too)
    return [p for p in (problem, rescored or q_of_scores_problem(row, ensemble)) if p], note


def deep_check(location: Location, count: int, seed: int = 0, keep_pngs: tuple[int, ...] = ()
               ) -> tuple[list[str], list[str]]:
    """(summary lines, problems) of `count` sampled versions replayed and re-scored; a
    version without its PNG where the store mode keeps one (`keep_pngs`: the run's
    --keep-pngs) is a problem, not a replay."""
    try:
        rows = _sample(location, count, seed)
    except (OSError, pa.ArrowException, DamagedShardError) as error:  # an index missing,
        return [], [f"deep check: {error}"]                             # unreadable or changed
    if not rows:
        return [], ["deep check: no distorted sample to check"]
    stored_metrics = [key for key, value in (rows[0]["scores"] or {}).items()
                      if value is not None]
    computable = set(stored_metrics) - set(weights.missing(stored_metrics))
    labeler = (Labeler(stored_metrics, device="cpu", allow_missing=True) if computable
               else None)  # label-free, or only metrics whose weights are absent here
    problems, notes = [], []
    context, store = ReplayContext.of(location), store_of(location)
    ensemble = run_ensemble(location)
    checked = tqdm(total=len(rows), desc="deep check", unit="version", leave=False,
                   disable=len(rows) < 4)  # each replayed and re-scored: seconds on a CPU
    by_shard: dict[int, list[dict]] = {}
    for row in rows:
        by_shard.setdefault(row["shard"], []).append(row)
    for shard, shard_rows in by_shard.items():
        wanted = {row["key"] for row in shard_rows} | {reference_key(row["ref_id"])
                                                       for row in shard_rows}
        try:
            pixels = _pixels(location, tar_path(location, shard, store), wanted)
        except (OSError, ValueError, tarfile.TarError) as error:  # the damage it looks for
            problems.append(f"deep check: shard {shard}: {error}")
            continue
        absent = sorted(wanted - set(pixels))
        if absent:  # the index lists them; the tar (changed after it was written) lacks them
            problems.append(f"deep check: shard {shard}: {len(absent)} sample(s) the index "
                            f"lists are not in its tar ({', '.join(absent[:3])}...)")
            continue
        changed = {ref_id: problem for ref_id in {row["ref_id"] for row in shard_rows}
                   if (problem := changed_reference(reference_key(ref_id),
                                                    *pixels[reference_key(ref_id)]))}
        problems += [f"deep check: shard {shard}: {problem}" for problem in changed.values()]
        shard_context = partial(context.for_shard, location, shard)  # read where replayed
        for row in shard_rows:
            checked.update()
            found, note = _check_version(row, pixels, changed, shard_context, store,
                                         keep_pngs, labeler, ensemble)
            problems += found
            notes.append(note)
    checked.close()
    counts = {note: notes.count(note) for note in sorted(set(notes))}
    return [f"deep check: {len(rows)} sampled versions: "
            + "; ".join(f"{n} {note}" for note, n in counts.items())
            + f"; {_rescored(labeler, stored_metrics)}"], problems


def _rescored(labeler: Labeler | None, stored_metrics: list[str]) -> str:
    if labeler is None:
        return (f"nothing re-scored: the weights of {', '.join(stored_metrics)} are absent here"
                if stored_metrics else "label-free: nothing to re-score")
    return "re-scored with " + ", ".join(labeler.keys) + (
        f" ({', '.join(labeler.absent)} absent here)" if labeler.absent else "")
