"""``models:/`` in every command: load_model, predict, serve, spark_udf, convert, generate-dockerfile and
build-docker, against (a) modelfmt's own SQLite store and (b) a real MLflow tracking server (MLflow 3.x in
its own venv, no mlflow here), predicting what the model directory (or MLflow) predicts."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import requests
from click.testing import CliRunner
from mlflow_registry_support import mlflow_registry, registry_env  # noqa: F401 - the fixture

import modelfmt
from modelfmt.cli import cli
from modelfmt.serving.testing import serving


@pytest.fixture(scope="module")
def store(tmp_path_factory, sklearn_model_path):
    """A SQLite store with model ``fraud``: version 1 (alias champion) and version 2 (Production)."""
    from modelfmt.registry.store import SqlRegistry

    base = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{base}/registry.db"
    with SqlRegistry(uri, str(base / "artifacts")) as reg:
        reg.create_model_version("fraud", sklearn_model_path, user="ana")
        reg.create_model_version("fraud", sklearn_model_path, user="ana")
        reg.set_registered_model_alias("fraud", "champion", 1)
        reg.transition_model_version_stage("fraud", 2, "Production")
    return {"uri": uri, "base": str(base)}


@pytest.fixture
def sqlite_env(store, registry_env):
    registry_env.setenv("MODELFMT_REGISTRY_URI", store["uri"])
    return registry_env


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def _expected(sklearn_model_path, X):
    return np.asarray(modelfmt.load_model(sklearn_model_path).predict(X), dtype=float).ravel()


# -- (a) modelfmt's SQLite store -----------------------------------------------------------------------
def test_load_model(sqlite_env, sklearn_model_path, diabetes):
    X = diabetes[0].head(4)
    for location, version in (("models:/fraud@champion", "1"), ("models:/fraud/Production", "2"),
                              ("models:/fraud/latest", "2"), ("models:/fraud/1", "1")):
        model = modelfmt.load_model(location)
        np.testing.assert_allclose(np.asarray(model.predict(X), dtype=float).ravel(), _expected(sklearn_model_path, X))
        opened = modelfmt.open_model(location)
        assert (opened.registered_name, opened.registered_version, opened.verified) == ("fraud", version, True)


def test_predict_command(sqlite_env, sklearn_model_path, diabetes, tmp_path):
    X = diabetes[0].head(6)
    X.to_csv(tmp_path / "in.csv", index=False)
    result = _run("predict", "models:/fraud@champion", "-i", tmp_path / "in.csv", "-o", tmp_path / "out.json")
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "out.json").read_text())["predictions"]
    np.testing.assert_allclose(np.asarray(got, dtype=float).ravel(), _expected(sklearn_model_path, X))


def test_a_missing_version_is_the_cli_s_one_line(sqlite_env, tmp_path):
    for args in (("predict", "models:/fraud/9", "-i", tmp_path / "x.csv"),
                 ("generate-dockerfile", "models:/fraud/9", "-o", tmp_path / "ctx"),
                 ("build-docker", "models:/fraud/9", "-t", "modelfmt-never-built:1"),
                 ("serve", "models:/fraud/9")):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("modelfmt: error: cannot open 'models:/fraud/9'"), args
        assert "fraud" in lines[0] and "9" in lines[0]
    result = CliRunner().invoke(cli, ["predict", "models:/nobody@champion", "-i", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and "nobody" in result.output and "Traceback" not in result.output


def test_serve(store, sklearn_model_path, diabetes):
    X = diabetes[0].head(3)
    env = {**os.environ, "MODELFMT_REGISTRY_URI": store["uri"]}
    with serving("models:/fraud/Production", env=env) as url:
        r = requests.post(url + "/invocations", json={"dataframe_split": X.to_dict(orient="split")}, timeout=30)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.asarray(r.json()["predictions"], dtype=float).ravel(),
                                   _expected(sklearn_model_path, X))
        meta = requests.get(url + "/v2/models/fraud", timeout=30)
        assert meta.status_code == 200 and meta.json()["name"] == "fraud" and meta.json()["versions"] == ["2"]


def test_spark_udf_ships_the_resolved_copy(store, sqlite_env, sklearn_model_path, diabetes, tmp_path):
    from spark_session import get_spark

    spark = get_spark()
    X = diabetes[0].head(8)
    udf = modelfmt.spark_udf(spark, "models:/fraud@champion")
    # The registry goes away: executors score the copy shipped with the job, never asking the registry.
    moved = str(tmp_path / "registry-moved")
    shutil.move(store["base"], moved)
    try:
        sdf = spark.createDataFrame(X)
        got = sdf.withColumn("p", udf(*X.columns)).select("p").toPandas()["p"].to_numpy(dtype=float)
    finally:
        shutil.move(moved, store["base"])
    np.testing.assert_allclose(got, _expected(sklearn_model_path, X), rtol=1e-6)


def test_convert(sqlite_env, sklearn_model_path, diabetes, tmp_path):
    pytest.importorskip("skl2onnx")
    out = tmp_path / "onnx"
    result = _run("convert", "models:/fraud/1", "-o", out)
    assert result.exit_code == 0, result.output
    X = diabetes[0].head(5)
    got = np.asarray(modelfmt.load_model(str(out)).predict(X), dtype=float).ravel()
    np.testing.assert_allclose(got, _expected(sklearn_model_path, X), rtol=1e-4, atol=1e-4)


def test_generate_dockerfile(sqlite_env, sklearn_model_path, tmp_path):
    ctx = tmp_path / "ctx"
    result = _run("generate-dockerfile", "models:/fraud@champion", "-o", ctx)
    assert result.exit_code == 0, result.output
    assert (ctx / "Dockerfile").is_file()
    mlmodels = [os.path.join(root, "MLmodel") for root, _, files in os.walk(ctx) if "MLmodel" in files]
    assert len(mlmodels) == 1
    with open(mlmodels[0]) as a, open(os.path.join(sklearn_model_path, "MLmodel")) as b:
        assert a.read() == b.read()


# -- (b) a real MLflow server ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow():
    return mlflow_registry()


@pytest.fixture
def tracking(mlflow, registry_env):
    registry_env.setenv("MLFLOW_TRACKING_URI", mlflow.url)
    return mlflow


def test_predict_from_mlflow(tracking, tmp_path):
    X = tracking.example()
    X.to_csv(tmp_path / "in.csv", index=False)
    for location, version in ((f"models:/{tracking.name}@champion", 1), (f"models:/{tracking.name}/Production", 2),
                              (f"runs:/{tracking.info['runs'][0]}/model", 1)):
        out = tmp_path / "out.json"
        result = _run("predict", location, "-i", tmp_path / "in.csv", "-o", out)
        assert result.exit_code == 0, result.output
        got = json.loads(out.read_text())["predictions"]
        assert got == pytest.approx(tracking.expected(version)), location


def test_serve_from_mlflow(tracking):
    X = tracking.example()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.url}
    with serving(f"models:/{tracking.name}@champion", env=env) as url:
        r = requests.post(url + "/invocations", json={"dataframe_split": X.to_dict(orient="split")}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == pytest.approx(tracking.expected(1))
        meta = requests.get(url + f"/v2/models/{tracking.name}", timeout=30).json()
        assert (meta["name"], meta["versions"]) == (tracking.name, ["1"])


def test_generate_dockerfile_from_mlflow(tracking, tmp_path):
    ctx = tmp_path / "ctx"
    result = _run("generate-dockerfile", f"models:/{tracking.name}/2", "-o", ctx)
    assert result.exit_code == 0, result.output
    assert (ctx / "Dockerfile").is_file()
    assert any("model.skops" in files for _, _, files in os.walk(ctx))

