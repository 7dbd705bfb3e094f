"""The seed scheme: one seed per (run seed, reference id, distortion id, level), independent of
the order, process or machine in which samples are produced."""

import hashlib

from distortions.errors import InvalidSeedError
from distortions.registry import is_integer

SEED_BITS = 63


def check_seed(seed) -> int:
    """`seed`, a non-negative integer (numpy seeds nothing negative); InvalidSeedError else."""
    if not is_integer(seed) or seed < 0:
        raise InvalidSeedError(f"seed must be a non-negative integer, got {seed!r}")
    return seed


def derive_seed(run_seed: int, ref_id: str, distortion_id: int, level: int) -> int:
    """A 63-bit seed from SHA-256 of the four identifiers (stable across Python runs); an
    InvalidSeedError where a number is not an integer (1.5 would give 1's seed)."""
    check_seed(run_seed)
    for name, value in (("distortion_id", distortion_id), ("level", level)):
        if not is_integer(value):
            raise InvalidSeedError(f"derive_seed: {name} must be an integer, got {value!r}")
    hashed = stable_hash("iqa-factory", int(run_seed), ref_id, int(distortion_id), int(level))
    return hashed >> (64 - SEED_BITS)


def stable_hash(*parts: object) -> int:
    """A 64-bit number from the SHA-256 of the '|'-joined parts: the same on every machine
    (Python's hash() is salted per process)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")
