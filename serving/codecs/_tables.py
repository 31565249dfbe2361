"""Shared by the codecs: what a schema asks of each column, and building frames and arrays from JSON.

JSON has no widths and no bytes: a number is an int or a double, binary is base64 text. Here JSON
values take the types the signature declares (``float`` columns become float32, base64 strings of
``binary`` columns become bytes) by the one casting policy, :mod:`modelfmt.casting`; what it refuses
is left as it came, for :func:`modelfmt.enforce.enforce_schema` to refuse with the column named.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from modelfmt.casting import EXACT_INTEGERS, as_numbers, conform
from modelfmt.errors import PayloadError, SchemaError
from modelfmt.types import DataType

# Past this, integers and doubles in one numpy array have already been rounded to doubles.
_EXACT_DOUBLE_INT = EXACT_INTEGERS["float64"]
_NUMERIC = {DataType.integer, DataType.long, DataType.float, DataType.double}


class Plan:
    """What a schema asks of decoded input, worked out once per schema (never per request)."""

    def __init__(self, schema: Any) -> None:
        import numpy as np

        self.schema = schema
        self.kind = "none"
        self.names: list[str] = []
        self.dtypes: dict[Any, Any] = {}  # column/tensor name (or position) -> numpy dtype
        self.binary: set = set()
        self.strings: set = set()
        self.tensors: list = []
        self.numeric = False
        self._index: Any = None  # the column names as a pandas Index, built on first use
        if schema is None or not schema.inputs:
            return
        self.names = schema.input_names()
        if schema.is_tensor_spec():
            self.kind = "tensors"
            self.tensors = list(schema.inputs)
            self.dtypes = {(s.name if s.name is not None else i): s.dtype for i, s in enumerate(schema.inputs)}
            return
        self.kind = "columns"
        for i, spec in enumerate(schema.inputs):
            key = spec.name if spec.name is not None else i
            if spec.type in _NUMERIC:
                self.dtypes[key] = np.dtype(spec.type.to_numpy())
            elif spec.type == DataType.binary:
                self.binary.add(key)
            elif spec.type == DataType.string:
                self.strings.add(key)
        self.numeric = all(s.type in _NUMERIC for s in schema.inputs)

    def column_index(self) -> Any:
        """``names`` as a pandas Index, built once: frames in schema order share it."""
        if self._index is None:
            import pandas as pd

            self._index = pd.Index(self.names)
        return self._index

    def column_dtype(self, name: Any, position: int) -> Any:
        """The numpy dtype declared for a column (by name, or by position in an unnamed schema)."""
        return self.dtypes.get(name if self.names else position)


_PLANS: dict[int, tuple[Any, Plan]] = {}


def plan_for(schema: Any) -> Plan:
    """The :class:`Plan` of ``schema``, cached by identity (a model's schema lives as long as the model)."""
    hit = _PLANS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    plan = Plan(schema)
    if len(_PLANS) > 64:
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)
    return plan


# -- single columns and tensors -----------------------------------------------------------------
def conform_array(arr: Any, dtype: Any) -> Any:
    """``arr`` in ``dtype`` when the casting policy allows it (float64 narrowed to float32, integers that
    fit); else unchanged, for enforcement to refuse naming the column."""
    if dtype is None or arr.dtype == dtype:
        return arr
    return conform(arr, dtype)


def json_array(values: Any, dtype: Any = None, label: str = "input") -> Any:
    """A numpy array from JSON values, in ``dtype`` where the casting policy allows it."""
    import numpy as np

    try:
        arr = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise PayloadError(
            f"{label}: cannot read the values as an array ({e}); are all rows the same length?"
        ) from None
    return conform_array(arr, dtype) if arr.dtype.kind in "iuf" else arr


def decode_binary(values: Any, name: Any) -> list:
    """Base64 strings of a ``binary`` column as bytes (MLflow's convention for bytes in JSON)."""
    out = []
    for v in values:
        if isinstance(v, str):
            try:
                # Strict: characters outside the alphabet or bad padding are refused, not skipped (the
                # lenient decoder turned plain text into garbage bytes). URL-safe base64 is accepted too.
                altchars = b"-_" if ("-" in v or "_" in v) else None
                v = base64.b64decode(v, altchars=altchars, validate=True)
            except (binascii.Error, ValueError):
                raise SchemaError(
                    f"column {name!r}: expected base64-encoded binary (RFC 4648, with padding), got {v!r:.40}"
                ) from None
        out.append(v)
    return out


# -- frames -------------------------------------------------------------------------------------
def frame_from_rows(rows: Any, columns: list | None, index: Any, plan: Plan, may_hold_bools: bool = True) -> Any:
    """A DataFrame from row lists, its columns in their declared types where that loses nothing.

    The fast path covers the common body, all numbers: one numpy array, one pandas block, no per-cell
    Python work. ``may_hold_bools`` is False when the caller knows no JSON ``true``/``false`` is in the
    body (numpy would silently read booleans among numbers as 1.0 and 0.0).
    """
    if not isinstance(rows, list):
        raise PayloadError(f"'data' must be a list of rows, got {type(rows).__name__}")
    if columns is not None and not isinstance(columns, list):
        raise PayloadError(f"'columns' must be a list of names, got {type(columns).__name__}")
    if columns is not None and len(set(columns)) != len(columns):
        # pandas keeps duplicate names, and a column lookup then yields a frame instead of a column.
        dups = sorted({str(c) for c in columns if columns.count(c) > 1})
        raise PayloadError(f"'columns' names {', '.join(repr(d) for d in dups)} more than once")
    if plan.numeric and columns and rows and not may_hold_bools and isinstance(rows[0], list):
        df = _numeric_frame(rows, columns, index, plan)
        if df is not None:
            return df
    import pandas as pd

    try:
        df = pd.DataFrame(data=rows, columns=columns, index=index)
    except (ValueError, TypeError, AssertionError) as e:
        raise PayloadError(f"the rows do not form a table: {e}") from None
    return conform_frame(df, plan)


def _numeric_frame(rows: list, columns: list, index: Any, plan: Plan) -> Any:
    """The all-numbers fast path of :func:`frame_from_rows`; ``None`` when the body does not fit it."""
    import numpy as np
    import pandas as pd

    try:
        arr = np.array(rows)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[1] != len(columns) or arr.dtype.kind not in "if":
        return None
    if columns != plan.names and len(columns) == len(plan.names) and set(columns) == set(plan.names):
        # Same columns in another order: put them in schema order, so enforcement has nothing to redo.
        arr = arr[:, [columns.index(n) for n in plan.names]]
        columns = plan.names
    dtypes = [plan.column_dtype(c, i) for i, c in enumerate(columns)]
    if any(d is None for d in dtypes):
        return None  # a column the schema does not know: the general path keeps it as it came
    if columns == plan.names:
        columns = plan.column_index()
    if arr.dtype.kind == "f" and any(d.kind in "iu" for d in dtypes):
        return None  # integers mixed with doubles became doubles: read each column as it was sent
    if arr.dtype.kind == "f" and arr.size and np.abs(arr).max() > _EXACT_DOUBLE_INT:
        return None  # big integers mixed with doubles were already rounded by numpy: read them one by one
    if len(set(dtypes)) == 1:
        return pd.DataFrame(conform_array(arr, dtypes[0]), columns=columns, index=index, copy=False)
    cols = {c: conform_array(arr[:, i], d) for i, (c, d) in enumerate(zip(columns, dtypes, strict=True))}
    try:
        return pd.DataFrame(cols, index=index, copy=False)
    except ValueError as e:
        raise PayloadError(f"the rows do not form a table: {e}") from None


def conform_frame(df: Any, plan: Plan) -> Any:
    """``df`` with numeric columns in their declared widths and binary columns decoded (in place)."""
    import numpy as np

    if plan.kind != "columns":
        return df
    for i, col in enumerate(df.columns):
        key = col if plan.names else i
        dtype = plan.dtypes.get(key)
        series = df[col]
        if not isinstance(series.dtype, np.dtype) and key not in plan.binary:
            continue  # pandas' nullable and string dtypes: enforcement reads them, <NA> included
        if dtype is not None and series.dtype.kind in "iuf" and series.dtype != dtype:
            new = conform_array(series.to_numpy(), dtype)
            if new.dtype != series.dtype:
                df[col] = new
        elif dtype is not None and series.dtype == object and dtype.kind in "iuf":
            # Python numbers mixed with None (JSON null): read as doubles so nulls become NaN.
            try:
                df[col] = conform_array(as_numbers(series.to_numpy(), dtype, f"column {col!r}"), dtype)
            except SchemaError:
                pass  # not all numbers: enforcement names the column and the value
        elif key in plan.binary:
            df[col] = pd_object(decode_binary(series.tolist(), col))
    return df


def pd_object(values: list) -> Any:
    """An object-dtype numpy array of ``values`` (bytes stay bytes)."""
    import numpy as np

    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
