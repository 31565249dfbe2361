"""The one numeric conversion policy (modelfmt.casting): the table, each kind of cell, the messages, and
the same answer through enforcement, the JSON codec and the ONNX feed."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from modelfmt import casting
from modelfmt.casting import EXACT_INTEGERS, TABLE, Rule, cast_array, conform, decide
from modelfmt.enforce import enforce_schema
from modelfmt.errors import SchemaError
from modelfmt.serving.codecs import decode_request
from modelfmt.signature import ColSpec, Schema, TensorSpec
from modelfmt.types import DataType

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _from_principles(source: np.dtype, target: np.dtype) -> Rule:
    """The rule each cell must hold, worked out from the dtypes themselves (not from the table)."""
    if source == target:
        return Rule.ACCEPT
    if source.kind == "b" or target.kind == "b":
        return Rule.REFUSE
    if source.kind == "U":  # a string spells one number (parsed), never a boolean
        return Rule.PARSE
    if target.kind == "U":  # an integer has one text; a float (1.0 or 1?) does not
        return Rule.FORMAT if source.kind in "iu" else Rule.REFUSE
    if source == target:
        return Rule.ACCEPT
    if source.kind == "b" or target.kind == "b":
        return Rule.REFUSE
    if source.kind in "iu" and target.kind in "iu":
        return Rule.ACCEPT if np.can_cast(source, target, "safe") else Rule.FIT
    if source.kind in "iu":  # into a float: exact by type when the mantissa holds every value
        bits = source.itemsize * 8 - (source.kind == "i")
        return Rule.ACCEPT if bits <= np.finfo(target).nmant + 1 else Rule.FIT
    if target.kind in "iu":
        return Rule.REFUSE
    return Rule.ACCEPT if source.itemsize <= target.itemsize else Rule.NARROW


def test_every_cell_of_the_table_follows_the_rules():
    assert len(TABLE) == len(casting.DTYPES) ** 2 == 169
    for (source, target), rule in TABLE.items():
        dtypes = [np.dtype(str) if d == "string" else np.dtype(d) for d in (source, target)]
        assert rule is _from_principles(*dtypes), (source, target)


@pytest.mark.parametrize(
    "source, target, rule",
    [
        ("float64", DataType.float, Rule.NARROW),  # Spark and JSON hand doubles to float32 models
        ("float64", "float16", Rule.NARROW),
        ("float32", DataType.double, Rule.ACCEPT),
        ("int32", DataType.double, Rule.ACCEPT),
        ("int16", DataType.float, Rule.ACCEPT),
        ("int64", DataType.double, Rule.FIT),  # the 2**53 case
        ("int32", DataType.float, Rule.FIT),  # the 2**24 case
        ("int64", DataType.integer, Rule.FIT),
        ("uint64", DataType.long, Rule.FIT),
        ("uint32", DataType.long, Rule.ACCEPT),
        ("int8", "uint8", Rule.FIT),
        ("float64", DataType.long, Rule.REFUSE),
        ("float32", "int64", Rule.REFUSE),
        ("bool", DataType.double, Rule.REFUSE),
        ("int64", DataType.boolean, Rule.REFUSE),
        ("<U3", DataType.double, Rule.PARSE),
        ("<U3", DataType.boolean, Rule.REFUSE),
        ("int64", DataType.string, Rule.FORMAT),
        ("float64", DataType.string, Rule.REFUSE),
        ("bool", DataType.string, Rule.REFUSE),
        ("datetime64[ns]", DataType.long, Rule.REFUSE),
    ],
)
def test_decide(source, target, rule):
    assert decide(source, target) is rule


def test_narrow_rounds_to_the_nearest_float32_whatever_the_values():
    values = np.array([0.1, 1 / 3, 1e-50, -2.5, np.nan, np.inf, 3.4e38])
    out = cast_array(values, DataType.float, "column 'x'")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, values.astype(np.float32))
    assert out[0] != values[0]  # 0.1 has no float32: narrowed, not refused


def test_narrow_refuses_finite_values_beyond_the_range():
    with pytest.raises(SchemaError, match=r"^column 'x': expected float, got float64 \(1e\+300 is beyond the float range"):
        cast_array(np.array([1.0, 1e300]), DataType.float, "column 'x'")
    with pytest.raises(SchemaError, match="70000 is beyond the float16 range, largest 65504"):
        cast_array(np.array([70000.0]), "float16", "tensor 'h'")


@pytest.mark.parametrize(
    "target, fits, too_big",
    [
        (DataType.double, [2**53, -(2**53), 0], 2**53 + 1),
        (DataType.float, [2**24, -(2**24)], -(2**24) - 1),
        ("float16", [2048], 2049),
    ],
)
def test_integers_into_floats_fit_exactly_or_are_refused(target, fits, too_big):
    out = cast_array(np.array(fits, np.int64), target, "column 'n'")
    assert out.tolist() == fits
    with pytest.raises(SchemaError, match=rf"^column 'n': expected \w+, got int64 \(integers beyond 2\*\*\d+ lose precision.*such as {too_big}\)"):
        cast_array(np.array(fits + [too_big], np.int64), target, "column 'n'")


def test_wider_integers_fit_or_are_refused_naming_a_value():
    assert cast_array(np.array([-(2**31), 2**31 - 1]), DataType.integer, "column 'n'").dtype == np.int32
    with pytest.raises(SchemaError, match=r"^column 'n': expected integer, got int64 \(values outside the integer range .* such as 2147483648\)$"):
        cast_array(np.array([1, 2**31]), DataType.integer, "column 'n'")
    with pytest.raises(SchemaError, match=r"expected uint8, got int64 .*such as -1"):
        cast_array(np.array([3, -1]), "uint8", "tensor 'u'")
    big = np.array([2**64 - 1], np.uint64)
    with pytest.raises(SchemaError, match=f"such as {2**64 - 1}"):
        cast_array(big, DataType.long, "column 'id'")
    assert cast_array(np.array([], np.int64), DataType.integer, "column 'n'").dtype == np.int32


def test_floats_never_become_integers_and_nulls_are_named_as_missing():
    with pytest.raises(SchemaError, match=r"^column 'b': expected long, got float64 \(a float is never converted to an integer"):
        cast_array(np.array([3.0]), DataType.long, "column 'b'")
    with pytest.raises(SchemaError, match=r"^column 'b': expected long, got float64 \(missing values"):
        cast_array(np.array([1.0, np.nan]), DataType.long, "column 'b'")


def test_booleans_and_numbers_never_convert():
    with pytest.raises(SchemaError, match=r"^tensor 'x': expected float32, got bool \(a boolean is never converted to a number\)$"):
        cast_array(np.array([True]), "float32", "tensor 'x'")
    with pytest.raises(SchemaError, match=r"^column 'f': expected boolean, got int64 \(a number is never converted to a boolean\)$"):
        cast_array(np.array([1]), DataType.boolean, "column 'f'")


def test_object_arrays_are_read_as_numbers_first():
    out = cast_array(np.array([1, 2.5, None], dtype=object), DataType.double, "column 'a'")
    assert out.dtype == np.float64 and out[:2].tolist() == [1.0, 2.5] and np.isnan(out[2])
    assert cast_array(np.array([[1, 2]], dtype=object), "int32", "tensor 't'").dtype == np.int32
    for values, found in (([1.5, True], "type bool"), ([{}, 2], "type dict"), ([[1], 2], "type list")):
        with pytest.raises(SchemaError, match=f"^column 'a': expected double, got a value of {found}"):
            cast_array(np.array(values, dtype=object), DataType.double, "column 'a'")
    with pytest.raises(SchemaError, match="integers beyond 2\\*\\*53 lose precision, such as"):
        cast_array(np.array([2**60 + 1, None], dtype=object), DataType.double, "column 'a'")


def test_conform_converts_what_the_policy_allows_and_leaves_the_rest():
    x = np.array([0.1])
    assert conform(x, np.dtype("float32")).dtype == np.float32
    for arr, target in ((np.array([2.5]), "int64"), (np.array([2**60]), "float64"), (np.array([True]), "float64")):
        assert conform(arr, np.dtype(target)) is arr


def test_one_constant_for_2_to_the_53():
    assert EXACT_INTEGERS == {t: 2 ** (np.finfo(t).nmant + 1) for t in ("float16", "float32", "float64")}
    assert float(2**53) == 2**53 and float(2**53 + 1) != 2**53 + 1  # the fact the constant stands for


def test_readme_documents_the_table_as_it_is():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert casting.markdown_table() in text


# -- one request, one answer ------------------------------------------------------------------------
DOUBLES = [[0.1, 1 / 3, 2.7182818284590452], [1e-8, -0.3, 123456.789]]  # none has an exact float32


def _identity_onnx(path):
    """A float32 [N, 3] identity graph: the output is exactly what the feed gave onnxruntime."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from modelfmt.flavors import onnx as onnx_flavor

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [x], [y])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    onnx_flavor.save_model(proto, path)


def test_float64_for_float32_gets_one_answer_through_enforce_json_and_the_onnx_feed(tmp_path):
    import modelfmt

    path = str(tmp_path / "id")
    _identity_onnx(path)
    model = modelfmt.load_model(path)
    schema = model.metadata.get_input_schema()
    assert schema.inputs == [TensorSpec("float32", (-1, 3), "x")]
    want = np.array(DOUBLES, np.float32)
    sent = np.array(DOUBLES)

    by_enforce = enforce_schema(sent, schema)
    by_json, _ = decode_request(json.dumps({"inputs": DOUBLES}).encode(), "application/json", schema)
    by_feed = model._impl.predict(sent)  # the wrapper alone, no signature in between
    by_model = model.predict(sent)  # enforcement, then the feed
    by_json_model = model.predict(by_json)
    for got in (by_enforce, by_json, enforce_schema(by_json, schema), by_feed, by_model, by_json_model):
        if isinstance(got, dict):  # the model's outputs by name (MLflow's answer for tensor input)
            (got,) = got.values()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)

    # A column of doubles for a float column, from a DataFrame (as Spark hands it) and from JSON.
    cols = Schema([ColSpec("float", "a"), ColSpec("float", "b"), ColSpec("float", "c")])
    frame = pd.DataFrame(sent, columns=["a", "b", "c"])
    body = json.dumps({"dataframe_split": {"columns": ["a", "b", "c"], "data": DOUBLES}}).encode()
    from_json, _ = decode_request(body, "application/json", cols)
    for got in (enforce_schema(frame, cols), enforce_schema(from_json, cols)):
        assert got.dtypes.tolist() == [np.float32] * 3
        np.testing.assert_array_equal(got.to_numpy(), want)


def test_a_refusal_reads_the_same_through_enforce_json_and_the_onnx_feed(tmp_path):
    import modelfmt

    path = str(tmp_path / "id")
    _identity_onnx(path)
    model = modelfmt.load_model(path)
    schema = model.metadata.get_input_schema()
    big = [[2**24 + 1, 0, 0]]  # an int64 beyond float32's exact integers
    reasons = []
    for attempt in (
        lambda: enforce_schema(np.array(big), schema),
        lambda: enforce_schema(decode_request(json.dumps({"inputs": big}).encode(), "application/json", schema)[0], schema),
        lambda: model._impl.predict(np.array(big)),
    ):
        with pytest.raises(SchemaError) as e:
            attempt()
        reasons.append(str(e.value).split(": ", 1)[1])
    assert reasons[0] == reasons[1] == reasons[2]
    assert reasons[0] == "expected float32, got int64 (integers beyond 2**24 lose precision as float32, such as 16777217)"


# -- strings: parse and format ------------------------------------------------------------------------
@pytest.mark.parametrize("text, target, value", [
    ("42", DataType.long, 42),
    (" -7 ", DataType.integer, -7),
    ("+3", "uint8", 3),
    ("9007199254740993", DataType.long, 9007199254740993),  # read as the integer it is, never via a double
    ("0.05", DataType.double, 0.05),
    ("1e-3", DataType.double, 0.001),
    (".5", DataType.float, 0.5),
    ("7", DataType.double, 7.0),
    ("-Infinity", DataType.double, -np.inf),
    ("inf", "float16", np.inf),
])
def test_parse_reads_numbers_written_exactly(text, target, value):
    out = cast_array(np.array([text], dtype=object), target, "column 'x'")
    assert out.dtype == casting.target_dtype(target) and out.tolist() == [value]


def test_parse_reads_nan_and_numpy_string_arrays():
    assert np.isnan(cast_array(np.array(["NaN", "nan"]), DataType.double, "column 'x'")).all()
    assert cast_array(np.array(["1", "2"]), "int16", "tensor 't'").dtype == np.int16


@pytest.mark.parametrize("text, target, why", [
    ("2.5", DataType.long, "which is not an integer"),
    ("3.0", DataType.long, "which is not an integer"),  # refused as 3.0 is
    ("1e3", DataType.long, "which is not an integer"),
    ("abc", DataType.double, "which is not a number"),
    ("", DataType.double, "which is not a number"),
    ("1_000", DataType.double, "which is not a number"),
    ("0x10", DataType.integer, "which is not an integer"),
    ("nan", DataType.long, "which is not an integer"),
])
def test_parse_refuses_other_strings_naming_them(text, target, why):
    with pytest.raises(SchemaError, match=f"^column 'x': expected {target.value}, got the string {text!r}, {why}$"):
        cast_array(np.array([text], dtype=object), target, "column 'x'")


def test_parsed_values_then_follow_their_number_row():
    with pytest.raises(SchemaError, match="1e\\+40 is beyond the float range"):
        cast_array(np.array(["1e40"], dtype=object), DataType.float, "column 'x'")
    with pytest.raises(SchemaError, match="integers beyond 2\\*\\*53 lose precision as double"):
        cast_array(np.array(["9007199254740993"], dtype=object), DataType.double, "column 'x'")
    with pytest.raises(SchemaError, match="values outside the integer range"):
        cast_array(np.array(["3000000000"], dtype=object), DataType.integer, "column 'x'")
    with pytest.raises(SchemaError, match="^column 'f': expected boolean, got the string 'true'$"):
        cast_array(np.array(["true"], dtype=object), DataType.boolean, "column 'f'")


def test_format_writes_integers_as_text_and_refuses_floats_and_booleans():
    assert casting.as_text(np.array([7, -12], np.int16), "column 's'").tolist() == ["7", "-12"]
    assert casting.as_text(np.array([2**64 - 1], np.uint64), "column 's'").tolist() == [str(2**64 - 1)]
    mixed = casting.as_text(np.array(["a", 7, None, np.nan], dtype=object), "column 's'")
    assert mixed.dtype == object and mixed.tolist()[:3] == ["a", "7", None] and np.isnan(mixed[3])
    for arr in (np.array([1.5]), np.array([1.5, "a"], dtype=object)):
        with pytest.raises(SchemaError, match="^column 's': expected string, got .*a float is never converted to a string"):
            casting.as_text(arr, "column 's'")
    for arr in (np.array([True]), np.array([True], dtype=object)):
        with pytest.raises(SchemaError, match="a boolean is never converted to a string"):
            casting.as_text(arr, "column 's'")
