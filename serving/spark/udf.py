"""``spark_udf``: score any saved model inside Spark batch and Structured Streaming jobs.

The driver opens the model once (:func:`modelfmt.open.open_model`: ``MLmodel`` read and checked, nothing
unpickled): it works out the result type, checks ``params``, and ships the model directory with the job
as an archive (``SparkContext.addArchive``, unpacked by Spark on each executor),
so executors need no shared filesystem. In local mode it first checks that the interpreter Spark's
workers run can import modelfmt (:mod:`modelfmt.serving.spark.workers`). Each Python worker opens and
loads its shipped copy once (with the driver's opening options) and keeps it for every later batch and
task (Spark reuses Python workers), instead of loading it per task or batch.
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
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from modelfmt.enforce import enforce_params
from modelfmt.errors import ModelfmtError, SchemaError
from modelfmt.flavors.spark import quiet_pandas3_warning
from modelfmt.model import Model
from modelfmt.open import OpenedModel, open_model
from modelfmt.serving.spark.types import resolve_result_type, to_pandas_result
from modelfmt.serving.spark.workers import check_worker_python
from modelfmt.signature import Schema, TensorSpec
from modelfmt.signing import trusted_keys
from modelfmt.trust import caller_trusted_types, check_pickle_allowed, pickle_allowed
from modelfmt.types import DataType

_log = logging.getLogger(__name__)

_ARCHIVE_ROOT = "model"
# Models a Python worker keeps loaded; a job usually scores with one or two.
_WORKER_CACHE_SIZE = 4
_WORKER_MODELS: OrderedDict[str, Any] = OrderedDict()


def spark_udf(
    spark: Any, model: str | os.PathLike | OpenedModel, result_type: Any = None, params: dict | None = None,
    trusted_types: list[str] | None = None, **options: Any,
) -> ModelUDF:
    """A Spark UDF scoring ``model`` (a location or an :class:`OpenedModel`).

    Call it with column names or ``Column``s (named after the signature's inputs, in its order when
    they are not names it knows), with one ``struct(...)`` column, or with no arguments to use the
    signature's input names. ``result_type`` is a Spark ``DataType`` or DDL string (``"double"``,
    ``"array<float>"``, ``"struct<a:double,b:double>"``); by default it follows the output schema, and is
    ``double`` when there is none. ``params`` are checked against the params schema now, not per batch.
    ``trusted_types`` (skops types trusted beyond the defaults) is the opening option; it goes to the
    workers together with this process's ``MODELFMT_TRUSTED_TYPES``, which they may not see.
    In local mode, a workers' interpreter (``PYSPARK_PYTHON``) that cannot import modelfmt, pandas or
    pyarrow is a :class:`~modelfmt.errors.DeployError` here, not a failed job. Other keyword
    ``options`` are opening options too (``verify=``, ``public_key=``, ``env_manager=``...: see
    :data:`modelfmt.open.OPEN_OPTIONS`), checked here and applied again on the workers.
    """
    quiet_pandas3_warning()
    if trusted_types is not None:
        options["trusted_types"] = trusted_types
    opened = open_model(model, **options)
    check_pickle_allowed(opened)  # refused here, once, not in every task
    path, meta = opened.path, opened.model
    rtype = resolve_result_type(result_type, meta.get_output_schema())
    checked = enforce_params(params, meta.get_params_schema())
    if meta.flavors.get("python_function", {}).get("loader_module") == "mlflow.spark":
        _log.warning(
            "spark_udf: %s is a Spark model; every Python worker will start its own local Spark to score it. "
            "Applying modelfmt.flavors.spark.load_model(path).transform(df) is much faster", path
        )
    check_worker_python(spark)
    env_cache = _driver_environment(opened)
    archive = _ship(spark, path, meta)
    return ModelUDF(_Job(archive, path, rtype.json(), checked, _worker_options(opened), env_cache), rtype, meta)


def _driver_environment(opened: OpenedModel) -> str | None:
    """``env_manager`` uv|virtualenv: the model's environment built here, before any task starts (the
    tasks then only reuse it); returns the cache directory the workers must look in."""
    manager = opened.options.get("env_manager") or "local"
    if manager == "local":
        return None
    from modelfmt.envs import ensure_environment
    from modelfmt.envs.cache import cache_root

    ensure_environment(opened, manager)
    return cache_root()


def _worker_options(opened: OpenedModel) -> dict:
    """The opening options for the workers: the driver's, with what its environment says added
    (``MODELFMT_TRUSTED_TYPES``, ``MODELFMT_ALLOW_PICKLE=false``, ``MODELFMT_PUBLIC_KEY``): executors on
    other machines may not see this process's variables, and must not fail open."""
    options = dict(opened.options)
    trusted = caller_trusted_types(options.get("trusted_types"))
    if trusted:
        options["trusted_types"] = trusted
    if not pickle_allowed(options):
        options["allow_pickle"] = False
    keys, certificates = trusted_keys(options)
    if keys:
        options["public_key"] = keys
    if certificates:
        options["certificate"] = certificates
    return options


class _Job(NamedTuple):
    """What a worker needs: the shipped archive's name (or the path), the result type, the params,
    the opening options."""

    archive: str | None
    path: str
    result_type_json: str
    params: dict | None
    options: dict
    env_cache: str | None = None  # env_manager uv|virtualenv: the driver's environment cache

    @property
    def key(self) -> str:
        return self.archive or self.path


class ModelUDF:
    """The callable ``spark_udf`` returns: ``udf(*columns)`` gives a ``Column`` of predictions;
    ``udf.on(df)`` the same for the signature's columns, checked against ``df`` first."""

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
        by_name = all(isinstance(c, str) for c in cols) and bool(names) and set(cols) <= set(names)
        if by_name:
            arg_names: list = list(cols)
        else:
            # Positional, as in MLflow; a single struct column keeps its own field names instead.
            arg_names = names[: len(cols)] if names else list(range(len(cols)))
        arrow = by_name and _arrow_path(schema, self.returnType)
        return _make_udf(self._job, arg_names, self.returnType, arrow)(*cols)

    def on(self, df: Any) -> Any:
        """``udf()`` for the DataFrame ``df``: its columns named by the signature's inputs.

        ``udf()`` hands the names to Spark, which refuses a missing column when it analyses the plan
        (``UNRESOLVED_COLUMN``, as with MLflow's UDF) before modelfmt sees any data. ``udf.on(df)`` looks
        at ``df.columns`` first: a missing required input is a :class:`SchemaError` naming it, and an
        optional input ``df`` lacks is left out (the model gets it as missing).
        """
        schema = self.metadata.get_input_schema()
        if schema is None or not schema.has_input_names():
            raise SchemaError(
                f"spark_udf({self._job.path}): udf.on(df) needs a signature naming the input columns; "
                "call the UDF with columns"
            )
        sensitive = str(df.sparkSession.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
        def fold(name: str | None) -> str:  # Spark resolves names as the session says
            return str(name) if sensitive else str(name).lower()

        have = {fold(c) for c in df.columns}
        missing = [s.name for s in schema.inputs if s.required and fold(s.name) not in have]
        if missing:
            raise SchemaError(
                f"spark_udf({self._job.path}): missing required input column(s): {', '.join(map(repr, missing))}; "
                f"model expects {schema.input_names()}, the DataFrame has {list(df.columns)}"
            )
        return self(*[n for n in schema.input_names() if fold(n) in have])


def _arrow_path(schema: Schema | None, result_type: Any) -> bool:
    """Whether the UDF can take and give Arrow arrays (``arrow_udf``, PySpark 4.1+) instead of pandas.

    Spark's conversion of each batch to pandas Series and of the result back is most of a UDF's own time
    for a fast model. Taken for columns named by the signature, all of scalar types whose pandas form
    Arrow gives as Spark does (numbers, booleans, strings, binary: no timestamps, whose time zone Spark
    adjusts), and a scalar result type that is not a timestamp; anything else keeps the pandas UDF.
    """
    from pyspark.sql import types as T

    try:
        from pyspark.sql.functions import arrow_udf  # noqa: F401
    except ImportError:
        return False
    if schema is None or schema.is_tensor_spec() or not schema.has_input_names():
        return False
    scalars = {DataType.boolean, DataType.integer, DataType.long, DataType.float, DataType.double,
               DataType.string, DataType.binary}
    if not all(getattr(spec, "type", None) in scalars for spec in schema.inputs):
        return False
    simple = (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
              T.StringType, T.BinaryType)
    return isinstance(result_type, simple)


def _make_udf(job: _Job, names: list, result_type: Any, arrow: bool = False) -> Any:
    """The iterator-of-batches UDF for one call's column names: Arrow arrays in and out when ``arrow``,
    else pandas Series."""
    from typing import Tuple, Union  # noqa: UP035 - pyspark infers the UDF kind from typing's forms

    import pandas as pd
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import StructType

    if arrow:
        import pyarrow as pa
        from pyspark.sql.functions import arrow_udf

        def score_arrow(batches):
            return _score_arrow_batches(job, names, batches)

        score_arrow.__annotations__ = {"batches": Iterator[Tuple[pa.Array, ...]], "return": Iterator[pa.Array]}  # noqa: UP006
        return arrow_udf(score_arrow, returnType=result_type)  # type: ignore[call-overload]

    def score(batches):
        return _score_batches(job, names, batches)

    quiet_pandas3_warning()  # pandas_udf warns about pandas 3 as it builds the UDF
    out = pd.DataFrame if isinstance(result_type, StructType) else pd.Series
    # Real objects, not strings: pyspark reads the hints to pick the iterator-of-batches UDF kind.
    batches_hint = Iterator[Tuple[Union[pd.Series, pd.DataFrame], ...]]  # noqa: UP006, UP007
    score.__annotations__ = {"batches": batches_hint, "return": Iterator[out]}  # type: ignore[valid-type]
    return pandas_udf(score, returnType=result_type)  # type: ignore[call-overload]


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


@functools.cache
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
    from modelfmt.flavors.pyfunc import load_model

    if job.env_cache:  # the worker may not see the driver's MODELFMT_ENV_CACHE
        from modelfmt.envs.cache import CACHE_ENV

        os.environ[CACHE_ENV] = job.env_cache
    model = load_model(_worker_path(job), **job.options)
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

    quiet_pandas3_warning()  # in the worker: before its serializers convert the first batch

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
        yield to_pandas_result(preds, rtype, n, job.path)


def _score_arrow_batches(job: _Job, names: list, batches: Iterable[Any]) -> Iterator[Any]:
    """The body of the Arrow UDF: the columns as one frame (one 2-D block when they share a dtype), the
    predictions as an Arrow array of the result type."""
    import pandas as pd
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import _parse_datatype_json_string

    model = _worker_model(job)
    rtype = _parse_datatype_json_string(job.result_type_json)
    atype = to_arrow_type(rtype)
    columns = pd.Index(names)  # once per task: pandas 3 builds an Index of strings slowly (Arrow-backed)
    for batch in batches:
        args = batch if isinstance(batch, tuple) else (batch,)
        n = len(args[0])
        if n == 0:
            continue
        data = _frame_of_arrays(args, columns)
        try:
            preds = model.predict(data, params=job.params)
        except ModelfmtError as e:
            raise _in_context(e, job.path) from None
        yield pa.Array.from_pandas(to_pandas_result(preds, rtype, n, job.path), type=atype)


def _frame_of_arrays(arrays: tuple, names: Any) -> Any:
    """A DataFrame of Arrow arrays as Spark's pandas conversion gives it (ints with nulls as float64 with
    NaN, booleans with nulls and strings as objects), in writable numpy memory: a model may write to it."""
    import numpy as np
    import pandas as pd

    cols = [a.to_numpy(zero_copy_only=False) for a in arrays]
    if len({c.dtype for c in cols}) == 1 and cols[0].dtype.kind in "biuf":
        # One copy into one block laid out as pandas lays out a frame of columns (a row per column): no
        # consolidation, and the model sees the memory order the pandas path gives it, so the same sums.
        return pd.DataFrame(np.vstack(cols).T, columns=names, copy=False)
    return pd.DataFrame({n: c if c.flags.writeable else c.copy() for n, c in zip(names, cols, strict=False)},
                        copy=False)


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
    plain = (a.to_numpy() if isinstance(a.dtype, np.dtype) else a for a in args)
    return pd.DataFrame(dict(zip(names, plain, strict=False)), copy=False)


def _tensor_input(args: tuple, names: list, schema: Schema) -> Any:
    """Array columns become tensors of the spec's shape; several scalar columns one 2-D tensor."""
    import numpy as np
    import pandas as pd

    if len(args) == 1 and isinstance(args[0], pd.DataFrame):
        args, names = tuple(args[0][c] for c in args[0].columns), list(args[0].columns)
    specs = schema.inputs
    if len(specs) == 1 and len(args) > 1:
        return np.column_stack([np.asarray(a) for a in args])
    out = {}
    for i, (col, spec) in enumerate(zip(args, specs, strict=False)):
        values = np.asarray(col)
        if values.dtype == object:
            try:
                values = np.stack([np.asarray(v) for v in values])
            except ValueError as e:
                raise SchemaError(f"input {spec.name or i!r}: arrays of different lengths in one batch ({e})") from None
        rest = spec.shape[1:] if isinstance(spec, TensorSpec) else ()
        if rest and -1 not in rest and values.shape[1:] != rest:
            values = values.reshape((len(values), *rest))  # flat arrays in, C order, as MLflow does
        out[spec.name or (names[i] if i < len(names) else i)] = values
    return out if len(specs) > 1 else next(iter(out.values()))


__all__ = ["spark_udf", "ModelUDF"]
