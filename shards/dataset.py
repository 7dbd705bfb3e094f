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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

import pyarrow.compute as pc
import webdataset as wds

from shards.group_spec import GroupSpec, chosen_versions
from shards.groups import assemble
from shards.order import ONE_PASS, Order, Stream, pipeline
from shards.reader import (
    SOURCES_FILE,
    complete_shards,
    no_complete_shard,
    read_index,
    read_sources,
    tar_urls,
)
from shards.records import decoded, is_reference, member_filter, record
from shards.storage import Location
from shards.tar_stream import each_shard, shard_samples


def sample_stream(location: Location, urls: list[str], kind: str = "distorted",
                  refs: frozenset[str] | None = None, seed: int = 0, order: Order = ONE_PASS,
                  decode: bool = True) -> Stream:
    """Dataset.samples over given shard tars (a caller that chose its shards itself)."""
    select = member_filter(kind, refs)

    def per_shard(opened: dict) -> Iterator[dict]:
        return map(record, shard_samples(opened, select))
    after = [wds.map(decoded)] if decode else []
    return Stream(lambda: pipeline(urls, [each_shard(location, per_shard)], seed, order, after))


@dataclass(frozen=True)
class Dataset:
    """A dataset's location and its complete shards; plain data, so it pickles to workers."""

    location: Location
    shards: tuple[int, ...]

    @cached_property
    def urls(self) -> dict[int, str]:
        return dict(zip(self.shards, tar_urls(self.location, list(self.shards)), strict=True))

    @cached_property
    def references(self) -> dict[str, tuple[str, int]]:
        """ref_id -> (split, shard) of every reference in a complete shard: from
        sources.parquet, or the shards' own indexes where a dataset has none."""
        if self.location.exists(self.location.path(SOURCES_FILE)):
            table = read_sources(self.location)
            table = table.filter(pc.equal(table["status"], "ok"))
        else:
            table = read_index(self.location, list(self.shards), ["ref_id", "kind", "split"],
                               with_shard=True)
            table = table.filter(pc.equal(table["kind"], "reference"))
        complete = set(self.shards)
        return {row["ref_id"]: (row["split"], row["shard"]) for row in
                table.select(["ref_id", "split", "shard"]).to_pylist()
                if row["shard"] in complete}

    def where(self, split: str | None = None, refs: Iterable[str] | None = None
              ) -> tuple[list[str], frozenset[str] | None]:
        """(tar urls, the references to read, None for all) of a split and/or reference list."""
        if split is None and refs is None:
            return list(self.urls.values()), None
        wanted = {ref for ref, (its_split, _) in self.references.items()
                  if split is None or its_split == split}
        if not wanted and refs is None:
            splits = sorted({its_split for its_split, _ in self.references.values()})
            raise ValueError(f"{self.location.root} has no reference in split {split!r} "
                             f"(its splits: {splits})")
        if refs is not None:
            wanted &= set(refs)
        shards = sorted({self.references[ref][1] for ref in wanted})
        return [self.urls[shard] for shard in shards], frozenset(wanted)

    def samples(self, split: str | None = None, kind: str = "distorted", *,
                refs: Iterable[str] | None = None, seed: int = 0, order: Order = ONE_PASS,
                decode: bool = True) -> Stream:
        """{key, ref_id, image (H x W x 3 uint8), meta} of every sample of `kind` (distorted,
        reference or all) in `split` (and `refs`); with `decode` False, `encoded` (the image
        file's bytes) in place of `image`. One sample in memory at a time (plus a shuffle
        buffer of `order.shuffle` encoded samples)."""
        urls, wanted = self.where(split, refs)
        return sample_stream(self.location, urls, kind, wanted, seed, order, decode)

    def pristine(self, split: str | None = None, **options) -> Stream:
        """The references only (samples of kind "reference")."""
        return self.samples(split, "reference", **options)

    def _rows(self, url: str) -> list[dict]:
        """The index rows of the shard whose tar is `url` (read as the shard opens)."""
        shard = {its_url: index for index, its_url in self.urls.items()}[url]
        return read_index(self.location, [shard], ["key", "ref_id", "kind",
                                                   "distortion_id"]).to_pylist()

    def groups(self, kind: str, split: str | None = None,
               crop: int | tuple[int, int] | None = None, seed: int = 0,
               versions: int | None = None, views: int = 1, *, distinct_types: bool = False,
               half_scale: bool = False, refs: Iterable[str] | None = None,
               order: Order = ONE_PASS) -> Stream:
        """Groups of `kind` (shards.groups): pair, triplet or chunk dicts {ref_id, reference,
        distorted (a list, one per version), meta (their records), box} (+ ssim_map for
        triplets), every member cut with the same box(es): `crop` (h, w) drawn per group from
        (seed, epoch, ref_id[, key]), None for whole images; `views=2` two overlapping ones
        (box a list of two, images 2 x h x w x 3). `versions=n` draws n versions per
        reference (`distinct_types`: of n distinct distortion ids; all where a reference has
        fewer) per (seed, epoch, ref_id). `half_scale` (chunks with a crop): also
        reference_half, distorted_half and box_half, every member downsampled x1/2 (bicubic)
        and cut with box(es) drawn anew on it from (seed, epoch, ref_id, "half").

        Memory: pairs and triplets hold the shard's references decoded (R x H x W x 3 bytes)
        and any version read before its reference, encoded (none in the spec's layout).
        Chunks hold the members of their incomplete chunks, cut (views x h x w x 3 bytes
        each) or, without a crop, encoded: in the spec's layout up to a shard's drawn members,
        R x (1 + versions) of them. A shuffle buffer adds `order.shuffle` groups."""
        size = (crop, crop) if isinstance(crop, int) else crop
        spec = GroupSpec(kind, size, seed, order.epoch, versions, views, distinct_types,
                         half_scale)
        urls, wanted = self.where(split, refs)
        members = member_filter("all", wanted)

        def per_shard(opened: dict) -> Iterator[dict]:
            chosen = chosen_versions(spec, self._rows(opened["url"]))
            drawn = set().union(*chosen.values())

            def select(name: str) -> bool:
                key = name.partition(".")[0]
                return members(name) and (is_reference(key) or key in drawn)
            return assemble(spec, opened["url"], map(record, shard_samples(opened, select)),
                            chosen)
        return Stream(lambda: pipeline(urls, [each_shard(self.location, per_shard)], seed,
                                       order))


def open_dataset(path: str) -> Dataset:
    """The dataset at a local folder or an object-store URI (s3://, gs://, file://); a clear
    error where it has no complete shard."""
    location = Location.parse(str(path))
    shards = complete_shards(location)
    if not shards:
        raise no_complete_shard(location)
    return Dataset(location, tuple(shards))
