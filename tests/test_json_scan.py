"""The JSON codec's byte scan for booleans (which numpy would read as 1.0 and 0.0 among numbers) says
exactly what a substring search says, on any body, and a boolean among numbers is still refused or kept."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfmt.serving.codecs.json import _LETTER_HOPS, _no_bools

PIECES = [b"true", b"false", b"tru", b"alse", b"t", b"f", b"e", b"1.5e-05", b", ", b'"x"', b"[", b"]", b"Infinity"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=3 * _LETTER_HOPS))
def test_the_scan_is_a_substring_search(pieces):
    body = b"".join(pieces)
    assert _no_bools(body) == (b"true" not in body and b"false" not in body)


@pytest.mark.parametrize("filler", [b"t", b"f", b"tf"])
def test_many_letters_then_a_word(filler):
    assert _no_bools(filler * (_LETTER_HOPS * 3)) is True
    assert _no_bools(filler * (_LETTER_HOPS * 3) + b"true") is False
    assert _no_bools(filler * (_LETTER_HOPS * 3) + b"false") is False


def test_a_boolean_among_numbers_is_seen():
    body = json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5e-05, 2.0]] * 500 + [[True, 1.0]]}})
    assert _no_bools(body.encode()) is False
    assert _no_bools(body.replace("true", "1.0").encode()) is True
