"""Infer a :class:`ModelSignature` from example input, output and params, type by type as MLflow does.

The rules are MLflow 3's (``mlflow.types.utils._infer_schema``), checked side by side against MLflow in
tests/test_infer_mlflow.py, which also lists where modelfmt deliberately differs. In short:

- DataFrame columns and Series become column specs: numpy and pandas nullable dtypes map by kind and
  width (``int8``..``int32``/``uint8``..``uint16`` -> integer, ``int64``/``uint32`` -> long, ``float32``
  -> float, ``float64`` -> double, datetimes -> datetime); object, string and category columns are typed
  by their values (strings, bytes, dates, lists -> array, dicts -> object; missing values are skipped).
  A named column holding a missing value is optional.
- numpy arrays (and dicts of them) become tensor specs of their dtype, object arrays included
  (a classifier's string labels); numpy's sized ``<U5``/``|S3`` become ``str``/``bytes``.
- lists of values are one unnamed column of the items' type; lists of dicts are records; a dict of
  values is one column per key; a scalar is one column.

Where MLflow's inference fails (and MLflow falls back to an ``any`` column), modelfmt raises
:class:`SchemaError` naming the column and the fix, except that ``pandas.Timestamp`` values are datetimes.
"""

from __future__ import annotations

import datetime as _dt
import functools
from typing import Any

from modelfmt.errors import SchemaError
from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema, TensorSpec, clean_tensor_dtype
from modelfmt.types import AnyType, Array, ColType, DataType, Object, Property

_HINT = "; pass signature= to save_model (or cast the data) to say what the model takes"


def infer_signature(model_input: Any = None, model_output: Any = None, params: dict | None = None) -> ModelSignature:
    """Infer a signature from a model's example input, output and params.

    ``model_input``/``model_output`` may be a pandas DataFrame or Series, a numpy array, a dict of arrays,
    a scipy sparse matrix, a list of values or of dicts (records), a dict of values, or a scalar.
    Raises :class:`SchemaError` for data whose types cannot be told (e.g. a column mixing ints and
    strings, or ``uint64`` columns, which no signature type holds).
    """
    return ModelSignature(
        _schema_of(model_input, "input") if model_input is not None else None,
        _schema_of(model_output, "output") if model_output is not None else None,
        infer_param_schema(params) if params else None,
    )


def _schema_of(data: Any, what: str) -> Schema:
    try:
        return infer_schema(data)
    except SchemaError as e:
        raise SchemaError(f"cannot infer the {what} schema: {e}{_HINT}") from None


def infer_schema(data: Any) -> Schema:
    """The schema of one piece of data (see :func:`infer_signature`)."""
    import numpy as np
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return Schema([ColSpec(_column_type(data[c], c), str(c), _required(data[c])) for c in data.columns])
    if isinstance(data, pd.Series):
        name = None if data.name is None else str(data.name)
        return Schema([ColSpec(_column_type(data, data.name), name, _required(data) if name is not None else True)])
    if isinstance(data, np.ndarray):
        return Schema([_tensor_spec(data, None)])
    if _is_sparse(data):
        return Schema([TensorSpec(clean_tensor_dtype(data.data.dtype), (-1,) + tuple(data.shape[1:]))])
    if isinstance(data, dict):
        return _dict_schema(data)
    if isinstance(data, list):
        return _list_schema(data)
    return Schema([ColSpec(_value_type(data, "the value"))])


def _tensor_spec(arr: Any, name: str | None) -> TensorSpec:
    return TensorSpec(clean_tensor_dtype(arr.dtype), (-1,) + tuple(arr.shape[1:]), name)


def _is_sparse(data: Any) -> bool:
    return type(data).__module__.startswith("scipy.sparse") and getattr(data, "format", None) in ("csr", "csc")


def _dict_schema(data: dict) -> Schema:
    import numpy as np

    if all(isinstance(v, np.ndarray) for v in data.values()):
        return Schema([_tensor_spec(v, str(k)) for k, v in data.items()])
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise SchemaError(f"the keys of a dict of values must be strings, got {bad!r:.80}")
    return Schema([ColSpec(_value_type(v, f"key {k!r}"), k, _required_value(v)) for k, v in data.items()])


def _list_schema(data: list) -> Schema:
    if not data:
        return Schema([ColSpec(DataType.string)])  # what MLflow has inferred for [] since before 2.9
    if all(isinstance(r, dict) for r in data):
        columns: dict[Any, list] = {}
        for row in data:
            for k, v in row.items():
                columns.setdefault(k, []).append(v)
        # A key missing from a row or holding None makes the column optional (NaN does not, as in MLflow).
        return Schema(
            [
                ColSpec(_items_type(values, f"column {k!r}"), str(k), all(r.get(k) is not None for r in data))
                for k, values in columns.items()
            ]
        )
    return Schema([ColSpec(_items_type(data, "the list"))])


def _items_type(values: Any, where: str) -> ColType:
    """The type of the items of ``values`` (a list of one column's values)."""
    t = _array_type(values, where)
    if t is None:
        raise SchemaError(f"{where}: cannot infer a type from empty arrays alone")
    return t.dtype


# -- pandas columns ------------------------------------------------------------------------------
def _column_type(s: Any, name: Any) -> ColType:
    where = f"column {name!r}" if name is not None else "the series"
    if getattr(s.values, "ndim", 1) > 1:
        raise SchemaError(f"{where}: expected one value per row, got shape {s.shape}")
    if s.dtype.kind == "O":
        s = s.infer_objects()
    if s.dtype.kind != "O":
        return _dtype_type(s.dtype, where)
    import pandas as pd

    # object, string and category columns: typed by their values, missing ones skipped.
    try:
        return _items_type(s.tolist(), where)
    except SchemaError:
        if pd.api.types.is_string_dtype(s):  # judged by the values, as MLflow judges it
            return DataType.string
        raise


def _dtype_type(dtype: Any, where: str) -> DataType:
    """A numpy or pandas extension dtype's column type, by kind and width (as MLflow maps them)."""
    kind, size = dtype.kind, getattr(dtype, "itemsize", 8)
    if kind == "b":
        return DataType.boolean
    if kind in "iu":
        if size < 4 or (kind == "i" and size == 4):
            return DataType.integer
        if size < 8 or kind == "i":
            return DataType.long
        raise SchemaError(f"{where} has dtype {dtype}, whose values need not fit a long (int64); cast it")
    if kind == "f" and size <= 8:
        return DataType.float if size <= 4 else DataType.double
    if kind == "U":
        return DataType.string
    if kind == "S":
        return DataType.binary
    if kind == "M":
        return DataType.datetime
    raise SchemaError(f"{where} has dtype {dtype}, which no column type holds")


def _required(s: Any) -> bool:
    if s.dtype.kind != "O":
        return not bool(s.isna().any())
    return not any(_is_missing(v) for v in s)  # per value: a list cell is a value, not many


def _required_value(v: Any) -> bool:
    if isinstance(v, list):
        return not any(_is_missing(x) for x in v)
    return not _is_missing(v)


def _is_missing(v: Any) -> bool:
    import pandas as pd

    if isinstance(v, float):
        return v != v
    return v is None or v is pd.NA or v is pd.NaT


# -- values ----------------------------------------------------------------------------------------
def _value_type(value: Any, where: str) -> ColType:
    """The type of one value: scalars by type, lists and arrays by their items, dicts as objects;
    ``None``, NaN and empty lists or dicts are ``any``."""
    import numpy as np

    if _is_missing(value) or (isinstance(value, (list, dict)) and not value):
        return AnyType()
    if isinstance(value, dict):
        props = []
        for k, v in value.items():
            t = _value_type(v, f"{where}, key {k!r}")
            props.append(Property(str(k), t, not isinstance(t, AnyType)))
        return Object(props)
    if isinstance(value, (list, np.ndarray)):
        arr = _array_type(value, where)
        if arr is None:
            raise SchemaError(f"{where}: cannot infer a type from an empty array")
        return arr
    return _scalar_type(value, where)


def _array_type(values: Any, where: str) -> Array | None:
    """``Array`` of the items' merged type; ``None`` when no item says (only empty numpy arrays)."""
    result: ColType | None = None
    for item in values:
        t = _value_type(item, where) if not _is_empty_ndarray(item) else None
        if t is None:
            continue
        result = t if result is None else _merge(result, t, where)
    return None if result is None else Array(result)


def _is_empty_ndarray(v: Any) -> bool:
    import numpy as np

    return isinstance(v, np.ndarray) and v.size == 0


def _merge(a: ColType, b: ColType, where: str) -> ColType:
    """One type for two values of a list: ``any`` gives way, objects merge keys (a key one lacks is
    optional), arrays merge items; anything else must be equal."""
    if isinstance(b, AnyType):
        return _optional(a)
    if isinstance(a, AnyType):
        return _optional(b)
    if isinstance(a, Array) and isinstance(b, Array):
        return Array(_merge(a.dtype, b.dtype, where))
    if isinstance(a, Object) and isinstance(b, Object):
        pa, pb = {p.name: p for p in a.properties}, {p.name: p for p in b.properties}
        props = [
            Property(n, _merge(pa[n].dtype, pb[n].dtype, where), pa[n].required and pb[n].required)
            if n in pa and n in pb
            else Property(n, (pa.get(n) or pb[n]).dtype, False)
            for n in {**pa, **pb}
        ]
        return Object(props)
    if a == b:
        return a
    raise SchemaError(f"{where} mixes values of types {_name(a)} and {_name(b)}")


def _optional(t: ColType) -> ColType:
    if isinstance(t, Object):  # an object merged with a missing one: every key becomes optional
        return Object([Property(p.name, p.dtype, False) for p in t.properties])
    return t


def _name(t: ColType) -> str:
    from modelfmt.types import type_name

    return type_name(t)


def _scalar_type(value: Any, where: str) -> DataType:
    import numpy as np

    t = _scalar_types().get(type(value))
    if t is not None:
        return t
    # datetime.date and datetime.datetime (and so pandas.Timestamp, which MLflow does not take), np.datetime64
    if isinstance(value, (_dt.date, np.datetime64)):
        return DataType.datetime
    if isinstance(value, np.generic):
        return _dtype_type(value.dtype, where)
    raise SchemaError(f"{where}: cannot infer a type for a value of type {type(value).__name__}")


@functools.lru_cache(maxsize=1)
def _scalar_types() -> dict:
    """Scalar types by exact type, as MLflow maps them (built on first use: numpy is imported lazily)."""
    import numpy as np

    return {
        bool: DataType.boolean, np.bool_: DataType.boolean,
        int: DataType.long, np.int64: DataType.long, np.int32: DataType.integer,
        float: DataType.double, np.float64: DataType.double, np.float32: DataType.float,
        str: DataType.string, np.str_: DataType.string,
        bytes: DataType.binary, np.bytes_: DataType.binary, bytearray: DataType.binary,
    }  # fmt: skip


def infer_type(value: Any) -> ColType:
    """The column type of one Python or numpy value (lists become arrays, dicts objects)."""
    return _value_type(value, "the value")


# -- params --------------------------------------------------------------------------------------
def infer_param_schema(params: dict) -> ParamSchema:
    """A params schema whose defaults are the given values: scalars and 1-d lists of scalars."""
    if not isinstance(params, dict):
        raise SchemaError(f"params are a dict, got {type(params).__name__}")
    specs = []
    for name, value in params.items():
        t, shape = _param_type(name, value)
        specs.append(ParamSpec(name, t, _param_default(value, t), shape))
    return ParamSchema(specs)


def _param_type(name: str, value: Any) -> tuple[DataType, tuple | None]:
    import numpy as np

    where = f"param {name!r}"
    if isinstance(value, (list, np.ndarray)):
        if any(isinstance(v, (list, np.ndarray)) for v in value) or np.ndim(value) != 1:
            raise SchemaError(f"{where}: expected a scalar or a 1-d list, got a nested list")
        if all(_is_datetime(v) for v in value):  # an empty list too, as in MLflow
            return DataType.datetime, (-1,)
        return _dtype_type(np.array(value).dtype, where), (-1,)
    if _is_datetime(value):
        return DataType.datetime, None
    if isinstance(value, dict) or not np.isscalar(value):
        raise SchemaError(f"{where}: expected a scalar or a 1-d list, got {type(value).__name__}")
    t = _dtype_type(np.array(value).dtype, where)
    if t == DataType.binary:
        raise SchemaError(f"{where}: binary params are not supported (as in MLflow); pass a string")
    return t, None


def _param_default(value: Any, t: DataType) -> Any:
    """The default as plain Python values of the inferred type ([1, 2.5] -> [1.0, 2.5], as MLflow)."""
    import copy

    import numpy as np

    if t == DataType.datetime:
        return list(value) if isinstance(value, (list, np.ndarray)) else copy.deepcopy(value)
    if isinstance(value, (list, np.ndarray)):
        return np.asarray(value).tolist()
    return value.item() if isinstance(value, np.generic) else copy.deepcopy(value)


def _is_datetime(value: Any) -> bool:
    import numpy as np

    return type(value) in (_dt.date, _dt.datetime, np.datetime64)


__all__ = ["infer_signature", "infer_schema", "infer_type", "infer_param_schema"]
