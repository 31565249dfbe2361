"""``spark_udf`` on a real ``local[2]`` SparkSession: batch, streaming, shipping, result types, errors."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("pyspark")

from spark_session import spark  # noqa: E402,F401 - the shared session fixture

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


@pytest.fixture(scope="module")
def diabetes_sdf(spark, diabetes):
    X, _ = diabetes
    return spark.createDataFrame(X.assign(row=np.arange(len(X)))).repartition(2).cache()


def _by_row(pdf, col):
    return pdf.sort_values("row")[col].to_numpy()


def test_modelfmt_exposes_spark_udf():
    import modelfmt
    from modelfmt.serving.spark.udf import spark_udf

    assert modelfmt.spark_udf is spark_udf


def test_every_way_of_passing_columns_scores_the_same(spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet):
    from pyspark.sql import functions as F
    from pyspark.sql.types import DoubleType

    from modelfmt.serving.spark.udf import spark_udf

    X, _ = diabetes
    cols = list(X.columns)
    udf = spark_udf(spark, sklearn_model_path)
    assert udf.returnType == DoubleType()  # from the output schema
    out = diabetes_sdf.select(
        "row",
        udf().alias("default"),
        udf(*reversed(cols)).alias("names"),  # names the signature knows: matched by name, not order
        udf(*[F.col(c) for c in cols]).alias("columns"),
        udf(F.struct(*cols)).alias("struct"),
    ).toPandas()
    expected = elasticnet.predict(X)
    for col in ("default", "names", "columns", "struct"):
        np.testing.assert_allclose(_by_row(out, col), expected, rtol=1e-12, err_msg=col)


def test_scores_after_the_original_directory_is_gone(spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path):
    from modelfmt.serving.spark.udf import spark_udf

    path = tmp_path / "model"
    shutil.copytree(sklearn_model_path, path)
    udf = spark_udf(spark, str(path))
    shutil.rmtree(path)  # executors read the archive shipped with the job, not this directory
    out = diabetes_sdf.select("row", udf().alias("p")).toPandas()
    np.testing.assert_allclose(_by_row(out, "p"), elasticnet.predict(diabetes[0]), rtol=1e-12)



def _save_pid_model(path, load_log):
    import cloudpickle

    from modelfmt.flavors import pyfunc
    from modelfmt.signature import ColSpec, ModelSignature, ParamSchema, ParamSpec, Schema

    class PidModel(pyfunc.PythonModel):
        def load_context(self, context):
            import uuid

            open(os.path.join(context.model_config["load_log"], f"{os.getpid()}-{uuid.uuid4().hex}"), "w").close()

        def predict(self, context, model_input, params=None):
            import pandas as pd

            return pd.DataFrame({"y": model_input["x"] * params["scale"], "pid": os.getpid()})

    signature = ModelSignature(
        Schema([ColSpec("double", "x")]),
        Schema([ColSpec("double", "y"), ColSpec("long", "pid")]),
        ParamSchema([ParamSpec("scale", "double", 1.0)]),
    )
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # workers cannot import this test module
    try:
        pyfunc.save_model(path, python_model=PidModel(), signature=signature, model_config={"load_log": load_log})
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def test_model_loads_once_per_worker_and_struct_output_with_params(spark, tmp_path):
    from pyspark.sql.types import LongType, StructField, StructType, DoubleType

    from modelfmt.serving.spark.udf import spark_udf

    load_log = tmp_path / "loads"
    load_log.mkdir()
    _save_pid_model(str(tmp_path / "pid"), str(load_log))
    udf = spark_udf(spark, str(tmp_path / "pid"), params={"scale": 2.0})
    assert udf.returnType == StructType([StructField("y", DoubleType()), StructField("pid", LongType())])
    sdf = spark.range(0, 2000, numPartitions=4).selectExpr("cast(id as double) as x")
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "50")  # 40 batches per job
    try:
        runs = [sdf.select("x", udf().alias("out")).select("x", "out.*").toPandas() for _ in range(2)]
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    for out in runs:
        np.testing.assert_array_equal(out["y"].to_numpy(), out["x"].to_numpy() * 2.0)
    loads = [name.split("-")[0] for name in os.listdir(load_log)]
    assert len(loads) == len(set(loads)), f"a worker loaded the model twice: {sorted(loads)}"
    scoring_pids = {str(p) for out in runs for p in out["pid"]}
    assert scoring_pids <= set(loads) and len(loads) <= 4  # 80 batches, at most a load per worker


def test_predict_proba_as_array_and_as_struct(spark, tmp_path):
    from pyspark.sql.types import ArrayType, DoubleType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.serving.spark.udf import spark_udf

    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = ["sl", "sw", "pl", "pw"]
    clf = LogisticRegression(max_iter=500).fit(X, y)
    path = str(tmp_path / "proba")
    sk_flavor.save_model(clf, path, input_example=X.head(3), pyfunc_predict_fn="predict_proba")
    sdf = spark.createDataFrame(X.assign(row=np.arange(len(X))))
    as_array = spark_udf(spark, path)
    assert as_array.returnType == ArrayType(DoubleType())  # output schema: a (-1, 3) tensor
    as_struct = spark_udf(spark, path, result_type="setosa double, versicolor double, virginica double")
    out = sdf.select("row", as_array().alias("a"), as_struct().alias("s")).select("row", "a", "s.*").toPandas()
    out = out.sort_values("row")
    expected = clf.predict_proba(X)
    np.testing.assert_allclose(np.stack(out["a"].to_numpy()), expected, rtol=1e-12)
    np.testing.assert_allclose(out[["setosa", "versicolor", "virginica"]].to_numpy(), expected, rtol=1e-12)


def test_streaming_file_source_into_memory_sink(spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path):
    from modelfmt.serving.spark.udf import spark_udf

    src = str(tmp_path / "incoming")
    diabetes_sdf.write.parquet(src)
    udf = spark_udf(spark, sklearn_model_path)
    stream = spark.readStream.schema(diabetes_sdf.schema).parquet(src)
    query = (
        stream.select("row", udf().alias("p"))
        .writeStream.format("memory")
        .queryName("modelfmt_stream_preds")
        .option("checkpointLocation", str(tmp_path / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    assert query.awaitTermination(180) is not False
    assert query.exception() is None
    out = spark.table("modelfmt_stream_preds").toPandas()
    assert len(out) == len(diabetes[0])
    np.testing.assert_allclose(_by_row(out, "p"), elasticnet.predict(diabetes[0]), rtol=1e-12)


def _job_error(df):
    from pyspark.errors import PySparkException

    with pytest.raises(PySparkException) as info:
        df.collect()
    message = str(info.value)
    assert "ArrowInvalid" not in message and "ArrowTypeError" not in message
    return message


def test_bad_input_fails_the_job_with_our_schema_message(spark, sklearn_model_path, diabetes_sdf, diabetes):
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F

    from modelfmt.serving.spark.udf import spark_udf

    cols = list(diabetes[0].columns)
    udf = spark_udf(spark, sklearn_model_path)
    wrong_type = diabetes_sdf.withColumn("age", F.concat(F.lit("y"), F.col("age").cast("string")))
    message = _job_error(wrong_type.select(udf()))
    assert "SchemaError" in message and "column 'age': expected double" in message
    message = _job_error(diabetes_sdf.select(udf(F.struct(*[c for c in cols if c != "bmi"]))))
    assert "SchemaError" in message and "missing required input column(s): 'bmi'" in message
    # Called with no arguments, a missing column is caught by Spark when the plan is built.
    with pytest.raises(AnalysisException, match="bmi"):
        diabetes_sdf.drop("bmi").select(udf())


def test_output_that_does_not_fit_the_result_type_is_named(spark, tmp_path):
    import pandas as pd
    from sklearn.tree import DecisionTreeClassifier

    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.serving.spark.udf import spark_udf

    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    clf = DecisionTreeClassifier().fit(X, ["no", "yes", "no", "yes"])
    sk_flavor.save_model(clf, str(tmp_path / "labels"), input_example=X)
    sdf = spark.createDataFrame(X)
    labels = sdf.select(spark_udf(spark, str(tmp_path / "labels"))().alias("label")).toPandas()
    assert sorted(labels["label"]) == ["no", "no", "yes", "yes"]  # inferred string
    message = _job_error(sdf.select(spark_udf(spark, str(tmp_path / "labels"), result_type="double")()))
    assert "PredictionError" in message and "cannot be returned as double" in message


def test_result_type_and_call_errors_are_ours(spark, sklearn_model_path):
    from modelfmt.errors import ModelfmtError, ModelNotFoundError
    from modelfmt.serving.spark.udf import spark_udf

    with pytest.raises(ModelfmtError, match="not a Spark type"):
        spark_udf(spark, sklearn_model_path, result_type="no such type")
    with pytest.raises(ModelfmtError, match="not supported"):
        spark_udf(spark, sklearn_model_path, result_type="map<int,double>")
    with pytest.raises(ModelNotFoundError):
        spark_udf(spark, "/nonexistent/model")


def test_onnx_models_score_through_the_udf(spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("skl2onnx")
    from pyspark.sql import functions as F
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    from modelfmt.flavors import onnx as onnx_flavor
    from modelfmt.flavors.onnx.convert import convert_sklearn_to_onnx
    from modelfmt.serving.spark.udf import spark_udf

    X, _ = diabetes
    cols = list(X.columns)
    convert_sklearn_to_onnx(sklearn_model_path, str(tmp_path / "columns"))  # column signature, like the source
    proto = convert_sklearn(elasticnet, initial_types=[("input", FloatTensorType([None, 10]))])
    onnx_flavor.save_model(proto, str(tmp_path / "tensor"))  # graph signature: float32 (-1, 10)
    by_columns = spark_udf(spark, str(tmp_path / "columns"), result_type="double")
    by_tensor = spark_udf(spark, str(tmp_path / "tensor"), result_type="double")
    floats = [F.col(c).cast("float") for c in cols]
    out = diabetes_sdf.select(
        "row",
        by_columns().alias("columns"),
        by_tensor(F.array(*floats)).alias("array"),
        by_tensor(*floats).alias("scalars"),
    ).toPandas()
    expected = elasticnet.predict(X)
    for col in ("columns", "array", "scalars"):
        np.testing.assert_allclose(_by_row(out, col), expected, rtol=1e-4, err_msg=col)


def test_opened_model_and_its_opening_options_reach_the_workers(spark, diabetes_sdf, diabetes, tmp_path):
    """spark_udf takes an OpenedModel; workers open their shipped copy with the same options."""
    import operator

    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    import modelfmt
    from modelfmt.errors import UnsafeModelError
    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.open import open_model
    from modelfmt.serving.spark.udf import spark_udf

    X, y = diabetes
    pipe = make_pipeline(FunctionTransformer(operator.neg), LinearRegression()).fit(X, y)
    path = str(tmp_path / "skops")
    sk_flavor.save_model(pipe, path, serialization_format="skops", input_example=X.head(3))
    with pytest.raises(UnsafeModelError, match="_operator.neg"):
        modelfmt.load_model(path)  # without the option, the shipped copy could not load either
    udf = spark_udf(spark, open_model(path, trusted_types=["_operator.neg"]))
    out = diabetes_sdf.select("row", udf().alias("p")).toPandas()
    np.testing.assert_allclose(_by_row(out, "p"), pipe.predict(X), rtol=1e-12)
