"""The spark flavor: ``pyspark.ml`` models stored with Spark's own writer under ``sparkml/``.

The layout and the ``spark`` block of ``MLmodel`` (``pyspark_version``, ``model_data``, ``model_class``)
are MLflow's, so MLflow loads what we save and we load what MLflow saves. The pyfunc wrapper scores a
pandas DataFrame through a SparkSession: the active one, or a local one started on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
import warnings
import weakref
from typing import Any

from modelfmt import trust
from modelfmt.environment import pinned
from modelfmt.errors import FlavorError, ModelFormatError
from modelfmt.flavors._common import model_file
from modelfmt.flavors.save import finish_model
from modelfmt.io import atomic_model_dir
from modelfmt.model import Model
from modelfmt.open import OpenedModel, open_model

FLAVOR_NAME = "spark"
LOADER_MODULE = "mlflow.spark"
MLFLOW_LOADER_MODULES = (LOADER_MODULE,)
EXTRA = "spark"
MODEL_DATA = "sparkml"
PREDICTION_COL = "prediction"

# The session we start ourselves when none is active: loopback only, no UI, few shuffle partitions.
# ``allowSparkContext`` lets it start inside a Spark task too (a spark model scored by spark_udf).
_LOCAL_SESSION_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.executor.allowSparkContext": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}


# PySpark 4's warning on every pandas path; nothing a user can act on (see quiet_pandas3_warning).
_PANDAS3_WARNING = r"PySpark does not yet fully support pandas >= 3"


def quiet_pandas3_warning() -> None:
    """Ignore PySpark's "does not yet fully support pandas >= 3.0.0" ``FutureWarning``, from pyspark only.

    PySpark 4 warns so on every path that touches pandas (a dozen per job, in the driver and in each
    Python worker), about nothing the user can act on. The filter matches that message only when the
    warning is attributed to a ``pyspark`` module, so the user's own warnings and filters are untouched;
    it is one process-wide entry (``catch_warnings`` could not reach the workers' serializers, and is not
    thread-safe). Calling it again does not add a second entry.
    """
    warnings.filterwarnings(
        "ignore", message=_PANDAS3_WARNING, category=FutureWarning, module=r"pyspark(\.|$)"
    )


def spark_session() -> Any:
    """The active SparkSession, or a new ``local[*]`` one configured for scoring on this machine.

    A session started here runs its Python workers with this interpreter when ``PYSPARK_PYTHON`` is
    not set (PySpark would start ``python3`` from ``PATH``, which may lack pandas and modelfmt).
    """
    quiet_pandas3_warning()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if SparkContext._active_spark_context is not None:  # created in another thread
        return SparkSession.builder.getOrCreate()
    builder = SparkSession.builder.master("local[*]").appName("modelfmt")
    for key, value in _LOCAL_SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    if "PYSPARK_PYTHON" not in os.environ:
        # Read by every UDF built on this context from now on (PySpark reads the variable only at start).
        session.sparkContext.pythonExec = sys.executable
    return session


def _is_local(spark: Any) -> bool:
    return spark.sparkContext.master.startswith("local")


# -- save -------------------------------------------------------------------------------------
def save_model(
    spark_model: Any,
    path: str,
    signature: Any = None,
    input_example: Any = None,
    pip_requirements: Any = None,
    extra_pip_requirements: Any = None,
    metadata: dict | None = None,
    code_paths: list[str] | None = None,
    dfs_tmpdir: str | None = None,
    overwrite: bool = False,
) -> Model:
    """Save a fitted ``pyspark.ml`` model (a ``PipelineModel`` or any writable transformer) to ``path``.

    A single transformer is wrapped in a one-stage ``PipelineModel``, as MLflow does. On a cluster,
    Spark writes to ``dfs_tmpdir`` (default ``/tmp/modelfmt`` on the default filesystem) and the
    result is copied into ``path``; in local mode it writes into ``path`` directly.
    """
    import pyspark

    spark_model = _as_pipeline_model(spark_model)
    spark = spark_session()
    with atomic_model_dir(path, overwrite) as tmp:
        _write(spark, spark_model, os.path.join(tmp, MODEL_DATA), dfs_tmpdir)
        model = Model().add_flavor(
            FLAVOR_NAME,
            pyspark_version=pyspark.__version__,
            model_data=MODEL_DATA,
            model_class=f"{type(spark_model).__module__}.{type(spark_model).__name__}",
        )
        wrapper = _SparkModelWrapper(spark, spark_model)
        return finish_model(
            tmp,
            model,
            loader_module=LOADER_MODULE,
            default_requirements=pinned(["pyspark"]),
            signature=signature,
            input_example=input_example,
            predict=wrapper.predict_series,
            pip_requirements=pip_requirements,
            extra_pip_requirements=extra_pip_requirements,
            metadata=metadata,
            code_paths=code_paths,
            data=MODEL_DATA,
        )


def _as_pipeline_model(spark_model: Any) -> Any:
    from pyspark.ml import Model as SparkModel
    from pyspark.ml import PipelineModel, Transformer
    from pyspark.ml.util import MLWritable

    if isinstance(spark_model, PipelineModel):
        return spark_model
    if not isinstance(spark_model, (SparkModel, Transformer)) or not isinstance(spark_model, MLWritable):
        raise FlavorError(
            f"the spark flavor saves fitted pyspark.ml models and transformers with an MLWriter; "
            f"got {type(spark_model).__module__}.{type(spark_model).__qualname__}"
        )
    return PipelineModel([spark_model])


def _write(spark: Any, spark_model: Any, dest: str, dfs_tmpdir: str | None) -> None:
    if _is_local(spark) and dfs_tmpdir is None:
        spark_model.write().save(_file_uri(dest))
        return
    # Executors write parts of the model; on a cluster that must be a shared filesystem.
    tmp = _dfs_tmp_path(dfs_tmpdir)
    spark_model.write().save(tmp)
    fs, jpath = _hadoop_fs(spark, tmp)
    fs.copyToLocalFile(True, jpath, spark._jvm.org.apache.hadoop.fs.Path(_file_uri(dest)))


def _file_uri(path: str) -> str:
    return "file://" + os.path.abspath(path)


def _dfs_tmp_path(dfs_tmpdir: str | None) -> str:
    return f"{(dfs_tmpdir or '/tmp/modelfmt').rstrip('/')}/{uuid.uuid4().hex}"


def _hadoop_fs(spark: Any, path: str) -> tuple[Any, Any]:
    jvm = spark._jvm
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    return jpath.getFileSystem(spark._jsc.hadoopConfiguration()), jpath


# -- load -------------------------------------------------------------------------------------
def load_model(model: str | os.PathLike | OpenedModel, dfs_tmpdir: str | None = None, **options: Any) -> Any:
    """The ``pyspark.ml`` model saved at ``model`` (a location or an :class:`OpenedModel`); starts a
    local SparkSession if none is active. ``options`` are opening options."""
    opened = open_model(model, **options)
    trust.check_pickle_allowed(opened)  # a Spark model runs no pickle, but its code/ would be imported
    opened.add_code_to_sys_path(FLAVOR_NAME)
    return _load(spark_session(), opened, dfs_tmpdir)


def _load(spark: Any, opened: OpenedModel, dfs_tmpdir: str | None = None) -> Any:
    conf = opened.flavor_conf(FLAVOR_NAME)
    data = model_file(opened.path, conf, "model_data", MODEL_DATA)
    if not os.path.isdir(data):
        raise ModelFormatError(f"the Spark model directory {data!r} named in MLmodel is missing")
    cls = _model_class(conf.get("model_class"))
    try:
        if _is_local(spark) and dfs_tmpdir is None:
            return cls.load(_file_uri(data))
        # Executors read parts of the model too: put a copy on the shared filesystem first.
        tmp = _dfs_tmp_path(dfs_tmpdir)
        fs, jpath = _hadoop_fs(spark, tmp)
        fs.copyFromLocalFile(False, True, spark._jvm.org.apache.hadoop.fs.Path(_file_uri(data)), jpath)
        try:
            loaded = cls.load(tmp)
        except BaseException:
            _delete(fs, jpath)
            raise
    except Exception as e:  # noqa: BLE001 - Py4J and Spark raise many types; all mean "cannot read"
        raise ModelFormatError(f"cannot load the Spark model in {data!r}: {type(e).__name__}: {e}") from e
    # Not deleted right away: some models read their data lazily from it (ALSModel's factors are
    # DataFrames over these files). Deleted when the model is garbage-collected or the process exits.
    weakref.finalize(loaded, _delete, fs, jpath)
    return loaded


def _delete(fs: Any, jpath: Any) -> None:
    try:
        fs.delete(jpath, True)
    except Exception:  # noqa: BLE001 - at exit the JVM may be gone already; nothing left to do then
        pass


def _model_class(name: str | None) -> Any:
    """The class whose ``load`` reads ``sparkml/``; only ``pyspark.ml`` classes, never arbitrary code."""
    from pyspark.ml import PipelineModel

    if not name or name == "pyspark.ml.pipeline.PipelineModel":
        return PipelineModel
    module, _, cls = name.rpartition(".")
    if not module.startswith("pyspark.ml.") or module.startswith("pyspark.ml.connect"):
        raise ModelFormatError(
            f"model_class {name!r} in MLmodel is not a pyspark.ml class this flavor loads "
            "(Spark Connect models are not supported)"
        )
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as e:
        raise ModelFormatError(f"model_class {name!r} in MLmodel does not exist in this pyspark") from e


# -- pyfunc -----------------------------------------------------------------------------------
class _SparkModelWrapper:
    """Scores a pandas DataFrame with a Spark model: DataFrame in, transform, prediction column out."""

    def __init__(self, spark: Any, spark_model: Any) -> None:
        self.spark = spark
        self.raw_model = spark_model

    def predict(self, data: Any, params: dict | None = None) -> Any:
        import numpy as np

        return np.asarray(self.predict_series(data))

    def predict_series(self, data: Any) -> Any:
        """Predictions as an unnamed pandas Series (MLflow's unnamed output schema when inferred)."""
        import pandas as pd

        pdf = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        sdf = _vectors_for_features(self.spark.createDataFrame(pdf), self.raw_model)
        out = self.raw_model.transform(sdf)
        col = _prediction_column(self.raw_model, out.columns)
        out = _vectors_to_arrays(out.select(col))
        series = out.toPandas()[col]
        series.name = None
        return series


def _prediction_column(spark_model: Any, columns: list[str]) -> str:
    """``prediction``, or the last stage's ``outputCol`` for pipelines that end in a transformer."""
    if PREDICTION_COL in columns:
        return PREDICTION_COL
    stages = getattr(spark_model, "stages", None) or [spark_model]
    last = stages[-1]
    if last.hasParam("outputCol"):
        name = last.getOrDefault(last.outputCol)
        if name in columns:
            return name
    raise ModelFormatError(
        f"the Spark model produced no {PREDICTION_COL!r} column and its last stage has no outputCol; "
        f"its output columns are {columns}"
    )


def _vectors_for_features(sdf: Any, spark_model: Any) -> Any:
    """Turn ``array<double>`` input into the ML vector a first stage's ``featuresCol`` needs.

    pandas cannot carry Spark ML vectors, so a model fed vectors at training gets arrays here.
    """
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql.types import ArrayType, NumericType

    stages = getattr(spark_model, "stages", None) or [spark_model]
    first = stages[0]
    if not first.hasParam("featuresCol"):
        return sdf
    name = first.getOrDefault(first.featuresCol)
    field = next((f for f in sdf.schema.fields if f.name == name), None)
    dtype = field.dataType if field is not None else None
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, NumericType):
        return sdf.withColumn(name, array_to_vector(name))
    return sdf


def _vectors_to_arrays(sdf: Any) -> Any:
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    for field in sdf.schema.fields:
        if isinstance(field.dataType, VectorUDT):
            sdf = sdf.withColumn(field.name, vector_to_array(field.name))
    return sdf


def load_pyfunc(opened: OpenedModel, dfs_tmpdir: str | None = None) -> _SparkModelWrapper:
    """The pyfunc wrapper, scoring through the active SparkSession (or a local one).

    ``dfs_tmpdir``: where a cluster's executors read the model from (default ``/tmp/modelfmt``).
    """
    spark = spark_session()
    return _SparkModelWrapper(spark, _load(spark, opened, dfs_tmpdir))
