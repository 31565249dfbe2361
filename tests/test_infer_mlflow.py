"""modelfmt's ``infer_signature`` against MLflow 3's, side by side, on a matrix of dtypes by containers.

The cases (tests/mlflow_scripts/signature_cases.py) are built by name in both venvs, which hold the same
pandas and numpy; MLflow's side runs once for the whole matrix (tests/mlflow_scripts/infer_signatures.py).
Signatures are compared as MLflow's JSON: ``signature.to_dict()``'s ``inputs``/``outputs``, parsed.
Also end to end: string-label classifiers saved by modelfmt with an input example load and predict in MLflow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelfmt import infer_signature
from modelfmt.errors import SchemaError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mlflow_scripts"
CASES_FILE = SCRIPTS / "signature_cases.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))

if not os.path.exists(MLFLOW_PYTHON):
    if os.environ.get("CI"):
        raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
    pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)", allow_module_level=True)


def _load_cases():
    spec = importlib.util.spec_from_file_location("signature_cases", CASES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CASES = _load_cases()
CASE_NAMES = list(CASES.build_cases())
PARAM_NAMES = list(CASES.PARAMS)


def _raises(pattern: str) -> dict:
    return {"raises": pattern}


# Where modelfmt deliberately differs from MLflow. In all but the last MLflow's own inference fails and it
# falls back to one 'any' column (or raises, for params); the test checks that this is still so.
_UINT64 = _raises(r"dtype (uint64|UInt64), whose values need not fit a long")
_MIXED = _raises(r"mixes values of types long and string")
_TIMESTAMPS = {"inputs": [{"type": "datetime", "required": True}]}
EXPECTED_DIFFERENCES: dict[str, dict] = {
    # No column type holds uint64 (long is int64): say so instead of an unchecked 'any' column.
    **{f"{d}/{c}": _UINT64 for d in ("uint64", "UInt64") for c in ("dataframe", "series", "series_unnamed")},
    # A column or list of ints and strings: no one type; an 'any' column would accept anything.
    **{f"mixed_int_str/{c}": _MIXED for c in ("dataframe", "series", "series_unnamed", "list")},
    # pandas.Timestamp is a datetime.datetime; MLflow types datetime.datetime values but not Timestamps.
    "datetime64/list": _TIMESTAMPS,
    "datetime64_na/list": _TIMESTAMPS,
    # Column names are strings in modelfmt's schemas; MLflow writes the int 0 (and reads it back as an int).
    "int_colnames/dataframe": {"inputs": [{"type": "double", "name": "0", "required": True},
                                          {"type": "double", "name": "1", "required": True}],
                               "mlflow_inputs": [{"type": "double", "name": 0, "required": True},
                                                 {"type": "double", "name": 1, "required": True}]},
}
PARAM_DIFFERENCES: dict[str, dict] = {
    # MLflow infers 'integer' for an np.int8 param and then refuses its own default; an int8 fits.
    "int8": {"params": [{"name": "i8", "default": 1, "shape": None, "type": "integer"}]},
}


def _run(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    return subprocess.Popen([MLFLOW_PYTHON, *args], env=env, cwd=str(SCRIPTS), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen, what: str) -> str:
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"MLflow subprocess ({what}) failed with {proc.returncode}:\n{err[-4000:]}")
    return out


def _classifiers(base: Path) -> dict:
    """String-label classifiers saved by modelfmt with an input example: name -> load_ours.py entry."""
    from sklearn.linear_model import LogisticRegression

    from modelfmt.flavors import sklearn as sk_flavor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    words = np.where(X["a"] + X["b"] > 0, "spam", "ham")
    labels = {
        "clf_pandas_str": pd.Series(words),  # pandas 3's str dtype: predict() gives an object array
        "clf_numpy_str": words,  # numpy <U4: predict() gives <U4, once written as MLflow cannot read it
    }
    out = {}
    for name, y in labels.items():
        clf = LogisticRegression().fit(X, y)
        path = base / name
        sk_flavor.save_model(clf, path, input_example=X.head(5))
        out[name] = {"name": name, "path": str(path), "params": None,
                     "expected": clf.predict(X.head(5)).tolist()}
    return out


@pytest.fixture(scope="module")
def mlflow_side(tmp_path_factory):
    """MLflow's signatures for every case, and what MLflow makes of our classifiers (run in parallel)."""
    base = tmp_path_factory.mktemp("infer_mlflow")
    models = _classifiers(base)
    (base / "spec.json").write_text(json.dumps({"models": list(models.values())}))
    infer = _run([str(SCRIPTS / "infer_signatures.py"), str(CASES_FILE)])
    load = _run([str(SCRIPTS / "load_ours.py"), str(base / "spec.json"), str(base / "out.json")])
    signatures = json.loads(_finish(infer, "infer_signatures.py").strip().splitlines()[-1])
    _finish(load, "load_ours.py")
    return {"signatures": signatures, "models": models, "loaded": json.loads((base / "out.json").read_text())}


def _ours(data, params=None) -> dict:
    try:
        sig = infer_signature(data, data) if params is None else infer_signature(CASES.PARAMS_INPUT(), params=params)
    except SchemaError as e:
        return {"error": f"SchemaError: {e}"}
    d = sig.to_dict()
    return {k: json.loads(d[k]) for k in ("inputs", "outputs", "params") if d[k]}


def test_both_venvs_build_the_same_cases(mlflow_side):
    assert mlflow_side["signatures"]["versions"] == CASES.versions()
    assert mlflow_side["signatures"]["mlflow_version"].startswith("3.18")
    assert list(mlflow_side["signatures"]["cases"]) == CASE_NAMES


def test_expected_differences_are_cases():
    assert set(EXPECTED_DIFFERENCES) <= set(CASE_NAMES)
    assert set(PARAM_DIFFERENCES) <= set(PARAM_NAMES)


@pytest.mark.parametrize("case", CASE_NAMES)
def test_signature_matches_mlflow(mlflow_side, case):
    theirs = mlflow_side["signatures"]["cases"][case]
    ours = _ours(CASES.build_cases()[case])
    expected = EXPECTED_DIFFERENCES.get(case)
    if expected is None:
        assert "fallback" not in theirs, f"MLflow cannot infer {case} ({theirs['fallback']}): decide, and list it"
        assert "error" not in ours, ours["error"]
        assert ours == {"inputs": theirs["inputs"], "outputs": theirs["outputs"]}
        return
    # A listed difference: MLflow still does what the list says (mostly: fails), and so does modelfmt.
    if "mlflow_inputs" in expected:
        assert theirs["inputs"] == expected["mlflow_inputs"]
    else:
        assert "fallback" in theirs, f"MLflow now infers {case}: {theirs['inputs']}; drop it from the list"
    if "raises" in expected:
        assert "error" in ours, f"expected a SchemaError for {case}, got {ours}"
        assert re.search(expected["raises"], ours["error"]), ours["error"]
        assert "pass signature=" in ours["error"]
    else:
        assert ours == {"inputs": expected["inputs"], "outputs": expected["inputs"]}


@pytest.mark.parametrize("case", PARAM_NAMES)
def test_params_schema_matches_mlflow(mlflow_side, case):
    theirs = mlflow_side["signatures"]["params"][case]
    ours = _ours(None, params=CASES.build_params()[case])
    if case in PARAM_DIFFERENCES:
        assert "error" in theirs
        assert ours["params"] == PARAM_DIFFERENCES[case]["params"]
    elif "error" in theirs:  # MLflow refuses it: so do we
        assert "error" in ours, f"MLflow refuses {case} ({theirs['error']}); we gave {ours}"
    else:
        assert ours.get("params") == theirs


# -- end to end: string-label classifiers -------------------------------------------------------
@pytest.mark.parametrize("name", ["clf_pandas_str", "clf_numpy_str"])
def test_string_label_classifier_saved_by_us_predicts_in_mlflow(mlflow_side, name):
    from modelfmt import Model

    ours = mlflow_side["models"][name]
    outputs = Model.load(ours["path"]).signature.outputs.to_dict()
    want = "object" if name == "clf_pandas_str" else "str"
    assert outputs == [{"type": "tensor", "tensor-spec": {"dtype": want, "shape": [-1]}}]
    seen = mlflow_side["loaded"]["models"][name]
    assert not [k for k in seen if k.endswith("error")], seen
    assert mlflow_side["loaded"]["modelfmt_importable"] is False
    assert seen["predictions"] == ours["expected"]
    assert set(ours["expected"]) <= {"spam", "ham"}
    # serving_input_example.json through MLflow's own request parser and the model.
    assert seen["serving_predictions"] == ours["expected"]


def test_object_label_output_infers_an_object_tensor():
    labels = np.array(["spam", "ham"], dtype=object)
    sig = infer_signature(pd.DataFrame({"a": [1.0, 2.0]}), labels)
    want = [{"type": "tensor", "tensor-spec": {"dtype": "object", "shape": [-1]}}]
    assert json.loads(sig.to_dict()["outputs"]) == want
