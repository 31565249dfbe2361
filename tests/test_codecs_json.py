"""The JSON codec and the content-type dispatch: bodies in, model input out, predictions back; no server."""

from __future__ import annotations

import datetime
import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelfmt.enforce import enforce_schema
from modelfmt.errors import PayloadError, SchemaError, UnsupportedMediaTypeError
from modelfmt.signature import ColSpec, Schema, TensorSpec
from modelfmt.serving.codecs import decode_request, encode_predictions, supported_content_types

COLS = Schema([ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("float", "c")])
DOUBLES = Schema([ColSpec("double", "a"), ColSpec("double", "b")])


def body(doc) -> bytes:
    return json.dumps(doc).encode()


def decode(doc, schema=None, content_type="application/json"):
    return decode_request(body(doc), content_type, schema)


# -- the four keys ------------------------------------------------------------------------------
def test_split_numbers_take_the_declared_types():
    df, params = decode({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2, 0.1], [3.5, 4, 1]]}}, COLS)
    assert params is None
    assert list(df.columns) == ["a", "b", "c"]
    assert [str(t) for t in df.dtypes] == ["float64", "int64", "float32"]
    assert df["c"].tolist() == [np.float32(0.1), 1.0]
    pd.testing.assert_frame_equal(enforce_schema(df, COLS), df)


def test_split_all_doubles_is_one_block_with_index():
    df, _ = decode({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5, 2], [3, 4]], "index": [7, 8]}}, DOUBLES)
    assert df.dtypes.tolist() == [np.float64, np.float64] and df.index.tolist() == [7, 8]
    assert df.to_numpy().tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_split_without_schema_and_without_columns():
    df, _ = decode({"dataframe_split": {"data": [[1, 2], [3, 4]]}})
    assert df.shape == (2, 2)
    df, _ = decode({"dataframe_split": {"columns": ["a"], "data": [1, 2, 3]}})
    assert df["a"].tolist() == [1, 2, 3]


def test_split_booleans_are_not_read_as_numbers():
    df, _ = decode({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5, True]]}}, DOUBLES)
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, DOUBLES)


def test_split_strings_in_a_number_column_are_named_by_enforcement():
    df, _ = decode({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5, "x"]]}}, DOUBLES)
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, DOUBLES)


def test_split_nulls_in_number_columns_become_nan():
    df, _ = decode({"dataframe_split": {"columns": ["a", "b"], "data": [[1.5, None], [2, 3]]}}, DOUBLES)
    assert df["b"].dtype == np.float64 and np.isnan(df["b"][0])


def test_split_fractional_number_for_a_long_column_is_refused_by_enforcement():
    df, _ = decode({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1, 2.5, 3]]}}, COLS)
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, COLS)


def test_split_integral_doubles_for_a_long_column_are_refused_by_type():
    # A float never becomes an integer (modelfmt.casting): 3.0 is refused as 2.5 is, naming the column.
    df, _ = decode({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1.5, 3.0, 1], [2, 4.0, 2]]}}, COLS)
    with pytest.raises(SchemaError, match="column 'b': expected long, got float64 .*never converted to an integer"):
        enforce_schema(df, COLS)
    # Integers beside doubles in the rows keep their type (the all-numbers fast path reads them as doubles).
    df, _ = decode({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[1.5, 3, 1], [2, 4, 2.5]]}}, COLS)
    assert [str(t) for t in df.dtypes] == ["float64", "int64", "float32"]


def test_doubles_for_float_columns_are_narrowed_in_every_key():
    schema = Schema([ColSpec("float", "x"), ColSpec("double", "y")])
    want = np.array([0.1, 1 / 3], np.float32)  # neither has an exact float32
    bodies = [
        {"dataframe_split": {"columns": ["x", "y"], "data": [[0.1, 1], [1 / 3, 2]]}},
        {"dataframe_records": [{"x": 0.1, "y": 1}, {"x": 1 / 3, "y": 2}]},
        {"instances": [{"x": 0.1, "y": 1}, {"x": 1 / 3, "y": 2}]},
        {"inputs": {"x": [0.1, 1 / 3], "y": [1, 2]}},
    ]
    for doc in bodies:
        data, _ = decode(doc, schema)
        out = enforce_schema(data, schema)
        assert out["x"].dtype == np.float32 and out["y"].dtype == np.float64, list(doc)
        np.testing.assert_array_equal(out["x"].to_numpy(), want)


def test_integers_wider_than_the_column_are_refused_naming_a_value():
    schema = Schema([ColSpec("integer", "n")])
    df, _ = decode({"dataframe_split": {"columns": ["n"], "data": [[1], [2]]}}, schema)
    assert df["n"].dtype == np.int32
    data, _ = decode({"inputs": {"n": [1, 2**31]}}, schema)
    with pytest.raises(SchemaError, match="column 'n': expected integer, got int64 .*such as 2147483648"):
        enforce_schema(data, schema)


@pytest.mark.parametrize("key", ["dataframe_split", "instances", "inputs"])
def test_a_null_in_a_long_column_is_a_missing_value(key):
    schema = Schema([ColSpec("long", "n"), ColSpec("double", "x")])
    doc = {
        "dataframe_split": {"dataframe_split": {"columns": ["n", "x"], "data": [[1, 0.5], [None, 1.5]]}},
        "instances": {"instances": [{"n": 1, "x": 0.5}, {"n": None, "x": 1.5}]},
        "inputs": {"inputs": {"n": [1, None], "x": [0.5, 1.5]}},
    }[key]
    data, _ = decode(doc, schema)
    with pytest.raises(SchemaError, match="column 'n': expected long, got float64 \\(missing values"):
        enforce_schema(data, schema)


def test_split_big_integers_keep_their_precision():
    big = 2**60 + 1
    df, _ = decode({"dataframe_split": {"columns": ["a", "b", "c"], "data": [[0.5, big, 1]]}}, COLS)
    assert int(df["b"][0]) == big


def test_records_in_any_key_order():
    records = [{"a": 1, "b": 2.5}, {"b": 4, "a": 3}]
    df, _ = decode({"dataframe_records": records}, DOUBLES)
    assert df[["a", "b"]].to_numpy().tolist() == [[1.0, 2.5], [3.0, 4.0]]


def test_records_with_a_missing_key_leave_a_gap():
    df, _ = decode({"dataframe_records": [{"a": 1, "b": 2}, {"a": 3}]}, DOUBLES)
    assert np.isnan(df["b"][1])


def test_records_missing_column_is_named_by_enforcement():
    df, _ = decode({"dataframe_records": [{"a": 1}]}, DOUBLES)
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, DOUBLES)


def test_instances_rows_of_objects_become_columns():
    data, _ = decode({"instances": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]}, DOUBLES)
    assert set(data) == {"a", "b"} and data["a"].dtype == np.float64 and data["b"].tolist() == [2.0, 4.0]


def test_instances_with_uneven_rows_are_refused():
    with pytest.raises(PayloadError, match="same keys"):
        decode({"instances": [{"a": 1, "b": 2}, {"a": 3}]}, DOUBLES)


def test_instances_rows_with_swapped_keys_are_refused():
    # Each key has two values, but the rows differ: reading them as columns would misalign rows.
    with pytest.raises(PayloadError, match="same keys"):
        decode({"instances": [{"a": 1, "b": 2}, {"a": 3}, {"b": 4}]}, DOUBLES)


@pytest.mark.parametrize("data", [[[1, 2, 3]], [[1, True, 3]]])
def test_split_with_duplicate_column_names_is_refused(data):
    # Both the all-numbers fast path and the general one (a boolean) refuse them, never a 500.
    with pytest.raises(PayloadError, match="'a' more than once"):
        decode({"dataframe_split": {"columns": ["a", "b", "a"], "data": data}}, DOUBLES)


def test_inputs_as_columns_and_rows_without_names_refused():
    data, _ = decode({"inputs": {"a": [1, 2], "b": [3.5, 4]}}, DOUBLES)
    assert data["a"].dtype == np.float64
    # Rows without names would be matched to columns by position: a client whose column order differs
    # would get wrong numbers, silently (MLflow refuses them too).
    for key in ("inputs", "instances"):
        with pytest.raises(SchemaError, match=r"rows without column names .* \['a', 'b'\]: send .*dataframe_split.*"
                                              r"\"inputs\" as an object of columns \(\{\"a\": \[\.\.\.\]") as e:
            decode({key: [[1, 2], [3, 4]]}, DOUBLES)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_rows_for_an_unnamed_column_schema_go_by_position():
    schema = Schema([ColSpec("double"), ColSpec("long")])
    data, _ = decode({"inputs": [[1.5, 2], [3.5, 4]]}, schema)
    out = enforce_schema(data, schema)
    assert out.iloc[:, 0].tolist() == [1.5, 3.5] and out.iloc[:, 1].tolist() == [2, 4]


def test_inputs_single_column_list():
    data, _ = decode({"inputs": [1, 2, 3]}, Schema([ColSpec("float", "x")]))
    assert data["x"].dtype == np.float32


def test_inputs_tensor_takes_the_spec_dtype():
    schema = Schema([TensorSpec("float32", (-1, 3))])
    arr, _ = decode({"inputs": [[0.1, 0.2, 0.3]]}, schema)
    assert arr.dtype == np.float32 and arr.shape == (1, 3)
    assert enforce_schema(arr, schema) is arr


def test_inputs_named_tensors():
    schema = Schema([TensorSpec("float32", (-1, 2), "x"), TensorSpec("int64", (-1,), "n")])
    data, _ = decode({"inputs": {"x": [[1, 2]], "n": [3]}}, schema)
    assert data["x"].dtype == np.float32 and data["n"].dtype == np.int64


def test_inputs_ragged_tensor_is_a_payload_error():
    with pytest.raises(PayloadError, match="same length"):
        decode({"inputs": [[1, 2], [3]]}, Schema([TensorSpec("float32", (-1, 2))]))


def test_inputs_without_schema_are_arrays_or_as_sent():
    arr, _ = decode({"inputs": [[1, 2], [3, 4]]})
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 2)
    data, _ = decode({"inputs": {"q": "hello"}})
    assert data == {"q": "hello"}


def test_params_come_back_as_sent():
    _, params = decode({"dataframe_split": {"columns": ["a"], "data": [[1]]}, "params": {"k": 3, "s": "x"}})
    assert params == {"k": 3, "s": "x"}


def test_binary_columns_are_base64_decoded():
    schema = Schema([ColSpec("binary", "blob")])
    df, _ = decode({"dataframe_split": {"columns": ["blob"], "data": [["aGVsbG8="]]}}, schema)
    assert df["blob"][0] == b"hello"
    df, _ = decode({"inputs": {"blob": ["_-8="]}}, schema)  # URL-safe alphabet
    assert df["blob"][0] == b"\xff\xef"


@pytest.mark.parametrize("text", ["hello world", "aGVsbG8", "aGVs*bG8=", "not base64!"])
def test_binary_columns_refuse_text_that_is_not_base64(text):
    schema = Schema([ColSpec("binary", "blob")])
    with pytest.raises(SchemaError, match="column 'blob': expected base64-encoded binary"):
        decode({"dataframe_split": {"columns": ["blob"], "data": [[text]]}}, schema)


# -- what is refused ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, match",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "exactly one of"),
        (b'{"data": [[1]]}', "exactly one of.*'data'"),
        (b'{"inputs": [1], "instances": [1]}', "exactly one of.*'inputs', 'instances'"),
        (b'{"dataframe_split": [[1]]}', "must be an object"),
        (b'{"dataframe_split": {"columns": ["a"]}}', "'data'"),
        (b'{"dataframe_split": {"data": [[1]], "extra": 1}}', "'data'"),
        (b'{"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2, 3]]}}', "do not form a table"),
        (b'{"dataframe_records": {"a": 1}}', "list of objects"),
        (b'{"dataframe_records": [1, 2]}', "list of objects"),
        (b'{"inputs": [1], "params": [1]}', "'params' must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_malformed_bodies_are_payload_errors(raw, match):
    with pytest.raises(PayloadError, match=match) as e:
        decode_request(raw, "application/json", DOUBLES)
    assert e.value.http_status == 400


def test_empty_body():
    with pytest.raises(PayloadError, match="empty"):
        decode_request(b"", "application/json", None)


@pytest.mark.parametrize(
    "content_type, match",
    [
        ("text/plain", "not supported"),
        ("application/x-www-form-urlencoded", "not supported"),
        ("application/json; charset=latin-1", "UTF-8"),
        ("application/json; format=pandas-split", "format"),
    ],
)
def test_unsupported_content_types(content_type, match):
    with pytest.raises(UnsupportedMediaTypeError, match=match) as e:
        decode_request(b'{"inputs": [1]}', content_type, None)
    assert e.value.http_status == 415


def test_accepted_content_types():
    assert {"application/json", "application/vnd.apache.parquet", "text/csv"} <= set(supported_content_types())
    for ct in (None, "application/json", "Application/JSON; charset=UTF-8", 'application/json; charset="utf-8"'):
        data, _ = decode_request(b'{"inputs": [1, 2]}', ct, None)
        assert data.tolist() == [1, 2]


# -- answers ------------------------------------------------------------------------------------
def answer(predictions):
    return json.loads(encode_predictions(predictions))["predictions"]


def test_encode_shapes_as_mlflow():
    assert answer(np.array([1.5, 2.0])) == [1.5, 2.0]
    assert answer(np.array([[1, 2], [3, 4]])) == [[1, 2], [3, 4]]
    assert answer(pd.DataFrame({"y": [1.0, 2.0], "label": ["a", "b"]})) == [
        {"y": 1.0, "label": "a"},
        {"y": 2.0, "label": "b"},
    ]
    assert answer(pd.Series([1.0, 2.0], name="y")) == [{"y": 1.0}, {"y": 2.0}]
    assert answer(pd.Series([1.0])) == [{"0": 1.0}]
    assert answer({"y": np.array([1, 2]), "n": np.int64(2)}) == {"y": [1, 2], "n": 2}
    assert answer([1, "a", None]) == [1, "a", None]
    assert answer("text") == "text"


def test_encode_awkward_values():
    assert answer(np.array([1.0, np.nan])) == [1.0, None]
    assert answer(np.array([0.1], dtype=np.float32)) == [0.10000000149011612]  # the double it widens to, as MLflow
    assert answer(np.arange(6.0).reshape(2, 3)[:, 1]) == [1.0, 4.0]  # a non-contiguous view
    assert answer(np.array(["a", None], dtype=object)) == ["a", None]
    df = pd.DataFrame({"t": pd.to_datetime(["2024-01-02", None]), "i": pd.array([1, None], dtype="Int64")})
    assert answer(df) == [{"t": "2024-01-02T00:00:00", "i": 1}, {"t": None, "i": None}]
    assert answer({"d": datetime.date(2024, 1, 2), "b": b"hi"}) == {"d": "2024-01-02", "b": "aGk="}


def test_encode_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError):
        encode_predictions(object())


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64) | st.integers(-(2**40), 2**40), min_size=2, max_size=2),
        min_size=1,
        max_size=30,
    )
)
def test_split_round_trip_matches_pandas(rows):
    df, _ = decode({"dataframe_split": {"columns": ["a", "b"], "data": rows}}, DOUBLES)
    want = pd.DataFrame(rows, columns=["a", "b"]).astype(np.float64)
    pd.testing.assert_frame_equal(df, want)
    assert answer(df) == want.to_dict(orient="records")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(["a", "b", "x", "data", "columns", "index"]), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1000, deadline=None)
@given(
    st.sampled_from(["dataframe_split", "dataframe_records", "instances", "inputs"]),
    JSON_VALUES,
    st.sampled_from([DOUBLES, COLS, Schema([TensorSpec("float32", (-1, 2))]), None]),
)
def test_any_json_is_model_input_or_a_clear_error(key, value, schema):
    """Whatever JSON arrives under a format key, decoding and enforcement end in data or in our own error
    (a 400), never in an exception the server would have to answer with 500."""
    from modelfmt.errors import ModelfmtError

    try:
        data, _ = decode({key: value}, schema)
        enforce_schema(data, schema)
    except ModelfmtError as e:
        assert e.http_status == 400 and e.message


# -- missing values and numbers as strings, the same in every format -----------------------------------
LITERALS = b'{"dataframe_split": {"columns": ["a", "b"], "data": [[NaN, Infinity], [-Infinity, 1.5]]}}'


@pytest.mark.parametrize("raw", [
    LITERALS,
    b'{"dataframe_records": [{"a": NaN, "b": Infinity}, {"a": -Infinity, "b": 1.5}]}',
    b'{"instances": [{"a": NaN, "b": Infinity}, {"a": -Infinity, "b": 1.5}]}',
    b'{"inputs": {"a": [NaN, -Infinity], "b": [Infinity, 1.5]}}',
    b'{"inputs": {"a": [null, -Infinity], "b": [Infinity, 1.5]}}',
])
def test_nan_and_infinity_literals_are_read_in_every_format(raw):
    data, _ = decode_request(raw, "application/json", DOUBLES)
    out = enforce_schema(data, DOUBLES)
    assert np.isnan(out["a"][0]) and out["a"][1] == -np.inf
    assert out["b"].tolist() == [np.inf, 1.5]


def test_strict_json_keeps_orjsons_answer_and_bad_json_its_message():
    from modelfmt.serving.codecs import json as json_codec

    assert json_codec._loads(b'{"inputs": [1, 2.5]}') == {"inputs": [1, 2.5]}
    # Not JSON even for Python's json (which writes NaN, never nan): orjson's message, with the position.
    with pytest.raises(PayloadError, match=r"^the body is not valid JSON: invalid literal.*line 1 column 13"):
        decode_request(b'{"inputs": [nan]}', "application/json", None)


def test_numeric_strings_become_numbers_in_every_format():
    for doc in ({"dataframe_split": {"columns": ["a", "b", "c"], "data": [["0.05", "2", "0.5"]]}},
                {"dataframe_records": [{"a": "0.05", "b": "2", "c": "0.5"}]},
                {"instances": [{"a": "0.05", "b": "2", "c": "0.5"}]},
                {"inputs": {"a": ["0.05"], "b": ["2"], "c": ["0.5"]}}):
        out = enforce_schema(decode(doc, COLS)[0], COLS)
        assert out.dtypes.tolist() == [np.float64, np.int64, np.float32], doc
        assert out.iloc[0].tolist() == [0.05, 2, np.float32(0.5)]
    with pytest.raises(SchemaError, match=r"column 'b': expected long, got the string '2\.5', which is not an integer"):
        enforce_schema(decode({"inputs": {"a": [1.0], "b": ["2.5"], "c": [1.0]}}, COLS)[0], COLS)
    tensor = Schema([TensorSpec("float32", (-1, 2))])
    arr = enforce_schema(decode({"inputs": [["1.5", "-2e1"]]}, tensor)[0], tensor)
    assert arr.dtype == np.float32 and arr.tolist() == [[1.5, -20.0]]


def test_integers_for_a_string_column_become_text_in_every_format():
    schema = Schema([ColSpec("string", "s")])
    for doc in ({"dataframe_split": {"columns": ["s"], "data": [[7], ["a"]]}},
                {"dataframe_records": [{"s": 7}, {"s": "a"}]},
                {"inputs": {"s": [7, "a"]}},
                {"inputs": [7, "a"]}):
        assert enforce_schema(decode(doc, schema)[0], schema)["s"].tolist() == ["7", "a"], doc
    with pytest.raises(SchemaError, match="column 's': expected string, got .*a float is never converted to a string"):
        enforce_schema(decode({"inputs": {"s": [7.5]}}, schema)[0], schema)
