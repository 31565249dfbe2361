"""One JSON encoder (orjson) for everything modelfmt writes: predictions, input examples, metadata.

numpy and pandas values are shaped as MLflow shapes them: a DataFrame as a list of records, arrays as
lists, NaN/NaT as ``null``, bytes as base64, dates as ISO strings. :func:`loads` reads what MLflow
writes, which is not always strict JSON (``NaN`` and ``Infinity`` literals).
"""

from __future__ import annotations

from typing import Any


def dumps(obj: Any, indent: bool = False) -> bytes:
    """JSON bytes of ``obj`` (two-space indented when ``indent``)."""
    # Imported here: flavors.pyfunc (and so this module) is imported where MLflow unpickles our
    # PythonModels, an environment that need not have orjson.
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(obj, default=_default, option=option | orjson.OPT_INDENT_2 if indent else option)


def loads(data: bytes | str) -> Any:
    """Parse JSON, also taking the ``NaN``, ``Infinity`` and ``-Infinity`` literals that Python's json
    writes by default (MLflow writes its input examples that way); they become floats.

    Raises ``ValueError`` (``json.JSONDecodeError``) for anything else that is not JSON.
    """
    import orjson

    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        import json

        # Only after orjson refused: the stdlib parser is slower, and it takes the non-standard literals.
        return json.loads(data)


def _default(value: Any) -> Any:
    import datetime

    import numpy as np

    if type(value).__module__.startswith("pandas"):
        return _pandas_jsonable(value)
    if isinstance(value, np.ndarray):
        return value.tolist()  # what orjson does not take natively: object dtype, non-contiguous views
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _pandas_jsonable(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.DataFrame):
        return _records_of(value)
    if isinstance(value, pd.Series):
        return _records_of(value.to_frame(name=value.name if value.name is not None else 0))
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "to_numpy"):
        return value.to_numpy().tolist()
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def _records_of(df: Any) -> list:
    """A DataFrame as a list of row objects (pandas' ``records`` orient) without pandas' per-cell cost."""
    names = [str(c) for c in df.columns]
    # Column by column: numpy's tolist() makes Python numbers at C speed; timestamps go through _default.
    columns = [s.tolist() if s.dtype.kind == "M" else s.to_numpy().tolist() for _, s in df.items()]
    rows = zip(*columns, strict=True)
    return [dict(zip(names, row, strict=True)) for row in rows] if columns else [{} for _ in range(len(df))]
