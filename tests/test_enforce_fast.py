"""The signature check's shortcut for frames already in the schema's dtypes (``enforce._conforms``):
it says yes only for exactly the schema's columns in their numpy dtypes, whatever the frame's layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelfmt.enforce import _conforms, enforce_schema
from modelfmt.signature import ColSpec, Schema


def _schema(*specs: tuple[str, str]) -> Schema:
    return Schema([ColSpec(t, n) for n, t in specs])


DOUBLES = _schema(("a", "double"), ("b", "double"))
MIXED = _schema(("a", "double"), ("b", "long"), ("c", "boolean"))


@pytest.mark.parametrize(
    ("frame", "schema", "expected"),
    [
        (pd.DataFrame({"a": [1.0], "b": [2.0]}), DOUBLES, True),
        (pd.DataFrame(np.ones((3, 2)), columns=["a", "b"]), DOUBLES, True),  # one 2-D block
        (pd.DataFrame({"a": [1.0], "b": [2]}), DOUBLES, False),  # an int64 block
        (pd.DataFrame({"a": [1.0], "b": np.array([2.0], dtype=np.float32)}), DOUBLES, False),
        (pd.DataFrame({"a": pd.array([1.0], dtype="Float64"), "b": [2.0]}), DOUBLES, False),  # extension
        (pd.DataFrame({"b": [2.0], "a": [1.0]}), DOUBLES, False),  # order
        (pd.DataFrame({"a": [1.0]}), DOUBLES, False),
        (pd.DataFrame({"a": [1.0], "b": [2.0], "c": [3.0]}), DOUBLES, False),
        (pd.DataFrame({"a": [1.0], "b": [2], "c": [True]}), MIXED, True),
        (pd.DataFrame({"a": [1.0], "c": [True], "b": [2]})[["a", "b", "c"]], MIXED, True),  # blocks out of order
        (pd.DataFrame({"a": [1.0], "b": [2.0], "c": [True]}), MIXED, False),
        (pd.DataFrame({"a": ["x"], "b": ["y"]}), _schema(("a", "string"), ("b", "string")), False),
    ],
)
def test_conforms(frame, schema, expected):
    assert _conforms(frame, schema) is expected


def test_a_conforming_frame_is_passed_on_and_others_converted():
    frame = pd.DataFrame({"a": [1.0], "b": [2.0]})
    out = enforce_schema(frame, DOUBLES)
    assert out is not frame and out.dtypes.tolist() == [np.float64, np.float64]
    converted = enforce_schema(pd.DataFrame({"a": [1], "b": [2]}), DOUBLES)  # int64 -> double, safely
    assert converted.dtypes.tolist() == [np.float64, np.float64] and converted["a"].tolist() == [1.0]


def test_the_remembered_column_index_answers_for_itself_only():
    index = pd.Index(["a", "b"])
    assert _conforms(pd.DataFrame([[1.0, 2.0]], columns=index), DOUBLES)
    assert _conforms(pd.DataFrame([[1.0, 2.0]], columns=index), DOUBLES)  # remembered
    assert not _conforms(pd.DataFrame([[1.0, 2.0]], columns=pd.Index(["b", "a"])), DOUBLES)
    assert not _conforms(pd.DataFrame([[1.0, 2.0]], columns=index), _schema(("a", "double"), ("c", "double")))
    assert _conforms(pd.DataFrame([[1.0, 2.0]], columns=pd.Index(["a", "b"])), DOUBLES)  # another, equal index
