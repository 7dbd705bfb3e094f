"""Sources with the same bytes, found before the plan is made, so a dataset holds each image
once and one image never lands in two splits. Only sources that share their byte size with
another one (which the listing gives for free) are read and hashed with SHA-256: in a corpus of
distinct photographs that is a small part of it. Sources whose size the listing does not give
(URIs in a list file, the embedded photos) are not compared; images that are the same pixels in
different bytes are found later, from the decoded pixels (the report's pixel_duplicates)."""

import hashlib
import os
from collections import defaultdict

from tqdm import tqdm

from pipeline.sources import Source, byte_limit, open_source
from shards.decode import DEFAULT_MAX_PIXELS, DecodeError
from shards.reads import read_ahead
from shards.storage import HashingStream


def _same_size_groups(sources: list[Source], max_bytes: int) -> list[list[int]]:
    by_size = defaultdict(list)
    for index, source in enumerate(sources):
        # empty files fail on their own, and are not duplicates of anything; nor are files too
        # large to be read (each is refused as too_large)
        if source.size and source.size <= max_bytes:
            by_size[source.size].append(index)
    return [group for group in by_size.values() if len(group) > 1]


PREFIX_BYTES = 1 << 16  # read of every same-size source first; whole files only where equal


def _digest(source: Source, store: str, limit: int | None) -> str | None:
    """SHA-256 of the source's bytes (its first `limit` only, where given), read a part at a
    time; None when it cannot be read (its shard records why)."""
    try:
        with open_source(source.uri, source.key, store) as stream:
            if limit is not None:
                return hashlib.sha256(stream.read(limit)).hexdigest()
            return HashingStream(stream).hexdigest_to_end()
    except DecodeError:
        return None


def _equal_groups(sources: list[Source], groups: list[list[int]], store: str,
                  limit: int | None) -> list[list[int]]:
    """Each group (sources of one size) split by the SHA-256 of their bytes (the first `limit`
    of them), in index order; the groups of two or more."""
    indices = sorted(i for group in groups for i in group)
    digests = list(tqdm(read_ahead(lambda i: _digest(sources[i], store, limit), indices),
                        total=len(indices), desc="same-size sources compared", unit="file",
                        leave=False, disable=len(indices) < 1000))
    same: dict[tuple, list[int]] = defaultdict(list)
    for index, digest in zip(indices, digests, strict=True):
        if digest is not None:
            same[sources[index].size, digest].append(index)
    return [group for group in same.values() if len(group) > 1]


def find_duplicates(sources: list[Source], store: str = "",
                    max_bytes: int = byte_limit(DEFAULT_MAX_PIXELS)) -> dict[int, int]:
    """{index: index of the source kept} for every source with the same bytes as another:
    of each set, the first in listing order that is not a symbolic link is kept (the first,
    if all are); `store` is the listing URI of object-store keys; sources of more than
    `max_bytes` (the run's byte_limit) are not read. Sources of one size are compared by
    their first 64 KiB, and only those equal there read whole (distinct photos of one size
    differ early: half a corpus shares its size with another file)."""
    prefixed = _equal_groups(sources, _same_size_groups(sources, max_bytes), store,
                             PREFIX_BYTES)
    same = [group for group in prefixed if sources[group[0]].size <= PREFIX_BYTES]  # whole
    longer = [group for group in prefixed if sources[group[0]].size > PREFIX_BYTES]
    same += _equal_groups(sources, longer, store, None)
    duplicates = {}
    for indices in same:
        kept = next((i for i in indices if not _is_link(sources[i])), indices[0])
        duplicates.update({i: kept for i in indices if i != kept})
    return duplicates


def _is_link(source: Source) -> bool:
    """A local source that is a symbolic link (the file it names is the one to keep)."""
    return not source.key and "://" not in source.uri and os.path.islink(source.uri)
