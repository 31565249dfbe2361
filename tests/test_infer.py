import json

import numpy as np
import pandas as pd
import pytest

from modelfmt import infer_signature
from modelfmt.errors import SchemaError
from modelfmt.signature import ColSpec, Schema, TensorSpec
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
    # A list of lists is one column of arrays (as in MLflow), not a tensor: a tensor comes from an ndarray.
    assert infer_signature([[1.0, 2.0]]).inputs.inputs == [ColSpec(Array(DataType.double))]


def test_string_arrays_are_tensors_with_mlflow_dtype_names():
    """A classifier's labels: numpy's sized <U5 is written as MLflow's 'str'; object arrays stay object."""
    sig = infer_signature(pd.DataFrame({"a": [1.0]}), np.array(["setosa", "virginica"]))
    assert json.loads(sig.to_dict()["outputs"]) == [{"type": "tensor", "tensor-spec": {"dtype": "str", "shape": [-1]}}]
    sig = infer_signature(np.array([b"ab"]), np.array(["spam", None], dtype=object))
    assert json.loads(sig.to_dict()["inputs"])[0]["tensor-spec"]["dtype"] == "bytes"
    assert json.loads(sig.to_dict()["outputs"])[0]["tensor-spec"]["dtype"] == "object"
    # A spec read from an MLmodel that an older modelfmt wrote with "<U5" is written back as "str".
    old = Schema.from_json('[{"type": "tensor", "tensor-spec": {"dtype": "<U5", "shape": [-1]}}]')
    assert old.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "str", "shape": [-1]}}]


def test_object_columns_typed_by_values_and_records_merge():
    df = pd.DataFrame({"c": pd.Series(["a", "b"], dtype="category"), "o": pd.Series([{"k": 1}, {"k": 2, "j": "x"}])})
    cols = json.loads(infer_signature(df).to_dict()["inputs"])
    assert cols[0] == {"type": "string", "name": "c", "required": True}
    assert cols[1]["properties"] == {"j": {"type": "string", "required": False},
                                     "k": {"type": "long", "required": True}}
    records = infer_signature([{"a": 1, "b": None}, {"a": 2, "b": "x"}, {"a": 3}]).inputs.inputs
    assert records == [ColSpec("long", "a"), ColSpec("string", "b", required=False)]


def test_params():
    sig = infer_signature(pd.DataFrame({"a": [1]}), params={"k": 3, "t": 0.5, "names": ["a", "b"], "on": True})
    params = {p.name: p for p in sig.params.params}
    assert params["k"].dtype == DataType.long and params["k"].default == 3
    assert params["names"].shape == (-1,) and params["names"].dtype == DataType.string
    assert params["on"].dtype == DataType.boolean


def test_param_defaults_are_plain_values_of_the_inferred_type():
    sig = infer_signature(pd.DataFrame({"a": [1]}), params={"mixed": [1, 2.5], "n": np.int64(3), "e": []})
    assert json.loads(sig.to_dict()["params"]) == [
        {"name": "mixed", "default": [1.0, 2.5], "shape": [-1], "type": "double"},
        {"name": "n", "default": 3, "shape": None, "type": "long"},
        {"name": "e", "default": [], "shape": [-1], "type": "datetime"},  # MLflow's answer for []
    ]
    with pytest.raises(SchemaError, match="binary params are not supported"):
        infer_signature(pd.DataFrame({"a": [1]}), params={"raw": b"x"})


def test_uninferable_values_raise_schema_error():
    with pytest.raises(SchemaError, match=r"input schema: column 'a' mixes values of types long and string"):
        infer_signature(pd.DataFrame({"a": [1, "x"]}))
    with pytest.raises(SchemaError, match=r"output schema: column 'u' has dtype uint64.*pass signature="):
        infer_signature(None, pd.DataFrame({"u": np.array([1], dtype=np.uint64)}))
    with pytest.raises(SchemaError, match="cannot infer a type for a value of type object"):
        infer_signature(object())
