"""Enforcement of nested column types (Array, Map, Object, SparkML vectors), item by item.

Follows MLflow's ``_enforce_array`` / ``_enforce_map`` / ``_enforce_object``; every scalar item goes
through the one casting policy, and an error names the column, the row and the path inside the value.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from modelfmt.casting import as_text, cast_array
from modelfmt.errors import SchemaError
from modelfmt.types import AnyType, Array, DataType, Map, Object, SparkMLVector, type_name

# Column types whose values are one numpy scalar each.
PLAIN_DTYPES = (DataType.boolean, DataType.integer, DataType.long, DataType.float, DataType.double)


def incompatible(name: str, expected: str, found: Any, why: str = "") -> SchemaError:
    """The SchemaError for column ``name`` holding ``found`` where ``expected`` was declared."""
    tail = f" ({why})" if why else ""
    return SchemaError(f"column {name!r}: expected {expected}, got {found}{tail}")


def check_nested(col: Any, t: Any, name: str) -> Any:
    """``col`` of an Array, Map, Object or SparkML vector column, every item checked against ``t``."""
    """An Array, Map, Object or vector column with every item checked against its declared type,
    recursively, by the one casting policy; the error names the column, the row and the path inside."""
    import pandas as pd

    if isinstance(t, SparkMLVector):
        _check_vectors(col, name)
        return col
    if isinstance(t, Array) and isinstance(t.dtype, DataType):
        fast = _numeric_block(col, t.dtype, name)
        if fast is not None:
            return fast
    out = [None if _is_missing(v) else _nested(v, t, f"column {name!r}: row {i}", True)
           for i, v in enumerate(col.tolist())]
    series = pd.Series(index=col.index, name=col.name, dtype=object)
    series[:] = out  # assigned, not passed: pandas would read a column of equal lists as 2-d
    return series


def _check_vectors(col: Any, name: str) -> None:
    import numpy as np

    for v in col:
        if v is None or isinstance(v, (list, tuple, np.ndarray)) or hasattr(v, "toArray"):  # pyspark vectors
            continue
        raise incompatible(name, "sparkml_vector", f"a value of type {type(v).__name__}")


def _is_missing(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def _numeric_block(col: Any, t: DataType, name: str) -> Any:
    """A column of equal-length numeric rows for ``Array(<number>)`` converted as one 2-d array (no
    per-item Python work on big columns), or None when it is not one (then items are checked one by one)."""
    import numpy as np
    import pandas as pd

    if t not in PLAIN_DTYPES or not len(col):
        return None
    values = col.tolist()
    if all(isinstance(v, np.ndarray) and v.dtype == t.to_numpy() and v.ndim == 1 for v in values):
        return col  # already right (e.g. from Arrow or Spark)
    try:
        block = np.asarray(values)
    except ValueError:  # ragged rows
        return None
    if block.ndim != 2 or block.dtype.kind not in "biuf":
        return None
    try:
        out = cast_array(block, t, f"column {name!r}")
    except SchemaError:
        return None  # refused: the item-by-item path names the row and item
    rows = list(out) if isinstance(values[0], np.ndarray) else out.tolist()
    series = pd.Series(index=col.index, name=col.name, dtype=object)
    series[:] = rows
    return series


def _nested(value: Any, t: Any, where: str, required: bool) -> Any:
    """``value`` checked against the column type ``t`` (as MLflow's ``_enforce_type``); ``where`` is its path."""
    if isinstance(t, AnyType):
        return value
    if not required and (value is None or (isinstance(value, dict) and not value and not isinstance(t, Array))):
        return value  # an optional property may be absent, null or (for Object and Map) empty
    if isinstance(t, DataType):
        return _item(value, t, where)
    if isinstance(t, Array):
        return _nested_array(value, t, where, required)
    if isinstance(t, Map):
        return _nested_map(value, t, where, required)
    if isinstance(t, Object):
        return _nested_object(value, t, where)
    raise SchemaError(f"{where}: cannot check values of type {type_name(t)}")


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r:.40}"


def _nested_array(value: Any, t: Array, where: str, required: bool) -> Any:
    import numpy as np

    if (not required or isinstance(t.dtype, AnyType)) and (value is None or (hasattr(value, "__len__")
                                                                             and not len(value))):
        return value
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise SchemaError(f"{where}: expected {type_name(t)}, got {_got(value)}")
    if isinstance(t.dtype, DataType) and t.dtype in PLAIN_DTYPES and value is not None:
        arr = value if isinstance(value, np.ndarray) else _object_array(value)
        try:
            out = cast_array(arr, t.dtype, where)
        except SchemaError:
            out = None  # found again item by item below, with the item named
        if out is not None and out.ndim == 1:
            return out if isinstance(value, np.ndarray) else out.tolist()
    items = [_nested(v, t.dtype, f"{where}: item {i}", required) for i, v in enumerate(value)]
    return np.asarray(items) if isinstance(value, np.ndarray) else items


def _object_array(values: Any) -> Any:
    import numpy as np

    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


def _nested_map(value: Any, t: Map, where: str, required: bool) -> Any:
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected {type_name(t)}, got {_got(value)}")
    bad = next((k for k in value if not isinstance(k, str)), None)
    if bad is not None:
        raise SchemaError(f"{where}: map keys must be strings, got {_got(bad)}")
    return {k: _nested(v, t.value_type, f"{where}: key {k!r}", required) for k, v in value.items()}


def _nested_object(value: Any, t: Object, where: str) -> Any:
    if hasattr(value, "asDict"):  # a pyspark Row, as MLflow reads it
        value = value.asDict(True)
    if not isinstance(value, dict):
        raise SchemaError(f"{where}: expected {type_name(t)}, got {_got(value)}")
    props = {p.name: p for p in t.properties}
    missing = sorted(n for n, p in props.items() if p.required and n not in value)
    if missing:
        raise SchemaError(f"{where}: missing required propert{'y' if len(missing) == 1 else 'ies'} "
                          f"{', '.join(map(repr, missing))}")
    unknown = sorted(str(k) for k in value if k not in props)
    if unknown:
        raise SchemaError(f"{where}: propert{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))} not in the schema, which has {sorted(props)}")
    return {k: _nested(v, props[k].dtype, f"{where}: property {k!r}", props[k].required) for k, v in value.items()}


def _item(value: Any, t: DataType, where: str) -> Any:
    """One scalar item in the type ``t``: numbers and strings by the casting policy, the rest by type."""
    import numpy as np
    import pandas as pd

    if isinstance(value, (list, tuple, dict, np.ndarray)):
        raise SchemaError(f"{where}: expected {t.value}, got {type(value).__name__} {value!r:.40}")
    if t in PLAIN_DTYPES and t != DataType.boolean:
        return cast_array(_object_array([value]), t, where).tolist()[0]
    if t == DataType.string:
        return as_text(_object_array([value]), where)[0]
    want: Any = {DataType.boolean: (bool, np.bool_), DataType.binary: (bytes, bytearray),
                 DataType.datetime: (_dt.date, np.datetime64)}[t]
    if isinstance(value, want):
        return value
    if t == DataType.datetime and isinstance(value, str):
        try:
            return pd.Timestamp(value)
        except ValueError:
            pass
    if t == DataType.boolean and _is_missing(value):
        return value
    raise SchemaError(f"{where}: expected {t.value}, got {_got(value)}")
