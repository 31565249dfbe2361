"""The spark flavor with a real local SparkSession, and MLflow loading ours / us loading MLflow's."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyspark")

import spark_session  # noqa: E402

spark = spark_session.spark  # the shared session fixture, under the name the tests ask for

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))

# Runs in the MLflow venv (no modelfmt there): saves a Spark pipeline with mlflow.spark and loads ours.
_MLFLOW_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[1]").config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC").getOrCreate())
    import mlflow.pyfunc, mlflow.spark
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression
    from sklearn.datasets import load_diabetes
    ours, mlflow_dir, out = sys.argv[1:4]
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    stages = [VectorAssembler(inputCols=list(X.columns), outputCol="features"),
              LinearRegression(labelCol="target", regParam=0.1)]
    pipe = Pipeline(stages=stages).fit(spark.createDataFrame(X.assign(target=y)))
    mlflow.spark.save_model(pipe, mlflow_dir, input_example=X.head(3), pip_requirements=["pyspark"])
    result = {
        "mlflow_own": [float(v) for v in mlflow.pyfunc.load_model(mlflow_dir).predict(X.head(20))],
        "mlflow_on_ours": [float(v) for v in mlflow.pyfunc.load_model(ours).predict(X.head(20))],
        "ours_native": type(mlflow.spark.load_model(ours)).__name__,
    }
    json.dump(result, open(out, "w"))
    """
)


def _fit_pipeline(spark, X, y):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression

    stages = [VectorAssembler(inputCols=list(X.columns), outputCol="features"), LinearRegression(labelCol="target")]
    return Pipeline(stages=stages).fit(spark.createDataFrame(X.assign(target=y)))


@pytest.fixture(scope="module")
def pipeline(spark, diabetes):
    X, y = diabetes
    return _fit_pipeline(spark, X, y)


@pytest.fixture(scope="module")
def spark_model_path(tmp_path_factory, pipeline, diabetes):
    from modelfmt.flavors import spark as spark_flavor

    path = str(tmp_path_factory.mktemp("spark") / "pipeline")
    spark_flavor.save_model(pipeline, path, input_example=diabetes[0].head(3))
    return path


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory, spark_model_path):
    """Start the MLflow side early (it needs its own JVM) and collect its output in the last test."""
    if not os.path.exists(MLFLOW_PYTHON):
        if os.environ.get("CI"):
            raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv)")
        pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON}")
    base = tmp_path_factory.mktemp("mlflow_spark")
    script = base / "mlflow_spark.py"
    script.write_text(_MLFLOW_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYSPARK_PYTHON=MLFLOW_PYTHON, PYSPARK_DRIVER_PYTHON=MLFLOW_PYTHON, MLFLOW_DISABLE_TELEMETRY="true")
    out = base / "out.json"
    proc = subprocess.Popen(
        [MLFLOW_PYTHON, str(script), spark_model_path, str(base / "mlflow_model"), str(out)],
        cwd=str(base), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc, base / "mlflow_model", out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_save_writes_mlflow_layout_and_spark_block(spark_model_path, mlflow_run):
    import pyspark
    import yaml

    meta = yaml.safe_load(open(os.path.join(spark_model_path, "MLmodel")))
    assert meta["flavors"]["spark"] == {
        "pyspark_version": pyspark.__version__,
        "model_data": "sparkml",
        "model_class": "pyspark.ml.pipeline.PipelineModel",
        "code": None,
    }
    pyfunc_conf = meta["flavors"]["python_function"]
    assert pyfunc_conf["loader_module"] == "mlflow.spark" and pyfunc_conf["data"] == "sparkml"
    assert os.path.isfile(os.path.join(spark_model_path, "sparkml", "metadata", "_SUCCESS"))
    assert os.path.isdir(os.path.join(spark_model_path, "sparkml", "stages"))
    assert any(line.startswith("pyspark==") for line in open(os.path.join(spark_model_path, "requirements.txt")))
    # Inferred from the input example: named double inputs, one unnamed double output (as MLflow).
    outputs = json.loads(meta["signature"]["outputs"])
    assert outputs == [{"type": "double", "required": True}]
    assert len(json.loads(meta["signature"]["inputs"])) == 10


def test_load_model_and_pyfunc_predict(spark, spark_model_path, pipeline, diabetes):
    from pyspark.ml import PipelineModel

    import modelfmt
    from modelfmt.flavors import spark as spark_flavor

    X, _ = diabetes
    native = spark_flavor.load_model(spark_model_path)
    assert isinstance(native, PipelineModel)
    expected = pipeline.transform(spark.createDataFrame(X.head(20))).toPandas()["prediction"].to_numpy()
    model = modelfmt.load_model(spark_model_path)
    np.testing.assert_allclose(model.predict(X.head(20)), expected, rtol=1e-9)
    assert isinstance(model.get_raw_model(), PipelineModel)


def test_schema_enforced_before_spark(spark_model_path, diabetes):
    import modelfmt
    from modelfmt.errors import SchemaError

    X, _ = diabetes
    with pytest.raises(SchemaError, match="'bmi'"):
        modelfmt.load_model(spark_model_path).predict(X.drop(columns=["bmi"]).head(3))


def test_single_model_is_wrapped_and_vectors_come_from_arrays(spark, tmp_path):
    import pandas as pd
    from pyspark.ml.linalg import Vectors
    from pyspark.ml.regression import LinearRegression

    import modelfmt
    from modelfmt.flavors import spark as spark_flavor

    rows = [(Vectors.dense([float(i), float(i % 3)]), float(i % 2)) for i in range(40)]
    lr = LinearRegression(solver="normal").fit(spark.createDataFrame(rows, ["features", "label"]))
    spark_flavor.save_model(lr, str(tmp_path / "lr"))
    assert type(spark_flavor.load_model(str(tmp_path / "lr"))).__name__ == "PipelineModel"
    pdf = pd.DataFrame({"features": [[float(i), float(i % 3)] for i in range(6)]})
    expected = lr.transform(spark.createDataFrame([(Vectors.dense(v),) for v in pdf.features], ["features"]))
    got = modelfmt.load_model(str(tmp_path / "lr")).predict(pdf)
    np.testing.assert_array_equal(got, expected.toPandas()["prediction"].to_numpy())


def test_transformer_pipeline_predicts_its_output_column(spark, tmp_path):
    import pandas as pd
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import Bucketizer

    import modelfmt

    pdf = pd.DataFrame({"x": [0.5, 1.5, 2.5, 0.1]})
    pipe = Pipeline(stages=[Bucketizer(splits=[0.0, 1.0, 2.0, 3.0], inputCol="x", outputCol="bucket")])
    model = pipe.fit(spark.createDataFrame(pdf))
    modelfmt.save_model(model, str(tmp_path / "b"), input_example=pdf)  # type dispatch picks the spark flavor
    np.testing.assert_array_equal(modelfmt.load_model(str(tmp_path / "b")).predict(pdf), [0.0, 1.0, 2.0, 0.0])


def test_dfs_tmpdir_round_trip(spark, tmp_path):
    """The cluster path: Spark writes/reads a temporary copy on the (here: local) default filesystem."""
    import pandas as pd
    from pyspark.ml.feature import Bucketizer

    from modelfmt.flavors import spark as spark_flavor

    dfs = tmp_path / "dfs"
    bucketizer = Bucketizer(splits=[0.0, 1.0, 2.0], inputCol="x", outputCol="bucket")
    spark_flavor.save_model(bucketizer, str(tmp_path / "m"), dfs_tmpdir=str(dfs))
    assert os.path.isdir(tmp_path / "m" / "sparkml" / "stages") and not any(dfs.iterdir())  # moved, not copied
    loaded = spark_flavor.load_model(str(tmp_path / "m"), dfs_tmpdir=str(dfs))
    out = loaded.transform(spark.createDataFrame(pd.DataFrame({"x": [0.5, 1.5]}))).toPandas()
    assert out["bucket"].tolist() == [0.0, 1.0]
    # The copy stays while the model is alive (ALS models read their factors from it lazily) ...
    assert len(list(dfs.iterdir())) == 1
    del loaded
    gc.collect()
    assert list(dfs.iterdir()) == []  # ... and goes with it


def test_dfs_tmpdir_copy_is_removed_when_loading_fails(spark, tmp_path):
    from pyspark.ml.feature import Bucketizer

    from modelfmt.errors import ModelFormatError
    from modelfmt.flavors import spark as spark_flavor

    dfs = tmp_path / "dfs"
    bucketizer = Bucketizer(splits=[0.0, 1.0, 2.0], inputCol="x", outputCol="bucket")
    spark_flavor.save_model(bucketizer, str(tmp_path / "m"), dfs_tmpdir=str(dfs))
    shutil.rmtree(tmp_path / "m" / "sparkml" / "metadata")  # Spark cannot read it now
    with pytest.raises(ModelFormatError, match="cannot load the Spark model"):  # verify=False: past the digests
        spark_flavor.load_model(str(tmp_path / "m"), dfs_tmpdir=str(dfs), verify=False)
    assert list(dfs.iterdir()) == []


def test_refuses_what_it_cannot_save_or_load(spark_model_path, tmp_path):
    import shutil

    import yaml

    from modelfmt.errors import FlavorError, ModelFormatError
    from modelfmt.flavors import spark as spark_flavor

    with pytest.raises(FlavorError, match="pyspark.ml"):
        spark_flavor.save_model(object(), str(tmp_path / "x"))
    bad = tmp_path / "bad"
    shutil.copytree(spark_model_path, bad)
    meta = yaml.safe_load(open(bad / "MLmodel"))
    meta["flavors"]["spark"]["model_class"] = "os.system"
    yaml.safe_dump(meta, open(bad / "MLmodel", "w"))
    # verify=False: the flavor's own refusals, past the digest check (which names the edited files first)
    with pytest.raises(ModelFormatError, match="not a pyspark.ml class"):
        spark_flavor.load_model(str(bad), verify=False)
    shutil.rmtree(bad / "sparkml")
    with pytest.raises(ModelFormatError, match="missing"):
        spark_flavor.load_model(str(bad), verify=False)


def test_mlflow_compatibility_both_ways(mlflow_run, spark_model_path, diabetes):
    """MLflow saved a Spark pipeline we load; MLflow loaded ours and predicted as we do."""
    import modelfmt

    proc, mlflow_model, out = mlflow_run
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-4000:]
    result = json.loads(out.read_text())
    X, _ = diabetes
    ours_on_mlflow = modelfmt.load_model(str(mlflow_model)).predict(X.head(20))
    np.testing.assert_allclose(ours_on_mlflow, result["mlflow_own"], rtol=1e-9)
    ours = modelfmt.load_model(spark_model_path).predict(X.head(20))
    np.testing.assert_allclose(result["mlflow_on_ours"], ours, rtol=1e-9)
    assert result["ours_native"] == "PipelineModel"
