"""Infer a :class:`ModelSignature` from example input, output and params."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from modelfmt.errors import SchemaError
from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec
from modelfmt.types import Array, ColType, DataType, Object, Property


def infer_signature(model_input: Any = None, model_output: Any = None, params: dict | None = None) -> ModelSignature:
    """Infer a signature from a model's example input, output and params.

    ``model_input``/``model_output`` may be a pandas DataFrame or Series, a numpy array, a dict of arrays,
    or a plain list/dict/scalar; nullable DataFrame columns become optional.
    """
    return ModelSignature(
        infer_schema(model_input) if model_input is not None else None,
        infer_schema(model_output) if model_output is not None else None,
        infer_param_schema(params) if params else None,
    )


def infer_schema(data: Any) -> Schema:
    """The schema of one piece of data (see :func:`infer_signature`)."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return Schema([_colspec_from_series(data[c], str(c)) for c in data.columns])
    if isinstance(data, pd.Series):
        name = str(data.name) if data.name is not None else None
        return Schema([_colspec_from_series(data, name)])
    if isinstance(data, np.ndarray):
        return Schema([_tensor_spec(data, None)])
    if isinstance(data, dict):
        if data and all(isinstance(v, np.ndarray) for v in data.values()):
            return Schema([_tensor_spec(v, str(k)) for k, v in data.items()])
        return Schema([ColSpec(infer_type(v), str(k), v is not None) for k, v in data.items()])
    if isinstance(data, (list, tuple)):
        if data and all(isinstance(r, dict) for r in data):
            return infer_schema(pd.DataFrame(list(data)))
        if data and all(isinstance(v, str) for v in data):
            return Schema([ColSpec(DataType.string)])
        return Schema([_tensor_spec(np.asarray(data), None)])
    if isinstance(data, (str, bytes, bool, int, float)):
        return Schema([ColSpec(infer_type(data))])
    raise SchemaError(f"cannot infer a schema from {type(data).__name__}")


def _tensor_spec(arr: Any, name: str | None) -> TensorSpec:
    if arr.dtype == object:
        raise SchemaError("cannot infer a tensor spec from an object array; pass a DataFrame instead")
    return TensorSpec(arr.dtype, (-1,) + tuple(arr.shape[1:]), name)


def _colspec_from_series(s: Any, name: str | None) -> ColSpec:
    required = not bool(s.isna().any())
    return ColSpec(_series_type(s), name, required)


def _series_type(s: Any) -> ColType:
    import numpy as np
    import pandas as pd

    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        return _series_type(s.astype(dt.categories.dtype))
    if pd.api.types.is_bool_dtype(dt):
        return DataType.boolean
    if pd.api.types.is_datetime64_any_dtype(dt):
        return DataType.datetime
    if pd.api.types.is_integer_dtype(dt):
        return DataType.long if np.dtype(getattr(dt, "numpy_dtype", dt)).itemsize > 4 else DataType.integer
    if pd.api.types.is_float_dtype(dt):
        return DataType.double if np.dtype(getattr(dt, "numpy_dtype", dt)).itemsize > 4 else DataType.float
    if pd.api.types.is_string_dtype(dt) or dt == object:
        values = [v for v in s if v is not None and not (isinstance(v, float) and np.isnan(v))]
        if not values:
            return DataType.string
        types = {_type_key(infer_type(v)) for v in values}
        if len(types) == 1:
            return infer_type(values[0])
        raise SchemaError(f"column {s.name!r} mixes value types {sorted(types)}")
    raise SchemaError(f"cannot infer a column type for {s.name!r} of dtype {dt}")


def _type_key(t: ColType) -> str:
    return repr(t)


def infer_type(value: Any) -> ColType:
    """The column type of one Python or numpy value (lists become arrays, dicts objects)."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):
        return DataType.boolean
    if isinstance(value, (int, np.integer)):
        return DataType.long
    if isinstance(value, np.floating) and value.dtype.itemsize <= 4:
        return DataType.float
    if isinstance(value, (float, np.floating)):
        return DataType.double
    if isinstance(value, str):
        return DataType.string
    if isinstance(value, (bytes, bytearray)):
        return DataType.binary
    if isinstance(value, (_dt.datetime, _dt.date, np.datetime64)):
        return DataType.datetime
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if not value:
            raise SchemaError("cannot infer the item type of an empty list")
        items = {_type_key(infer_type(v)) for v in value}
        if len(items) > 1:
            raise SchemaError(f"list mixes item types {sorted(items)}")
        return Array(infer_type(value[0]))
    if isinstance(value, dict):
        return Object([Property(str(k), infer_type(v)) for k, v in value.items()])
    raise SchemaError(f"cannot infer a type for a value of type {type(value).__name__}")


def infer_param_schema(params: dict) -> ParamSchema:
    """A params schema whose defaults are the given values."""
    specs = []
    for name, value in params.items():
        shape = None
        probe = value
        if isinstance(value, (list, tuple)):
            if not value:
                raise SchemaError(f"param {name!r}: cannot infer the type of an empty list")
            shape, probe = (-1,), value[0]
        t = infer_type(probe)
        if not isinstance(t, DataType):
            raise SchemaError(f"param {name!r}: only scalars and 1-d lists of scalars are supported")
        specs.append(ParamSpec(name, t, list(value) if shape else value, shape))
    return ParamSchema(specs)


__all__ = ["infer_signature", "infer_schema", "infer_type", "infer_param_schema"]
