"""Sample keys and reference ids. Keys contain no dots: WebDataset splits a member name into
key and extension at the first dot; and they are short enough to be file names once a shard is
unpacked."""

import hashlib
import re
from collections.abc import Iterable

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# the longest id base: a member name (id, suffix such as _d01_l1, extension) within the 255
# bytes that file systems allow a name, so a shard unpacks with tar
MAX_BASE = 200
_DISTORTED = re.compile(r"^(?P<ref>.+)_d(?P<id>\d{2})_l(?P<level>\d)$")
_COMPOSED = re.compile(r"^(?P<ref>.+)_c(?P<index>\d{3,})$")


REFERENCE_SUFFIX = "_ref"


def reference_key(ref_id: str) -> str:
    return f"{ref_id}{REFERENCE_SUFFIX}"


def is_reference(key: str) -> bool:
    return key.endswith(REFERENCE_SUFFIX)


def distorted_key(ref_id: str, distortion_id: int, level: int) -> str:
    return f"{ref_id}_d{distortion_id:02d}_l{level}"


def composed_key(ref_id: str, index: int) -> str:
    """The key of a reference's composed version `index` (--compose)."""
    return f"{ref_id}_c{index:03d}"


def ref_id_of(key: str) -> str:
    """The reference id a sample key belongs to (a reference's, a distorted or a composed
    version's)."""
    if is_reference(key):
        return key.removesuffix(REFERENCE_SUFFIX)
    match = _DISTORTED.match(key) or _COMPOSED.match(key)
    if match is None:
        raise ValueError(f"{key!r} is not a sample key of this format")
    return match["ref"]


def safe_name(stem: str) -> str:
    """The stem with characters outside [A-Za-z0-9_-] replaced by '_'; one longer than
    MAX_BASE cut, with 8 hex digits of its SHA-256 in place of the rest."""
    base = _UNSAFE.sub("_", stem) or "image"
    if len(base) <= MAX_BASE:
        return base
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{base[:MAX_BASE - 9]}-{digest}"


def ref_ids(stems: Iterable[str]) -> list[str]:
    """One id per source, in order: the stem made safe (safe_name: a short name of allowed
    characters), made unique by a numeric suffix where two sources would collide, letter case
    aside (Same.jpg and same.jpg would be one file once a tar is unpacked on macOS or
    Windows). Each base's suffixes are tried on from the last one given, not from 1 again:
    140,000 sources of one name (img.jpg in as many folders) take a tenth of a second, where
    they took some 10^10 lookups."""
    taken: set[str] = set()
    untried: dict[str, int] = {}  # base, lower case -> its first suffix not yet found taken
    ids = []
    for stem in stems:
        base = safe_name(stem)
        candidate, counter = base, untried.get(base.lower(), 1)
        if counter > 1 or candidate.lower() in taken:  # (the suffixes below: taken for good)
            candidate = f"{base}-{counter}"
            while candidate.lower() in taken:
                counter += 1
                candidate = f"{base}-{counter}"
            untried[base.lower()] = counter + 1
        taken.add(candidate.lower())
        ids.append(candidate)
    return ids
