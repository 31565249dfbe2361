import numpy as np
import pandas as pd
import pytest

from modelfmt import infer_signature
from modelfmt.errors import SchemaError
from modelfmt.signature import ColSpec, TensorSpec
from modelfmt.types import Array, DataType


def test_dataframe_types_and_optional_columns():
    df = pd.DataFrame(
        {
            "i32": np.array([1, 2], dtype=np.int32),
            "i64": [1, 2],
            "f32": np.array([1.0, 2.0], dtype=np.float32),
            "f64": [1.5, None],
            "s": ["a", None],
            "b": [True, False],
            "t": pd.to_datetime(["2024-01-01", "2024-01-02"]),
            "arr": [[1, 2], [3]],
        }
    )
    inputs = infer_signature(df).inputs.inputs
    assert inputs == [
        ColSpec("integer", "i32"),
        ColSpec("long", "i64"),
        ColSpec("float", "f32"),
        ColSpec("double", "f64", required=False),
        ColSpec("string", "s", required=False),
        ColSpec("boolean", "b"),
        ColSpec("datetime", "t"),
        ColSpec(Array(DataType.long), "arr"),
    ]


def test_arrays_dicts_lists_series():
    sig = infer_signature(np.zeros((3, 4), dtype=np.float32), np.zeros(3))
    assert sig.inputs.inputs == [TensorSpec("float32", (-1, 4))]
    assert sig.outputs.inputs == [TensorSpec("float64", (-1,))]
    sig = infer_signature({"a": np.zeros((2, 3)), "b": np.zeros(2, dtype=np.int64)})
    assert sig.inputs.inputs == [TensorSpec("float64", (-1, 3), "a"), TensorSpec("int64", (-1,), "b")]
    assert infer_signature(["x", "y"]).inputs.inputs == [ColSpec("string")]
    assert infer_signature(pd.Series([1.0, 2.0], name="y")).inputs.inputs == [ColSpec("double", "y")]
    assert infer_signature([[1.0, 2.0]]).inputs.inputs == [TensorSpec("float64", (-1, 2))]


def test_params():
    sig = infer_signature(pd.DataFrame({"a": [1]}), params={"k": 3, "t": 0.5, "names": ["a", "b"], "on": True})
    params = {p.name: p for p in sig.params.params}
    assert params["k"].dtype == DataType.long and params["k"].default == 3
    assert params["names"].shape == (-1,) and params["names"].dtype == DataType.string
    assert params["on"].dtype == DataType.boolean


def test_uninferable_values_raise_schema_error():
    with pytest.raises(SchemaError):
        infer_signature(pd.DataFrame({"a": [1, "x"]}))
    with pytest.raises(SchemaError):
        infer_signature(object())
