"""Canonical JSON: the text every definition digest and byte-reproducible member is."""

import hashlib

import numpy as np

from distortions.canonical import canonical_digest, canonical_json


def test_the_text_is_sorted_compact_and_ascii_whatever_the_spelling():
    written = '{"a":[1,2.5,null],"b":{"c":"caf\\u00e9","d":true}}'  # by hand, from RFC 8259
    for value in ({"b": {"d": True, "c": "café"}, "a": [1, 2.5, None]},
                  {"a": (1, 2.5, None), "b": {"c": "café", "d": True}}):
        assert canonical_json(value) == written


def test_the_digest_is_sha256_of_that_text():
    value = {"weights": {"mae": 0.5, "gmsd": 0.5}, "name": "x"}
    text = b'{"name":"x","weights":{"gmsd":0.5,"mae":0.5}}'
    assert canonical_digest(value) == hashlib.sha256(text).hexdigest()
    assert canonical_digest(value) != canonical_digest({**value, "name": "y"})


def test_numpy_numbers_are_written_as_the_python_numbers_they_hold():
    value = {"q": np.int64(24), "r": np.float64(0.1), "xs": np.array([1, 2]),
             "f": np.float32(0.5), "t": (np.uint8(3),)}
    assert canonical_json(value) == '{"f":0.5,"q":24,"r":0.1,"t":[3],"xs":[1,2]}'
