"""``modelfmt convert``: real sklearn models to ONNX with skl2onnx, checked, scored in-line, by the CLI,
over HTTP and by MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import modelfmt
from modelfmt.errors import ConversionError, SchemaError
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.flavors.onnx.convert import convert_sklearn_to_onnx
from modelfmt.model import Model

pytest.importorskip("skl2onnx")

MODELFMT = [sys.executable, "-m", "modelfmt"]
MLFLOW_PYTHON = os.environ.get(
    "MODELFMT_MLFLOW_PYTHON",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", ".venv-mlflow", "bin", "python"),
)


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*MODELFMT, *args], input=stdin, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def sk_models(tmp_path_factory, sklearn_model_path, diabetes):
    """Saved sklearn models: the diabetes ElasticNet, a scaler+LogisticRegression answering
    ``predict_proba``, and a RandomForest (each with a 3-row input example)."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = diabetes
    base = tmp_path_factory.mktemp("convert")
    lr = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, (y > 140).astype(int))
    rf = RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0).fit(X, y)
    sk_flavor.save_model(lr, str(base / "lr"), input_example=X.head(3), pyfunc_predict_fn="predict_proba")
    sk_flavor.save_model(rf, str(base / "rf"), input_example=X.head(3))
    return {"en": sklearn_model_path, "lr": str(base / "lr"), "rf": str(base / "rf")}


@pytest.fixture(scope="module")
def converted(sk_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("onnx_out")
    return {
        name: (convert_sklearn_to_onnx(path, str(base / name)), str(base / name)) for name, path in sk_models.items()
    }


def _sklearn_answer(path: str, X: pd.DataFrame):
    return modelfmt.load_model(path).predict(X)


def _column(frame: pd.DataFrame) -> np.ndarray:
    """The one output column of a converted model's DataFrame answer, as an array (rows of lists stacked)."""
    assert isinstance(frame, pd.DataFrame) and len(frame.columns) == 1, frame
    return np.asarray(frame.iloc[:, 0].tolist())


@pytest.mark.parametrize("name, dtype", [("en", "double"), ("lr", "double"), ("rf", "float")])
def test_converted_model_answers_like_sklearn(name, dtype, sk_models, converted, diabetes):
    meta, path = converted[name]
    X = diabetes[0].iloc[100:160]
    want = _sklearn_answer(sk_models[name], X)
    frame = modelfmt.load_model(path).predict(X)  # a DataFrame: a column per graph output, as in MLflow
    assert list(frame.columns) == ["probabilities" if name == "lr" else "variable"] and frame.index.equals(X.index)
    got = _column(frame)  # [N, 2] probabilities: one list per row
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    check = meta.metadata["onnx_conversion"]
    assert check["passed"] and check["rows"] == 3 and check["data"] == "input_example" and check["input_dtype"] == dtype
    assert check["max_abs_diff"] <= 1e-4 and check["max_rel_diff"] <= 1e-5 and check["mismatched"] == 0
    assert check["from_model_uuid"] == Model.load(sk_models[name]).model_uuid
    saved = Model.load(path)
    assert saved.metadata == meta.metadata and "onnx" in saved.flavors and "sklearn" not in saved.flavors
    assert saved.get_input_schema() == Model.load(sk_models[name]).get_input_schema()
    assert os.path.isfile(os.path.join(path, "serving_input_example.json"))


def test_graph_takes_one_stacked_input_and_answers_one_output(converted):
    session = modelfmt.load_model(converted["lr"][1]).get_raw_model()
    (inp,) = session.get_inputs()
    assert inp.name == "input" and inp.shape[1] == 10 and inp.type == "tensor(double)"
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    session = modelfmt.load_model(converted["en"][1]).get_raw_model()
    assert [len(o.shape) for o in session.get_outputs()] == [1]  # [N], as sklearn's predict


def test_converted_model_checks_input_like_the_original(converted, diabetes):
    pm = modelfmt.load_model(converted["en"][1])
    with pytest.raises(SchemaError, match="missing required input column"):
        pm.predict(diabetes[0].head(2).drop(columns=["s1"]))


def test_string_columns_become_one_input_per_column(tmp_path):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], 200), "size": rng.normal(size=200)})
    y = ((df["color"] == "red") ^ (df["size"] > 0)).astype(int)
    pipe = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(), ["color"]), ("num", StandardScaler(), ["size"])])),
        ("clf", LogisticRegression()),
    ]).fit(df, y)  # fmt: skip
    sk_flavor.save_model(pipe, str(tmp_path / "sk"), input_example=df.head(5))
    convert_sklearn_to_onnx(str(tmp_path / "sk"), str(tmp_path / "onnx"), data=df)
    pm = modelfmt.load_model(str(tmp_path / "onnx"))
    assert [i.name for i in pm.get_raw_model().get_inputs()] == ["color", "size"]
    np.testing.assert_array_equal(_column(pm.predict(df.head(30))), pipe.predict(df.head(30)))


def test_tree_classifier_with_string_labels(tmp_path):
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True, as_frame=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, labels)
    sk_flavor.save_model(clf, str(tmp_path / "sk"), input_example=X.head(3))
    meta = convert_sklearn_to_onnx(str(tmp_path / "sk"), str(tmp_path / "onnx"), data=X)
    assert meta.metadata["onnx_conversion"]["input_dtype"] == "float"  # sklearn's trees compare float32
    got = modelfmt.load_model(str(tmp_path / "onnx")).predict(X)
    assert list(got.columns) == ["label"] and list(got["label"]) == list(clf.predict(X))
    assert meta.get_output_schema().to_dict() == [{"type": "string", "required": True}]


# -- refusals -----------------------------------------------------------------------------------
def test_disagreement_beyond_tolerance_writes_nothing(sk_models, tmp_path):
    out = tmp_path / "strict"
    with pytest.raises(ConversionError, match=r"max abs diff .*max rel diff .*nothing written") as e:
        convert_sklearn_to_onnx(sk_models["en"], str(out), dtype="float", rtol=0, atol=0)
    assert "rtol=0, atol=0" in str(e.value)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".strict")]


def test_unsupported_estimators_are_named(tmp_path, diabetes):
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = diabetes
    kr = make_pipeline(StandardScaler(), KernelRidge()).fit(X, y)
    sk_flavor.save_model(kr, str(tmp_path / "kr"), input_example=X.head(2))
    with pytest.raises(ConversionError, match="no converter for KernelRidge"):
        convert_sklearn_to_onnx(str(tmp_path / "kr"), str(tmp_path / "out"))
    res = run("convert", str(tmp_path / "kr"), "--to", "onnx", "-o", str(tmp_path / "out"))
    err = res.stderr.decode().strip()
    assert res.returncode == 1 and err.startswith("modelfmt: error:") and "KernelRidge" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out").exists()


def test_other_refusals(sk_models, converted, tmp_path, elasticnet, diabetes):
    with pytest.raises(ConversionError, match="sklearn flavor"):
        convert_sklearn_to_onnx(converted["en"][1], str(tmp_path / "again"))
    sk_flavor.save_model(elasticnet, str(tmp_path / "bare"))
    with pytest.raises(ConversionError, match="neither a signature nor an input example"):
        convert_sklearn_to_onnx(str(tmp_path / "bare"), str(tmp_path / "o1"))
    from sklearn.linear_model import LogisticRegression

    X, y = diabetes
    lr = LogisticRegression(max_iter=50).fit(X, y > 140)
    sk_flavor.save_model(lr, str(tmp_path / "dec"), input_example=X.head(2), pyfunc_predict_fn="decision_function")
    with pytest.raises(ConversionError, match="decision_function"):
        convert_sklearn_to_onnx(str(tmp_path / "dec"), str(tmp_path / "o2"))


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_convert_with_data_file_then_predict(sk_models, tmp_path, diabetes):
    X = diabetes[0].iloc[:40]
    X.to_csv(tmp_path / "check.csv", index=False)
    out = str(tmp_path / "rf_onnx")
    check_csv = str(tmp_path / "check.csv")
    res = run("convert", sk_models["rf"], "--to", "onnx", "-o", out, "--data", check_csv, "--rtol", "1e-4")
    assert res.returncode == 0, res.stderr.decode()
    assert b"checked on 40 rows" in res.stdout and b"max abs diff" in res.stdout
    check = Model.load(out).metadata["onnx_conversion"]
    assert check["rows"] == 40 and check["data"] == "given" and check["rtol"] == 1e-4
    body = json.dumps({"dataframe_split": X.head(5).to_dict(orient="split")}).encode()
    res = run("predict", out, "-i", "-", stdin=body)
    assert res.returncode == 0, res.stderr.decode()
    want = _sklearn_answer(sk_models["rf"], X.head(5))
    got = json.loads(res.stdout)["predictions"]  # records of the output columns, as MLflow's server answers
    assert [list(r) for r in got] == [["variable"]] * 5
    np.testing.assert_allclose([r["variable"] for r in got], want, rtol=1e-5)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{missing}", "-o", "{out}"], "missing"),
        (["{en}", "--to", "tflite", "-o", "{out}"], "tflite"),
        (["{en}", "--to", "onnx"], "--output"),
        (["{en}", "-o", "{out}", "--rtol", "abc"], "abc"),
        (["{en}", "-o", "{out}", "--data", "{missing}.csv"], "missing"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(args, needle, sk_models, tmp_path):
    fill = {"missing": str(tmp_path / "missing"), "out": str(tmp_path / "out"), "en": sk_models["en"]}
    res = run("convert", *[a.format(**fill) for a in args])
    err = res.stderr.decode().strip()
    assert res.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("modelfmt: error:") and needle in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# -- over HTTP and in MLflow ----------------------------------------------------------------------
def test_converted_model_over_http(converted, sk_models, diabetes):
    server = pytest.importorskip("modelfmt.serving.testing")
    import requests

    X = diabetes[0].iloc[:8]
    body = {"dataframe_split": X.to_dict(orient="split")}
    with server.serving(converted["lr"][1]) as url:
        r = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert r.status_code == 200, r.text
        rows = r.json()["predictions"]  # one record per row; [N, 2] probabilities as a list per row
        assert len(rows) == len(X) and all(list(row) == ["probabilities"] for row in rows)
        want = _sklearn_answer(sk_models["lr"], X)
        np.testing.assert_allclose([row["probabilities"] for row in rows], want, rtol=1e-6)
        dropped = {"dataframe_split": X.drop(columns=["bmi"]).to_dict(orient="split")}
        bad = requests.post(f"{url}/invocations", json=dropped, timeout=60)
        assert bad.status_code == 400 and "bmi" in bad.json()["message"]


_MLFLOW_SCRIPT = r"""
import json, sys
import numpy as np, pandas as pd
import mlflow.pyfunc, mlflow.sklearn
from sklearn.linear_model import ElasticNet
args = json.loads(sys.argv[1])
X = pd.DataFrame(args["X"]["data"], columns=args["X"]["columns"])
out = {name: np.asarray(mlflow.pyfunc.load_model(p).predict(X)).ravel().tolist() for name, p in args["paths"].items()}
model = ElasticNet(alpha=0.1).fit(X, np.arange(len(X), dtype=float))
mlflow.sklearn.save_model(model, args["mlflow_path"], input_example=X.head(2), pip_requirements=["scikit-learn"])
out["mlflow_sklearn"] = model.predict(X).tolist()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mlflow_run(converted, tmp_path_factory, diabetes):
    """One MLflow subprocess: scores our converted models, and saves an sklearn model of its own."""
    if not os.path.isfile(MLFLOW_PYTHON):
        pytest.skip(f"no MLflow interpreter at {MLFLOW_PYTHON} (set MODELFMT_MLFLOW_PYTHON)")
    X = diabetes[0].iloc[:5]
    theirs = str(tmp_path_factory.mktemp("mlflow_sk") / "en")
    args = {
        "X": {"columns": list(X.columns), "data": X.to_numpy().tolist()},
        "paths": {n: converted[n][1] for n in ("en", "rf")},
        "mlflow_path": theirs,
    }
    res = subprocess.run([MLFLOW_PYTHON, "-c", _MLFLOW_SCRIPT, json.dumps(args)], capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1]), theirs, X


def test_mlflow_loads_converted_models(mlflow_run, sk_models):
    out, _, X = mlflow_run
    for name in ("en", "rf"):
        np.testing.assert_allclose(out[name], _sklearn_answer(sk_models[name], X), rtol=1e-5)


def test_converts_an_sklearn_model_saved_by_mlflow(mlflow_run, tmp_path):
    out, theirs, X = mlflow_run
    meta = convert_sklearn_to_onnx(theirs, str(tmp_path / "onnx"))
    assert meta.metadata["onnx_conversion"]["passed"]
    got = _column(modelfmt.load_model(str(tmp_path / "onnx")).predict(X))
    np.testing.assert_allclose(got, out["mlflow_sklearn"], rtol=1e-6)
