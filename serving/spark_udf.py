"""``spark_udf``: score any saved model inside Spark batch and Structured Streaming jobs.

The driver reads only ``MLmodel``: it works out the result type, checks ``params``, and ships the model
directory with the job as an archive (``SparkContext.addArchive``), so executors need no shared
filesystem. Each Python worker unpacks nothing itself: Spark does, and the worker loads the model once
and keeps it for every later batch and task (Spark reuses Python workers).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
from collections import OrderedDict
from typing import Any, Iterable, Iterator, NamedTuple

from modelfmt.enforce import enforce_params
from modelfmt.errors import INVALID_PARAMETER_VALUE, ModelfmtError, PredictionError, SchemaError
from modelfmt.model import Model
from modelfmt.signature import ColSpec, Schema, TensorSpec
from modelfmt.types import Array, DataType, Map, Object

_log = logging.getLogger(__name__)

_ARCHIVE_ROOT = "model"
# Models a Python worker keeps loaded; a job usually scores with one or two.
_WORKER_CACHE_SIZE = 4
_WORKER_MODELS: OrderedDict[str, Any] = OrderedDict()


def spark_udf(spark: Any, model_path: str | os.PathLike, result_type: Any = None, params: dict | None = None) -> "ModelUDF":
    """A Spark UDF scoring the model saved at ``model_path``.

    Call it with column names or ``Column``s (named after the signature's inputs, in its order when
    they are not names it knows), with one ``struct(...)`` column, or with no arguments to use the
    signature's input names. ``result_type`` is a Spark ``DataType`` or DDL string (``"double"``,
    ``"array<float>"``, ``"struct<a:double,b:double>"``); by default it follows the output schema, and is
    ``double`` when there is none. ``params`` are checked against the params schema now, not per batch.
    """
    path = os.path.abspath(os.fspath(model_path))
    meta = Model.load(path)
    rtype = _resolve_result_type(result_type, meta.get_output_schema())
    checked = enforce_params(params, meta.get_params_schema())
    if meta.flavors.get("python_function", {}).get("loader_module") == "mlflow.spark":
        _log.warning(
            "spark_udf: %s is a Spark model; every Python worker will start its own local Spark to score it. "
            "Applying flavors.spark.load_model(path).transform(df) is much faster", path
        )
    archive = _ship(spark, path, meta)
    return ModelUDF(_Job(archive, path, rtype.json(), checked), rtype, meta)


class _Job(NamedTuple):
    """What a worker needs: the shipped archive's name (or the path), the result type, the params."""

    archive: str | None
    path: str
    result_type_json: str
    params: dict | None

    @property
    def key(self) -> str:
        return self.archive or self.path


class ModelUDF:
    """The callable ``spark_udf`` returns: ``udf(*columns)`` gives a ``Column`` of predictions."""

    def __init__(self, job: _Job, result_type: Any, metadata: Model) -> None:
        self._job = job
        self.returnType = result_type
        self.metadata = metadata

    def __call__(self, *cols: Any) -> Any:
        schema = self.metadata.get_input_schema()
        names = schema.input_names() if schema is not None else []
        if not cols:
            if not names:
                raise SchemaError(
                    "call the UDF with columns: the model's signature names no input columns to use by default"
                )
            cols = tuple(names)
        if all(isinstance(c, str) for c in cols) and names and set(cols) <= set(names):
            arg_names: list = list(cols)
        else:
            # Positional, as in MLflow; a single struct column keeps its own field names instead.
            arg_names = names[: len(cols)] if names else list(range(len(cols)))
        return _pandas_udf(self._job, arg_names, self.returnType)(*cols)


def _pandas_udf(job: _Job, names: list, result_type: Any) -> Any:
    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import StructType
    from typing import Tuple, Union

    def score(batches):
        return _score_batches(job, names, batches)

    out = pd.DataFrame if isinstance(result_type, StructType) else pd.Series
    # Real objects, not strings: pyspark reads the hints to pick the iterator-of-batches UDF kind.
    score.__annotations__ = {"batches": Iterator[Tuple[Union[pd.Series, pd.DataFrame], ...]], "return": Iterator[out]}
    return pandas_udf(score, returnType=result_type)


# -- driver: result type ------------------------------------------------------------------------
def _resolve_result_type(result_type: Any, output_schema: Schema | None) -> Any:
    from pyspark.sql.types import DataType as SparkType, DoubleType, _parse_datatype_string

    if result_type is None:
        if output_schema is None or not output_schema.inputs:
            _log.warning("spark_udf: the model has no output schema; returning double (pass result_type=...)")
            return DoubleType()
        return infer_result_type(output_schema)
    if isinstance(result_type, str):
        try:
            result_type = _parse_datatype_string("boolean" if result_type == "bool" else result_type)
        except Exception as e:  # noqa: BLE001 - Spark's parser raises its own exception types
            raise ModelfmtError(f"result_type {result_type!r} is not a Spark type: {e}", INVALID_PARAMETER_VALUE) from None
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


@functools.lru_cache(maxsize=None)
def _np_types() -> dict:
    import numpy as np
    from pyspark.sql import types as T

    return {
        T.BooleanType: np.bool_, T.ByteType: np.int8, T.ShortType: np.int16, T.IntegerType: np.int32,
        T.LongType: np.int64, T.FloatType: np.float32, T.DoubleType: np.float64, T.StringType: object,
        T.BinaryType: object, T.TimestampType: "datetime64[ns]",
    }


# -- driver: shipping the model -----------------------------------------------------------------
def _ship(spark: Any, path: str, meta: Model) -> str | None:
    """Add the model directory to the job as an archive; returns its name for ``SparkFiles``."""
    try:
        sc = spark.sparkContext
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext
        _log.warning("spark_udf: no SparkContext (Spark Connect?); executors must read %s themselves", path)
        return None
    name = f"modelfmt-{_fingerprint(path, meta)}.tar"
    archive = os.path.join(_staging_dir(), name)
    if not os.path.exists(archive):
        partial = archive + ".part"
        with tarfile.open(partial, "w") as tar:
            tar.add(path, arcname=_ARCHIVE_ROOT)
        os.replace(partial, archive)
    sc.addArchive(archive)  # adding the same path twice is a no-op in Spark
    return name


def _fingerprint(path: str, meta: Model) -> str:
    """Changes when the directory's path, files, sizes or times change: a new archive name then."""
    h = hashlib.sha256(f"{path}\0{meta.model_uuid}".encode())
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            st = os.stat(os.path.join(root, f))
            h.update(f"{os.path.relpath(os.path.join(root, f), path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


@functools.lru_cache(maxsize=None)
def _staging_dir() -> str:
    # Archives must outlive the jobs that fetch them: removed when this process exits.
    d = tempfile.mkdtemp(prefix="modelfmt-spark-udf-")
    atexit.register(shutil.rmtree, d, True)
    return d


# -- worker -------------------------------------------------------------------------------------
def _worker_model(job: _Job) -> Any:
    """The model for ``job``, loaded once per Python worker process."""
    model = _WORKER_MODELS.get(job.key)
    if model is not None:
        _WORKER_MODELS.move_to_end(job.key)
        return model
    from flavors.pyfunc import load_model

    model = load_model(_worker_path(job))
    _WORKER_MODELS[job.key] = model
    while len(_WORKER_MODELS) > _WORKER_CACHE_SIZE:
        _WORKER_MODELS.popitem(last=False)
    return model


def _worker_path(job: _Job) -> str:
    if job.archive:
        from pyspark import SparkFiles

        shipped = os.path.join(SparkFiles.get(job.archive), _ARCHIVE_ROOT)
        if os.path.isdir(shipped):
            return shipped
    return job.path


def _score_batches(job: _Job, names: list, batches: Iterable[Any]) -> Iterator[Any]:
    """The body of the pandas UDF: one model, many Arrow batches."""
    from pyspark.sql.types import _parse_datatype_json_string

    model = _worker_model(job)
    rtype = _parse_datatype_json_string(job.result_type_json)
    schema = model.metadata.get_input_schema()
    for batch in batches:
        args = batch if isinstance(batch, tuple) else (batch,)
        n = len(args[0])
        if n == 0:
            continue
        data = _model_input(args, names, schema)
        try:
            preds = model.predict(data, params=job.params)
        except ModelfmtError as e:
            raise _in_context(e, job.path) from None
        yield _to_spark(preds, rtype, n, job.path)


def _in_context(e: ModelfmtError, path: str) -> ModelfmtError:
    """The same error, its message naming the model: what the user reads in the driver's exception."""
    message = f"spark_udf({path}): {e.message}"
    try:
        return type(e)(message, e.error_code)
    except TypeError:  # a subclass with another constructor
        return ModelfmtError(message, e.error_code)


def _model_input(args: tuple, names: list, schema: Schema | None) -> Any:
    import numpy as np
    import pandas as pd

    if schema is not None and schema.is_tensor_spec():
        return _tensor_input(args, names, schema)
    if len(args) == 1 and isinstance(args[0], pd.DataFrame):
        return args[0]
    # numpy arrays build a frame ~2x faster than Series (no index alignment); others keep their dtype.
    return pd.DataFrame(
        {n: a.to_numpy() if isinstance(a.dtype, np.dtype) else a for n, a in zip(names, args)}, copy=False
    )


def _tensor_input(args: tuple, names: list, schema: Schema) -> Any:
    """Array columns become tensors of the spec's shape; several scalar columns one 2-D tensor."""
    import numpy as np
    import pandas as pd

    if len(args) == 1 and isinstance(args[0], pd.DataFrame):
        args, names = tuple(args[0][c] for c in args[0].columns), list(args[0].columns)
    specs = schema.inputs
    if len(specs) == 1 and len(args) > 1:
        return np.column_stack([a.to_numpy() for a in args])
    out = {}
    for i, (col, spec) in enumerate(zip(args, specs)):
        values = col.to_numpy()
        if values.dtype == object:
            try:
                values = np.stack([np.asarray(v) for v in values])
            except ValueError as e:
                raise SchemaError(f"input {spec.name or i!r}: arrays of different lengths in one batch ({e})") from None
        rest = spec.shape[1:]
        if rest and -1 not in rest and values.shape[1:] != rest:
            values = values.reshape((len(values), *rest))  # flat arrays in, C order, as MLflow does
        out[spec.name or (names[i] if i < len(names) else i)] = values
    return out if len(specs) > 1 else next(iter(out.values()))


def _to_spark(preds: Any, rtype: Any, n: int, path: str) -> Any:
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
        return pd.Series(list(preds.to_dict("records")) if isinstance(preds, pd.DataFrame) else list(preds), dtype=object)
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

    if isinstance(preds, pd.DataFrame):
        preds = preds.to_numpy()
    elif isinstance(preds, pd.Series):
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
    return pd.DataFrame(
        {f: _to_column(col, rtype[f].dataType) for f, col in zip(fields, picked)}, index=preds.index
    ).reset_index(drop=True)


__all__ = ["spark_udf", "infer_result_type", "ModelUDF"]
