"""Canonical JSON: one text for a value whatever its dicts' order or its tuples-or-lists
spelling (sorted keys, no spaces, ASCII), and the SHA-256 digest of that text. Every digest
of a definition (a plan, an ensemble, a lease) and every byte-reproducible JSON member is
this form, so two machines that hold equal values agree on their bytes."""

import hashlib
import json


def canonical_json(value) -> str:
    """`value` as canonical JSON text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def canonical_digest(value) -> str:
    """The SHA-256 of `value`'s canonical JSON, as 64 hex digits."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
