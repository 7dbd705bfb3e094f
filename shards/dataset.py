"""The one way to read a dataset: `open_dataset(path)` (a folder or an object-store URI), then
single samples, pristine references or groups, streamed shard by shard through webdataset's
stages (shards.order, shards.tar_stream). Only complete shards of the dataset's plan are read.

    dataset = open_dataset("s3://bucket/run")
    for sample in dataset.samples(split="train"):           # {key, ref_id, image, meta}
        ...
    for group in dataset.groups("chunk", crop=(160, 160), versions=11, views=2):
        ...                                                 # {ref_id, reference, distorted,
                                                            #  meta, box}
"""

import numbers
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property, partial

import pyarrow.compute as pc
import pyarrow.fs as pafs

from shards.group_spec import GroupSpec, chosen_versions
from shards.groups import assemble
from shards.keys import is_reference, ref_id_of
from shards.layout import (
    DEFAULT_STORE,
    REPORT_FILE,
    SOURCES_FILE,
    SPLITS,
    moved_splits,
    plan_file,
    shard_of,
    store_of,
)
from shards.lease import writing_now
from shards.order import (
    ONE_PASS,
    Order,
    Stream,
    check_reading,
    interleaving,
    kept_share,
    pipeline,
)
from shards.reader import (
    DamagedRunFileError,
    DamagedShardError,
    StatsReader,
    damage_message,
    no_complete_shard,
    planned_shards,
    read_index,
    read_sources,
    remade_while_read,
    shard_gone,
    shard_states,
    tar_urls,
)
from shards.records import decode as decode_image
from shards.records import decode_each, member_filter, record
from shards.replay import ReplayContext, replaying
from shards.sidecar import Sidecar
from shards.storage import Location, redact
from shards.tar_stream import Select, ShardReadError, each_shard, shard_samples


def sample_stream(location: Location, urls: list[str], kind: str = "distorted",
                  refs: frozenset[str] | None = None, seed: int = 0, order: Order = ONE_PASS,
                  decode: bool = True, verify: bool = True, labels: Sidecar | None = None,
                  plan: str | None = None) -> Stream:
    """Dataset.samples over given shard tars (a caller that chose its shards itself). In a
    recipes or hybrid dataset the shard's references are read too (for the replays) and the
    versions stored without pixels replayed as they are decoded, checked against their
    SHA-256 unless `verify` is False (benchmarks only). With `labels`, Q from that sidecar.
    With `plan` (the digest the caller opened the dataset under), a shard made again under
    another since is a DatasetChangedError before any of its samples."""
    check_reading(seed, order)
    stats_of = StatsReader(location, plan)
    if store_of(location) == DEFAULT_STORE or kind == "reference":  # nothing to replay
        def records(opened: dict) -> Iterator[dict]:
            return map(record, shard_samples(opened, _in_share(member_filter(kind, refs),
                                                               seed, order, opened)))
    else:
        context, select = ReplayContext.of(location, verify), member_filter("all", refs)

        def records(opened: dict) -> Iterator[dict]:
            wanted = _in_share(member_filter(kind, refs), seed, order, opened)
            recorded = map(partial(record, recipes=True), shard_samples(opened, select))
            return replaying(recorded, context.for_stats(stats_of(shard_of(opened["url"]))),
                             decode_image,
                             lambda key: wanted(f"{key}.json"))
    after = [decode_each] if decode else []
    return Stream(lambda: pipeline(
        urls, [shards_read(location, labelled(records, labels, stats_of), stats_of, seed,
                           order)], seed, order, after))


def shards_read(location: Location, per_shard: Callable[[dict], Iterable],
                stats_of: StatsReader, seed: int, order: Order
                ) -> Callable[[Iterable[dict]], Iterator]:
    """The stage reading a stream's shards (tar_stream.each_shard, checked against their
    stats, merged in `order`), where a file of one is gone (a `generate --restart` deleting
    the shards folder) a DatasetChangedError that says so, not the store's bare one; so too
    where one no longer matches the stats read while a run writes the dataset (a resume
    making it again), not a damaged shard."""
    stage = each_shard(location, per_shard, recorded_stats(stats_of), interleaving(seed, order))

    def read(sources: Iterable[dict]) -> Iterator:
        try:
            yield from stage(sources)
        except FileNotFoundError as error:
            raise shard_gone(location, error) from error
        except (ShardReadError, DamagedShardError) as error:
            if writer := writing_now(location):
                raise remade_while_read(location, error, writer) from error
            raise
    return read


def _in_share(wanted: Select, seed: int, order: Order, opened: dict) -> Select:
    """`wanted`, of the samples the opened shard gives in its order's share; what it leaves
    out of them is said in opened["offered"] (the shard is not barren)."""
    keeps = kept_share(seed, order, opened.get("draw", ()))

    def selected(name: str) -> bool:
        if not wanted(name):
            return False
        if keeps(name.partition(".")[0]):
            return True
        opened["offered"] = True
        return False
    return selected


def recorded_stats(stats_of: StatsReader) -> Callable[[str], dict]:
    """url of a shard tar -> its stats as its tar is opened (the samples and SHA-256 reading
    it must give; StatsReader.current: not others than the stream read before)."""
    return lambda url: stats_of.current(shard_of(url))


def labelled(per_shard: Callable[[dict], Iterator[dict]], labels: Sidecar | None,
             stats_of: Callable[[int], dict]) -> Callable[[dict], Iterator[dict]]:
    """`per_shard`, its distorted records given Q from the sidecar `labels` (where given)."""
    if labels is None:
        return per_shard

    def relabelled(opened: dict) -> Iterator[dict]:
        shard = shard_of(opened["url"])
        return labels.relabelled(per_shard(opened), shard, stats_of(shard))
    return relabelled


@dataclass(frozen=True)
class Dataset:
    """A dataset's location and its complete shards, as opened: its plan and whether its run
    had ended then (a dataset made again under another plan while it is read is refused, not
    read as this one); plain data, so it pickles to workers."""

    location: Location
    shards: tuple[int, ...]
    labels: Sidecar | None = None  # Q from this relabel sidecar, not the records'
    plan: dict = field(default_factory=dict)  # its plan.json ({}: written without one)
    ended: bool = True  # its run had ended (report.json) when it was opened

    @cached_property
    def urls(self) -> dict[int, str]:
        return dict(zip(self.shards, tar_urls(self.location, list(self.shards)), strict=True))

    @cached_property
    def unfinished(self) -> str | None:
        """Where the generate (or convert) run of its plan has not ended (plan.json, no
        report.json), what a reader reads of it: the shards complete so far, of those planned;
        None for a finished one, or one written without a plan."""
        if not self.plan or self.ended:
            return None
        planned = planned_shards(self.plan)
        return (f"{redact(self.location.root)}: its run has not finished (no {REPORT_FILE}): "
                f"only the {len(self.shards)} shard(s) complete so far are read"
                + (f", of {planned} planned" if planned is not None else ""))

    @cached_property
    def plan_digest(self) -> str | None:
        """The digest of the plan its shards were made under (None: a dataset without
        plan.json): another generate run of other sources or options has another."""
        return self.plan.get("digest")

    @cached_property
    def references(self) -> dict[str, tuple[str, int]]:
        """ref_id -> (split, shard) of every reference in a complete shard: from
        sources.parquet, or the shards' own indexes where a dataset has none."""
        listed = self.location.exists(self.location.path(SOURCES_FILE))
        found = {row["ref_id"]: (row["split"], row["shard"]) for row in self._reference_rows}
        self._check_planned_splits(found, SOURCES_FILE if listed else "the shards' records")
        return found

    @cached_property
    def reference_pixels(self) -> dict[str, str]:
        """ref_id -> the SHA-256 of its pixels (as sized for the run) of every reference in a
        complete shard that records it: two ids with one are the same image in other bytes (a
        re-encoded copy)."""
        return {row["ref_id"]: row["sha256"] for row in self._reference_rows
                if row.get("sha256")}

    @cached_property
    def _reference_rows(self) -> list[dict]:
        """{ref_id, split, shard, sha256 where recorded} of every reference in a complete
        shard: sources.parquet's rows, or the shards' own indexes' where a dataset has none."""
        if self.location.exists(self.location.path(SOURCES_FILE)):
            table = read_sources(self.location)
            table = table.filter(pc.equal(table["status"], "ok"))
        else:
            table = read_index(self.location, list(self.shards),
                               ["ref_id", "kind", "split", "sha256"], with_shard=True)
            table = table.filter(pc.equal(table["kind"], "reference"))
        columns = [name for name in ("ref_id", "split", "shard", "sha256")
                   if name in table.column_names]
        complete = set(self.shards)
        return [row for row in table.select(columns).to_pylist() if row["shard"] in complete]

    def _check_planned_splits(self, found: dict[str, tuple[str, int]], where: str) -> None:
        """A DamagedRunFileError where a reference's split is not the one plan.json gives it
        (plan.json is the one the shards' stats name by its digest; sources.parquet, or an old
        dataset's records, only copy it): a training reference would be read as a test one."""
        planned = {entry.get("ref_id"): entry.get("split")
                   for entry in self.plan.get("references", ())
                   if isinstance(entry, dict)}
        moved = moved_splits(planned, ((ref, split) for ref, (split, _) in found.items()))
        if moved:
            raise DamagedRunFileError(
                f"{self.location.root}: {len(moved)} reference(s) in another split in "
                f"{where} than in plan.json ({', '.join(moved[:3])}): damaged; generate with "
                "the same options rebuilds it (inspect names the shards behind it)")

    @cached_property
    def splits(self) -> dict[str, str]:
        """ref_id -> split of every reference in a complete shard (`references` without
        their shards)."""
        return {ref: split for ref, (split, _) in self.references.items()}

    def where(self, split: str | None = None, refs: Iterable[str] | None = None
              ) -> tuple[list[str], frozenset[str] | None]:
        """(tar urls, the references to read, None for all) of a split and/or reference ids
        (one id, or a collection; an id the dataset does not hold is an error)."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)} (None: all), got "
                             f"{split!r}")
        if split is None and refs is None:
            return list(self.urls.values()), None
        if refs is not None:
            refs = _reference_ids(refs)
            unknown = sorted(refs - set(self.references))
            if unknown:
                raise ValueError(f"unknown reference ids {unknown[:10]}: not in a complete shard "
                                 f"of {self.location.root}")
        wanted = {ref for ref, its_split in self.splits.items()
                  if split is None or its_split == split}
        if not wanted and refs is None:
            splits = sorted(set(self.splits.values()))
            raise ValueError(f"{self.location.root} has no reference in split {split!r} "
                             f"(its splits: {splits})")
        if refs is not None:
            elsewhere = sorted(refs - wanted)
            if elsewhere:  # (read, they would give nothing, silently)
                raise ValueError(f"references {elsewhere[:10]} are in split(s) "
                                 f"{sorted({self.splits[ref] for ref in elsewhere})}, not "
                                 f"{split!r}: name them without the split, or choose theirs")
            wanted &= refs
        shards = sorted({self.references[ref][1] for ref in wanted})
        return [self.urls[shard] for shard in shards], frozenset(wanted)

    def samples(self, split: str | None = None, kind: str = "distorted", *,
                refs: Iterable[str] | None = None, seed: int = 0, order: Order = ONE_PASS,
                decode: bool = True, verify: bool = True) -> Stream:
        """{key, ref_id, image (H x W x 3 uint8), meta} of every sample of `kind` (distorted,
        reference or all) in `split` (and `refs`); with `decode` False, `encoded` (the image
        file's bytes, or a recipe sample's shards.replay.Pending: shards.records.decode
        makes pixels of either) in place of `image`. One sample in memory at a time (plus a
        shuffle buffer of `order.shuffle` encoded samples, and in a recipes or hybrid dataset
        the shard's references, decoded). Recipe samples are replayed as they are decoded,
        the same pixels as an images dataset's, verified against their SHA-256 (a mismatch
        raises shards.replay.ReplayMismatchError) unless `verify` is False."""
        urls, wanted = self.where(split, refs)
        return sample_stream(self.location, urls, kind, wanted, seed, order, decode, verify,
                             self.labels, self.plan_digest)

    def pristine(self, split: str | None = None, **options) -> Stream:
        """The references only (samples of kind "reference")."""
        return self.samples(split, "reference", **options)

    def _rows(self, url: str, stats_of: Callable[[int], dict]) -> list[dict]:
        """The index rows of the shard whose tar is `url` (read as the shard opens)."""
        return read_index(self.location, [shard_of(url)], ["key", "ref_id", "kind",
                                                           "distortion_id"],
                          stats_of=stats_of).to_pylist()

    def groups(self, kind: str, split: str | None = None,
               crop: int | tuple[int, int] | None = None, seed: int = 0,
               versions: int | None = None, views: int = 1, *, distinct_types: bool = False,
               half_scale: bool = False, flip: bool = False,
               refs: Iterable[str] | None = None, order: Order = ONE_PASS,
               verify: bool = True) -> Stream:
        """Groups of `kind` (shards.groups): pair, triplet or chunk dicts {ref_id, reference,
        distorted (a list, one per version), meta (their records), box} (+ ssim_map for
        triplets), every member cut with the same box(es): `crop` (h, w) drawn per group from
        (seed, epoch, ref_id[, key]) (and, in a resampled order, the shard's draw), None for
        whole images; `views=2` two overlapping ones
        (box a list of two, images 2 x h x w x 3). `versions=n` draws n versions per
        reference (`distinct_types`: of n distinct distortion ids; all where a reference has
        fewer) per (seed, epoch, ref_id). `half_scale` (chunks with a crop): also
        reference_half, distorted_half and box_half, every member downsampled x1/2 (bicubic)
        and cut with box(es) drawn anew on it from (seed, epoch, ref_id, "half"). `flip`:
        one group in two (drawn from (seed, epoch, ref_id[, key], "flip") and, in a resampled
        order, the shard's draw) mirrored left-right, every member and map alike; every group
        says in `flipped` whether it is (its box is where it was cut, before the mirror).

        Memory: pairs and triplets hold the shard's references decoded (R x H x W x 3 bytes)
        and any version read before its reference, encoded (none in the spec's layout).
        Chunks hold the members of their incomplete chunks, cut (views x h x w x 3 bytes
        each) or, without a crop, encoded: in the spec's layout up to a shard's drawn members,
        R x (1 + versions) of them. A shuffle buffer adds `order.shuffle` groups. Recipe
        samples are replayed (verified unless `verify` is False) as their group decodes them."""
        check_reading(seed, order)
        size = (crop, crop) if isinstance(crop, numbers.Integral) else crop
        spec = GroupSpec(kind, size, seed, order.epoch, versions, views, distinct_types,
                         half_scale, flip=flip)
        urls, wanted = self.where(split, refs)
        members = member_filter("all", wanted)
        context = ReplayContext.of(self.location, verify)
        replays = store_of(self.location) != DEFAULT_STORE
        stats_of = StatsReader(self.location, self.plan_digest)

        def per_shard(opened: dict) -> Iterator[dict]:
            shard_spec = replace(spec, draw=opened.get("draw", ()))
            chosen = {ref: keys for ref, keys in chosen_versions(
                shard_spec, self._rows(opened["url"], stats_of)).items()
                if wanted is None or ref in wanted}
            shared = _of_share(chosen, kind, kept_share(seed, order, shard_spec.draw))
            opened["offered"] = any(chosen.values()) and not any(shared.values())
            chosen = shared
            drawn = set().union(*chosen.values())

            def select(name: str) -> bool:
                key = name.partition(".")[0]
                return members(name) and (key in drawn or (
                    is_reference(key) and bool(chosen.get(ref_id_of(key)))))
            records = map(partial(record, recipes=replays), shard_samples(opened, select))
            shard = shard_of(opened["url"])
            if replays:
                records = replaying(records, context.for_stats(stats_of(shard)), decode_image)
            if self.labels is not None:
                records = self.labels.relabelled(records, shard, stats_of(shard))
            return assemble(shard_spec, opened["url"], records, chosen)
        return Stream(lambda: pipeline(
            urls, [shards_read(self.location, per_shard, stats_of, seed, order)], seed, order))


def _of_share(chosen: dict[str, set[str]], kind: str, keeps: Callable[[str], bool]
              ) -> dict[str, set[str]]:
    """The drawn versions of each reference a shard gives in its order's share: a chunk
    whole or not at all (its size is its method's), a pair's or triplet's version each."""
    if kind == "chunk":
        return {ref: keys for ref, keys in chosen.items() if keeps(ref)}
    return {ref: {key for key in keys if keeps(key)} for ref, keys in chosen.items()}


def open_dataset(path: str, labels: str | None = None) -> Dataset:
    """The dataset at a local folder or an object-store URI (s3://, gs://, file://); a clear
    error where it has no complete shard, or a finished shard whose files are not the ones its
    stats describe (DamagedShardError: nothing of it would be read otherwise, or only part).
    `labels` names a relabel sidecar (its file name, or its ensemble's hash): every distorted
    sample's Q is then the sidecar's (shards.sidecar)."""
    if not str(path).strip():
        raise ValueError("no dataset path given")
    location = Location.parse(str(path))
    kind = location.fs.get_file_info(location.root).type
    if kind != pafs.FileType.Directory:
        raise FileNotFoundError(f"{location.root} is a file, not a dataset folder"
                                if kind == pafs.FileType.File else
                                f"{location.root} does not exist")
    sidecar = None if labels is None else Sidecar.named(location, labels)
    ended = location.exists(location.path(REPORT_FILE))  # before the listing: a run that
    plan = plan_file(location)                           # ends after it is one unfinished
    return Dataset(location, readable_shards(location, plan), sidecar, plan, ended)


def readable_shards(location: Location, plan: dict | None = None) -> tuple[int, ...]:
    """The complete shards of a dataset (of `plan`, its plan.json where the caller read it):
    a DamagedShardError where a finished shard's files are not the ones its stats describe,
    a FileNotFoundError where no shard is complete."""
    shards, damaged = shard_states(location, plan)
    if damaged:
        raise DamagedShardError(damage_message(location, damaged))
    if not shards:
        raise no_complete_shard(location)
    return tuple(shards)


def _reference_ids(refs) -> set[str]:
    """One reference id, or a collection of them (none: nothing is read), as a set; a
    ValueError where it is neither."""
    if isinstance(refs, str):
        return {refs}
    try:
        ids = set(refs)
    except TypeError:
        raise ValueError(f"refs must be a reference id or a collection of them, got "
                         f"{refs!r}") from None
    if not all(isinstance(ref, str) for ref in ids):
        raise ValueError(f"refs must be reference ids, each a string; got {refs!r}")
    return ids
