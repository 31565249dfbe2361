"""``spark_udf`` on a real ``local[2]`` SparkSession: batch, streaming, shipping, result types, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("pyspark")

import spark_session  # noqa: E402

spark = spark_session.spark  # the shared session fixture, under the name the tests ask for

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


def test_scores_after_the_original_directory_is_gone(
    spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path
):
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
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

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


def test_streaming_file_source_into_memory_sink(
    spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path
):
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

    from modelfmt.errors import SchemaError
    from modelfmt.serving.spark.udf import spark_udf

    cols = list(diabetes[0].columns)
    udf = spark_udf(spark, sklearn_model_path)
    wrong_type = diabetes_sdf.withColumn("age", F.concat(F.lit("y"), F.col("age").cast("string")))
    message = _job_error(wrong_type.select(udf()))
    assert "SchemaError" in message and "column 'age': expected double" in message
    message = _job_error(diabetes_sdf.select(udf(F.struct(*[c for c in cols if c != "bmi"]))))
    assert "SchemaError" in message and "missing required input column(s): 'bmi'" in message
    # Called with no arguments, a missing column is caught by Spark when the plan is built (as with
    # MLflow's UDF); udf.on(df) looks at the DataFrame first and says it in modelfmt's words.
    with pytest.raises(AnalysisException, match="bmi"):
        diabetes_sdf.drop("bmi").select(udf())
    with pytest.raises(SchemaError, match=r"spark_udf\(.*\): missing required input column\(s\): 'bmi'; model expects"):
        diabetes_sdf.drop("bmi").select(udf.on(diabetes_sdf.drop("bmi")))


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
    sk_flavor.save_model(pipe, path, serialization_format="skops", input_example=X.head(3),
                         trusted_types=["_operator.neg"])
    with pytest.raises(UnsafeModelError, match="_operator.neg"):
        modelfmt.load_model(path)  # without the option, the shipped copy could not load either
    udf = spark_udf(spark, open_model(path, trusted_types=["_operator.neg"]))
    out = diabetes_sdf.select("row", udf().alias("p")).toPandas()
    np.testing.assert_allclose(_by_row(out, "p"), pipe.predict(X), rtol=1e-12)


def _save_optional_input_model(path):
    from modelfmt.flavors import pyfunc
    from modelfmt.signature import ColSpec, ModelSignature, Schema

    class AddOptional(pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"] + (model_input["z"] if "z" in model_input else 0.0)

    signature = ModelSignature(
        Schema([ColSpec("double", "x"), ColSpec("double", "z", required=False)]), Schema([ColSpec("double")])
    )
    import cloudpickle

    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # workers cannot import this test module
    try:
        pyfunc.save_model(path, python_model=AddOptional(), signature=signature)
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def test_on_df_scores_the_signature_columns_it_finds(
    spark, sklearn_model_path, diabetes_sdf, diabetes, elasticnet, tmp_path
):
    """udf.on(df): names resolved as Spark does (case-insensitively here), optional inputs left out when
    absent."""
    from modelfmt.serving.spark.udf import spark_udf

    udf = spark_udf(spark, sklearn_model_path)
    upper = diabetes_sdf.toDF(*[c.upper() for c in diabetes_sdf.columns])
    out = upper.select("ROW", udf.on(upper).alias("p")).toPandas()
    np.testing.assert_allclose(out.sort_values("ROW")["p"].to_numpy(), elasticnet.predict(diabetes[0]), rtol=1e-12)

    _save_optional_input_model(str(tmp_path / "optional"))
    add = spark_udf(spark, str(tmp_path / "optional"))
    both = spark.createDataFrame([(1.0, 10.0), (2.0, 20.0)], "x double, z double")
    only_x = both.select("x")
    assert [r.p for r in both.select(add.on(both).alias("p")).collect()] == [11.0, 22.0]
    assert [r.p for r in only_x.select(add.on(only_x).alias("p")).collect()] == [1.0, 2.0]


# -- the workers' interpreter and noise: each in its own process, with its own SparkSession ---------
_SESSION_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    import modelfmt
    from modelfmt.errors import DeployError
    mode, model = sys.argv[1], sys.argv[2]
    if mode == "ours":
        from modelfmt.flavors.spark import spark_session
        spark = spark_session()
    else:
        from pyspark.sql import SparkSession
        spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
                 .config("spark.driver.bindAddress", "127.0.0.1").config("spark.ui.enabled", "false")
                 .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
                 .getOrCreate())
    cols = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
    df = spark.createDataFrame([tuple(float(i + j) / 100 for j in range(10)) for i in range(5)], cols)
    start = time.monotonic()
    try:
        predict = modelfmt.spark_udf(spark, model)
        rows = df.withColumn("prediction", predict()).collect()
        out = {"type": None, "predictions": [r.prediction for r in rows]}
    except Exception as e:
        out = {"type": type(e).__name__, "message": str(e)}
    out["seconds"] = time.monotonic() - start
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def _python_without_modelfmt(tmp_path):
    """A Python 3 on this machine, outside the venv, that cannot import modelfmt (None if there is none)."""
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    for candidate in ("/usr/bin/python3", shutil.which("python3", path=path)):
        if candidate and os.path.exists(candidate) and os.path.abspath(candidate) != sys.executable:
            probe = subprocess.run([candidate, "-c", "import modelfmt.serving"], cwd=tmp_path, capture_output=True)
            if probe.returncode != 0:
                return candidate
    return None


def _run_session_script(tmp_path, mode, model, env):
    script = tmp_path / "job.py"
    script.write_text(_SESSION_SCRIPT)
    done = subprocess.run([sys.executable, str(script), mode, model], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    results = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert results, done.stdout + done.stderr
    return json.loads(results[-1][len("RESULT "):]), done.stderr


def test_workers_interpreter_without_modelfmt_fails_at_once_in_one_line(sklearn_model_path, tmp_path):
    """The README quickstart run as .venv/bin/python job.py: the workers' python3 has no modelfmt."""
    bad = _python_without_modelfmt(tmp_path)
    if bad is None:
        pytest.skip("no Python outside the venv that lacks modelfmt")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PYSPARK_PYTHON"] = bad
    out, stderr = _run_session_script(tmp_path, "user", sklearn_model_path, env)
    assert out["type"] == "DeployError", out
    message = out["message"]
    assert "\n" not in message
    assert message.startswith(f"spark_udf: Spark's Python workers run {bad!r}") and "cannot import" in message
    assert "modelfmt" in message and f"set PYSPARK_PYTHON={sys.executable} in the environment" in message
    assert out["seconds"] < 30  # the interpreter is probed on the driver; no job ran
    assert "PythonException" not in stderr and "Py4JJavaError" not in stderr


def test_session_modelfmt_starts_runs_workers_with_this_python_and_no_pandas3_noise(
    sklearn_model_path, elasticnet, tmp_path
):
    """PYSPARK_PYTHON unset and a python3 without modelfmt first on PATH: modelfmt's own session still
    scores (its workers run this interpreter), and PySpark's pandas-3 FutureWarnings stay quiet."""
    bad = _python_without_modelfmt(tmp_path)
    if bad is None:
        pytest.skip("no Python outside the venv that lacks modelfmt")
    shadow = tmp_path / "bin"
    shadow.mkdir()
    os.symlink(bad, shadow / "python3")
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYSPARK_PYTHON")}
    env["PATH"] = os.pathsep.join([str(shadow), env.get("PATH", "")])
    start = time.monotonic()
    out, stderr = _run_session_script(tmp_path, "ours", sklearn_model_path, env)
    assert out["type"] is None, out
    assert len(out["predictions"]) == 5, time.monotonic() - start
    assert "does not yet fully support pandas" not in stderr, stderr
    assert "Traceback" not in stderr, stderr


def _save_in_place_model(path):
    import cloudpickle

    from modelfmt.flavors import pyfunc
    from modelfmt.signature import ColSpec, ModelSignature, Schema

    class InPlace(pyfunc.PythonModel):
        """Writes into its input (the Arrow path must hand it writable memory) and reads every type."""

        def predict(self, context, model_input, params=None):
            model_input.iloc[0, 0] = model_input.iloc[0, 0]  # in place: fails on read-only arrays
            n = model_input["n"].fillna(-1).astype("int64")
            return (n * 10 + model_input["s"].str.len().fillna(0).astype("int64")
                    + model_input["b"].astype(bool).astype("int64") + model_input["x"].astype("int64") * 0)

    signature = ModelSignature(
        Schema([ColSpec("double", "x"), ColSpec("double", "n"), ColSpec("string", "s"),
                ColSpec("boolean", "b")]),
        Schema([ColSpec("long")]),
    )
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        pyfunc.save_model(path, python_model=InPlace(), signature=signature)
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def test_arrow_path_scores_as_the_pandas_path(spark, tmp_path, sklearn_model_path):
    """Named scalar columns and a scalar result go through arrow_udf (no pandas conversion by Spark);
    Column objects through the pandas UDF: both give the same answers, nulls and in-place writes included."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from modelfmt.serving.spark import udf as udf_module
    from modelfmt.serving.spark.udf import spark_udf

    _save_in_place_model(str(tmp_path / "inplace"))
    udf = spark_udf(spark, str(tmp_path / "inplace"))
    assert udf.returnType == T.LongType()
    schema = udf.metadata.get_input_schema()
    assert udf_module._arrow_path(schema, T.LongType()) == hasattr(F, "arrow_udf")
    assert not udf_module._arrow_path(schema, T.ArrayType(T.LongType()))
    assert not udf_module._arrow_path(schema, T.TimestampType())
    rows = [(1.5, 3.0, "abc", True), (2.0, None, None, False), (0.0, 7.0, "", True)] * 40
    sdf = spark.createDataFrame(rows, "x double, n double, s string, b boolean").repartition(3)
    out = sdf.select(udf("x", "n", "s", "b").alias("arrow"),
                     udf(*[F.col(c) for c in ("x", "n", "s", "b")]).alias("pandas")).toPandas()
    assert out["arrow"].tolist() == out["pandas"].tolist()
    assert sorted(set(out["arrow"])) == [-10, 34, 71]
    # The sklearn model: floats in one 2-D block, the same numbers as the pandas path.
    sk = spark_udf(spark, sklearn_model_path, result_type="double")
    cols = sk.metadata.get_input_schema().input_names()
    data = spark.range(300).select(*[(F.rand(seed=i) - 0.5).alias(c) for i, c in enumerate(cols)])
    both = data.select(sk(*cols).alias("a"), sk(*[F.col(c) for c in cols]).alias("p")).toPandas()
    np.testing.assert_array_equal(both["a"], both["p"])


def test_pickle_refused_on_the_driver_and_the_drivers_refusals_reach_the_workers(
    spark, sklearn_model_path, tmp_path, monkeypatch
):
    from modelfmt.errors import PickleRefusedError
    from modelfmt.open import open_model
    from modelfmt.serving.spark import udf as udf_module

    # A pickled model is refused once, here, before any task starts.
    with pytest.raises(PickleRefusedError, match="pickle is not allowed"):
        udf_module.spark_udf(spark, sklearn_model_path, allow_pickle=False)
    # Executors on other machines may not see the driver's variables: what they say is shipped.
    key = tmp_path / "k.pub"
    key.write_text("not read here")
    opened = open_model(sklearn_model_path)
    monkeypatch.setenv("MODELFMT_ALLOW_PICKLE", "false")
    monkeypatch.setenv("MODELFMT_PUBLIC_KEY", str(key))
    shipped = udf_module._worker_options(opened)
    assert shipped["allow_pickle"] is False and shipped["public_key"] == [str(key)]
    monkeypatch.delenv("MODELFMT_ALLOW_PICKLE")
    monkeypatch.delenv("MODELFMT_PUBLIC_KEY")
    assert "allow_pickle" not in udf_module._worker_options(opened)
