"""The Parquet codec (``application/vnd.apache.parquet``): column types mapped to the signature by the
casting policy, nulls, dates, bad bodies; and ``modelfmt predict`` reading .parquet files through it."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from modelfmt.enforce import enforce_schema
from modelfmt.errors import PayloadError, SchemaError
from modelfmt.serving.codecs import PARQUET, decode_request, supported_content_types
from modelfmt.signature import ColSpec, Schema

SCHEMA = Schema([ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("float", "f"), ColSpec("integer", "i"),
                 ColSpec("string", "s")])


def body(df: pd.DataFrame, **kw) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, **kw)
    return buf.getvalue()


def decode(raw: bytes, schema=SCHEMA):
    data, params = decode_request(raw, PARQUET, schema)
    assert params is None
    return data


def test_registered_for_mlflow_requests():
    assert PARQUET == "application/vnd.apache.parquet" and PARQUET in supported_content_types()


def test_column_types_take_the_signature_by_the_casting_policy():
    # pandas' defaults (float64, int64), narrower integers, another column order: all read as declared.
    df = pd.DataFrame({"s": ["x", "y"], "i": [3, 5], "f": [0.1, 1.5], "b": np.array([2, 4], np.int16),
                       "a": np.array([1.5, 2.5], np.float32)})
    out = enforce_schema(decode(body(df, index=False)), SCHEMA)
    assert list(out.columns) == ["a", "b", "f", "i", "s"]
    assert out.dtypes.tolist()[:4] == [np.float64, np.int64, np.float32, np.int32]
    assert out["f"].tolist() == [np.float32(0.1), 1.5] and out["s"].tolist() == ["x", "y"]


def test_what_the_policy_refuses_is_refused_naming_the_column():
    base = {"a": [1.5], "b": [2], "f": [0.5], "i": [3], "s": ["x"]}
    for change, column, why in (({"b": [2.5]}, "b", "a float is never converted to an integer"),
                                ({"i": [2**40]}, "i", "values outside the integer range"),
                                ({"a": [True]}, "a", "a boolean is never converted to a number"),
                                ({"s": [1.5]}, "s", "a float is never converted to a string")):
        with pytest.raises(SchemaError, match=f"column '{column}'.*{why}") as e:
            enforce_schema(decode(body(pd.DataFrame({**base, **change}))), SCHEMA)
        assert e.value.error_code == "INVALID_PARAMETER_VALUE"


def test_nulls():
    df = pd.DataFrame({"a": [1.5, None], "b": pd.array([2, 3], dtype="Int64"), "f": [0.5, None], "i": [3, 5],
                       "s": ["x", None]})
    out = enforce_schema(decode(body(df)), SCHEMA)
    assert np.isnan(out["a"][1]) and np.isnan(out["f"][1]) and out["f"].dtype == np.float32
    assert out["b"].dtype == np.int64 and out["s"].tolist() == ["x", None]
    df["b"] = pd.array([2, None], dtype="Int64")
    with pytest.raises(SchemaError, match="column 'b'.*missing values"):
        enforce_schema(decode(body(df)), SCHEMA)


def test_dates_reach_the_model_in_nanoseconds():
    schema = Schema([ColSpec("datetime", "t")])
    t = pd.Series(pd.to_datetime(["2024-01-01 00:00:00", "2024-01-02 03:04:05"])).astype("datetime64[ms]")
    out = enforce_schema(decode(body(pd.DataFrame({"t": t})), schema), schema)
    assert out["t"].dtype == np.dtype("datetime64[ns]") and out["t"].tolist() == t.tolist()


def test_no_schema_gives_the_table_as_written():
    df = pd.DataFrame({"x": np.array([1, 2], np.int16)}, index=[10, 20])
    out = decode(body(df), None)
    assert out["x"].dtype == np.int16 and out.index.tolist() == [10, 20]


@pytest.mark.parametrize("raw", [b"PAR1 not really", b"x" * 100, body(pd.DataFrame({"a": [1.0]}))[:-9]])
def test_a_body_that_is_not_parquet_is_a_payload_error(raw):
    with pytest.raises(PayloadError, match="the body is not valid Parquet") as e:
        decode(raw)
    assert e.value.error_code == "BAD_REQUEST"


def test_modelfmt_predict_reads_parquet_through_the_codec():
    from modelfmt.cli._predict_io import Source

    df = pd.DataFrame({"a": [1.5], "b": [2], "f": [0.25], "i": [3], "s": ["x"]})
    [(start, data)] = list(Source(io.BytesIO(body(df)), "parquet", SCHEMA).chunks())
    assert start == 0 and data["f"].dtype == np.float32 and data["i"].dtype == np.int32
    with pytest.raises(PayloadError, match="not valid Parquet"):
        list(Source(io.BytesIO(b"nope"), "parquet", SCHEMA).chunks())
