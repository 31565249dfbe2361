"""Check model input and params against a signature, applying only safe conversions.

Called once at the edge of every ``predict``: missing required columns, lossy type changes and
wrong tensor shapes raise :class:`SchemaError` naming the problem, so the model can trust its input.
"""

from __future__ import annotations

import datetime as _dt
import functools
import logging
from typing import Any, cast

from modelfmt.casting import as_text, cast_array
from modelfmt.enforce_nested import PLAIN_DTYPES as _PLAIN_DTYPES
from modelfmt.enforce_nested import check_nested
from modelfmt.enforce_nested import incompatible as _incompatible
from modelfmt.errors import ParamsError, SchemaError
from modelfmt.signature import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
from modelfmt.types import AnyType, DataType

_log = logging.getLogger(__name__)

def enforce_schema(data: Any, schema: Schema | None) -> Any:
    """Return ``data`` checked against and conformed to ``schema`` (unchanged when there is none)."""
    if schema is None or not schema.inputs or schema.from_type_hint:
        return data  # a schema from type hints: the model's hint validates the input (as in MLflow)
    if schema.is_tensor_spec():
        return _enforce_tensors(data, schema)
    return _enforce_columns(data, schema)


# -- columns -----------------------------------------------------------------------------------
def _to_frame(data: Any, schema: Schema) -> Any:
    import numpy as np
    import pandas as pd

    names = schema.input_names()
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame() if data.name is not None or not names else pd.DataFrame({names[0]: data})
    if isinstance(data, dict):
        if all(isinstance(v, dict) or _is_scalar(v) for v in data.values()):
            return pd.DataFrame([data])
        try:
            return pd.DataFrame({k: list(v) if isinstance(v, np.ndarray) and v.ndim > 1 else v
                                 for k, v in data.items()})
        except ValueError as e:
            raise SchemaError(f"cannot build a table from the input dict: {e}") from None
    if isinstance(data, (str, bytes)) and len(schema.inputs) == 1:
        return pd.DataFrame({names[0] if names else 0: [data]})
    if isinstance(data, (list, tuple)) and data and all(isinstance(r, dict) for r in data):
        return pd.DataFrame(list(data))
    if isinstance(data, (list, tuple, np.ndarray)):
        arr = np.asarray(data, dtype=object if isinstance(data, (list, tuple)) else None)
        if arr.ndim == 1 and len(schema.inputs) == 1:
            return pd.DataFrame({names[0] if names else 0: list(data)})
        if arr.ndim == 2 and arr.shape[1] == len(schema.inputs):
            cols: list = names or list(range(arr.shape[1]))
            return pd.DataFrame(np.asarray(data) if isinstance(data, np.ndarray) else list(data), columns=cols)
        raise SchemaError(
            f"input of shape {arr.shape} does not fit a schema of {len(schema.inputs)} column(s) {names or ''}"
        )
    raise SchemaError(f"cannot read input of type {type(data).__name__} as a table")


def _is_scalar(value: Any) -> bool:
    import numpy as np

    try:
        return np.ndim(value) == 0
    except ValueError:  # a ragged nested list: a column of lists, not a scalar
        return False


def _enforce_columns(data: Any, schema: Schema) -> Any:
    import pandas as pd

    df = _to_frame(data, schema)
    _refuse_duplicates(df.columns)
    specs = cast("list[ColSpec]", schema.inputs)
    if not schema.has_input_names():
        if len(df.columns) < len(specs):
            raise SchemaError(f"model expects {len(specs)} column(s), input has {len(df.columns)}")
        out = pd.DataFrame({c: _convert_column(df[c], s, str(c)) for c, s in zip(df.columns, specs, strict=False)})
        return out
    if _conforms(df, schema):
        return df.copy(deep=False)  # already right (e.g. built by the server's codecs): skip the rebuild
    if not all(isinstance(c, str) for c in df.columns):
        df = df.rename(columns=str)  # a copy: the caller's frame keeps its labels
        _refuse_duplicates(df.columns)  # 0 and "0" are now the same column
    missing = [s.name for s in specs if s.required and s.name not in df.columns]
    if missing:
        raise SchemaError(
            f"missing required input column(s): {', '.join(map(repr, missing))}; "
            f"model expects {schema.input_names()}, input has {list(df.columns)}"
        )
    present = [s for s in specs if s.name in df.columns]
    return pd.DataFrame({s.name: _convert_column(df[s.name], s, str(s.name)) for s in present}, index=df.index)


def _refuse_duplicates(columns: Any) -> None:
    if columns.has_duplicates:  # cached by pandas: free on the per-call path
        dups = sorted({str(c) for c in columns[columns.duplicated()]})
        raise SchemaError(f"input column(s) {', '.join(map(repr, dups))} appear more than once")




def _conforms(df: Any, schema: Schema) -> bool:
    """True when ``df`` has exactly the schema's columns, in order, each already in its numeric/bool dtype."""
    if not _same_columns(df.columns, schema.input_names()):
        return False
    types = tuple(s.type for s in cast("list[ColSpec]", schema.inputs))
    wanted = _plain_numpy(types) if all(isinstance(t, DataType) for t in types) else None  # enums: hashable
    if wanted is None:
        return False
    # One numpy dtype for every column (the common case): compare the frame's blocks, not ``df.dtypes``
    # (a Series built per call, half the check's time); pandas' block manager is private, so any other
    # layout falls back to the public way.
    blocks = getattr(getattr(df, "_mgr", None), "blocks", None)
    if len(set(wanted)) == 1 and isinstance(blocks, tuple):
        dtype = wanted[0]
        return all(getattr(b, "dtype", None) == dtype for b in blocks)
    return all(found == dtype for found, dtype in zip(df.dtypes.tolist(), wanted, strict=True))


# The column index last found equal to a schema's names, with those names. A pandas Index is immutable,
# and the server's codecs hand every frame the same one, so an identity check replaces comparing names
# (pandas 3's Arrow-backed string index makes ``tolist`` cost microseconds); held, so its id is not reused.
_last_columns: tuple[Any, list[str]] = (None, [])


def _same_columns(columns: Any, names: list[str]) -> bool:
    """Whether the column index ``columns`` holds exactly ``names``, in order."""
    global _last_columns
    seen, seen_names = _last_columns
    if seen is columns and seen_names == names:
        return True
    if len(columns) != len(names) or columns.tolist() != names:
        return False
    _last_columns = (columns, list(names))
    return True


@functools.lru_cache(maxsize=256)
def _plain_numpy(types: tuple) -> tuple | None:
    """The numpy dtypes of plain column ``types`` (a schema's, in order), ``None`` when one is not plain."""
    if not all(isinstance(t, DataType) and t in _PLAIN_DTYPES for t in types):
        return None
    return tuple(t.to_numpy() for t in types)


def _convert_column(col: Any, spec: ColSpec, name: str) -> Any:
    import numpy as np
    import pandas as pd

    t = spec.type
    if isinstance(t, AnyType):
        return col
    if not isinstance(t, DataType):
        return check_nested(col, t, name)
    kind = col.dtype
    if isinstance(kind, pd.CategoricalDtype):
        col = col.astype(kind.categories.dtype)
        kind = col.dtype
    if t == DataType.string:
        return _convert_text(col, name)
    if t == DataType.binary:
        if _is_object(kind) or pd.api.types.is_string_dtype(kind):
            _check_values(col, (bytes, bytearray), name, t.value)
            return col.astype(object)
        raise _incompatible(name, t.value, kind)
    if t == DataType.datetime:
        return _convert_datetime(col, name)
    if t == DataType.boolean:
        if pd.api.types.is_bool_dtype(kind):
            # A nullable ``boolean`` column with missing values stays nullable (NA has no bool value).
            return col.astype(bool) if kind != np.dtype(bool) and not col.isna().any() else col
        if _is_object(kind):  # booleans with nulls (e.g. JSON records): kept as they are, as MLflow does
            _check_values(col, (bool, np.bool_), name, "boolean")
            return col
        raise _incompatible(name, "boolean", kind)
    return _convert_numeric(col, t, name)


def _convert_text(col: Any, name: str) -> Any:
    """A ``string`` column as objects: strings and nulls kept, integers as their decimal text, anything
    else refused, by the table's ``string`` column (:func:`modelfmt.casting.as_text`)."""
    import pandas as pd

    kind = col.dtype
    if pd.api.types.is_string_dtype(kind) and not _is_object(kind):  # pandas' str dtype: strings already
        out = col.astype(object)
        return out.where(col.notna(), None) if col.hasnans else out  # a missing string is None, as from JSON
    if _is_object(kind) or getattr(kind, "kind", "") in "iufb":
        values = col.to_numpy(dtype=object, na_value=None) if hasattr(kind, "numpy_dtype") else col.to_numpy()
        # dtype=object: pandas 3 would make a column of strings its str dtype again.
        return pd.Series(as_text(values, f"column {name!r}"), index=col.index, name=col.name, dtype=object)
    raise _incompatible(name, "string", kind)


def _convert_datetime(col: Any, name: str) -> Any:
    """A ``datetime`` column as ``datetime64[ns]`` (the unit MLflow hands models), from datetimes of any
    unit or from strings: ISO 8601 of mixed precision in one column (what ``isoformat()`` writes), else
    one format pandas infers for the whole column."""
    import pandas as pd

    kind = col.dtype
    if pd.api.types.is_datetime64_any_dtype(kind):
        return _as_ns(col, name)
    if _is_object(kind) or pd.api.types.is_string_dtype(kind):
        try:
            parsed = pd.to_datetime(col, format="ISO8601")
        except (ValueError, TypeError):
            try:
                parsed = pd.to_datetime(col)
            except (ValueError, TypeError) as e:
                raise _incompatible(name, "datetime", "values that are not dates", str(e)) from None
        return _as_ns(parsed, name)
    raise _incompatible(name, "datetime", kind)


def _as_ns(col: Any, name: str) -> Any:
    import pandas as pd

    try:
        return col.dt.as_unit("ns")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError) as e:
        raise _incompatible(name, "datetime", "dates outside the nanosecond range (1677-2262)", str(e)) from None


def _is_object(kind: Any) -> bool:
    # A plain numpy object column; pandas' string and categorical dtypes are not (their .kind is "O" too).
    return str(kind) == "object"


def _check_values(col: Any, want: type | tuple, name: str, expected: str) -> None:
    """Refuse an object column holding a value (other than a null) that is not of type ``want``."""
    import numpy as np
    import pandas as pd

    for v in col:
        if not (isinstance(v, want) or v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))):
            raise _incompatible(name, expected, f"a value of type {type(v).__name__} ({v!r:.40})")


def _convert_numeric(col: Any, t: DataType, name: str) -> Any:
    """``col`` in the numeric type ``t`` by the one casting policy (:mod:`modelfmt.casting`)."""
    import pandas as pd

    if col.dtype == t.to_numpy():
        return col
    what = f"column {name!r}"
    values = _nullable_values(col, t, what) if hasattr(col.dtype, "numpy_dtype") else col.to_numpy()
    out = cast_array(values, t, what)
    return pd.Series(out, index=col.index, name=col.name)


def _nullable_values(col: Any, t: DataType, what: str) -> Any:
    """A pandas nullable column (Int64, Float64, boolean) as a numpy array: missing values as NaN or None."""
    import numpy as np

    base = np.dtype(col.dtype.numpy_dtype)
    if not col.isna().any():
        return col.to_numpy(dtype=base)
    if base.kind in "iu":
        cast_array(col.dropna().to_numpy(dtype=base), t, what)  # the present values themselves must fit
    if base.kind in "iuf":
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    return col.to_numpy(dtype=object, na_value=None)


# -- tensors -----------------------------------------------------------------------------------
def _enforce_tensors(data: Any, schema: Schema) -> Any:
    import pandas as pd

    specs = cast("list[TensorSpec]", schema.inputs)
    if len(specs) == 1 and (specs[0].name is None or not isinstance(data, dict)):
        spec = specs[0]
        if isinstance(data, dict) and len(data) == 1:
            data = next(iter(data.values()))
        if isinstance(data, pd.DataFrame):
            data = data.to_numpy()
        return _enforce_tensor(data, spec, spec.name)
    if isinstance(data, pd.DataFrame):
        # A column of scalars feeds a (-1, 1) tensor one value per row, as MLflow reshapes it.
        flat = {s.name for s in specs if tuple(s.shape) == (-1, 1)}
        data = {c: [[v] for v in data[c].tolist()] if c in flat and data[c].dtype != object else data[c].tolist()
                for c in data.columns}
    if not isinstance(data, dict):
        raise SchemaError(f"model expects named tensors {schema.input_names()}, got {type(data).__name__}")
    missing = [s.name for s in specs if s.name not in data]
    if missing:
        raise SchemaError(f"missing input tensor(s): {', '.join(map(repr, missing))}")
    return {s.name: _enforce_tensor(data[s.name], s, s.name) for s in specs}


def _enforce_tensor(data: Any, spec: TensorSpec, name: str | None) -> Any:
    import numpy as np

    label = f"tensor {name!r}" if name else "input tensor"
    try:
        arr = data if isinstance(data, np.ndarray) else np.asarray(data)
    except ValueError:
        raise SchemaError(f"{label}: rows of different lengths do not make a tensor of shape {spec.shape}") from None
    if len(arr.shape) != len(spec.shape):
        raise SchemaError(f"{label}: expected shape {spec.shape}, got {arr.shape} (rank {arr.ndim})")
    for want, got in zip(spec.shape, arr.shape, strict=True):
        if want != -1 and want != got:
            raise SchemaError(f"{label}: expected shape {spec.shape}, got {arr.shape}")
    if arr.dtype == spec.dtype:
        return arr
    if spec.dtype.kind in "biuf":
        return cast_array(arr, spec.dtype, label)
    if np.can_cast(arr.dtype, spec.dtype, "safe"):  # strings and bytes into object tensors
        return arr.astype(spec.dtype)
    if arr.dtype == np.dtype(object):
        try:
            return arr.astype(spec.dtype)
        except (ValueError, TypeError):
            raise SchemaError(f"{label}: expected dtype {spec.dtype}, got values that are not of that type") from None
    raise SchemaError(f"{label}: expected dtype {spec.dtype}, got {arr.dtype}")


# -- params ------------------------------------------------------------------------------------
def enforce_params(params: dict | None, schema: ParamSchema | None) -> dict | None:
    """Check ``params`` against ``schema``, convert safely and fill defaults.

    As in MLflow, params are ignored (with a warning) when the model declares no params schema, and
    names the schema does not declare are dropped with a warning.
    """
    if params is not None and not isinstance(params, dict):
        raise ParamsError(f"params must be a mapping, got {type(params).__name__}")
    if schema is None:
        if params:
            _log.warning("params %s ignored: the model's signature declares no params", sorted(params))
        return None
    params = params or {}
    unknown = sorted(set(params) - {p.name for p in schema.params})
    if unknown:
        _log.warning("unrecognised params %s ignored; the model accepts %s", unknown, [p.name for p in schema.params])
    return {p.name: _convert_param(p, params[p.name]) if p.name in params else p.default for p in schema.params}


def _convert_param(spec: ParamSpec, value: Any) -> Any:
    if spec.shape is None:
        return _convert_scalar(spec, value)
    if not isinstance(value, (list, tuple)):
        raise ParamsError(f"param {spec.name!r}: expected a list of {spec.dtype.value}, got {type(value).__name__}")
    return [_convert_scalar(spec, v) for v in value]


def _convert_scalar(spec: ParamSpec, value: Any) -> Any:
    import numpy as np

    t = spec.dtype
    bad = ParamsError(f"param {spec.name!r}: expected {t.value}, got {type(value).__name__} {value!r:.40}")
    if value is None:
        return None
    if t == DataType.boolean:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise bad
    if isinstance(value, (bool, np.bool_)) and t != DataType.string:
        raise bad
    if t in (DataType.integer, DataType.long):
        if isinstance(value, (int, np.integer)):  # never a float, 2.0 included: as MLflow (and the casting table)
            return int(value)
        raise bad
    if t in (DataType.float, DataType.double):
        if isinstance(value, (int, float, np.integer, np.floating)):
            return float(value)
        raise bad
    if t == DataType.string:
        if isinstance(value, str):
            return value
        raise bad
    if t == DataType.binary:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise bad
    if t == DataType.datetime:
        if isinstance(value, (_dt.datetime, _dt.date)):
            return value
        if isinstance(value, str):
            try:
                return _dt.datetime.fromisoformat(value)
            except ValueError:
                raise bad from None
        raise bad
    raise bad
