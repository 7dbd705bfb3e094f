"""What a group is: its kind, crop, views and version draw, and the seeded choices that make
it (its box(es) from (seed, epoch, ref_id[, key]), its versions from (seed, epoch, ref_id)),
so a group is the same whatever order the shard or the reader takes. A resampled stream
(shards drawn with replacement) adds the shard's draw to those seeds: a shard drawn twice in
an epoch gives other versions and crops the second time, never the same groups again."""

from dataclasses import dataclass

import numpy as np

from distortions.registry import is_integer
from shards.boxes import MIN_VIEW_HEIGHT, Box, half_shape, misfit, one_box, two_views
from shards.order import stream_seed

GROUP_KINDS = ("pair", "chunk", "triplet")


@dataclass(frozen=True)
class GroupSpec:
    kind: str
    crop: tuple[int, int] | None = None
    seed: int = 0
    epoch: int = 0
    versions: int | None = None     # a seeded draw of this many versions per reference
    views: int = 1                  # 2: two overlapping views per image (Re-IQA)
    distinct_types: bool = False    # the draw takes each distortion id at most once (with
                                    # versions None: one version of every type)
    half_scale: bool = False        # chunks: also every member at x1/2 with its own box(es)
    draw: tuple[int, ...] = ()      # a resampled shard's draw (rank, worker, place): seeds too
    flip: bool = False              # half the groups mirrored left-right, every member alike

    def __post_init__(self):
        if self.kind not in GROUP_KINDS:
            raise ValueError(f"kind must be one of {', '.join(GROUP_KINDS)}; got {self.kind!r}")
        if self.crop is not None and not _positive_size(self.crop):
            raise ValueError(f"crop must be a positive size of integers (h, w, or one side), "
                             f"or None; got {self.crop!r}")
        if not all(is_integer(value) for value in (self.views, self.versions)
                   if value is not None):
            raise ValueError(f"views and versions are whole numbers; got {self.views!r} and "
                             f"{self.versions!r}")
        if self.views not in (1, 2) or (self.views == 2 and self.crop is None):
            raise ValueError("views must be 1, or 2 with a crop size")
        if self.views == 2 and self.crop[0] < MIN_VIEW_HEIGHT:
            raise ValueError(f"two views need a crop at least {MIN_VIEW_HEIGHT} high (the "
                             f"second starts 70-90% of it lower); got {self.crop}")
        if self.half_scale and (self.kind != "chunk" or self.crop is None):
            raise ValueError("half_scale needs chunks with a crop size")
        if self.versions is not None and self.versions < 1:
            raise ValueError(f"versions must be at least 1; got {self.versions}")

    def rng(self, *names: str) -> np.random.Generator:
        return np.random.default_rng(stream_seed(self.seed, self.epoch, *self.draw, *names))

    def boxes(self, shape: tuple[int, ...], ref_id: str, key: str | None = None,
              scale: str = "") -> list[Box]:
        """The group's box(es) on an image of `shape`: pairs per version, chunks per reference
        (`scale` "half": the half-scale members' own, drawn anew on the smaller image)."""
        names = ([key] if self.kind != "chunk" else []) + ([scale] if scale else [])
        rng = self.rng(ref_id, *names)
        try:
            if self.views == 2:
                return two_views(shape, self.crop, rng)
            return [one_box(shape, self.crop, rng)]
        except ValueError as error:  # a crop that does not fit: which group, at which scale
            raise ValueError(f"{ref_id} at {scale or 'full'} scale: {error}") from error

    def flipped(self, ref_id: str, key: str | None = None) -> bool:
        """Whether the group of (ref_id[, key: a pair's or triplet's version]) is mirrored
        left-right: with `flip`, one in two, drawn as its boxes are (its own stream)."""
        if not self.flip:
            return False
        names = [key] if self.kind != "chunk" else []
        return bool(self.rng(ref_id, *names, "flip").random() < 0.5)

    def misfit(self, shape: tuple[int, ...]) -> str | None:
        """Why the group's box(es) cannot be drawn on an image of `shape` at one of its scales
        (full, and half with half_scale); None where they can at every one."""
        scales = [("full", shape[:2])] + ([("half", half_shape(shape))] if self.half_scale
                                          else [])
        for scale, size in scales:
            why = misfit(size, self.crop, self.views)
            if why:
                return f"at {scale} scale: {why}"
        return None

    def chosen(self, ref_id: str, versions: list[tuple[str, int]]) -> set[str]:
        """The keys taking part among a reference's (key, distortion_id) versions."""
        keys = sorted(key for key, _ in versions)
        if not self.distinct_types and (self.versions is None or self.versions >= len(keys)):
            return set(keys)
        rng = self.rng(ref_id, "versions")
        if not self.distinct_types:
            return {keys[i] for i in rng.choice(len(keys), self.versions, replace=False)}
        by_type: dict[int, list[str]] = {}
        for key, distortion_id in sorted(versions):
            by_type.setdefault(distortion_id, []).append(key)
        types = sorted(by_type)
        count = len(types) if self.versions is None else min(self.versions, len(types))
        picked = rng.choice(len(types), count, replace=False)  # (None: one of every type)
        return {by_type[types[i]][int(rng.integers(len(by_type[types[i]])))] for i in picked}


def chosen_versions(spec: GroupSpec, rows: list[dict]) -> dict[str, set[str]]:
    """ref_id -> the keys of its versions taking part, from the shard's index rows."""
    versions: dict[str, list[tuple[str, int]]] = {}
    for row in rows:
        if row["kind"] == "distorted":
            versions.setdefault(row["ref_id"], []).append((row["key"], row["distortion_id"]))
    return {ref: spec.chosen(ref, listed) for ref, listed in versions.items()}


def _positive_size(size) -> bool:
    return (isinstance(size, tuple | list) and len(size) == 2
            and all(is_integer(side) and side >= 1 for side in size))
