"""The seed scheme: one seed per (run seed, reference id, distortion id, level), independent of
the order, process or machine in which samples are produced."""

import hashlib

SEED_BITS = 63


def derive_seed(run_seed: int, ref_id: str, distortion_id: int, level: int) -> int:
    """A 63-bit seed from SHA-256 of the four identifiers (stable across Python runs)."""
    text = f"iqa-factory|{int(run_seed)}|{ref_id}|{int(distortion_id)}|{int(level)}"
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - SEED_BITS)
