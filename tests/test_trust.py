"""skops trust: stock models (saved by real MLflow 3.18 and by modelfmt) load, predict, serve and score
in Spark with no flags; other types need the caller's trust (trusted_types=, --trust-type,
MODELFMT_TRUSTED_TYPES), never the model's own MLmodel; crafted trees are refused."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from spark_session import spark  # noqa: F401 - the shared session fixture

from modelfmt import Model, trust
from modelfmt.errors import UnsafeModelError
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.integrity import record_digests

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "mlflow_scripts" / "trust_models.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))
MODELFMT = [sys.executable, "-m", "modelfmt"]
CUSTOM = "trust_custom_est.Doubler"
CUSTOM_CODE = '''
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class Doubler(RegressorMixin, BaseEstimator):
    """A user's estimator class: outside every default trust."""

    def fit(self, X, y=None):
        self.scale_ = 2.0
        return self

    def predict(self, X):
        return np.asarray(X, dtype=float).sum(axis=1) * self.scale_
'''


def _needs_mlflow():
    if not os.path.exists(MLFLOW_PYTHON):
        pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)")


def _mlflow(*args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.run([MLFLOW_PYTHON, str(SCRIPT), *args], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def mlflow_models(tmp_path_factory):
    """RandomForest, HistGradientBoosting and an encoder/imputer pipeline saved by mlflow.sklearn (skops)."""
    _needs_mlflow()
    out = tmp_path_factory.mktemp("mlflow-trust")
    _mlflow("save", str(out))
    return out, json.loads((out / "mlflow_results.json").read_text())


STOCK = ["rf", "hgb", "pipe"]


# -- the reviewed list ----------------------------------------------------------------------------
def test_every_reviewed_type_exists_and_says_why():
    for name, why in trust.REVIEWED_TYPES:
        module, _, attr = name.rpartition(".")
        assert isinstance(getattr(importlib.import_module(module), attr), type), name
        assert len(why) > 40, name
    names = set(trust.reviewed_type_names())
    assert not names & {"functools.partial", "builtins.function", "builtins.eval", "builtins.exec"}
    assert {"sklearn.tree._tree.Tree", "numpy.dtype",
            "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"} <= names


def test_environment_names_are_split_on_commas_and_whitespace(monkeypatch):
    monkeypatch.setenv(trust.TRUSTED_TYPES_ENV, " a.B, c.D\n e.F,,a.B ")
    assert trust.env_trusted_types() == ["a.B", "c.D", "e.F", "a.B"]
    assert trust.trusted_types(["x.Y", "a.B"])[-4:] == ["x.Y", "a.B", "c.D", "e.F"]


# -- MLflow's stock models: no flags ----------------------------------------------------------------
@pytest.mark.parametrize("name", STOCK)
def test_mlflow_stock_models_load_and_predict_as_mlflow_with_no_flags(mlflow_models, name):
    out, results = mlflow_models
    assert results[name]["untrusted"], "MLflow needed a trust list for this model: the case at hand"
    # MLflow wrote the list in MLmodel; modelfmt loads without reading it.
    assert Model.load(out / name).flavors["sklearn"]["skops_trusted_types"] == results[name]["untrusted"]
    data = pd.read_parquet(out / f"{name}.parquet")
    preds = pyfunc.load_model(out / name).predict(data)
    np.testing.assert_allclose(np.asarray(preds, dtype=float), results[name]["predictions"], rtol=1e-12)
    assert sk_flavor.load_model(out / name) is not None


def test_mlflow_stock_models_serve_with_no_flags(mlflow_models):
    import requests

    from modelfmt.serving.testing import serving

    out, results = mlflow_models
    for name in STOCK:
        data = pd.read_parquet(out / f"{name}.parquet")
        body = {"dataframe_split": json.loads(data.to_json(orient="split", index=False))}
        with serving(str(out / name), workers=1) as url:
            resp = requests.post(url + "/invocations", json=body, timeout=30)
        assert resp.status_code == 200, (name, resp.text)
        np.testing.assert_allclose(np.asarray(resp.json()["predictions"], dtype=float), results[name]["predictions"])


def test_mlflow_stock_models_score_in_spark_with_no_flags(mlflow_models, spark):  # noqa: F811
    from modelfmt.serving.spark.udf import spark_udf

    out, results = mlflow_models
    for name in ("rf", "hgb"):
        data = pd.read_parquet(out / f"{name}.parquet")
        sdf = spark.createDataFrame(data.assign(row=np.arange(len(data))))
        udf = spark_udf(spark, str(out / name))
        got = sdf.select("row", udf("a", "b", "c", "d").alias("p")).toPandas().sort_values("row")["p"]
        np.testing.assert_allclose(got.to_numpy(), results[name]["predictions"])


# -- modelfmt's own skops saves ---------------------------------------------------------------------
def _stock_models():
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["a", "b", "c"])
    mixed = pd.DataFrame({"city": pd.Series(rng.choice(["x", "y", "z"], 80), dtype=object),
                          "size": rng.normal(size=80)})
    mixed.loc[[2, 9], "city"] = None
    mixed.loc[[4], "size"] = np.nan
    prep = ColumnTransformer([
        ("cat", Pipeline([("imp", SimpleImputer(strategy="constant", fill_value="missing")),
                          ("oh", OneHotEncoder(handle_unknown="ignore"))]), ["city"]),
        ("num", Pipeline([("imp", SimpleImputer()), ("sc", StandardScaler())]), ["size"]),
    ])
    pipe = Pipeline([("prep", prep), ("clf", LogisticRegression())])
    pipe.fit(mixed, (mixed["city"] == "y") | (mixed["size"] > 0))
    return {"rf": (RandomForestRegressor(n_estimators=5, random_state=0).fit(X, X["a"] * 3), X.head(10)),
            "pipe": (pipe, mixed.head(10))}


def test_modelfmt_skops_saves_load_here_with_no_flags_and_in_mlflow(tmp_path):
    spec = {}
    ours = {}
    for name, (est, data) in _stock_models().items():
        path = tmp_path / name
        sk_flavor.save_model(est, str(path), serialization_format="skops")
        written = Model.load(path).flavors["sklearn"]["skops_trusted_types"]
        assert written and set(written) <= set(trust.reviewed_type_names())  # what MLflow's loader needs
        ours[name] = np.asarray(pyfunc.load_model(path).predict(data), dtype=float)
        np.testing.assert_allclose(ours[name], np.asarray(est.predict(data), dtype=float))
        data.to_parquet(tmp_path / f"{name}.parquet")
        spec[name] = {"path": str(path), "input": str(tmp_path / f"{name}.parquet")}
    _needs_mlflow()
    (tmp_path / "spec.json").write_text(json.dumps({"models": spec}))
    _mlflow("load", str(tmp_path / "spec.json"))
    results = json.loads((tmp_path / "mlflow_results.json").read_text())
    for name in spec:
        assert "error" not in results[name], results[name]
        np.testing.assert_allclose(np.asarray(results[name]["predictions"], dtype=float), ours[name])


# -- a user's own class: the caller's trust, never the model's --------------------------------------
@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A skops model of a custom estimator class, its module shipped in code/ (so workers find it)."""
    base = tmp_path_factory.mktemp("custom")
    src = base / "trust_custom_est.py"
    src.write_text(textwrap.dedent(CUSTOM_CODE))
    sys.path.insert(0, str(base))
    try:
        module = importlib.import_module("trust_custom_est")
        est = module.Doubler().fit(np.zeros((2, 2)))
        path = base / "model"
        X = pd.DataFrame({"a": [1.0, 2.0], "b": [0.5, 1.0]})
        with pytest.raises(UnsafeModelError, match=CUSTOM):
            sk_flavor.save_model(est, str(path), serialization_format="skops", code_paths=[str(src)])
        sk_flavor.save_model(est, str(path), serialization_format="skops", code_paths=[str(src)],
                             trusted_types=[CUSTOM], input_example=X)
    finally:
        sys.path.remove(str(base))
        sys.modules.pop("trust_custom_est", None)
    return path, X


@pytest.fixture
def _clean_sys_path(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv(trust.TRUSTED_TYPES_ENV, raising=False)
    yield
    sys.modules.pop("trust_custom_est", None)


def test_custom_class_needs_the_callers_trust_not_the_models(custom_model, monkeypatch, _clean_sys_path):
    path, X = custom_model
    # The model lists its type in MLmodel (for MLflow): that is the maker's word, not the caller's trust.
    assert Model.load(path).flavors["sklearn"]["skops_trusted_types"] == [CUSTOM]
    with pytest.raises(UnsafeModelError) as info:
        pyfunc.load_model(path)
    assert CUSTOM in info.value.message and "--trust-type" in info.value.message
    np.testing.assert_allclose(pyfunc.load_model(path, trusted_types=[CUSTOM]).predict(X), [3.0, 6.0])
    monkeypatch.setenv(trust.TRUSTED_TYPES_ENV, f"other.Type, {CUSTOM}")
    np.testing.assert_allclose(sk_flavor.load_model(path).predict(X), [3.0, 6.0])


def test_editing_mlmodels_trust_list_grants_nothing(custom_model, tmp_path, _clean_sys_path):
    path, _ = custom_model
    copy = tmp_path / "m"
    shutil.copytree(path, copy)
    meta = Model.load(copy)
    meta.flavors["sklearn"]["skops_trusted_types"] = [CUSTOM, "builtins.eval", "functools.partial"]
    meta.save(copy)
    record_digests(copy)  # even with the edit sealed, the model's own list is not read
    with pytest.raises(UnsafeModelError, match=CUSTOM):
        sk_flavor.load_model(copy)


def test_cli_trust_type_and_environment(custom_model, tmp_path, _clean_sys_path):
    path, X = custom_model
    body = json.dumps({"dataframe_split": json.loads(X.to_json(orient="split", index=False))}).encode()
    env = {k: v for k, v in os.environ.items() if k != trust.TRUSTED_TYPES_ENV}
    refused = subprocess.run([*MODELFMT, "predict", str(path), "-i", "-"], input=body, capture_output=True,
                             env=env, timeout=120)
    assert refused.returncode == 2
    assert CUSTOM in refused.stderr.decode() and refused.stderr.decode().startswith("modelfmt: error:")
    for extra, run_env in (([f"--trust-type={CUSTOM}", "--trust-type", "x.Y"], env),
                           ([], {**env, trust.TRUSTED_TYPES_ENV: CUSTOM})):
        ok = subprocess.run([*MODELFMT, "predict", str(path), "-i", "-", *extra], input=body,
                            capture_output=True, env=run_env, timeout=120)
        assert ok.returncode == 0, ok.stderr.decode()
        assert json.loads(ok.stdout) == {"predictions": [3.0, 6.0]}
    verify = subprocess.run([*MODELFMT, "verify", str(path), "--trust-type", CUSTOM], capture_output=True,
                            env=env, timeout=120)
    assert verify.returncode == 0, verify.stderr.decode()


def test_served_custom_model_with_trust_type(custom_model, _clean_sys_path):
    import requests

    from modelfmt.serving.testing import serving

    path, X = custom_model
    body = {"dataframe_split": json.loads(X.to_json(orient="split", index=False))}
    with serving(str(path), workers=1, trust_type=CUSTOM) as url:
        resp = requests.post(url + "/invocations", json=body, timeout=30)
    assert resp.status_code == 200 and resp.json() == {"predictions": [3.0, 6.0]}


def test_spark_workers_get_the_drivers_trust(custom_model, spark, monkeypatch, _clean_sys_path):  # noqa: F811
    """Trust from the driver's MODELFMT_TRUSTED_TYPES reaches workers whose environment lacks it."""
    from modelfmt.serving.spark.udf import spark_udf

    path, X = custom_model
    monkeypatch.setenv(trust.TRUSTED_TYPES_ENV, CUSTOM)
    udf = spark_udf(spark, str(path), trusted_types=["unused.Name"])
    got = spark.createDataFrame(X).select(udf("a", "b").alias("p")).toPandas()["p"]
    np.testing.assert_allclose(sorted(got), [3.0, 6.0])


def test_every_loading_command_takes_trust_type():
    import click

    from modelfmt.cli import TRUST_COMMANDS, cli

    ctx = click.Context(cli)
    for name in sorted(TRUST_COMMANDS):
        command = cli.get_command(ctx, name)
        assert any("--trust-type" in p.opts for p in command.params), name


def test_build_context_bakes_trusted_types_into_the_image(tmp_path):
    from modelfmt.errors import DeployError
    from modelfmt.serving.docker.context import Target, render_dockerfile

    target = Target("python:3.12-slim", "3.12")
    assert 'MODELFMT_TRUSTED_TYPES=""' in render_dockerfile(target)
    assert f'MODELFMT_TRUSTED_TYPES="{CUSTOM},a.B"' in render_dockerfile(target, trusted_types=[CUSTOM, "a.B"])
    with pytest.raises(DeployError, match="not a type name"):
        render_dockerfile(target, trusted_types=['x" \\\nRUN evil'])
    # generate_dockerfile(trusted_types=) and --trust-type reach the rendering (checked before any wheel).
    from modelfmt.serving.docker.build import generate_dockerfile

    model = tmp_path / "model"
    sk_flavor.save_model(_forest()[0], str(model), serialization_format="skops")
    with pytest.raises(DeployError, match="not a type name: 'a b'"):
        generate_dockerfile(str(model), str(tmp_path / "ctx"), "python:3.12-slim", trusted_types=["a b"])
    cli = subprocess.run([*MODELFMT, "generate-dockerfile", str(model), "-o", str(tmp_path / "ctx2"),
                          "--base-image", "python:3.12-slim", "--trust-type", "a;b"], capture_output=True, timeout=120)
    assert cli.returncode == 2 and "not a type name: 'a;b'" in cli.stderr.decode()
    plain = tmp_path / "Dockerfile.template"
    plain.write_text("FROM {{ base_image }}\n")
    with pytest.raises(DeployError, match="trusted_types"):
        render_dockerfile(target, str(plain), trusted_types=[CUSTOM])


# -- trusted types, checked contents ----------------------------------------------------------------
def _forest():
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    return RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, X[:, 0] * X[:, 1] > 0), X


def _tamper_tree(tree, **fields):
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    for field, (i, value) in fields.items():
        if field == "max_depth":
            state[field] = value
        else:
            nodes[field][i] = value
    state["nodes"] = nodes
    tree.__setstate__(state)


@pytest.mark.parametrize("tamper, why", [
    ({"left_child": (0, 10**6)}, "out of range"),
    ({"left_child": (1, 0)}, "before its parent"),
    ({"feature": (0, 7)}, "feature 7 of 3"),
    ({"max_depth": (None, 1)}, "max_depth"),
])
def test_crafted_tree_is_refused_before_predict(tmp_path, tamper, why):
    forest, X = _forest()
    internal = next(i for i in range(forest.estimators_[1].tree_.node_count)
                    if i and forest.estimators_[1].tree_.children_left[i] != -1)
    if tamper.get("left_child") == (1, 0):
        tamper = {"left_child": (internal, 0)}
    _tamper_tree(forest.estimators_[1].tree_, **tamper)
    sk_flavor.save_model(forest, str(tmp_path / "m"), serialization_format="skops")
    with pytest.raises(UnsafeModelError, match="not a well-formed tree") as info:
        sk_flavor.load_model(tmp_path / "m")
    assert why in info.value.message and "estimators_[1].tree_" in info.value.message


def test_crafted_histogram_predictor_is_refused(tmp_path):
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2))
    hgb = HistGradientBoostingRegressor(max_iter=2).fit(X, X[:, 0])
    nodes = hgb._predictors[1][0].nodes
    nodes["feature_idx"][0] = 5
    sk_flavor.save_model(hgb, str(tmp_path / "m"), serialization_format="skops")
    with pytest.raises(UnsafeModelError, match="feature outside the 2 inputs"):
        sk_flavor.load_model(tmp_path / "m")
