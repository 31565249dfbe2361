"""Arrow IPC bodies in (``application/vnd.apache.arrow.stream``) and Arrow / Parquet answers out: column
types mapped to the signature by the casting policy, typed answers, bad bodies; a few over real HTTP."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelfmt.enforce import enforce_schema
from modelfmt.errors import NotAcceptableError, PayloadError, SchemaError
from modelfmt.serving.codecs import (
    ARROW,
    JSON,
    PARQUET,
    answer_for,
    answer_types,
    decode_request,
    encode_predictions,
    predictions_table,
    supported_content_types,
)
from modelfmt.signature import ColSpec, Schema, TensorSpec

SCHEMA = Schema([ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("float", "f"), ColSpec("integer", "i"),
                 ColSpec("string", "s")])


def stream(table: pa.Table | pd.DataFrame) -> bytes:
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def decode(raw: bytes, schema=SCHEMA):
    data, params = decode_request(raw, ARROW, schema)
    assert params is None
    return data


def read_answer(raw: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(raw)).read_all()


def test_registered_both_ways_json_stays_the_default():
    assert ARROW in supported_content_types() and "application/vnd.apache.arrow.file" in supported_content_types()
    assert answer_types() == [JSON, ARROW, PARQUET]
    assert answer_for("mlflow", None).media_type == JSON
    assert answer_for("mlflow", "*/*").media_type == JSON
    assert answer_for("mlflow", f"{ARROW}").media_type == ARROW
    assert answer_for("mlflow", f"application/json;q=0.5, {PARQUET}").media_type == PARQUET
    with pytest.raises(NotAcceptableError, match="vnd.apache.arrow.stream"):
        answer_for("mlflow", "text/html")


def test_column_types_take_the_signature_by_the_casting_policy():
    table = pa.table({"s": ["x", "y"], "i": pa.array([3, 5], pa.int64()), "f": [0.1, 1.5],
                      "b": pa.array([2, 4], pa.int16()), "a": pa.array([1.5, 2.5], pa.float32())})
    out = enforce_schema(decode(stream(table)), SCHEMA)
    assert list(out.columns) == ["a", "b", "f", "i", "s"]
    assert out.dtypes.tolist()[:4] == [np.float64, np.int64, np.float32, np.int32]
    assert out["f"].tolist() == [np.float32(0.1), 1.5] and out["s"].tolist() == ["x", "y"]
    assert out["b"].tolist() == [2, 4]


def test_what_the_policy_refuses_is_refused_naming_the_column():
    base = {"a": [1.5], "b": [2], "f": [0.5], "i": [3], "s": ["x"]}
    for change, column, why in (({"b": [2.5]}, "b", "a float is never converted to an integer"),
                                ({"i": [2**40]}, "i", "values outside the integer range"),
                                ({"a": [True]}, "a", "a boolean is never converted to a number")):
        with pytest.raises(SchemaError, match=f"column '{column}'.*{why}"):
            enforce_schema(decode(stream(pd.DataFrame({**base, **change}))), SCHEMA)


def test_nulls_and_missing_columns():
    table = pa.table({"a": [1.5, None], "b": pa.array([2, None], pa.int64()), "f": [0.5, 1.0], "i": [3, 5],
                      "s": ["x", None]})
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(decode(stream(table)), SCHEMA)
    with pytest.raises(SchemaError, match="missing.*'s'"):
        enforce_schema(decode(stream(pa.table({"a": [1.0], "b": [1], "f": [1.0], "i": [1]}))), SCHEMA)


def test_ipc_file_format_and_no_schema():
    table = pa.table({"x": [1.0, 2.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    df = decode(sink.getvalue().to_pybytes(), None)
    assert df["x"].tolist() == [1.0, 2.0]


def test_tensor_models_get_arrays():
    one = Schema([TensorSpec(np.dtype("float32"), (-1, 3))])
    arr = decode(stream(pa.table({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]})), one)
    assert arr.dtype == np.float32 and arr.tolist() == [[1, 3, 5], [2, 4, 6]]
    # One list column: one row per tensor row.
    lists = pa.table({"x": pa.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], pa.list_(pa.float64(), 3))})
    assert decode(stream(lists), one).tolist() == [[1, 2, 3], [4, 5, 6]]
    named = Schema([TensorSpec(np.dtype("int64"), (-1,), "n"), TensorSpec(np.dtype("float64"), (-1,), "m")])
    got = decode(stream(pa.table({"n": pa.array([1, 2], pa.int32()), "m": [0.5, 1.5]})), named)
    assert got["n"].dtype == np.int64 and got["m"].tolist() == [0.5, 1.5]


@pytest.mark.parametrize("raw", [b"not arrow at all", b"ARROW1 but broken", stream(pa.table({"a": [1.0]}))[:20]])
def test_bad_bodies_are_payload_errors(raw):
    with pytest.raises(PayloadError, match="not an Arrow IPC stream"):
        decode(raw)


def test_empty_body():
    with pytest.raises(PayloadError, match="empty"):
        decode(b"")


# -- answers --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "predictions, columns, types",
    [
        (np.array([1, 2], np.int64), ["prediction"], [pa.int64()]),
        (np.array([0.5, 1.5], np.float32), ["prediction"], [pa.float32()]),
        (np.array([[1.0, 2.0], [3.0, 4.0]]), ["0", "1"], [pa.float64(), pa.float64()]),
        (np.zeros((2, 2, 3), np.float32), ["prediction"], [pa.list_(pa.list_(pa.float32(), 3), 2)]),
        (pd.Series([1, 2], name="label"), ["label"], [pa.int64()]),
        (pd.Series(["a", "b"]), ["prediction"], [pa.string()]),
        (pd.DataFrame({"p": [0.1, 0.9], "k": np.array([1, 0], np.int32)}, index=[7, 8]), ["p", "k"],
         [pa.float64(), pa.int32()]),
        ({"scores": np.ones((2, 3)), "label": np.array([1, 2])}, ["scores", "label"],
         [pa.list_(pa.float64(), 3), pa.int64()]),
        ([1, 2], ["prediction"], [pa.int64()]),
        (["a", "bb"], ["prediction"], [pa.string()]),
    ],
)
def test_answers_are_typed(predictions, columns, types):
    table = predictions_table(predictions)
    # pandas 3's string dtype is Arrow's large_string; pandas 2's object strings are string.
    got = [pa.string() if t == pa.large_string() else t for t in table.schema.types]
    assert table.column_names == columns and got == types and table.num_rows == 2
    arrow = read_answer(encode_predictions(predictions, ARROW))
    assert arrow.equals(table)
    parquet = pq.read_table(io.BytesIO(encode_predictions(predictions, PARQUET)))
    assert parquet.column_names == columns
    assert [pa.string() if t == pa.large_string() else t for t in parquet.schema.types] == types


def test_answer_values_round_trip():
    preds = np.array([2**62 + 1, -3], np.int64)  # beyond a double's exact integers: no JSON on the way
    assert read_answer(encode_predictions(preds, ARROW)).column(0).to_pylist() == [2**62 + 1, -3]
    df = pd.DataFrame({"a": [1.5, np.nan], "b": ["x", None]})
    back = read_answer(encode_predictions(df, ARROW)).to_pandas()
    pd.testing.assert_frame_equal(back, df)


# -- over HTTP --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(sklearn_model_path):
    from modelfmt.serving.testing import serving

    with serving(sklearn_model_path) as url:
        yield url


def test_http_arrow_in_json_arrow_and_parquet_out(server, diabetes, elasticnet):
    import requests

    X = diabetes[0].head(50)
    want = elasticnet.predict(X)
    body = stream(X)
    r = requests.post(f"{server}/invocations", data=body, headers={"Content-Type": ARROW}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith(JSON)
    np.testing.assert_allclose(r.json()["predictions"], want)
    r = requests.post(f"{server}/invocations", data=body, headers={"Content-Type": ARROW, "Accept": ARROW},
                      timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == ARROW
    table = read_answer(r.content)
    assert table.column_names == ["prediction"] and table.schema.types == [pa.float64()]
    np.testing.assert_allclose(table.column(0).to_numpy(), want, rtol=1e-12)
    r = requests.post(f"{server}/invocations", data=body, headers={"Content-Type": ARROW, "Accept": PARQUET},
                      timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"] == PARQUET
    np.testing.assert_allclose(pq.read_table(io.BytesIO(r.content)).column(0).to_numpy(), want, rtol=1e-12)


def test_http_bad_arrow_is_400_and_bad_accept_406(server, diabetes):
    import requests

    r = requests.post(f"{server}/invocations", data=b"garbage", headers={"Content-Type": ARROW}, timeout=30)
    assert r.status_code == 400 and "not an Arrow IPC stream" in r.json()["message"]
    missing = stream(diabetes[0].head(2).drop(columns=["bmi"]))
    r = requests.post(f"{server}/invocations", data=missing, headers={"Content-Type": ARROW}, timeout=30)
    assert r.status_code == 400 and "bmi" in r.json()["message"]
    r = requests.post(f"{server}/invocations", data=stream(diabetes[0].head(2)),
                      headers={"Content-Type": ARROW, "Accept": "text/html"}, timeout=30)
    assert r.status_code == 406 and ARROW in r.json()["message"]


# -- JSON Lines -------------------------------------------------------------------------------------
def test_jsonl_rows_take_the_signature_and_bad_lines_are_named():
    body = b'{"a": 1.5, "b": 2, "f": 0.5, "i": 3, "s": "x"}\n\n{"a": 2, "b": 4, "f": 1, "i": 5, "s": "y"}\n'
    out = enforce_schema(decode_request(body, "application/jsonl", SCHEMA)[0], SCHEMA)
    assert out.dtypes.tolist()[:4] == [np.float64, np.int64, np.float32, np.int32] and out["s"].tolist() == ["x", "y"]
    with pytest.raises(PayloadError, match="line 2 is not valid JSON"):
        decode_request(b'{"a": 1}\n{"a": \n', "application/x-ndjson", SCHEMA)
    with pytest.raises(PayloadError, match="line 1 is not a JSON object"):
        decode_request(b"[1, 2]\n", "application/jsonl", SCHEMA)
    with pytest.raises(PayloadError, match="no rows"):
        decode_request(b"\n\n", "application/jsonl", SCHEMA)
