"""The CSV codec: a header row, then rows; no server."""

from __future__ import annotations

import numpy as np
import pytest

from modelfmt.enforce import enforce_schema
from modelfmt.errors import PayloadError, SchemaError
from modelfmt.signature import ColSpec, Schema
from modelfmt.serving.codecs import decode_request

SCHEMA = Schema([ColSpec("double", "a"), ColSpec("float", "b"), ColSpec("string", "code")])


def decode(text: str | bytes, schema=SCHEMA):
    raw = text.encode() if isinstance(text, str) else text
    data, params = decode_request(raw, "text/csv", schema)
    assert params is None
    return data


def test_numbers_take_declared_types_and_strings_stay_strings():
    df = decode("a,b,code\n1,0.1,007\n2.5,3,x\n")
    assert df["a"].dtype == np.float64 and df["b"].dtype == np.float32
    assert df["code"].tolist() == ["007", "x"]
    enforce_schema(df, SCHEMA)


def test_doubles_narrowed_integers_kept_floats_never_made_integers():
    schema = Schema([ColSpec("float", "x"), ColSpec("long", "n")])
    df = enforce_schema(decode("x,n\n0.1,1\n0.7,2\n", schema), schema)
    assert df["x"].tolist() == [np.float32(0.1), np.float32(0.7)] and df["n"].tolist() == [1, 2]
    with pytest.raises(SchemaError, match="column 'n': expected long, got float64 .*never converted to an integer"):
        enforce_schema(decode("x,n\n0.1,1.0\n", schema), schema)
    with pytest.raises(SchemaError, match="column 'n': expected long, got float64 \\(missing values"):
        enforce_schema(decode("x,n\n0.1,1\n0.2,\n", schema), schema)


def test_csv_with_charset_and_crlf():
    data, _ = decode_request(b"a,b,code\r\n1,2,z\r\n", "text/csv; charset=utf-8", SCHEMA)
    assert data.shape == (1, 3)


def test_wrongly_typed_cell_is_named_by_enforcement():
    df = decode("a,b,code\n1,abc,x\n")
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, SCHEMA)


def test_missing_column_is_named_by_enforcement():
    df = decode("a,code\n1,x\n")
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(df, SCHEMA)


def test_without_schema():
    df = decode("x,y\n1,2\n", None)
    assert df.to_numpy().tolist() == [[1, 2]]


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\n\n", "no header"),
        (b'a,b,code\n1,2,"unterminated\n', "not valid CSV"),
        (b"a,b,code\n1,2,3,4,5\n", "not valid CSV"),
        (b"a,b\n\xff\xfe,1\n", "UTF-8"),
    ],
)
def test_unparseable_csv(raw, match):
    with pytest.raises(PayloadError, match=match) as e:
        decode(raw)
    assert e.value.http_status == 400


def test_empty_body():
    with pytest.raises(PayloadError, match="empty"):
        decode(b"")


def test_csv_gets_the_same_conversions_as_json():
    schema = Schema([ColSpec("double", "a"), ColSpec("long", "n"), ColSpec("string", "code"), ColSpec("datetime", "t")])
    text = "a,n,code,t\n1.5,2,7,2024-01-01T00:00:00\n,3,x,2024-01-01T00:00:00.123456\nNaN,4,,\n"
    out = enforce_schema(decode(text, schema), schema)
    assert out["a"].tolist()[0] == 1.5 and out["a"].isna().tolist() == [False, True, True]
    assert out["code"].tolist() == ["7", "x", None]
    assert out["t"].dtype == np.dtype("datetime64[ns]") and out["t"].dt.microsecond.tolist()[:2] == [0, 123456]
    with pytest.raises(SchemaError, match="column 'a': expected double, got the string 'abc', which is not a number"):
        enforce_schema(decode("a,n,code,t\nabc,1,x,2024-01-01\n", schema), schema)
    with pytest.raises(SchemaError, match="column 'n'.*missing values"):
        enforce_schema(decode("a,n,code,t\n1.0,,x,2024-01-01\n", schema), schema)
