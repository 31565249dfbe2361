import json

import numpy as np
import pytest

from modelfmt.errors import ModelFormatError
from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec
from modelfmt.types import Array, DataType, Map, Object, Property


def test_colspec_json_matches_mlflow():
    specs = [
        ColSpec("double", "age"),
        ColSpec(DataType.string, "city", required=False),
        ColSpec(Array(DataType.long), "ids"),
        ColSpec(Object([Property("b", DataType.string), Property("a", DataType.double, False)]), "obj"),
        ColSpec(Map(DataType.double), "m"),
    ]
    assert Schema(specs).to_dict() == [
        {"type": "double", "name": "age", "required": True},
        {"type": "string", "name": "city", "required": False},
        {"type": "array", "items": {"type": "long"}, "name": "ids", "required": True},
        {
            "type": "object",
            "properties": {"a": {"type": "double", "required": False}, "b": {"type": "string", "required": True}},
            "name": "obj",
            "required": True,
        },
        {"type": "map", "values": {"type": "double"}, "name": "m", "required": True},
    ]


def test_schema_json_round_trip():
    schema = Schema([ColSpec(Array(Array(DataType.double)), "x"), ColSpec("datetime", "t", False)])
    assert Schema.from_json(schema.to_json()) == schema


def test_tensor_spec_json():
    spec = TensorSpec(np.float32, (-1, 4), "x")
    assert spec.to_dict() == {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}, "name": "x"}
    assert Schema.from_json(json.dumps([spec.to_dict()])).inputs[0] == spec


def test_param_schema_json_matches_mlflow_order():
    ps = ParamSchema([ParamSpec("alpha", "double", 0.5), ParamSpec("tags", "string", ["a"], (-1,))])
    assert ps.to_json() == (
        '[{"name": "alpha", "default": 0.5, "shape": null, "type": "double"}, '
        '{"name": "tags", "default": ["a"], "shape": [-1], "type": "string"}]'
    )
    assert ParamSchema.from_json(ps.to_json()) == ps


def test_signature_dict_round_trip():
    sig = ModelSignature(
        Schema([ColSpec("long", "a")]),
        Schema([TensorSpec("float64", (-1,))]),
        ParamSchema([ParamSpec("k", "long", 1)]),
    )
    d = sig.to_dict()
    assert all(isinstance(v, str) for v in d.values())
    assert ModelSignature.from_dict(d) == sig


def test_mixed_schema_refused():
    with pytest.raises(ModelFormatError):
        Schema([ColSpec("double", "a"), TensorSpec("float64", (-1,), "b")])


def test_malformed_signature_is_format_error():
    with pytest.raises(ModelFormatError):
        ModelSignature.from_dict({"inputs": "[{not json"})
    with pytest.raises(ModelFormatError):
        Schema.from_json('[{"type": "quaternion", "name": "q"}]')


def test_sparkml_vector_type_reads_and_writes():
    from modelfmt.enforce import enforce_schema
    from modelfmt.types import SparkMLVector

    schema = Schema.from_json('[{"type": "sparkml_vector", "name": "features", "required": true}]')
    assert schema.inputs[0].type == SparkMLVector()
    assert schema.to_dict() == [{"type": "sparkml_vector", "name": "features", "required": True}]
    import pandas as pd

    out = enforce_schema(pd.DataFrame({"features": [[1.0, 2.0], np.array([3.0, 4.0])]}), schema)
    assert len(out) == 2


def test_mlflow_any_type_reads_writes_and_passes_values_through():
    import pandas as pd

    from modelfmt.enforce import enforce_schema
    from modelfmt.types import AnyType

    text = (
        '[{"type": "any", "name": "x", "required": false}, '
        '{"type": "array", "items": {"type": "any"}, "name": "y", "required": true}]'
    )
    schema = Schema.from_json(text)
    assert schema.inputs[0].type == AnyType() and schema.inputs[1].type == Array(AnyType())
    assert schema.to_dict() == json.loads(text)
    df = pd.DataFrame({"x": [None, 1.5], "y": [[], [1, "b"]]}, dtype=object)
    out = enforce_schema(df, schema)
    assert out["x"].tolist() == [None, 1.5] and out["y"].tolist() == [[], [1, "b"]]
