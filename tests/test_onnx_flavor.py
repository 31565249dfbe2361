"""The onnx flavor with real onnx and onnxruntime: save, load, the pyfunc wrapper, MLflow both ways."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import modelfmt
from modelfmt.errors import FlavorError, ModelExistsError, PredictionError, SchemaError
from modelfmt.flavors import onnx as onnx_flavor
from modelfmt.model import Model
from modelfmt.signature import TensorSpec

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MLFLOW_PYTHON = os.environ.get(
    "MODELFMT_MLFLOW_PYTHON",
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", ".venv-mlflow", "bin", "python"),
)


@pytest.fixture(scope="module")
def en_proto(elasticnet):
    """The diabetes ElasticNet as ONNX: one float input ``input`` [N, 10], output ``variable`` [N, 1]."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    return convert_sklearn(elasticnet, initial_types=[("input", FloatTensorType([None, 10]))])


def _two_input_graph(big: bool = False):
    """``sum = a + b`` and ``prod = a * b`` over [N, 1] float inputs; ``big`` adds a 2 KiB weight."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, 1])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, 1])
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])]
    inits = []
    if big:
        inits = [numpy_helper.from_array(np.ones((1, 512), dtype=np.float32), "w")]
        nodes.append(helper.make_node("MatMul", ["sum", "w"], ["wide"]))
    outs = [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [None, 1]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [None, 1])]  # fmt: skip
    if big:
        outs.append(helper.make_tensor_value_info("wide", TensorProto.FLOAT, [None, 512]))
    graph = helper.make_graph(nodes, "two", [a, b], outs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# -- save / load ------------------------------------------------------------------------------
def test_save_writes_mlflows_onnx_block_and_graph_signature(en_proto, tmp_path, diabetes, elasticnet):
    path = str(tmp_path / "m")
    onnx_flavor.save_model(en_proto, path)
    meta = Model.load(path)
    conf = meta.flavors["onnx"]
    assert conf["onnx_version"] == onnx.__version__ and conf["data"] == "model.onnx"
    assert conf["providers"] == ["CPUExecutionProvider"] and conf["onnx_session_options"] is None
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    assert meta.get_input_schema().inputs == [TensorSpec("float32", (-1, 10), "input")]
    assert meta.get_output_schema().inputs == [TensorSpec("float32", (-1, 1), "variable")]
    reqs = open(os.path.join(path, "requirements.txt")).read()
    assert "onnx==" in reqs and "onnxruntime==" in reqs
    loaded = onnx_flavor.load_model(path)
    assert isinstance(loaded, onnx.ModelProto) and loaded.graph == en_proto.graph
    X = diabetes[0].head(5)
    got = modelfmt.load_model(path).predict(X.to_numpy(np.float32))
    assert list(got) == ["variable"]  # a dict by output name, as MLflow's onnx pyfunc answers
    np.testing.assert_allclose(got["variable"].ravel(), elasticnet.predict(X), rtol=1e-5)


def test_save_from_a_file_path_and_refuses_non_models(en_proto, tmp_path):
    file = tmp_path / "m.onnx"
    onnx.save_model(en_proto, str(file))
    onnx_flavor.save_model(str(file), str(tmp_path / "a"))
    assert onnx_flavor.load_model(str(tmp_path / "a")).graph == en_proto.graph
    with pytest.raises(FlavorError, match="onnx.ModelProto"):
        onnx_flavor.save_model({"not": "a model"}, str(tmp_path / "b"))
    (tmp_path / "junk.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(FlavorError, match="not a readable ONNX model"):
        onnx_flavor.save_model(str(tmp_path / "junk.onnx"), str(tmp_path / "c"))
    with pytest.raises(ModelExistsError):
        onnx_flavor.save_model(en_proto, str(tmp_path / "a"))


def test_checker_refuses_a_broken_graph_and_nothing_is_written(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Add", ["x", "missing"], ["y"])], "bad", [x], [y])
    bad = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(FlavorError, match="onnx.checker"):
        onnx_flavor.save_model(bad, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_external_data_is_written_beside_the_graph_and_loads(tmp_path):
    proto = _two_input_graph(big=True)
    onnx_flavor.save_model(proto, str(tmp_path / "ext"))
    assert (tmp_path / "ext" / "model.onnx.data").is_file()
    assert len(proto.graph.initializer[0].raw_data) == 2048  # the caller's proto is left as it was
    onnx_flavor.save_model(proto, str(tmp_path / "inline"), save_as_external_data=False)
    assert not (tmp_path / "inline" / "model.onnx.data").exists()
    for name in ("ext", "inline"):
        feed = {"a": np.array([[1.0]], np.float32), "b": np.array([[2.0]], np.float32)}
        out = modelfmt.load_model(str(tmp_path / name)).predict(feed)
        assert out["wide"].shape == (1, 512) and out["wide"][0, 0] == 3.0
        assert numpy_helper.to_array(onnx_flavor.load_model(str(tmp_path / name)).graph.initializer[0]).sum() == 512


# -- the pyfunc wrapper -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def en_onnx_path(en_proto, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("onnx") / "en")
    onnx_flavor.save_model(en_proto, path, onnx_session_options={"intra_op_num_threads": 1})
    return path


def test_predict_takes_arrays_lists_frames_and_dicts(en_onnx_path, elasticnet, diabetes):
    X = diabetes[0].head(4)
    want = elasticnet.predict(X)
    pm = modelfmt.load_model(en_onnx_path)
    x32 = X.to_numpy(np.float32)
    for data in (x32, x32.tolist(), {"input": x32}):
        got = pm.predict(data)
        assert isinstance(got, dict) and list(got) == ["variable"] and got["variable"].shape == (4, 1)
        np.testing.assert_allclose(got["variable"].ravel(), want, rtol=1e-5)
    # Straight to the wrapper (no signature in between): float64 frames and arrays are cast to float32;
    # a DataFrame gets a DataFrame, a column per output ([N, 1] as one value per row, as in MLflow).
    raw = pm._impl
    frame = raw.predict(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["variable"] and frame.index.equals(X.index)
    np.testing.assert_allclose(frame["variable"], want, rtol=1e-5)
    np.testing.assert_allclose(raw.predict(X.to_numpy())["variable"].ravel(), want, rtol=1e-5)
    # One column holding a tensor per row, as a JSON list column arrives.
    np.testing.assert_allclose(raw.predict(pd.DataFrame({"x": list(x32)}))["variable"], want, rtol=1e-5)


def test_the_feed_casts_by_the_one_policy(en_onnx_path, elasticnet, diabetes):
    raw = modelfmt.load_model(en_onnx_path)._impl  # the wrapper alone: no signature in between
    X = diabetes[0].head(2).to_numpy()  # doubles with no exact float32
    f32 = raw.predict(X.astype(np.float32))["variable"]
    np.testing.assert_array_equal(raw.predict(X)["variable"], f32)
    np.testing.assert_array_equal(raw.predict(X.astype(object))["variable"], f32)
    assert raw.predict(np.zeros((1, 10), np.int16))["variable"].shape == (1, 1)
    with pytest.raises(SchemaError, match=r"^ONNX input 'input': expected float32, got bool \(a boolean is never"):
        raw.predict(np.zeros((1, 10), bool))
    with pytest.raises(SchemaError, match=r"^ONNX input 'input': expected float32, got int64 \(integers beyond 2\*\*2"):
        raw.predict(np.full((1, 10), 2**24 + 1))
    with pytest.raises(SchemaError, match=r"^ONNX input 'input': expected float32, got the string 'a'"):
        raw.predict(np.array([["a"] * 10], dtype=object))


def test_session_takes_the_recorded_options_and_load_overrides(en_onnx_path):
    pm = modelfmt.load_model(en_onnx_path)
    session = pm.get_raw_model()
    assert type(session).__name__ == "InferenceSession"
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_providers() == ["CPUExecutionProvider"]
    over = modelfmt.load_model(en_onnx_path, onnx_session_options={"intra_op_num_threads": 2})
    assert over.get_raw_model().get_session_options().intra_op_num_threads == 2


def test_tensor_signature_refuses_wrong_shapes(en_onnx_path):
    pm = modelfmt.load_model(en_onnx_path)
    with pytest.raises(SchemaError, match="shape"):
        pm.predict(np.zeros((2, 3), dtype=np.float32))


def test_unavailable_providers_fall_back_to_cpu(en_proto, tmp_path, caplog):
    path = str(tmp_path / "gpu")
    onnx_flavor.save_model(en_proto, path, onnx_execution_providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert Model.load(path).flavors["onnx"]["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with caplog.at_level(logging.INFO, logger="modelfmt.flavors.onnx"):
        session = modelfmt.load_model(path).get_raw_model()
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text
    only_gpu = str(tmp_path / "gpu_only")
    onnx_flavor.save_model(en_proto, only_gpu, onnx_execution_providers=[["CUDAExecutionProvider", {"device_id": 0}]])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="modelfmt.flavors.onnx"):
        session = modelfmt.load_model(only_gpu).get_raw_model()
    assert session.get_providers() == ["CPUExecutionProvider"] and "CUDAExecutionProvider" in caplog.text


def test_bad_session_options_are_refused_at_save(en_proto, tmp_path):
    for opts, needle in (
        ({"nope": 1}, "unknown onnx_session_options key"),
        ({"execution_mode": "sideways"}, "execution_mode"),
        ({"graph_optimization_level": 5}, "graph_optimization_level"),
        ({"intra_op_num_threads": -1}, "intra_op_num_threads"),
    ):
        with pytest.raises(FlavorError, match=needle):
            onnx_flavor.save_model(en_proto, str(tmp_path / "x"), onnx_session_options=opts)


def test_several_inputs_by_name_and_several_outputs(tmp_path):
    path = str(tmp_path / "two")
    onnx_flavor.save_model(_two_input_graph(), path)
    pm = modelfmt.load_model(path)
    df = pd.DataFrame({"b": [2.0, 3.0], "a": [1.0, 4.0]}, index=[7, 8])
    out = pm._impl.predict(df)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["sum", "prod"] and list(out.index) == [7, 8]
    np.testing.assert_allclose(out["sum"], [3.0, 7.0])
    got = pm.predict({"a": np.array([[1.0], [2.0]], dtype=np.float32), "b": np.array([[1.0], [1.0]], dtype=np.float32)})
    assert isinstance(got, dict) and set(got) == {"sum", "prod"} and got["prod"].shape == (2, 1)
    with pytest.raises(SchemaError):
        pm._impl.predict(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(SchemaError, match="lacks"):
        pm._impl.predict(pd.DataFrame({"a": [1.0]}))


def test_input_example_gives_a_column_signature(en_proto, tmp_path, diabetes, elasticnet):
    path = str(tmp_path / "ex")
    X = diabetes[0].head(3)
    onnx_flavor.save_model(en_proto, path, input_example=X)
    pm = modelfmt.load_model(path)
    assert pm.metadata.get_input_schema().input_names() == list(X.columns)
    shuffled = diabetes[0].iloc[10:14][list(reversed(X.columns))]
    got = pm.predict(shuffled)  # a column signature: a DataFrame, one column per graph output
    np.testing.assert_allclose(got["variable"], elasticnet.predict(shuffled[list(X.columns)]), rtol=1e-5)
    with pytest.raises(SchemaError, match="missing required input column"):
        pm.predict(X.drop(columns=["bmi"]))


def test_onnxruntime_failures_are_prediction_errors(tmp_path):
    path = str(tmp_path / "two")
    onnx_flavor.save_model(_two_input_graph(), path, signature=None, input_example=None)
    with pytest.raises(PredictionError, match="the model failed"):
        modelfmt.load_model(path).predict({"a": np.zeros((2, 1), np.float32), "b": np.zeros((3, 1), np.float32)})


# -- MLflow, both ways --------------------------------------------------------------------------
_MLFLOW_SCRIPT = r"""
import json, sys
import numpy as np, pandas as pd
import mlflow.onnx, mlflow.pyfunc
import onnx
args = json.loads(sys.argv[1])
X = pd.DataFrame(args["X"]["data"], columns=args["X"]["columns"])
out = {"ours": {}}
for name, path in args["ours"].items():
    out["ours"][name] = np.asarray(mlflow.pyfunc.load_model(path).predict(X)).ravel().tolist()
    out["ours_native_" + name] = type(mlflow.onnx.load_model(path)).__name__
reqs = ["onnx", "onnxruntime"]
mlflow.onnx.save_model(onnx.load(args["proto"]), args["mlflow_path"], input_example=X.head(2), pip_requirements=reqs)
mlflow.onnx.save_model(onnx.load(args["big_proto"]), args["mlflow_big_path"], pip_requirements=reqs)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mlflow_run(en_proto, en_onnx_path, tmp_path_factory, diabetes):
    """One MLflow subprocess: loads our models, and saves an ONNX model of its own."""
    if not os.path.isfile(MLFLOW_PYTHON):
        pytest.skip(f"no MLflow interpreter at {MLFLOW_PYTHON} (set MODELFMT_MLFLOW_PYTHON)")
    base = tmp_path_factory.mktemp("mlflow_onnx")
    ours_ex = str(base / "ours_ex")
    onnx_flavor.save_model(en_proto, ours_ex, input_example=diabetes[0].head(3))
    proto_file = str(base / "en.onnx")
    onnx.save_model(en_proto, proto_file)
    big_file = str(base / "big.onnx")
    onnx.save_model(_two_input_graph(big=True), big_file)
    X = diabetes[0].head(6)
    args = {
        "X": {"columns": list(X.columns), "data": X.to_numpy().tolist()},
        "ours": {"column_signature": ours_ex},
        "proto": proto_file,
        "mlflow_path": str(base / "theirs"),
        "big_proto": big_file,
        "mlflow_big_path": str(base / "theirs_big"),
    }
    res = subprocess.run([MLFLOW_PYTHON, "-c", _MLFLOW_SCRIPT, json.dumps(args)], capture_output=True, timeout=240)
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    return json.loads(res.stdout.decode().strip().splitlines()[-1]), str(base / "theirs"), X


def test_mlflow_loads_ours(mlflow_run, elasticnet):
    out, _, X = mlflow_run
    np.testing.assert_allclose(out["ours"]["column_signature"], elasticnet.predict(X), rtol=1e-5)
    assert out["ours_native_column_signature"] == "ModelProto"


def test_we_load_mlflows(mlflow_run, elasticnet):
    _, theirs, X = mlflow_run
    meta = Model.load(theirs)
    assert meta.flavors["python_function"]["loader_module"] == "mlflow.onnx" and "mlflow_version" in meta.to_dict()
    pm = modelfmt.load_model(theirs)
    np.testing.assert_allclose(pm.predict(X)["variable"], elasticnet.predict(X), rtol=1e-5)
    assert isinstance(onnx_flavor.load_model(theirs), onnx.ModelProto)


def test_modelfmt_save_model_picks_the_onnx_flavor(en_proto, tmp_path):
    modelfmt.save_model(en_proto, str(tmp_path / "auto"), onnx_session_options={"execution_mode": "sequential"})
    meta = Model.load(str(tmp_path / "auto"))
    assert "onnx" in meta.flavors and meta.flavors["onnx"]["onnx_session_options"] == {"execution_mode": "sequential"}


def test_modelfmt_predict_feeds_json_tensors_to_a_graph_signature(en_onnx_path, elasticnet, diabetes):
    X = diabetes[0].head(4)
    body = json.dumps({"inputs": X.to_numpy().tolist()}).encode()
    cmd = [sys.executable, "-m", "modelfmt", "predict", en_onnx_path, "-i", "-"]
    res = subprocess.run(cmd, input=body, capture_output=True, timeout=120)
    assert res.returncode == 0, res.stderr.decode()
    got = np.asarray(json.loads(res.stdout)["predictions"]["variable"])
    assert got.shape == (4, 1)
    np.testing.assert_allclose(got.ravel(), elasticnet.predict(X), rtol=1e-5)


def test_we_load_mlflows_external_data(mlflow_run):
    theirs_big = os.path.join(os.path.dirname(mlflow_run[1]), "theirs_big")
    usual = ("MLmodel", "model.onnx", "conda.yaml", "python_env.yaml", "requirements.txt")
    assert [f for f in os.listdir(theirs_big) if f not in usual]
    feed = {"a": np.array([[1.0]], np.float32), "b": np.array([[2.0]], np.float32)}
    out = modelfmt.load_model(theirs_big).predict(feed)
    assert out["wide"].shape == (1, 512) and float(out["wide"].sum()) == 3.0 * 512
