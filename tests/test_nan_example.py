"""MLflow models whose input example holds NaN: ``info``, ``verify`` and a served ``/ping`` work.

MLflow writes ``input_example.json`` and ``serving_input_example.json`` with Python's json, so a missing
float is the bare literal ``NaN`` (not JSON; orjson refuses it). The models are saved by real MLflow 3.18
in its own venv (tests/mlflow_scripts/save_nan_example.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelfmt.errors import ModelFormatError
from modelfmt.jsonenc import loads

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mlflow_scripts"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))


# -- without MLflow ------------------------------------------------------------------------------
def test_loads_takes_python_json_literals():
    assert loads(b'{"a": 1}') == {"a": 1}
    got = loads(b"[1.5, NaN, Infinity, -Infinity]")
    assert got[0] == 1.5 and np.isnan(got[1]) and got[2:] == [float("inf"), float("-inf")]
    with pytest.raises(ValueError):
        loads(b"[1,")
    with pytest.raises(ValueError):
        loads(b"[nan]")  # Python writes NaN, never nan: still not JSON


def _model_with_example_files(tmp_path: Path, stored: bytes, serving: bytes) -> str:
    from modelfmt import Model

    model = Model()
    model.saved_input_example_info = {"artifact_path": "input_example.json", "type": "dataframe",
                                      "pandas_orient": "split", "serving_input_path": "serving_input_example.json"}
    model.save(str(tmp_path))
    (tmp_path / "input_example.json").write_bytes(stored)
    (tmp_path / "serving_input_example.json").write_bytes(serving)
    return str(tmp_path)


def test_serving_example_with_nan_is_reencoded_with_nulls(tmp_path):
    from modelfmt.example import load_input_example, load_serving_input_example

    path = _model_with_example_files(
        tmp_path, b'{"columns": ["a"], "data": [[NaN], [1.0]]}',
        b'{"dataframe_split": {"columns": ["a"], "data": [[NaN], [Infinity]]}}')
    example = load_input_example(path)
    assert example["a"].isna().tolist() == [True, False]
    body = load_serving_input_example(path)
    assert json.loads(body) == {"dataframe_split": {"columns": ["a"], "data": [[None], [None]]}}


def test_strict_examples_are_served_byte_for_byte_and_bad_ones_still_fail(tmp_path):
    from modelfmt.example import load_input_example, load_serving_input_example

    serving = b'{"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}'
    path = _model_with_example_files(tmp_path, b'{"columns": ["a"], "data": [[1.0, ', serving)
    assert load_serving_input_example(path) == serving
    with pytest.raises(ModelFormatError, match="cannot read the input example"):
        load_input_example(path)


# -- MLflow-saved models -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mlflow_nan_models(tmp_path_factory):
    if not os.path.exists(MLFLOW_PYTHON):
        if os.environ.get("CI"):
            raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
        pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)")
    base = tmp_path_factory.mktemp("nan_models")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.run([MLFLOW_PYTHON, str(SCRIPTS / "save_nan_example.py"), str(base)], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"base": base, "expected": json.loads((base / "expected.json").read_text())}


def _modelfmt(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelfmt", *args], capture_output=True, text=True, timeout=120)


def test_mlflow_writes_nan_literals(mlflow_nan_models):
    path = mlflow_nan_models["base"] / "sk_nan_frame"
    assert b"NaN" in (path / "input_example.json").read_bytes()
    assert b"NaN" in (path / "serving_input_example.json").read_bytes()


def test_example_reads_back_with_nan_and_scores_like_mlflow(mlflow_nan_models):
    import modelfmt
    from modelfmt.example import load_input_example

    path = str(mlflow_nan_models["base"] / "sk_nan_frame")
    example = load_input_example(path)
    assert isinstance(example, pd.DataFrame) and list(example.columns) == ["a", "b"]
    assert example.isna().to_numpy().tolist() == [[False, True], [True, False], [False, False]]
    preds = modelfmt.load_model(path).predict(example)
    np.testing.assert_allclose(preds, mlflow_nan_models["expected"]["sk_nan_frame"], rtol=1e-12)


def test_ndarray_example_takes_its_tensor_dtype_like_mlflow(mlflow_nan_models):
    """MLflow writes NaN in an ndarray example as null; the float64 tensor spec makes it NaN again."""
    import modelfmt
    from modelfmt.example import load_input_example

    path = str(mlflow_nan_models["base"] / "sk_nan_ndarray")
    assert b"null" in (Path(path) / "input_example.json").read_bytes()
    example = load_input_example(path)
    assert example.dtype == np.float64 and np.isnan(example).tolist() == [[False, True], [True, False]]
    preds = modelfmt.load_model(path).predict(example)
    np.testing.assert_allclose(preds, mlflow_nan_models["expected"]["sk_nan_ndarray"], rtol=1e-12)


@pytest.mark.parametrize("name", ["sk_nan_frame", "sk_nan_ndarray"])
def test_info_and_verify(mlflow_nan_models, name):
    path = str(mlflow_nan_models["base"] / name)
    info = _modelfmt("info", path)
    assert info.returncode == 0, info.stderr
    assert "input example:" in info.stdout and "saved by:   mlflow 3.18" in info.stdout
    verify = _modelfmt("verify", path)
    assert verify.returncode == 0, verify.stderr
    n = len(mlflow_nan_models["expected"][name])
    assert f"ok: {path} loads and scores its input example ({n} prediction(s))" in verify.stdout


def test_served_model_is_ready_and_scores_its_example_like_mlflow(mlflow_nan_models):
    from modelfmt.example import load_serving_input_example
    from modelfmt.serving.testing import serving

    path = str(mlflow_nan_models["base"] / "sk_nan_frame")
    with serving(path, startup_timeout=120) as url:  # waits for /ping 200, which needs the example scored
        with urllib.request.urlopen(url + "/ping", timeout=10) as resp:
            assert resp.status == 200
        req = urllib.request.Request(url + "/invocations", data=load_serving_input_example(path),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            got = json.loads(resp.read())
    np.testing.assert_allclose(got["predictions"], mlflow_nan_models["expected"]["sk_nan_frame"], rtol=1e-12)
