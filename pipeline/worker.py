"""The shard worker, free of Ray: decode and size each reference, apply every scenario, label
the versions, and write the shard. Bad input never stops it: a source or sample that fails is
recorded with its reason."""

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

import distortions
from labelers.ensemble import Ensemble
from labelers.errors import LabelerError
from pipeline.config import RunConfig
from pipeline.likeness import perceptual_hash
from pipeline.plan import Chain, Plan, PlannedReference, ShardPlan, planned_versions
from pipeline.scenario_quality import add_labels
from pipeline.sizing import NATIVE, SourceTooSmallError, cover_and_crop, limit_side
from pipeline.sources import load, printable
from pipeline.spill import SpilledSamples
from shards.decode import DecodeError
from shards.keys import composed_key, distorted_key, reference_key
from shards.layout import shard_paths
from shards.lease import check_writer
from shards.png import encode_png
from shards.provenance import library_versions
from shards.schema import INDEX_SCHEMA, pixel_sha256, record_scores
from shards.storage import Location
from shards.store_modes import stores_pixels
from shards.writer import ShardWriter

# score_images(reference pixels, N x H x W x 3 version pixels, on_labelled, ref_id) -> {metric:
# scores}, calling on_labelled(n) as parts of n versions are labelled (ref_id: whose they are).
# Raw pixels, not PNGs: a GPU labeler then never decodes on its one CPU, and Ray passes the
# arrays through its object store without copies.
Labelled = Callable[[int], None]
ScoreImages = Callable[[np.ndarray, np.ndarray, Labelled], dict[str, np.ndarray]]
# on_progress(samples, failures, left out): told as parts of a reference's versions are
# labelled (n, 0, 0) and as it ends (its own sample, its failures, and the planned samples it
# will never make: a failed source's, a version whose distortion failed), so that the counts
# reach the planned total when every reference is done
Progress = Callable[[int, int, int], None]
# denoise([prepared learned-denoiser inputs]) -> [(image, recipe)]: the network half of types
# 8-12, batched wherever the denoiser lives (a GPU labeler actor on a cluster with GPUs)
Denoise = Callable[[list[distortions.LearnedInput]], list[tuple[np.ndarray, dict]]]


class Guard:
    """Told as each reference begins and ends here, so that a reference on which worker
    processes die can be quarantined
    (pipeline.actors.ProgressActor keeps the count on a cluster), and asked before the shard
    writes into OUT. This one admits every reference; given the lease identity of the driver
    that sent the shard out, it lets the shard write only while that driver holds OUT's lease
    (shards.lease.check_writer). Without one (runs in one process, no lease) it lets it
    write."""

    def __init__(self, lease_holder: dict | None = None):
        self.lease_holder = lease_holder

    def publishing(self, location: Location) -> None:
        """LeaseLostError where the shard may no longer write into `location`."""
        if self.lease_holder is not None:
            check_writer(location, self.lease_holder)

    def begin(self, ref_id: str) -> bool:
        """Whether to make `ref_id` (False: it is quarantined)."""
        return True

    def end(self) -> None:
        """The reference begun last is made here (its labels may still be awaited)."""



ADMIT_ALL = Guard()
QUARANTINED = ("a process died twice while making it (its shard's worker or the labeler "
               "scoring it: killed, out of memory or crashed): left out")


@dataclass
class ShardOutcome:
    index: int
    samples: int = 0
    references: int = 0
    sources: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {
        "decode": 0.0, "distort": 0.0, "network": 0.0, "encode": 0.0, "label": 0.0,
        "write": 0.0})  # network: the learned denoiser's (on a GPU actor: the wait for it)
    labels: int = 0  # single-type versions written (a chain has no type and level of its own)
    quality_by_scenario: dict[str, list] = field(default_factory=dict)  # scenario_quality


class _Timer:
    def __init__(self, seconds: dict[str, float], stage: str):
        self.seconds, self.stage = seconds, stage

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.seconds[self.stage] += time.perf_counter() - self.start


def _failure(ref: PlannedReference, reason: str, detail: str, **extra) -> dict:
    return {"ref_id": ref.ref_id, "uri": printable(ref.uri), "reason": reason,
            "detail": printable(detail), **extra}


def prepare_reference(ref: PlannedReference, config: RunConfig, outcome: ShardOutcome):
    """The sized reference pixels (None, and a failure, if unusable) and its sources row."""
    row = {"ref_id": ref.ref_id, "uri": printable(ref.uri), "shard": outcome.index,
           "split": ref.split, "source_kind": config.source_kind,
           "original_width": None, "original_height": None, "sha256": None, "phash": None,
           "conversions": [], "status": "failed", "reason": None}
    try:
        decoded = load(ref.source(), config.max_pixels, store=config.sources)
        width, height = decoded.original_size
        row.update(original_width=width, original_height=height,
                   conversions=list(decoded.conversions))
        pixels = sized(decoded.pixels, config)
        distortions.check_image(pixels)
        row["conversions"] += upscaling(decoded.pixels, config)
    except DecodeError as error:
        row["reason"] = error.reason
        outcome.failures.append(_failure(ref, error.reason, str(error)))
    except (SourceTooSmallError, distortions.ImageTooSmallError) as error:
        row["reason"] = "too_small"
        outcome.failures.append(_failure(ref, "too_small", str(error)))
    except Exception as error:  # one source, whatever it raises, never stops its shard
        row["reason"] = "internal_error"
        outcome.failures.append(_failure(ref, "internal_error",
                                         f"{type(error).__name__}: {error}"))
    else:
        row.update(status="ok", sha256=pixel_sha256(pixels), phash=perceptual_hash(pixels))
        outcome.sources.append(row)
        return pixels, row
    outcome.sources.append(row)
    return None, row


def sized(pixels: np.ndarray, config: RunConfig) -> np.ndarray:
    """A decoded source under the run's size policy."""
    if config.size == NATIVE:
        return limit_side(pixels, config.max_side)
    return cover_and_crop(pixels, config.size, config.allow_upscale, config.max_pixels)


def upscaling(pixels: np.ndarray, config: RunConfig) -> list[str]:
    """The conversion a source smaller than the target goes through (--allow-upscale)."""
    if config.size == NATIVE:
        return []
    height, width = pixels.shape[:2]
    scale = max(config.size.width / width, config.size.height / height)
    return [f"upscaled {scale:.3g}x from {width}x{height} to cover {config.size}"] if scale > 1 \
        else []


def _base_record(ref: PlannedReference, pixels: np.ndarray, key: str, kind: str) -> dict:
    return {"key": key, "ref_id": ref.ref_id, "kind": kind, "split": ref.split,
            "width": int(pixels.shape[1]), "height": int(pixels.shape[0]), "codec": "png",
            "sha256": pixel_sha256(pixels)}


def _reference_record(ref: PlannedReference, pixels: np.ndarray) -> dict:
    """A reference's record: every field of the index, null where a reference has none
    (distortion, recipe, scores, quality), as the spec lists them."""
    return {**dict.fromkeys(INDEX_SCHEMA.names),
            **_base_record(ref, pixels, reference_key(ref.ref_id), "reference")}


def _each_or_error(make: Callable, pixels: np.ndarray, jobs: list[tuple[int, int, int]]
                   ) -> list:
    """make(pixels, distortion id, level, seed) for each job, or its DistortionError's
    message."""
    results = []
    for distortion_id, level, seed in jobs:
        try:
            results.append(make(pixels, distortion_id, level, seed))
        except distortions.DistortionError as error:
            results.append(str(error))
    return results


def apply_locally(pixels: np.ndarray, jobs: list[tuple[int, int, int]]) -> list:
    """(image, recipe), or the error message, for each (distortion id, level, seed)."""
    return _each_or_error(distortions.apply, pixels, jobs)


def prepare_learned_jobs(pixels: np.ndarray, jobs: list[tuple[int, int, int]],
                         seconds: dict[str, float]) -> list:
    """Learned-denoiser jobs' inputs, prepared here (timed as `distort`): the noisy image and
    its noise estimate, or the error message, for each."""
    with _Timer(seconds, "distort"):
        return _each_or_error(distortions.prepare_learned, pixels, jobs)


def denoised(prepared: list, denoise: Denoise, seconds: dict[str, float]) -> list:
    """The network over the prepared inputs through `denoise` (timed as `network`): (image,
    recipe), or the error message, for each."""
    inputs = [item for item in prepared if not isinstance(item, str)]
    if not inputs:  # no network pass, so no network time (and no rate from timer overhead)
        return prepared
    try:
        with _Timer(seconds, "network"):
            made = iter(denoise(inputs))
    except distortions.DistortionError as error:
        return [item if isinstance(item, str) else str(error) for item in prepared]
    return [item if isinstance(item, str) else next(made) for item in prepared]


def _distort_all(ref, pixels, config, outcome, denoise: Denoise):
    """(record, image) for every version that succeeds: the single-type ones in scenario
    order, then the chains (planned_versions); failures are recorded. The learned-denoiser
    types' network runs through `denoise` (a GPU actor on a cluster with GPUs), everything
    else here."""
    singles, chains = planned_versions(ref.ref_id, config)
    made = _single_all(ref, pixels, config, outcome, denoise, singles)
    with _Timer(outcome.seconds, "distort"):
        return made + _compose_all(ref, pixels, config, outcome, chains)


NO_EFFECT = "no_effect"
NO_EFFECT_DETAIL = ("its pixels are the reference's: the distortion changes nothing in this "
                    "image (a colour type on a grayscale photo, say), so labelled as that type "
                    "and level it would name a distortion its pixels do not hold")
CHAIN_NO_EFFECT_DETAIL = ("it changes nothing in this image (a colour type on a grayscale "
                          "photo, say), so a chain labelled with it would name a distortion "
                          "its pixels do not hold")


def idle_links(chain: list[tuple[int, int]], changed: list[bool]) -> list[tuple[int, int]]:
    """The links of a version's chain (one link: a single type) that left their input as it
    was, at a level that is not their type's identity level (the spec's gaussian_blur 1, say):
    labelled with them, the version would name a distortion its pixels do not hold."""
    return [(d, level) for (d, level), moved in zip(chain, changed, strict=True)
            if not moved and distortions.get(d).identity_level != level]


def _single_all(ref, pixels, config, outcome, denoise: Denoise,
                scenarios: list[tuple[int, int]]) -> list:
    """(record, image) of every single-type version that succeeds, in scenario order."""
    jobs = [(d, lv, distortions.derive_seed(config.seed, ref.ref_id, d, lv))
            for d, lv in scenarios]
    learned = [job for job in jobs if distortions.get(job[0]).learned]
    classic = [job for job in jobs if not distortions.get(job[0]).learned]
    prepared = prepare_learned_jobs(pixels, learned, outcome.seconds)
    # the network runs elsewhere on a cluster (the GPU actor): the other types are distorted
    # here meanwhile, as the PNGs are encoded while the labels are awaited
    with ThreadPoolExecutor(1, thread_name_prefix="network") as network:
        networked = network.submit(denoised, prepared, denoise, outcome.seconds)
        with _Timer(outcome.seconds, "distort"):
            results = dict(zip(classic, apply_locally(pixels, classic), strict=True))
        results.update(zip(learned, networked.result(), strict=True))
    made = []
    for job in jobs:
        distortion_id, level, seed = job
        distortion = distortions.get(distortion_id)
        if isinstance(results[job], str):
            outcome.failures.append(_failure(ref, "distortion_failed", results[job],
                                             distortion_id=distortion_id, level=level))
            continue
        image, recipe = results[job]
        if idle_links([(distortion_id, level)], [not np.array_equal(image, pixels)]):
            outcome.failures.append(_failure(ref, NO_EFFECT, NO_EFFECT_DETAIL,
                                             distortion_id=distortion_id, level=level))
            continue
        record = _base_record(ref, image, distorted_key(ref.ref_id, distortion_id, level),
                              "distorted")
        record.update(distortion_id=distortion_id, distortion=distortion.name,
                      category=distortion.category, level=level, seed=seed, recipe=recipe,
                      chain=[{"id": distortion_id, "level": level}])
        made.append((record, image))
    return made


def _compose_all(ref, pixels, config, outcome, chains: list[tuple[int, Chain]]) -> list:
    """(record, image) of every composed version (--compose, compose_share) that succeeds, in
    version order: its chain's links applied in order, each seeded by the version's key, type
    and level. The single-valued fields (distortion_id, distortion, category, level, seed)
    are the first link's; `chain` and the recipe hold them all. (No chain holds a learned
    type: refused at config, never drawn.)"""
    made = []
    for index, chain in chains:
        key = composed_key(ref.ref_id, index)
        links = [(d, lv, distortions.derive_seed(config.seed, key, d, lv)) for d, lv in chain]
        links_json = [{"id": d, "level": lv} for d, lv in chain]
        changed: list[bool] = []
        try:
            image, recipe = distortions.compose(pixels, links, changed)
        except distortions.DistortionError as error:
            outcome.failures.append(_failure(ref, "distortion_failed", str(error), key=key,
                                             chain=links_json))
            continue
        if idle := idle_links(chain, changed):
            named = ", ".join(f"{distortions.get(d).name} level {lv}" for d, lv in idle)
            outcome.failures.append(_failure(ref, NO_EFFECT, f"{named} left its input as it "
                                             f"was: {CHAIN_NO_EFFECT_DETAIL}", key=key,
                                             chain=links_json))
            continue
        first = distortions.get(chain[0][0])
        record = _base_record(ref, image, key, "distorted")
        record.update(distortion_id=first.id, distortion=first.name, category=first.category,
                      level=chain[0][1], seed=links[0][2], recipe=recipe, chain=links_json)
        made.append((record, image))
    return made


def _apply_labels(records: list[dict], scores: dict[str, np.ndarray] | None,
                  ensemble: Ensemble) -> dict[int, str]:
    """Scores and Q on each record, null ones where `scores` is None (a label-free run).
    Returns {record index: why} of the versions left unlabelled (a metric gave a value that
    is not a finite number: no Q is made of it)."""
    if scores is None:
        for record in records:
            record.update(scores=None, quality=None, ensemble_hash=None, metrics_used=None)
        return {}
    unlabelled = _non_finite(scores)
    if unlabelled:
        kept = [i for i in range(len(records)) if i not in unlabelled]
        scores = {key: np.asarray(values)[kept] for key, values in scores.items()}
        records = [records[i] for i in kept]
    quality, used = ensemble.quality(scores) if records else ([], ())
    for i, record in enumerate(records):
        record["scores"] = record_scores({key: values[i] for key, values in scores.items()})
        record["quality"] = float(quality[i])
        record["ensemble_hash"] = ensemble.hash
        record["metrics_used"] = list(used) if set(used) != set(ensemble.weights) else None
    return unlabelled


def _non_finite(scores: dict[str, np.ndarray]) -> dict[int, str]:
    """{version index: the metrics whose score of it is not a finite number}."""
    bad: dict[int, list[str]] = {}
    for key, values in scores.items():
        for index in np.flatnonzero(~np.isfinite(np.asarray(values, dtype=np.float64))):
            bad.setdefault(int(index), []).append(key)
    return {index: f"{', '.join(keys)} gave a score that is not a finite number"
            for index, keys in bad.items()}


# The most a reference's versions (pixels and PNGs) may hold while the next reference is made
# beside its labels: a larger one (a native-size run of big photos) is settled before the next
# begins, so that a shard task holds such a reference's versions alone.
OVERLAP_BYTES = 1 << 30


@dataclass
class _Reference:
    """A reference between its making here and its settling: its own sources row and
    failures (merged into the shard's in the plan's order when it settles), its pixels (None:
    left out), its versions (record, image) and PNGs, and its labels being made elsewhere
    (None: none asked for: no version, or a label-free run) of the versions' pixels stacked
    (each version's image then a view of them)."""

    ref: PlannedReference
    part: ShardOutcome
    pixels: np.ndarray | None = None
    row: dict = field(default_factory=dict)
    made: list = field(default_factory=list)
    pngs: tuple[bytes, Sequence[bytes | None]] = (b"", ())
    labels: Future | None = None
    stacked: np.ndarray | None = None

    def held_bytes(self) -> int:
        return (sum(image.nbytes for _, image in self.made) + len(self.pngs[0])
                + sum(len(png) for png in self.pngs[1] if png is not None))



class _ShardMaker:
    """The making of a shard's references, one after another, so that neither the shard's
    CPU nor the labeler waits on the other: while one reference's labels are made elsewhere
    (a GPU actor, the device check's serving process), its PNGs are encoded and, unless it
    holds more than the run's overlap_bytes (0 with CPU labeler actors: pipeline.scheduling),
    the next reference is decoded and distorted here. What a reference adds to the shard (tar
    members, rows, failures, progress) is added in the plan's order as it settles, once its
    labels are in."""

    def __init__(self, outcome: ShardOutcome, config: RunConfig, score_images: ScoreImages,
                 ensemble: Ensemble, on_progress: Progress | None, denoise: Denoise,
                 guard: Guard, labels: ThreadPoolExecutor):
        self.outcome, self.config, self.score_images = outcome, config, score_images
        self.ensemble, self.on_progress, self.denoise = ensemble, on_progress, denoise
        self.guard, self.labels = guard, labels
        self.stopped = False  # an error stops the shard: no more labels are asked for

    def run(self, refs: tuple[PlannedReference, ...], writer: ShardWriter,
            distorted: SpilledSamples, overlap_bytes: int) -> None:
        """Every reference made and settled, in the plan's order, the next made while the
        labels of one of up to `overlap_bytes` are awaited."""
        waiting = None  # the reference whose labels are awaited while the next is made
        try:
            for ref in refs:
                making = self.make(ref)
                if waiting is not None:
                    self.settle(waiting, writer, distorted)
                waiting = making
                if making.held_bytes() > overlap_bytes:
                    self.settle(making, writer, distorted)
                    waiting = None
            if waiting is not None:
                self.settle(waiting, writer, distorted)
        except BaseException:
            self.stopped = True
            raise

    def make(self, ref: PlannedReference) -> _Reference:
        """`ref` decoded, distorted and encoded here, its labels asked for before its PNGs
        are encoded; a quarantined one: its record only. The guard is told as it begins and
        ends here (a labeler actor that dies on a call for it: pipeline.labeler_calls)."""
        making = _Reference(ref, ShardOutcome(self.outcome.index, seconds=self.outcome.seconds))
        if not self.guard.begin(ref.ref_id):
            _quarantine(ref, self.config, making.part)
            return making
        self._make_here(making)
        self.guard.end()
        return making

    def _make_here(self, making: _Reference) -> None:
        seconds = making.part.seconds
        with _Timer(seconds, "decode"):
            making.pixels, making.row = prepare_reference(making.ref, self.config, making.part)
        if making.pixels is None:
            return
        # times its stages (the denoiser's network: through self.denoise)
        making.made = _distort_all(making.ref, making.pixels, self.config, making.part,
                                   self.denoise)
        if self.config.labelled and making.made:  # stacked here: a worker that dies of the
            making.stacked = np.stack([image for _, image in making.made])  # memory strikes it
            making.made = [(record, image) for (record, _), image
                           in zip(making.made, making.stacked, strict=True)]
            making.labels = self.labels.submit(self._ask_labels, making)
        making.pngs = _encoded(making.pixels, making.made, self.config, seconds)

    def _ask_labels(self, making: _Reference) -> dict[str, np.ndarray]:
        """The versions' scores (on the label thread). Once an error other than the
        labeler's typed one stops the shard no more are asked for."""
        if self.stopped:
            raise RuntimeError("not asked: the shard stops at an earlier error")
        try:
            return self.score_images(making.pixels, making.stacked, self._labelled,
                                     making.ref.ref_id)
        except LabelerError:
            raise
        except BaseException:
            self.stopped = True
            raise

    def _labelled(self, count: int) -> None:
        if self.on_progress:
            self.on_progress(count, 0, 0)

    def settle(self, making: _Reference, writer: ShardWriter,
               distorted: SpilledSamples) -> None:
        """`making`'s labels awaited and applied; its reference written to the tar, its
        labelled versions to the spill; its rows and failures merged into the shard's; the
        progress told."""
        # versions told to on_progress as labelled (a score or not), and those written
        told, samples = self._labels_of(making) if making.pixels is not None else (0, [])
        if making.pixels is not None:  # (None too where its labels failed: left out)
            with _Timer(self.outcome.seconds, "write"):  # to local disk until the shard ends
                writer.add(_reference_record(making.ref, making.pixels), making.pngs[0])
                distorted.extend(samples)
            labels = [(r["distortion_id"], r["level"], r["quality"]) for r, _ in samples
                      if len(r["chain"]) == 1]
            self.outcome.references += 1
            self.outcome.labels += len(labels)
            add_labels(self.outcome.quality_by_scenario, labels)
        self.outcome.sources += making.part.sources
        self.outcome.failures += making.part.failures
        if self.on_progress:
            made_reference = int(making.pixels is not None)
            self.on_progress(made_reference, len(making.part.failures),
                             1 + self.config.versions_count - made_reference - told)

    def _labels_of(self, making: _Reference) -> tuple[int, list]:
        """(versions told as labelled, the labelled (record, PNG or None) samples); a
        LabelerError (raised before any part is labelled, or, out of device memory, after some
        were told: the live tally caps a shard at its plan) leaves the reference and its
        versions out, with its reason, and the versions a metric could not score are
        recorded as failures."""
        ref, part = making.ref, making.part
        try:
            with _Timer(part.seconds, "label"):  # the wait for what is not in yet
                scores = making.labels.result() if making.labels else None
        except LabelerError as error:
            making.row.update(status="failed", reason="label_failed", sha256=None,
                              phash=None)
            part.failures.append(_failure(ref, "label_failed", f"{error}: the reference "
                                          "and its versions are left out"))
            making.pixels = None
            return 0, []
        if not self.config.labelled and making.made:
            self._labelled(len(making.made))  # a label-free run's versions: done at once
        unlabelled = _apply_labels([record for record, _ in making.made], scores,
                                   self.ensemble)
        for index, why in sorted(unlabelled.items()):
            record = making.made[index][0]
            part.failures.append(_failure(ref, "label_failed", why, key=record["key"],
                                          distortion_id=record["distortion_id"],
                                          level=record["level"], chain=record["chain"]))
        return len(making.made), [(record, png) for i, ((record, _), png)
                                  in enumerate(zip(making.made, making.pngs[1], strict=True))
                                  if i not in unlabelled]


def produce_shard(index: int, plan: Plan | ShardPlan, config: RunConfig, score_images: ScoreImages,
                  ensemble: Ensemble, location: Location,
                  on_progress: Progress | None = None,
                  denoise: Denoise = distortions.run_learned,
                  guard: Guard = ADMIT_ALL, overlap_bytes: int | None = None) -> ShardOutcome:
    """Make shard `index` of the plan (or of its part for that shard) and publish it (stats last).
    References stream into the staged tar as they are labelled, in the plan's order, the next one
    made while the labels of one of up to `overlap_bytes` (None: OVERLAP_BYTES; 0: one reference at
    a time) are awaited (_ShardMaker); the distorted samples follow, in a seeded shuffled order,
    once all are labelled (they wait on local disk, not in memory). `on_progress` is told as parts
    of a reference's versions are labelled and as each reference settles (Progress); `guard` as each
    begins and ends here, and before the shard writes into OUT."""
    outcome = ShardOutcome(index)
    writer = ShardWriter(location, index, config.store)
    try:
        with SpilledSamples() as distorted, \
                ThreadPoolExecutor(1, thread_name_prefix="labels") as labels:
            _ShardMaker(outcome, config, score_images, ensemble, on_progress, denoise, guard,
                        labels).run(plan.shard(index), writer, distorted,
                                    OVERLAP_BYTES if overlap_bytes is None else overlap_bytes)
            _finish(writer, distorted, config, outcome, location, plan.digest, guard)
    except BaseException:
        writer.abort()
        raise
    return outcome


def _quarantine(ref: PlannedReference, config: RunConfig, part: ShardOutcome) -> None:
    part.sources.append({"ref_id": ref.ref_id, "uri": printable(ref.uri), "shard": part.index,
                         "split": ref.split, "status": "failed", "reason": "quarantined",
                         "conversions": [], "source_kind": config.source_kind})
    part.failures.append(_failure(ref, "quarantined", QUARANTINED))


def _encoded(pixels, made, config, seconds: dict[str, float]
             ) -> tuple[bytes, list[bytes | None]]:
    """The reference's PNG and each version's (None: the store keeps it as its recipe), timed
    as the encode stage."""
    with _Timer(seconds, "encode"):
        return encode_png(pixels), [encode_png(image) if stores_pixels(config.store, record,
                                                                       config.keep_pngs)
                                    else None for record, image in made]


def _finish(writer, distorted, config, outcome, location, digest: str, guard: Guard) -> None:
    """The distorted samples in a seeded shuffled order, the shard's own lists, then publish
    (the stats, which hold the write stage's seconds, last), as long as `guard` lets it. Stats
    of an earlier make go first: a make stopped midway must not leave them beside its tar."""
    with _Timer(outcome.seconds, "write"):
        order = np.random.default_rng([config.seed, outcome.index]).permutation(len(distorted))
        for i in order:
            writer.add(*distorted[i])
        outcome.samples = outcome.references + len(distorted)
        paths = shard_paths(location, outcome.index)
        guard.publishing(location)
        location.delete(paths["stats"])  # an earlier make's: the shard is unfinished until its own
        writer.write_list("sources", json.dumps(outcome.sources).encode())
        writer.write_list("failures", "".join(
            json.dumps(f, sort_keys=True) + "\n" for f in outcome.failures).encode())
        writer.publish()
        guard.publishing(location)  # the stats finish the shard: asked again at the last
    writer.write_stats({"plan_digest": digest, "sources": len(outcome.sources),
                        "references": outcome.references, "distorted": len(distorted),
                        "failures": len(outcome.failures), "seconds": outcome.seconds,
                        "labels": outcome.labels,
                        "quality_by_scenario": outcome.quality_by_scenario,
                        "libraries": library_versions()})
