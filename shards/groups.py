"""Groups of a reference and its versions, assembled from one shard's records as they stream:
"pair" (one version and its reference), "triplet" (a pair and its dense SSIM map), "chunk" (a
reference and all, or `versions` seeded ones, of its versions; with `half_scale` each member
also at x1/2, cut with boxes drawn anew on the smaller image, Re-IQA's second scale). Every
member of a group is cut with the same box(es), drawn from a generator seeded by (seed, epoch,
ref_id[, key]), so a group is the same whatever order the shard or the reader takes.

Member order inside a shard is not relied upon (versions before their reference, datasets of
older layouts), only memory is: in the spec's layout (references first) pairs hold nothing but
the shard's references, and chunks hold the members of the groups not yet complete.
"""

from collections.abc import Iterator

import numpy as np

from shards.boxes import Box, cut, half_scale, one_box
from shards.group_spec import GroupSpec
from shards.keys import is_reference, reference_key
from shards.records import decode


def ssim_reference(reference: np.ndarray):
    """The reference prepared once for the SSIM maps of its versions (labelers.ssim's
    BoxReference: its whole gray image padded, and its local moments)."""
    from labelers.ssim import box_reference  # (torch, only where triplets are read)

    return box_reference(reference)


def ssim_maps(reference, version: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """The dense SSIM map of the whole version against the whole reference (prepared by
    `ssim_reference`), cut with the box(es) (labelers.ssim: the version's side computed on
    each box widened by the window's radius)."""
    from labelers.ssim import ssim_map_in_box

    maps = [ssim_map_in_box(reference, version, box) for box in boxes]
    return maps[0] if len(maps) == 1 else np.stack(maps)


def group(spec: GroupSpec, ref_id: str, reference: np.ndarray, boxes: list[Box],
          versions: list[tuple[dict, np.ndarray]], maps: list | None = None) -> dict:
    """The group dict; members already cut, versions in key order (a triplet's SSIM maps,
    `maps`, in the versions' order)."""
    order = sorted(range(len(versions)), key=lambda i: versions[i][0]["key"])
    made = {"ref_id": ref_id, "reference": reference,
            "distorted": [versions[i][1] for i in order],
            "meta": [versions[i][0] for i in order],
            "box": boxes[0] if spec.views == 1 else boxes}
    if spec.kind == "triplet":
        made["ssim_map"] = [maps[i] for i in order]
    return made


def _check_size(key: str, shape: tuple[int, ...], expected: tuple[int, ...], of_what: str,
                group_kind: str) -> None:
    """A ValueError naming `key` unless its pixels' `shape` is the `expected` one (of_what's):
    a group's members are cut with one box."""
    if shape != expected:
        raise ValueError(f"{key} is {shape[:2]}, {of_what} {expected[:2]}: {group_kind} "
                         "members must share one size")


class IncompleteShardError(ValueError):
    """A shard whose index names members its tar did not deliver."""


def _incomplete(url: str, missing: dict[str, list[str]]) -> IncompleteShardError:
    named = ", ".join(f"{ref}: {sorted(keys)[:5]}" for ref, keys in sorted(missing.items()))
    return IncompleteShardError(f"{url}: groups left incomplete at the end of the shard "
                                f"(waiting for {named})")


def pairs(spec: GroupSpec, url: str, records: Iterator[dict],
          chosen: dict[str, set[str]]) -> Iterator[dict]:
    """Pairs (or triplets) of one shard. Holds the shard's references decoded, and the records
    of versions read before their reference, encoded (none in the spec's layout). A drawn
    version of a reference the shard holds that never comes is an IncompleteShardError."""
    references: dict[str, np.ndarray] = {}
    prepared: dict[str, object] = {}  # triplets: ref_id -> its ssim_reference
    waiting: dict[str, list[dict]] = {}
    expected: dict[str, set[str]] = {}  # ref_id -> drawn versions not read yet, once read

    def made(item: dict, reference: np.ndarray) -> dict:
        expected[item["ref_id"]].discard(item["key"])
        pixels = decode(item["encoded"], item["key"])
        _check_size(item["key"], pixels.shape, reference.shape, "its reference", "a pair's")
        boxes = spec.boxes(pixels.shape, item["ref_id"], item["key"])
        maps = None
        if spec.kind == "triplet":
            if item["ref_id"] not in prepared:
                prepared[item["ref_id"]] = ssim_reference(reference)
            maps = [ssim_maps(prepared[item["ref_id"]], pixels, boxes)]
            if not expected[item["ref_id"]]:  # its last drawn version: its preparation
                del prepared[item["ref_id"]]  # (24 bytes a pixel) held no longer
        return group(spec, item["ref_id"], cut(reference, boxes), boxes,
                     [(item["meta"], cut(pixels, boxes))], maps)

    for item in records:
        ref_id = item["ref_id"]
        expected.setdefault(ref_id, set(chosen.get(ref_id, ())))
        if is_reference(item["key"]):
            references[ref_id] = decode(item["encoded"], item["key"])
            prepared.pop(ref_id, None)
            yield from (made(early, references[ref_id]) for early in waiting.pop(ref_id, []))
        elif item["key"] in chosen.get(ref_id, ()):
            if ref_id in references:
                yield made(item, references[ref_id])
            else:
                waiting.setdefault(ref_id, []).append(item)
    if waiting:
        raise _incomplete(url, {ref: [reference_key(ref)] for ref in waiting})
    missing = {ref: keys for ref, keys in expected.items() if keys}
    if missing:
        raise _incomplete(url, missing)


class _Chunk:
    """The members of one reference's chunk read so far: cut on arrival when there is a crop
    (the box is drawn from the first member's size: all members share it), else encoded."""

    def __init__(self, spec: GroupSpec, ref_id: str, expected: set[str]):
        self.spec, self.ref_id, self.missing = spec, ref_id, {reference_key(ref_id), *expected}
        self.boxes: list[Box] | None = None
        self.shape: tuple[int, ...] | None = None
        self.members: dict[str, tuple[dict, object]] = {}
        self.half_boxes: list[Box] | None = None
        self.halves: dict[str, np.ndarray] = {}  # key -> the half-scale member, cut

    def add(self, item: dict) -> None:
        self.missing.discard(item["key"])
        held: object = item["encoded"]
        if self.spec.crop is not None:
            pixels = decode(item["encoded"], item["key"])
            if self.boxes is None:
                self.shape = pixels.shape
                self.boxes = self.spec.boxes(pixels.shape, self.ref_id)
            else:
                _check_size(item["key"], pixels.shape, self.shape, "its chunk's first member",
                            "a chunk's")
            held = cut(pixels, self.boxes)
            if self.spec.half_scale:
                self.halves[item["key"]] = self._half(pixels)
        self.members[item["key"]] = (item["meta"], held)

    def _half(self, pixels: np.ndarray) -> np.ndarray:
        """The member at x1/2, cut with the chunk's half-scale box(es), drawn on first use."""
        smaller = half_scale(pixels)
        if self.half_boxes is None:
            self.half_boxes = self.spec.boxes(smaller.shape, self.ref_id, scale="half")
        return cut(smaller, self.half_boxes)

    def group(self) -> dict:
        members = self.members
        if self.spec.crop is None:  # whole images: decoded only now
            members = {key: (meta, decode(data, key)) for key, (meta, data) in members.items()}
            shape = members[reference_key(self.ref_id)][1].shape
            for key, (_, pixels) in members.items():
                _check_size(key, pixels.shape, shape, "its reference", "a chunk's")
            self.boxes = [one_box(shape, None, None)]
        _, reference = members.pop(reference_key(self.ref_id))
        made = group(self.spec, self.ref_id, reference, self.boxes, list(members.values()))
        if self.spec.half_scale:  # the same members, in the same (key) order
            keys = sorted(key for key in self.halves if key != reference_key(self.ref_id))
            made |= {"reference_half": self.halves[reference_key(self.ref_id)],
                     "distorted_half": [self.halves[key] for key in keys],
                     "box_half": (self.half_boxes[0] if self.spec.views == 1
                                  else self.half_boxes)}
        return made


def chunks(spec: GroupSpec, url: str, records: Iterator[dict],
           chosen: dict[str, set[str]]) -> Iterator[dict]:
    """Chunks of one shard, each emitted once its last member is read. Holds the members of
    incomplete chunks: cut to the crop (views x h x w x 3 bytes each) or, without a crop,
    encoded."""
    pending: dict[str, _Chunk] = {}
    for item in records:
        ref_id, key = item["ref_id"], item["key"]
        if not chosen.get(ref_id) or not (is_reference(key) or key in chosen[ref_id]):
            continue  # a reference without versions, or a version not drawn
        chunk = pending.setdefault(ref_id, _Chunk(spec, ref_id, chosen[ref_id]))
        chunk.add(item)
        if not chunk.missing:
            yield pending.pop(ref_id).group()
    if pending:
        raise _incomplete(url, {ref: sorted(chunk.missing) for ref, chunk in pending.items()})


def assemble(spec: GroupSpec, url: str, records: Iterator[dict],
             chosen: dict[str, set[str]]) -> Iterator[dict]:
    """The groups of `spec.kind` in one shard's records (with spec.flip, half of them
    mirrored)."""
    made = (chunks if spec.kind == "chunk" else pairs)(spec, url, records, chosen)
    return (mirrored(spec, group) for group in made)


IMAGE_FIELDS = ("reference", "distorted", "reference_half", "distorted_half")  # (.., w, 3)


def mirrored(spec: GroupSpec, made: dict) -> dict:
    """The group with `flipped` said, every image and SSIM map mirrored left-right where its
    draw (GroupSpec.flipped) says so; its boxes stay where they were cut in the image."""
    key = made["meta"][0]["key"] if spec.kind != "chunk" else None
    made["flipped"] = spec.flipped(made["ref_id"], key)
    if made["flipped"]:
        for name in (*IMAGE_FIELDS, "ssim_map"):
            if name in made:
                axis = -1 if name == "ssim_map" else -2  # (.., h, w) maps; (.., h, w, 3) images
                made[name] = _flipped(made[name], axis)
    return made


def _flipped(images, axis: int):
    """An image, or a list of them, mirrored along `axis` (a contiguous copy)."""
    if isinstance(images, list):
        return [_flipped(image, axis) for image in images]
    return np.ascontiguousarray(np.flip(images, axis))
