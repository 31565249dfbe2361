import datetime

import numpy as np
import pandas as pd
import pytest

from modelfmt.enforce import enforce_params, enforce_schema
from modelfmt.errors import ParamsError, SchemaError
from modelfmt.signature import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

SCHEMA = Schema([ColSpec("double", "a"), ColSpec("long", "b"), ColSpec("string", "c", required=False)])


def test_missing_required_column_names_it():
    with pytest.raises(SchemaError, match="'b'"):
        enforce_schema(pd.DataFrame({"a": [1.0]}), SCHEMA)


def test_extra_columns_dropped_and_reordered():
    df = pd.DataFrame({"zzz": [1], "b": [2], "a": [1.5], "c": ["x"]})
    out = enforce_schema(df, SCHEMA)
    assert list(out.columns) == ["a", "b", "c"]


def test_optional_column_may_be_missing():
    out = enforce_schema(pd.DataFrame({"a": [1.0], "b": [1]}), SCHEMA)
    assert list(out.columns) == ["a", "b"]


def test_safe_widening():
    df = pd.DataFrame({"a": np.array([1.5], np.float32), "b": np.array([3], np.int32)})
    out = enforce_schema(df, SCHEMA)
    assert out["a"].dtype == np.float64 and out["b"].dtype == np.int64
    out = enforce_schema(pd.DataFrame({"a": np.array([1], np.int16), "b": [1]}), SCHEMA)
    assert out["a"].dtype == np.float64


def test_integers_to_double_when_exact():
    out = enforce_schema(pd.DataFrame({"a": [1, 2], "b": [1, 2]}), SCHEMA)
    assert out["a"].dtype == np.float64
    with pytest.raises(SchemaError, match="'a'.*lose precision"):
        enforce_schema(pd.DataFrame({"a": [2**60], "b": [1]}), SCHEMA)


def test_double_column_narrowed_to_float_whatever_the_values():
    schema = Schema([ColSpec("float", "x")])
    out = enforce_schema(pd.DataFrame({"x": [0.1, 1e-50, np.nan]}), schema)
    assert out["x"].dtype == np.float32
    assert out["x"].tolist()[:2] == [np.float32(0.1), 0.0] and np.isnan(out["x"][2])
    beyond = "column 'x': expected float, got float64 .*1e\\+300 is beyond the float range"
    with pytest.raises(SchemaError, match=beyond):
        enforce_schema(pd.DataFrame({"x": [1e300]}), schema)


def test_wider_integers_fit_or_are_refused_naming_a_value():
    schema = Schema([ColSpec("integer", "n")])
    assert enforce_schema(pd.DataFrame({"n": [1, -5]}), schema)["n"].dtype == np.int32
    outside = r"column 'n': expected integer, got int64 \(values outside .* such as 4294967296"
    with pytest.raises(SchemaError, match=outside):
        enforce_schema(pd.DataFrame({"n": [1, 2**32]}), schema)


def test_nulls_in_integer_columns_are_named_as_missing_values():
    with pytest.raises(SchemaError, match="column 'b': expected long, got float64 .*missing values"):
        enforce_schema(pd.DataFrame({"a": [1.0, 2.0], "b": [1, None]}), SCHEMA)
    with pytest.raises(SchemaError, match="column 'b'.*missing values"):
        enforce_schema(pd.DataFrame({"a": [1.0, 2.0], "b": pd.array([1, None], dtype="Int64")}), SCHEMA)
    out = enforce_schema([{"a": 1.0, "b": 1}, {"a": None, "b": 2}], SCHEMA)
    assert out["a"].dtype == np.float64 and np.isnan(out["a"][1])


def test_booleans_are_not_numbers():
    with pytest.raises(SchemaError, match="column 'a': expected double, got bool"):
        enforce_schema(pd.DataFrame({"a": [True], "b": [1]}), SCHEMA)
    with pytest.raises(SchemaError, match="column 'a'.*bool"):
        enforce_schema(pd.DataFrame({"a": pd.array([True, None], dtype="boolean"), "b": [1, 2]}), SCHEMA)
    with pytest.raises(SchemaError, match="column 'a'.*type bool"):
        enforce_schema([{"a": 1.5, "b": 1}, {"a": True, "b": 2}], SCHEMA)


def test_lossy_conversion_refused_with_column_and_types():
    with pytest.raises(SchemaError) as e:
        enforce_schema(pd.DataFrame({"a": [1.0], "b": [1.5]}), SCHEMA)
    msg = str(e.value)
    assert "'b'" in msg and "long" in msg and "float64" in msg
    with pytest.raises(SchemaError, match="'a'.*double"):
        enforce_schema(pd.DataFrame({"a": ["x"], "b": [1]}), SCHEMA)
    with pytest.raises(SchemaError, match="'c'.*string"):
        enforce_schema(pd.DataFrame({"a": [1.0], "b": [1], "c": [3.5]}), SCHEMA)


def test_records_and_dicts_become_frames():
    out = enforce_schema([{"a": 1.0, "b": 2}], SCHEMA)
    assert out.shape == (1, 2)
    out = enforce_schema({"a": [1.0, 2.0], "b": [1, 2]}, SCHEMA)
    assert out.shape == (2, 2)


def test_datetime_and_boolean():
    schema = Schema([ColSpec("datetime", "t"), ColSpec("boolean", "f")])
    out = enforce_schema(pd.DataFrame({"t": ["2024-01-01"], "f": [True]}), schema)
    assert pd.api.types.is_datetime64_any_dtype(out["t"])
    with pytest.raises(SchemaError, match="'f'"):
        enforce_schema(pd.DataFrame({"t": ["2024-01-01"], "f": [1]}), schema)


def test_tensor_rank_dims_and_dtype():
    schema = Schema([TensorSpec("float32", (-1, 3))])
    assert enforce_schema(np.zeros((2, 3), np.float32), schema).dtype == np.float32
    assert enforce_schema(np.zeros((2, 3), np.int8), schema).dtype == np.float32
    assert enforce_schema([[1.0, 2.0, 3.0]], schema).shape == (1, 3)
    with pytest.raises(SchemaError, match="shape"):
        enforce_schema(np.zeros((2, 4), np.float32), schema)
    with pytest.raises(SchemaError, match="rank"):
        enforce_schema(np.zeros(3, np.float32), schema)
    # float64 is narrowed to float32 by type, whatever the values (0.1 has no exact float32).
    narrowed = enforce_schema(np.array([[0.1, 0.2, 0.3]]), schema)
    assert narrowed.dtype == np.float32 and narrowed.tolist() == np.array([[0.1, 0.2, 0.3]], np.float32).tolist()
    with pytest.raises(SchemaError, match="input tensor: expected float32, got bool"):
        enforce_schema(np.ones((1, 3), bool), schema)
    with pytest.raises(SchemaError, match="input tensor: expected float32, got int64 .*beyond 2\\*\\*24"):
        enforce_schema(np.array([[2**24 + 1, 0, 0]]), schema)


def test_named_tensors():
    schema = Schema([TensorSpec("float64", (-1,), "x"), TensorSpec("int64", (-1, 2), "y")])
    out = enforce_schema({"x": [1.0], "y": [[1, 2]]}, schema)
    assert out["y"].dtype == np.int64
    with pytest.raises(SchemaError, match="'y'"):
        enforce_schema({"x": [1.0]}, schema)


def test_params_checked_and_defaults_filled():
    ps = ParamSchema(
        [
            ParamSpec("k", "long", 1),
            ParamSpec("t", "double", 0.5),
            ParamSpec("names", "string", ["a"], (-1,)),
            ParamSpec("when", "datetime", None),
        ]
    )
    assert enforce_params(None, ps) == {"k": 1, "t": 0.5, "names": ["a"], "when": None}
    out = enforce_params({"k": 3, "t": 2, "when": "2024-01-01T00:00:00", "other": 1}, ps)
    assert out["t"] == 2.0 and isinstance(out["t"], float)
    assert out["when"] == datetime.datetime(2024, 1, 1)
    assert "other" not in out
    with pytest.raises(ParamsError, match="'k'"):
        enforce_params({"k": "three"}, ps)
    with pytest.raises(ParamsError, match="'names'"):
        enforce_params({"names": "a"}, ps)
    with pytest.raises(ParamsError, match="'t'"):
        enforce_params({"t": True}, ps)


def test_params_ignored_without_schema():
    assert enforce_params({"k": 1}, None) is None


@pytest.mark.parametrize("params", ["abc", [1, 2], 5])
def test_params_not_a_mapping_is_a_params_error(params):
    with pytest.raises(ParamsError, match="mapping"):
        enforce_params(params, ParamSchema([ParamSpec("k", "long", 1)]))
    with pytest.raises(ParamsError, match="mapping"):
        enforce_params(params, None)


def test_optional_nullable_boolean_keeps_missing_values():
    schema = Schema([ColSpec("boolean", "f", required=False)])
    out = enforce_schema(pd.DataFrame({"f": pd.array([True, None], dtype="boolean")}), schema)
    assert out["f"].isna().tolist() == [False, True] and bool(out["f"][0]) is True
    full = enforce_schema(pd.DataFrame({"f": pd.array([True, False], dtype="boolean")}), schema)
    assert full["f"].dtype == bool


def test_callers_frame_is_not_changed():
    schema = Schema([ColSpec("double", "0"), ColSpec("double", "1")])
    df = pd.DataFrame(np.ones((2, 2)))
    enforce_schema(df, schema)
    assert list(df.columns) == [0, 1]


def test_object_boolean_column_with_nulls_is_accepted_and_other_values_refused():
    schema = Schema([ColSpec("boolean", "f", required=False)])
    out = enforce_schema([{"f": True}, {"f": None}], schema)
    assert out["f"].tolist() == [True, None]
    with pytest.raises(SchemaError, match="'f'.*str"):
        enforce_schema([{"f": True}, {"f": "yes"}], schema)


def test_duplicate_input_columns_are_a_schema_error():
    df = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["a", "a", "b"])
    with pytest.raises(SchemaError, match="'a' appear more than once"):
        enforce_schema(df, Schema([ColSpec("double", "a"), ColSpec("double", "b")]))
    with pytest.raises(SchemaError, match="'0' appear more than once"):
        enforce_schema(pd.DataFrame([[1.0, 2.0]], columns=[0, "0"]), Schema([ColSpec("double", "0")]))


def test_ragged_lists_are_schema_errors_or_list_columns():
    with pytest.raises(SchemaError, match="different lengths"):
        enforce_schema([[1.0, 2.0, 3.0], [3.0]], Schema([TensorSpec("float32", (-1, 3))]))
    with pytest.raises(SchemaError, match="'y'.*different lengths"):
        two = Schema([TensorSpec("float64", (-1,), "x"), TensorSpec("int64", (-1, 2), "y")])
        enforce_schema({"x": [1.0], "y": [[1, 2], [3]]}, two)
    with pytest.raises(SchemaError, match="'a'"):
        enforce_schema({"a": [[1, 2], [3]]}, Schema([ColSpec("double", "a")]))


# -- strings and numbers (casting's parse and format rules) ------------------------------------------
def test_numeric_strings_are_parsed_in_line_too():
    df = pd.DataFrame({"a": ["0.05", " 1e3", "nan"], "b": ["2", "-3", "+9007199254740993"]})
    out = enforce_schema(df, SCHEMA)
    assert out["a"].dtype == np.float64 and out["a"].tolist()[:2] == [0.05, 1000.0] and np.isnan(out["a"][2])
    assert out["b"].dtype == np.int64 and out["b"].tolist() == [2, -3, 9007199254740993]
    for a, b, column, text in (("abc", "1", "a", "'abc'"), ("1", "2.0", "b", "'2.0'"), ("1_000", "1", "a", "'1_000'")):
        with pytest.raises(SchemaError, match=f"column '{column}': expected \\w+, got the string {text}"):
            enforce_schema(pd.DataFrame({"a": [a], "b": [b]}), SCHEMA)


def test_integers_for_a_string_column_become_their_text_floats_and_booleans_do_not():
    out = enforce_schema(pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": [7, 12]}), SCHEMA)
    assert out["c"].dtype == object and out["c"].tolist() == ["7", "12"]
    mixed = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1, 2, 3], "c": pd.Series(["x", 7, None], dtype=object)})
    assert enforce_schema(mixed, SCHEMA)["c"].tolist() == ["x", "7", None]
    nullable = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": pd.array([7, None], dtype="Int64")})
    assert enforce_schema(nullable, SCHEMA)["c"].tolist() == ["7", None]
    for value, why in ((7.5, "a float is never converted to a string"), (True, "a boolean is never converted")):
        for c in ([value], pd.Series(["x", value], dtype=object)):
            with pytest.raises(SchemaError, match=f"column 'c': expected string, got .*{why}"):
                enforce_schema(pd.DataFrame({"a": [1.0] * len(c), "b": [1] * len(c), "c": c}), SCHEMA)


def test_missing_strings_are_none_whatever_the_string_dtype():
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2], "c": pd.Series(["x", None], dtype="str")})
    assert enforce_schema(df, SCHEMA)["c"].tolist() == ["x", None]


# -- datetimes ---------------------------------------------------------------------------------------
DATES = Schema([ColSpec("datetime", "t")])


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_datetime_columns_reach_the_model_in_nanoseconds(unit):
    col = pd.Series(pd.to_datetime(["2024-01-01 00:00:00", "2024-06-30 12:00:00"]).astype(f"datetime64[{unit}]"))
    out = enforce_schema(pd.DataFrame({"t": col}), DATES)
    assert out["t"].dtype == np.dtype("datetime64[ns]")
    assert out["t"].tolist() == col.tolist()


def test_iso_strings_of_mixed_precision_in_one_column():
    stamps = [datetime.datetime(2024, 1, 1), datetime.datetime(2024, 1, 1, 0, 0, 0, 123456),
              datetime.datetime(2024, 1, 2, 3, 4, 5, 500000)]
    values = [s.isoformat() for s in stamps]  # "2024-01-01T00:00:00", "...00.123456", "...05.500000"
    for col in (values, values[::-1], values + [None]):
        out = enforce_schema(pd.DataFrame({"t": col}), DATES)
        assert out["t"].dtype == np.dtype("datetime64[ns]")
        assert [t for t in out["t"] if not pd.isna(t)] == sorted(stamps, reverse=col == values[::-1])
    # Not ISO 8601, but one format pandas infers for the whole column: still read.
    assert enforce_schema(pd.DataFrame({"t": ["01/02/2024", "03/04/2024"]}), DATES)["t"].dt.month.tolist() == [1, 3]
    with pytest.raises(SchemaError, match="column 't': expected datetime, got values that are not dates"):
        enforce_schema(pd.DataFrame({"t": ["2024-01-01", "soon"]}), DATES)


def test_a_long_param_never_takes_a_float():
    ps = ParamSchema([ParamSpec("k", "long", 1), ParamSpec("t", "double", 0.5)])
    for value in (2.0, np.float64(2.0), 2.5):
        with pytest.raises(ParamsError, match=r"^param 'k': expected long, got float"):
            enforce_params({"k": value}, ps)
    assert enforce_params({"k": np.int32(2), "t": 2}, ps) == {"k": 2, "t": 2.0}


# -- nested item types (Array, Map, Object) -------------------------------------------------------
from modelfmt.types import Array, Map, Object, Property  # noqa: E402
from modelfmt.types import DataType as _D  # noqa: E402


def _nested_col(t, values):
    return enforce_schema(pd.DataFrame({"tags": values}), Schema([ColSpec(t, "tags")]))["tags"].tolist()


def test_array_items_are_checked_and_named_by_path():
    with pytest.raises(SchemaError, match=r"column 'tags': row 0: item 2: expected long, got the string 'a'"):
        _nested_col(Array(_D.long), [[1, 2, "a"]])
    assert _nested_col(Array(_D.long), [[1, 2, "3"]]) == [[1, 2, 3]]
    assert _nested_col(Array(_D.double), [[1, 2], [3, 4]]) == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(SchemaError, match=r"row 0: item 1: item 1: expected long"):
        _nested_col(Array(Array(_D.long)), [[[1], [2, "x"]]])


def test_map_and_object_items_follow_mlflow():
    with pytest.raises(SchemaError, match=r"row 0: key 'b': expected double"):
        _nested_col(Map(_D.double), [{"a": 1, "b": "z"}])
    obj = Object([Property("a", _D.long), Property("b", _D.string, required=False)])
    assert _nested_col(obj, [{"a": 1}, {"a": 2, "b": None}]) == [{"a": 1}, {"a": 2, "b": None}]
    with pytest.raises(SchemaError, match=r"row 0: missing required property 'a'"):
        _nested_col(obj, [{"b": "x"}])
    with pytest.raises(SchemaError, match=r"property 'c' not in the schema"):
        _nested_col(obj, [{"a": 1, "c": 3}])
    with pytest.raises(SchemaError, match=r"item 1: property 'a': expected long, got a value of type bool"):
        _nested_col(Array(obj), [[{"a": "1"}, {"a": True}]])


def test_numeric_array_column_converted_as_one_block():
    out = _nested_col(Array(_D.double), np.arange(30000).reshape(10000, 3).tolist())
    assert out[5] == [15.0, 16.0, 17.0]
