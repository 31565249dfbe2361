"""Spark result types for ``spark_udf``: inferred from an output schema, and predictions converted to them.

Driver side: :func:`resolve_result_type` / :func:`infer_result_type`. Worker side: :func:`to_pandas_result`
shapes whatever a model returns (array, Series, DataFrame, dict, list) into the pandas object that
Spark's Arrow conversion turns into the result type; a misfit is named here instead of deep in Arrow.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from modelfmt.errors import INVALID_PARAMETER_VALUE, ModelfmtError, PredictionError
from modelfmt.signature import ColSpec, Schema, TensorSpec
from modelfmt.types import Array, DataType, Map, Object

_log = logging.getLogger(__name__)


# -- driver: the result type -------------------------------------------------------------------
def resolve_result_type(result_type: Any, output_schema: Schema | None) -> Any:
    """A Spark ``DataType`` from ``result_type`` (type or DDL string), or from the output schema."""
    from pyspark.sql.types import DataType as SparkType
    from pyspark.sql.types import DoubleType, _parse_datatype_string

    if result_type is None:
        if output_schema is None or not output_schema.inputs:
            _log.warning("spark_udf: the model has no output schema; returning double (pass result_type=...)")
            return DoubleType()
        return infer_result_type(output_schema)
    if isinstance(result_type, str):
        try:
            result_type = _parse_datatype_string("boolean" if result_type == "bool" else result_type)
        except Exception as e:  # noqa: BLE001 - Spark's parser raises its own exception types
            raise ModelfmtError(
                f"result_type {result_type!r} is not a Spark type: {e}", INVALID_PARAMETER_VALUE
            ) from None
    if not isinstance(result_type, SparkType) or not _supported(result_type):
        raise ModelfmtError(
            f"result_type {result_type!r} is not supported: use a primitive type (boolean, int, long, float, "
            "double, string, binary, timestamp), an array of those, a map<string,...> or a struct of them",
            INVALID_PARAMETER_VALUE,
        )
    return result_type


def _supported(t: Any) -> bool:
    from pyspark.sql import types as T

    if isinstance(t, T.ArrayType):
        return _supported(t.elementType)
    if isinstance(t, T.StructType):
        return all(_supported(f.dataType) for f in t.fields)
    if isinstance(t, T.MapType):
        return isinstance(t.keyType, T.StringType) and _supported(t.valueType)
    return type(t) in _np_types()


def infer_result_type(output_schema: Schema) -> Any:
    """The Spark type of a model's output: one output's type, or a struct of several named ones.

    A tensor's first dimension is the batch: shape ``(-1,)`` is one scalar per row, ``(-1, k)`` an
    array per row, ``(-1, k, m)`` an array of arrays.
    """
    from pyspark.sql.types import StructField, StructType

    specs = output_schema.inputs
    if len(specs) == 1:
        return _spec_type(specs[0])
    return StructType([StructField(s.name or str(i), _spec_type(s)) for i, s in enumerate(specs)])


def _spec_type(spec: ColSpec | TensorSpec) -> Any:
    from pyspark.sql.types import ArrayType

    if isinstance(spec, ColSpec):
        return _col_type(spec.type)
    t = _numpy_to_spark(spec.dtype)
    for _ in spec.shape[1:]:
        t = ArrayType(t)
    return t


def _col_type(t: Any) -> Any:
    from pyspark.sql import types as T

    if isinstance(t, DataType):
        return {
            DataType.boolean: T.BooleanType, DataType.integer: T.IntegerType, DataType.long: T.LongType,
            DataType.float: T.FloatType, DataType.double: T.DoubleType, DataType.string: T.StringType,
            DataType.binary: T.BinaryType, DataType.datetime: T.TimestampType,
        }[t]()
    if isinstance(t, Array):
        return T.ArrayType(_col_type(t.dtype))
    if isinstance(t, Object):
        return T.StructType([T.StructField(p.name, _col_type(p.dtype)) for p in t.properties])
    if isinstance(t, Map):
        return T.MapType(T.StringType(), _col_type(t.value_type))
    raise ModelfmtError(f"cannot return the output type {t!r} from a Spark UDF", INVALID_PARAMETER_VALUE)


def _numpy_to_spark(dtype: Any) -> Any:
    from pyspark.sql import types as T

    kind, size = dtype.kind, dtype.itemsize
    if kind == "f":
        return T.FloatType() if size <= 4 else T.DoubleType()
    if kind == "b":
        return T.BooleanType()
    if kind in "iu":
        return T.IntegerType() if size < 4 or (size == 4 and kind == "i") else T.LongType()
    if kind in "USO":
        return T.StringType()
    raise ModelfmtError(f"cannot return tensors of dtype {dtype} from a Spark UDF", INVALID_PARAMETER_VALUE)


@functools.cache
def _np_types() -> dict:
    import numpy as np
    from pyspark.sql import types as T

    return {
        T.BooleanType: np.bool_, T.ByteType: np.int8, T.ShortType: np.int16, T.IntegerType: np.int32,
        T.LongType: np.int64, T.FloatType: np.float32, T.DoubleType: np.float64, T.StringType: object,
        T.BinaryType: object, T.TimestampType: "datetime64[ns]",
    }


# -- worker: predictions to the result type ----------------------------------------------------
def to_pandas_result(preds: Any, rtype: Any, n: int, path: str) -> Any:
    """Predictions as the pandas object Arrow turns into ``rtype``, with messages instead of Arrow's."""
    from pyspark.sql.types import StructType

    try:
        out = _to_struct(preds, rtype) if isinstance(rtype, StructType) else _to_column(preds, rtype)
    except (ValueError, TypeError, KeyError) as e:
        raise PredictionError(
            f"spark_udf({path}): the model's output cannot be returned as {rtype.simpleString()}: {e}; "
            "pass a result_type that fits it"
        ) from None
    if len(out) != n:
        raise PredictionError(f"spark_udf({path}): the model returned {len(out)} predictions for {n} rows")
    return out


def _to_column(preds: Any, rtype: Any) -> Any:
    import numpy as np
    import pandas as pd
    from pyspark.sql.types import ArrayType, MapType, StringType

    if isinstance(rtype, ArrayType):
        return pd.Series(_to_arrays(preds, rtype), dtype=object)
    if isinstance(rtype, MapType):
        rows = preds.to_dict("records") if isinstance(preds, pd.DataFrame) else preds
        return pd.Series(list(rows), dtype=object)
    values = _first_column(preds)
    np_type = _np_types()[type(rtype)]
    if isinstance(rtype, StringType):
        if values.dtype != object:
            return pd.Series(values.astype(str), dtype=object)
        return pd.Series([v if v is None or isinstance(v, str) else str(v) for v in values], dtype=object)
    if np_type is object:
        return pd.Series(values, dtype=object)
    if values.dtype == object:
        values = np.asarray(values.tolist())
        if values.dtype.kind not in "biufM":
            raise ValueError(f"values of dtype {values.dtype}")
    return pd.Series(values.astype(np_type, copy=False))


def _first_column(preds: Any) -> Any:
    import numpy as np
    import pandas as pd

    if isinstance(preds, pd.DataFrame):
        return preds.iloc[:, 0].to_numpy()
    if isinstance(preds, dict):
        return _first_column(next(iter(preds.values())))
    values = preds.to_numpy() if isinstance(preds, pd.Series) else np.asarray(preds)
    if values.ndim == 2:
        return values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"an output of shape {values.shape} is not one value per row")
    return values


def _to_arrays(preds: Any, rtype: Any) -> list:
    import numpy as np
    import pandas as pd
    from pyspark.sql.types import ArrayType

    if isinstance(preds, dict):
        preds = next(iter(preds.values()))  # the first output, as _first_column takes it (ONNX answers by name)
    if isinstance(preds, pd.DataFrame) and len(preds.columns) == 1:
        preds = preds.iloc[:, 0]  # one output column, e.g. ONNX's [N, k] output as a list per row
    if isinstance(preds, (pd.DataFrame, pd.Series)):
        preds = preds.to_numpy()
    elem = rtype.elementType
    arr = np.asarray(preds) if not isinstance(preds, np.ndarray) else preds
    if arr.dtype != object and arr.ndim == 1:
        arr = arr.reshape(-1, 1)  # one value per row becomes a one-element array, as in MLflow
    depth = 1
    while isinstance(elem, ArrayType):
        elem, depth = elem.elementType, depth + 1
    np_type = _np_types().get(type(elem), object)
    if arr.dtype != object:
        arr = arr.astype(np_type, copy=False)
        return list(arr) if depth == 1 else [[list(r) if depth == 2 else r.tolist() for r in row] for row in arr]
    return [None if v is None else np.asarray(v, dtype=np_type) if depth == 1 else np.asarray(v).tolist() for v in arr]


def _to_struct(preds: Any, rtype: Any) -> Any:
    import numpy as np
    import pandas as pd

    fields = rtype.fieldNames()
    if isinstance(preds, dict):
        preds = pd.DataFrame({k: list(v) if np.ndim(v) > 1 else v for k, v in preds.items()})
    elif isinstance(preds, list) and preds and isinstance(preds[0], dict):
        preds = pd.DataFrame(preds)
    elif not isinstance(preds, pd.DataFrame):
        arr = np.asarray(preds)
        if arr.ndim != 2 or arr.shape[1] != len(fields):
            raise ValueError(f"an output of shape {arr.shape} does not have the {len(fields)} columns of the struct")
        preds = pd.DataFrame(arr, columns=fields)
    cols = [str(c) for c in preds.columns]
    if set(fields) <= set(cols):
        picked = [preds.iloc[:, cols.index(f)] for f in fields]
    elif len(cols) == len(fields):
        picked = [preds.iloc[:, i] for i in range(len(fields))]
    else:
        missing = sorted(set(fields) - set(cols))
        raise ValueError(f"the output has columns {cols}, not the struct's fields {missing}")
    # _to_column builds fresh Series (RangeIndex): no alignment with whatever index the model returned.
    return pd.DataFrame({f: _to_column(col, rtype[f].dataType) for f, col in zip(fields, picked, strict=True)})

