"""Canonical JSON: one text for a value whatever its dicts' order or its tuples-or-lists
spelling (sorted keys, no spaces, ASCII), and the SHA-256 digest of that text. Every digest
of a definition (a plan, an ensemble, a lease) and every byte-reproducible JSON member is
this form, so two machines that hold equal values agree on their bytes."""

import hashlib
import json
from collections.abc import Callable

import numpy as np


def _python_number(value):
    """A numpy number or array as the Python number or list JSON reads back (np.int64(24) is
    24); a TypeError for anything else JSON cannot write."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def each_leaf(value, change: Callable):
    """`value` with `change` applied to each item in it, however deep in dicts, lists and
    tuples, that is none of those (dict keys as they are)."""
    if isinstance(value, dict):
        return {key: each_leaf(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(each_leaf(item, change) for item in value)
    return change(value)


def plain(value):
    """`value` with numpy numbers and arrays as Python's (_python_number), inside dicts, lists
    and tuples too; anything else as it is."""
    return each_leaf(value, lambda leaf: _python_number(leaf)
                     if isinstance(leaf, np.generic | np.ndarray) else leaf)


def canonical_json(value) -> str:
    """`value` as canonical JSON text (numpy numbers as their Python values)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_python_number)


def canonical_digest(value) -> str:
    """The SHA-256 of `value`'s canonical JSON, as 64 hex digits."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()
