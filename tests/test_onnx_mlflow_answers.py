"""ONNX models over HTTP, side by side with ``mlflow models serve --env-manager local`` (MLflow 3.18).

The same ONNX models (a hand-made graph with one named input and one ``[N, 2]`` output, a hand-made
graph with two named inputs and two outputs, a converted classifier answering label + probabilities,
the same with a column signature, and two ``modelfmt convert`` results: a regressor and a
``predict_proba`` classifier) are served by both servers; every body (``dataframe_split``,
``dataframe_records``, ``instances`` as rows and as records, ``inputs`` as a list and as an object,
named tensors, CSV) goes to both. MLflow's answers are recorded once per module (one MLflow server per
model, all started together); the tests compare ours with them:

- where MLflow answers 200, modelfmt answers 200 with the same JSON, byte values included;
- where MLflow refuses a body, modelfmt refuses it too or gives the answer the model's other formats get;
- the ``[N, k]`` case for DataFrame input (MLflow flattens it to ``N * k`` rows, or fails beside a 1-d
  label) is answered with one record per input row holding a list: our documented decision.

In-line ``load_model(...).predict`` return types are compared with ``mlflow.pyfunc.load_model`` in
MLflow's venv, and ``spark_udf`` takes the ``[N, k]`` output as an array column.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack

import numpy as np
import pandas as pd
import pytest

import modelfmt
from modelfmt.serving.testing import free_port, serving

onnx = pytest.importorskip("onnx")
pytest.importorskip("skl2onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MLFLOW_PYTHON = os.environ.get(
    "MODELFMT_MLFLOW_PYTHON",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", ".venv-mlflow", "bin", "python"),
)
IRIS_COLUMNS = ["sl", "sw", "pl", "pw"]
IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
ROWS3 = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.25]]
# model -> (column names the bodies use, rows, extra bodies with named tensors)
MODELS = {
    "single": (["x0", "x1", "x2"], ROWS3, {"inputs_named": {"inputs": {"features": ROWS3}}}),
    "pair": (["a", "b"], [[1.0, 2.0], [3.0, 4.0]], {
        "inputs_named": {"inputs": {"a": [[1.0], [3.0]], "b": [[2.0], [4.0]]}},
        "instances_named": {"instances": [{"a": [1.0], "b": [2.0]}, {"a": [3.0], "b": [4.0]}]},
    }),
    "clf": (IRIS_COLUMNS, IRIS_ROWS, {"inputs_named": {"inputs": {"input": IRIS_ROWS}}}),
    "clf_cols": (IRIS_COLUMNS, IRIS_ROWS, {}),
    "reg": (["sl", "sw", "pl"], [r[:3] for r in IRIS_ROWS], {}),
    "proba": (IRIS_COLUMNS, IRIS_ROWS, {}),
}  # fmt: skip


def bodies(model: str) -> dict[str, tuple[str, bytes]]:
    """Every request format for ``model``: ``name -> (content type, body)``."""
    columns, rows, named = MODELS[model]
    records = [dict(zip(columns, r, strict=True)) for r in rows]
    docs = {
        "dataframe_split": {"dataframe_split": {"columns": columns, "data": rows}},
        "dataframe_records": {"dataframe_records": records},
        "instances": {"instances": rows},
        "instances_records": {"instances": records},
        "inputs_list": {"inputs": rows},
        "inputs_object": {"inputs": {c: [r[i] for r in rows] for i, c in enumerate(columns)}},
        **named,
    }
    out = {name: ("application/json", json.dumps(doc).encode()) for name, doc in docs.items()}
    csv = ",".join(columns) + "\n" + "".join(",".join(map(repr, r)) + "\n" for r in rows)
    out["csv"] = ("text/csv", csv.encode())
    return out


CASES = [(m, f) for m in MODELS for f in bodies(m)]


# -- the models ---------------------------------------------------------------------------------
def _graph(nodes: list, inputs: list, outputs: list, initializers: tuple = ()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """The six ONNX models, saved by modelfmt (``onnx_flavor.save_model`` and ``convert_sklearn_to_onnx``)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from modelfmt.flavors import onnx as onnx_flavor
    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt.flavors.onnx.convert import convert_sklearn_to_onnx

    base = tmp_path_factory.mktemp("onnx_answers")
    paths = {name: str(base / name) for name in MODELS}
    weights = numpy_helper.from_array(np.array([[1, 0], [0, 1], [1, 1]], np.float32), "W")
    single = _graph(
        [helper.make_node("MatMul", ["features", "W"], ["scores"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [None, 2])],
        (weights,),
    )
    onnx_flavor.save_model(single, paths["single"])  # graph signature: features float32 [-1, 3]
    pair = _graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("a", "b")],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in ("sum", "prod")],
    )
    onnx_flavor.save_model(pair, paths["pair"])
    X, y = load_iris(return_X_y=True, as_frame=True)
    X.columns = IRIS_COLUMNS
    lr = LogisticRegression(max_iter=500).fit(X, y)
    types = [("input", FloatTensorType([None, 4]))]
    clf = convert_sklearn(lr, initial_types=types, options={id(lr): {"zipmap": False}})
    onnx_flavor.save_model(clf, paths["clf"])  # outputs label int64 [N], probabilities float32 [N, 3]
    onnx_flavor.save_model(clf, paths["clf_cols"], input_example=X.head(3))  # the same, a column signature
    reg = LinearRegression().fit(X[["sl", "sw", "pl"]], X["pw"])
    sk_flavor.save_model(reg, str(base / "reg_sk"), input_example=X[["sl", "sw", "pl"]].head(3))
    convert_sklearn_to_onnx(str(base / "reg_sk"), paths["reg"])  # variable float64 [N]
    sk_flavor.save_model(lr, str(base / "proba_sk"), input_example=X.head(3), pyfunc_predict_fn="predict_proba")
    convert_sklearn_to_onnx(str(base / "proba_sk"), paths["proba"])  # probabilities float64 [N, 3]
    return paths


def _post(url: str, content_type: str, body: bytes) -> tuple[int, object]:
    req = urllib.request.Request(url + "/invocations", body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _answers(urls: dict[str, str]) -> dict[tuple[str, str], tuple[int, object]]:
    return {(m, f): _post(urls[m], ct, body) for m in MODELS for f, (ct, body) in bodies(m).items()}


# -- MLflow's answers, recorded once --------------------------------------------------------------
def _wait_ready(proc: subprocess.Popen, url: str, log: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {proc.returncode}: {open(log).read()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"mlflow models serve not ready after {timeout}s: {open(log).read()[-2000:]}")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's own process group (it was started in a new session), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def mlflow_answers(models, tmp_path_factory) -> dict:
    """Every body's answer from ``mlflow models serve --env-manager local``, one server per model."""
    if not os.path.isfile(MLFLOW_PYTHON):
        pytest.skip(f"no MLflow interpreter at {MLFLOW_PYTHON} (set MODELFMT_MLFLOW_PYTHON)")
    bin_dir = os.path.dirname(MLFLOW_PYTHON)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFMT_")}
    env.update(PATH=bin_dir + os.pathsep + env.get("PATH", ""), MLFLOW_DISABLE_TELEMETRY="true")  # it runs uvicorn
    logs = tmp_path_factory.mktemp("mlflow_logs")
    servers: dict[str, tuple[subprocess.Popen, str, str]] = {}
    try:
        for name, path in models.items():  # all started first: each takes seconds to import MLflow
            port, log = free_port(), str(logs / f"{name}.log")
            cmd = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", path, "--env-manager", "local",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
            with open(log, "wb") as out:
                proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            servers[name] = (proc, f"http://127.0.0.1:{port}", log)
        for proc, url, log in servers.values():
            _wait_ready(proc, url, log)
        return _answers({name: url for name, (_, url, _) in servers.items()})
    finally:
        for proc, _, _ in servers.values():
            _stop_group(proc)


@pytest.fixture(scope="module")
def our_answers(models) -> dict:
    """Every body's answer from ``modelfmt serve``, one server per model."""
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serving(path, workers=1)) for name, path in models.items()}
        return _answers(urls)


# -- side by side ---------------------------------------------------------------------------------
def _canonical(answers: dict, model: str) -> object:
    """The one answer MLflow gives ``model`` for every format it accepts (None if it accepts none)."""
    accepted = [body for (m, _), (status, body) in answers.items() if m == model and status == 200]
    assert all(a == accepted[0] for a in accepted), f"MLflow answers {model} differently by format"
    return accepted[0] if accepted else None


@pytest.mark.parametrize("model, fmt", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_answers_side_by_side(model, fmt, mlflow_answers, our_answers):
    """Where MLflow answers 200 we answer the same JSON; where it refuses, we refuse (4xx) or answer what
    the model's other formats get. ``proba`` differs by decision: see the [N, k] test below."""
    status, theirs = mlflow_answers[model, fmt]
    ours_status, ours = our_answers[model, fmt]
    if status == 200:
        assert ours_status == 200, ours
        if model != "proba":
            assert ours == theirs
        return
    assert 400 <= status < 500, theirs
    if ours_status != 200:
        assert 400 <= ours_status < 500 and ours["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE"), ours
        assert ours["message"]
        return
    if model in ("proba", "clf_cols"):  # MLflow has no one-row-per-input-row answer: ours for the split body
        assert ours == our_answers[model, "dataframe_split"][1]
    else:
        assert ours == _canonical(mlflow_answers, model)


def test_every_format_mlflow_accepts_is_one_of_ours(mlflow_answers):
    # The record itself: which formats MLflow 3.18 accepts for which signature (what the README states).
    accepted = {m: sorted(f for (mm, f), (s, _) in mlflow_answers.items() if mm == m and s == 200) for m in MODELS}
    assert accepted["single"] == ["inputs_list", "inputs_named", "instances"]  # a tensor signature
    assert accepted["clf"] == ["inputs_list", "inputs_named", "instances"]
    assert accepted["pair"] == ["dataframe_records", "dataframe_split", "inputs_named", "instances_named"]
    columns = ["csv", "dataframe_records", "dataframe_split", "inputs_object", "instances_records"]
    assert accepted["reg"] == accepted["proba"] == columns  # a column signature
    assert accepted["clf_cols"] == []  # [N] label beside [N, 3] probabilities: MLflow cannot make its frame


def test_tensor_input_answers_a_dict_by_output_name(our_answers):
    status, body = our_answers["single", "inputs_list"]
    assert status == 200 and body == {"predictions": {"scores": [[4.0, 5.0], [2.75, 1.25]]}}
    status, body = our_answers["clf", "instances"]
    assert status == 200 and list(body["predictions"]) == ["label", "probabilities"]
    assert body["predictions"]["label"] == [0, 2, 1]
    assert np.shape(body["predictions"]["probabilities"]) == (3, 3)


def test_dataframe_input_answers_records_of_the_output_columns(our_answers, mlflow_answers):
    status, body = our_answers["reg", "dataframe_split"]
    assert status == 200 and [list(r) for r in body["predictions"]] == [["variable"]] * 3
    assert body == mlflow_answers["reg", "dataframe_split"][1]


def test_predict_proba_for_dataframe_input_keeps_one_record_per_row(mlflow_answers, our_answers):
    """The [N, k] decision: MLflow flattens each output to 1-d (N * k one-value records, a known MLflow
    defect); modelfmt answers N records, each output's k values as a list, the same numbers in order."""
    for fmt in ("dataframe_split", "dataframe_records", "instances_records", "inputs_object", "csv"):
        status, theirs = mlflow_answers["proba", fmt]
        assert status == 200 and len(theirs["predictions"]) == len(IRIS_ROWS) * 3, fmt
        ours_status, ours = our_answers["proba", fmt]
        assert ours_status == 200 and len(ours["predictions"]) == len(IRIS_ROWS), fmt
        assert all(list(r) == ["probabilities"] and len(r["probabilities"]) == 3 for r in ours["predictions"])
        flat = [v for r in ours["predictions"] for v in r["probabilities"]]
        assert flat == [r["probabilities"] for r in theirs["predictions"]], fmt
        np.testing.assert_allclose([sum(r["probabilities"]) for r in ours["predictions"]], 1.0, rtol=1e-9)


def test_label_and_probabilities_for_dataframe_input(mlflow_answers, our_answers):
    """MLflow refuses (400): a 1-d label and flattened probabilities of 3x its length make no frame.
    modelfmt answers a record per row; its values are MLflow's tensor answer for the same rows."""
    status, theirs = mlflow_answers["clf_cols", "dataframe_split"]
    assert status == 400 and "All arrays must be of the same length" in theirs["stack_trace"]
    by_tensor = mlflow_answers["clf", "instances"][1]["predictions"]
    pairs = zip(by_tensor["label"], by_tensor["probabilities"], strict=True)
    want = [{"label": lab, "probabilities": p} for lab, p in pairs]
    for fmt in ("dataframe_split", "dataframe_records", "instances_records", "inputs_object", "csv"):
        assert our_answers["clf_cols", fmt] == (200, {"predictions": want}), fmt


# -- in-line predict, side by side with mlflow.pyfunc ----------------------------------------------
_MLFLOW_INLINE = r"""
import json, sys
import numpy as np, pandas as pd
import mlflow.pyfunc
args = json.loads(sys.argv[1])

def describe(out):
    if isinstance(out, dict):
        return {"type": "dict", "keys": list(out), "shapes": [list(np.shape(v)) for v in out.values()]}
    if isinstance(out, pd.DataFrame):
        return {"type": "DataFrame", "keys": [str(c) for c in out.columns], "rows": len(out)}
    return {"type": type(out).__name__}

res = {}
for name, (path, inputs) in args.items():
    model = mlflow.pyfunc.load_model(path)
    for kind, value in inputs.items():
        if kind == "frame":
            data = pd.DataFrame(value["data"], columns=value["columns"])
        elif kind == "dict":
            data = {k: np.asarray(v, dtype=np.float32) for k, v in value.items()}
        else:
            data = np.asarray(value, dtype=np.float32)
        try:
            res[f"{name}/{kind}"] = describe(model.predict(data))
        except Exception as e:
            res[f"{name}/{kind}"] = {"type": "error", "error": type(e).__name__}
print(json.dumps(res))
"""
INLINE = {
    "single": {"array": ROWS3, "dict": {"features": ROWS3}},
    "pair": {
        "dict": {"a": [[1.0], [3.0]], "b": [[2.0], [4.0]]},
        "frame": {"columns": ["a", "b"], "data": [[1.0, 2.0], [3.0, 4.0]]},
    },
    "clf": {"array": IRIS_ROWS, "dict": {"input": IRIS_ROWS}},
    "reg": {"frame": {"columns": ["sl", "sw", "pl"], "data": [r[:3] for r in IRIS_ROWS]}},
    "proba": {"frame": {"columns": IRIS_COLUMNS, "data": IRIS_ROWS}},
}  # fmt: skip


def _inline_input(kind: str, value: object) -> object:
    if kind == "frame":
        return pd.DataFrame(value["data"], columns=value["columns"])
    if kind == "dict":
        return {k: np.asarray(v, dtype=np.float32) for k, v in value.items()}
    return np.asarray(value, dtype=np.float32)


@pytest.fixture(scope="module")
def mlflow_inline(models) -> dict:
    if not os.path.isfile(MLFLOW_PYTHON):
        pytest.skip(f"no MLflow interpreter at {MLFLOW_PYTHON} (set MODELFMT_MLFLOW_PYTHON)")
    args = {name: (models[name], inputs) for name, inputs in INLINE.items()}
    res = subprocess.run([MLFLOW_PYTHON, "-c", _MLFLOW_INLINE, json.dumps(args)], capture_output=True, timeout=300)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1])


@pytest.mark.parametrize("case", [f"{m}/{k}" for m, inputs in INLINE.items() for k in inputs])
def test_inline_predict_returns_what_mlflows_onnx_pyfunc_returns(case, models, mlflow_inline):
    name, kind = case.split("/")
    theirs = mlflow_inline[case]
    out = modelfmt.load_model(models[name]).predict(_inline_input(kind, INLINE[name][kind]))
    if theirs["type"] == "dict":
        assert isinstance(out, dict) and list(out) == theirs["keys"]
        assert [list(np.shape(v)) for v in out.values()] == theirs["shapes"]
        assert all(isinstance(v, np.ndarray) for v in out.values())
    else:
        assert theirs["type"] == "DataFrame"
        assert isinstance(out, pd.DataFrame) and [str(c) for c in out.columns] == theirs["keys"]
        rows = len(INLINE[name][kind]["data"])
        # proba: MLflow's N * k rows (its defect), ours N rows holding a list each
        assert theirs["rows"] == (rows * 3 if name == "proba" else rows) and len(out) == rows


def test_inline_dataframe_answers_keep_the_input_index_and_lists_per_row(models):
    X = pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS, index=[10, 20, 30])
    out = modelfmt.load_model(models["clf_cols"]).predict(X)
    assert list(out.columns) == ["label", "probabilities"] and list(out.index) == [10, 20, 30]
    assert out["label"].dtype == np.int64 and out["label"].tolist() == [0, 2, 1]
    assert all(isinstance(p, list) and len(p) == 3 for p in out["probabilities"])
    tensors = modelfmt.load_model(models["clf"]).predict(X.to_numpy(np.float32))
    np.testing.assert_array_equal(np.asarray(out["probabilities"].tolist(), np.float32), tensors["probabilities"])


def test_outputs_without_a_row_per_input_row_are_refused_for_dataframe_input(tmp_path):
    """A graph answering a batch summary beside per-row values makes no table: a clear error."""
    from modelfmt.errors import PredictionError
    from modelfmt.flavors import onnx as onnx_flavor

    proto = _graph(
        [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])],
    )  # fmt: skip
    onnx_flavor.save_model(proto, str(tmp_path / "sum"), signature=None)
    raw = modelfmt.load_model(str(tmp_path / "sum"))._impl  # the wrapper: DataFrame in, DataFrame out
    with pytest.raises(PredictionError, match=r"do not make a table for a DataFrame of 3 rows .*'y': 3, 'total': 1"):
        raw.predict(pd.DataFrame(np.ones((3, 2), np.float32), columns=["p", "q"]))
    assert raw.predict(np.ones((3, 2), np.float32))["total"] == 6.0  # as tensors: each output by name


# -- spark_udf takes the [N, k] output --------------------------------------------------------------
def test_spark_udf_takes_the_probabilities_as_an_array_column(models):
    pytest.importorskip("pyspark")
    from pyspark.sql import functions as F
    from spark_session import get_spark

    from modelfmt.serving.spark.udf import spark_udf

    spark = get_spark()
    X = pd.DataFrame(IRIS_ROWS, columns=IRIS_COLUMNS)
    sdf = spark.createDataFrame(X)
    want = np.asarray(modelfmt.load_model(models["proba"]).predict(X)["probabilities"].tolist())
    # proba answers a DataFrame of one list column; clf (a tensor signature) a dict: label, probabilities.
    probabilities = spark_udf(spark, models["proba"], result_type="array<double>")
    first_output = spark_udf(spark, models["clf"], result_type="long")
    floats = F.array(*[F.col(c).cast("float") for c in IRIS_COLUMNS])
    out = sdf.select(probabilities(*IRIS_COLUMNS).alias("p"), first_output(floats).alias("label")).toPandas()
    np.testing.assert_allclose(np.asarray([list(v) for v in out["p"]]), want, rtol=1e-12)
    assert out["label"].tolist() == [0, 2, 1]

