"""One sample of a shard as readers see it: {key, ref_id, meta (its .json record), encoded
(the image file's bytes; None for a version stored as its recipe only, and a
shards.replay.Pending once its shard's reference is known)}, decoded on request into `image`
(H x W x 3 uint8); and which members a reader asks the tar for."""

import json
from collections.abc import Iterator

import numpy as np

from shards.keys import is_reference, ref_id_of
from shards.png import decode_png
from shards.replay import Pending
from shards.schema import chain_of
from shards.tar_stream import Select

KINDS = ("distorted", "reference", "all")


def member_filter(kind: str = "all", refs: frozenset[str] | None = None) -> Select:
    """Which tar members to read: samples of `kind` whose reference is in `refs` (None: all);
    the others are skipped inside the tar reader, never held."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")

    def wanted(name: str) -> bool:
        key = name.partition(".")[0]
        if kind != "all" and is_reference(key) != (kind == "reference"):
            return False
        return refs is None or ref_id_of(key) in refs
    return wanted


class SampleError(ValueError):
    """A shard sample that cannot be read: no record, a record that is not JSON, image bytes
    that do not decode, more than one image."""


def record(sample: dict, recipes: bool = False) -> dict:
    """A webdataset sample of a shard as {key, ref_id, meta, encoded}; `encoded` is None for a
    distorted version stored without pixels, which only a dataset that stores `recipes`
    (--store recipes or hybrid) has: elsewhere a SampleError."""
    where = f"{sample['__url__']}: sample {sample['__key__']}"
    image = sorted(name for name in sample if name != "json" and not name.startswith("__"))
    if "json" not in sample:
        raise SampleError(f"{where} has no .json record (members {image})")
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError, RecursionError) as error:  # (nested past reason)
        raise SampleError(f"{where}: its .json record is not JSON ({error})") from None
    if not isinstance(meta, dict) or "ref_id" not in meta:
        raise SampleError(f"{where}: its .json record names no ref_id")
    if meta.get("kind") == "distorted":
        meta["chain"] = chain_of(meta)  # derived where a dataset predates chains
        if not image and recipes:
            return {"key": sample["__key__"], "ref_id": meta["ref_id"], "meta": meta,
                    "encoded": None}
    if len(image) != 1:
        raise SampleError(f"{where} has members {image}, not one image and its .json")
    return {"key": sample["__key__"], "ref_id": meta["ref_id"], "meta": meta,
            "encoded": sample[image[0]]}


def decode(encoded: bytes | Pending, key: str = "an image") -> np.ndarray:
    """H x W x 3 uint8 RGB pixels of a stored image (PNG decodes losslessly) or of a recipe
    sample, replayed (and verified) here; `key` names the sample in the error."""
    if isinstance(encoded, Pending):
        return encoded.pixels()
    try:
        return decode_png(encoded)
    except ValueError:
        raise SampleError(f"sample {key}: its {len(encoded)} image bytes do not decode") from None


def decoded(item: dict) -> dict:
    """A record with `image` (decoded pixels) in place of `encoded`."""
    fields = {name: value for name, value in item.items() if name != "encoded"}
    return {**fields, "image": decode(item["encoded"], item["key"])}


def decode_each(items: Iterator[dict]) -> Iterator[dict]:
    """A pipeline stage: each record `decoded` (and nothing added: webdataset's map stage
    would put a `__key__` in every item)."""
    return map(decoded, items)
