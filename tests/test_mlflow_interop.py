"""modelfmt and real MLflow 3.x read each other's models (MLflow lives in its own venv).

All MLflow-side work runs in three subprocesses started together, once per session: one saves a
model of each kind with MLflow; one loads our sklearn models with MLflow, where modelfmt is not
importable; one loads our custom PythonModels with the repository root on PYTHONPATH (a custom
model's pickle names ``modelfmt.flavors.pyfunc.PythonModel``, so MLflow needs modelfmt importable for those).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "mlflow_scripts"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))

if not os.path.exists(MLFLOW_PYTHON):
    if os.environ.get("CI"):
        raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
    pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)", allow_module_level=True)

MLFLOW_MODELS = ["sk_skops", "sk_cloudpickle", "pf_context", "pf_nocontext", "pf_ndarray", "pf_typehint",
                 "pf_params", "pf_code_paths", "pf_function", "pf_compressed", "pf_any_column"]
MLFLOW_PARAMS = {"pf_params": {"scale": 3.0}}


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    # Loading a model with code_paths puts its code/ directory on sys.path; keep that per test.
    monkeypatch.setattr(sys, "path", list(sys.path))


def _mlflow_env(pythonpath: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _plain(value):
    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return value.tolist() if isinstance(value, np.ndarray) else value


def _modelfmt_importable(base: Path) -> str:
    """A folder holding modelfmt as it installs (unpacked from a wheel of this checkout), for PYTHONPATH:
    the checkout itself is not importable as ``modelfmt.flavors`` (its folders map through package-dir)."""
    import zipfile

    from modelfmt.serving.docker.wheels import wheel_from_source

    wheel = wheel_from_source(str(ROOT), str(base))
    target = base / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return str(target)


def _save_ours(base: Path, diabetes, elasticnet) -> dict:
    """Our models for MLflow to load: name -> {path, params, predictions (ours, on our example)}."""
    import pandas as pd
    from sklearn.linear_model import ElasticNet, LogisticRegression

    import modelfmt
    from modelfmt.flavors import pyfunc, sklearn as sk_flavor
    from modelfmt.example import frame_to_split, load_input_example

    X, y = diabetes
    ex = X.head(3)
    out: dict = {}
    sk_flavor.save_model(elasticnet, base / "sk_cloudpickle", serialization_format="cloudpickle", input_example=ex)
    sig = modelfmt.infer_signature(ex, elasticnet.predict(ex))
    sk_flavor.save_model(elasticnet, base / "sk_pickle", serialization_format="pickle", signature=sig)
    sig_params = modelfmt.infer_signature(ex, elasticnet.predict(ex), params={"note": "x", "k": 1})
    sk_flavor.save_model(elasticnet, base / "sk_skops", serialization_format="skops", signature=sig_params,
                         input_example=ex)
    logreg = LogisticRegression(max_iter=500).fit(X, y > y.median())
    sk_flavor.save_model(logreg, base / "sk_proba", pyfunc_predict_fn="predict_proba", input_example=X.head(4))
    arr_model = ElasticNet(alpha=0.05).fit(X.to_numpy(), y)
    sk_flavor.save_model(arr_model, base / "sk_ndarray", input_example=X.to_numpy()[:2])
    (base / "art").mkdir()
    (base / "art" / "factor.txt").write_text("4")
    pyfunc.save_model(str(base / "pf_custom"), python_model=_custom_model(), artifacts={"f": base / "art" / "factor.txt"},
                      input_example=pd.DataFrame({"x": [1.0, 2.5]}))
    pyfunc.save_model(str(base / "pf_typehint"), python_model=_typehint_model(), input_example=["ab", "c"])
    params = {"sk_skops": {"note": "y", "k": 2}}
    for name in ("sk_cloudpickle", "sk_pickle", "sk_skops", "sk_proba", "sk_ndarray", "pf_custom", "pf_typehint"):
        path = str(base / name)
        example = load_input_example(path)
        entry = {"path": path, "params": params.get(name)}
        if example is None:  # no example saved: score explicit rows
            example = X.iloc[10:15]
            entry["input_split"] = frame_to_split(example)
        entry["predictions"] = _plain(modelfmt.load_model(path).predict(example, params=params.get(name)))
        out[name] = entry
    return out


def _custom_model():
    # Defined in a function so that cloudpickle stores the class by value, as for a notebook class.
    from modelfmt.flavors.pyfunc import PythonModel

    class Scaler(PythonModel):
        def load_context(self, context):
            with open(context.artifacts["f"]) as f:
                self.factor = float(f.read())

        def predict(self, context, model_input, params=None):
            return model_input["x"].to_numpy() * self.factor

    return Scaler()


def _typehint_model():
    from modelfmt.flavors.pyfunc import PythonModel

    class Shout(PythonModel):
        def predict(self, model_input: list[str], params=None) -> list[str]:
            return [s.upper() for s in model_input]

    return Shout()


def _run_mlflow(args: list[str], pythonpath: str | None, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([MLFLOW_PYTHON, *args], cwd=cwd, env=_mlflow_env(pythonpath),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, what: str) -> None:
    try:
        output, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
    if proc.returncode != 0:
        raise AssertionError(f"MLflow subprocess ({what}) failed with {proc.returncode}:\n{output[-4000:]}")


@pytest.fixture(scope="session")
def interop(tmp_path_factory, diabetes, elasticnet):
    """Run the three MLflow subprocesses in parallel; returns their results."""
    base = tmp_path_factory.mktemp("interop")
    mlflow_dir, ours_dir = base / "mlflow_models", base / "ours"
    ours_dir.mkdir()
    ours = _save_ours(ours_dir, diabetes, elasticnet)
    custom = {"pf_custom", "pf_typehint"}
    spec_plain = {"models": [{"name": n, **v} for n, v in ours.items()]}
    spec_custom = {"models": [{"name": n, **v} for n, v in ours.items() if n in custom]}
    (base / "plain.json").write_text(json.dumps(spec_plain))
    (base / "custom.json").write_text(json.dumps(spec_custom))
    procs = {
        "save MLflow models": _run_mlflow([str(SCRIPTS / "save_mlflow_models.py"), str(mlflow_dir)], None, base),
        "load ours without modelfmt": _run_mlflow(
            [str(SCRIPTS / "load_ours.py"), str(base / "plain.json"), str(base / "plain_out.json")], None, base),
        "load ours with modelfmt (from a wheel) on PYTHONPATH": _run_mlflow(
            [str(SCRIPTS / "load_ours.py"), str(base / "custom.json"), str(base / "custom_out.json")],
            _modelfmt_importable(base), base),
    }
    for what, proc in procs.items():
        _wait(proc, what)
    return {
        "ours": ours,
        "mlflow_dir": mlflow_dir,
        "expected": json.loads((mlflow_dir / "expected.json").read_text()),
        "plain": json.loads((base / "plain_out.json").read_text()),
        "custom": json.loads((base / "custom_out.json").read_text()),
    }


def _assert_same(got, want) -> None:
    flat = np.ravel(np.asarray(want, dtype=object))
    if len(flat) and isinstance(flat[0], str):
        assert list(got) == list(want)
    else:
        np.testing.assert_allclose(np.asarray(got, dtype=float), np.asarray(want, dtype=float), rtol=1e-9, atol=1e-9)


# -- environments --------------------------------------------------------------------------------
def test_modelfmt_venv_has_no_mlflow():
    assert importlib.util.find_spec("mlflow") is None
    proc = subprocess.run([sys.executable, "-c", "import mlflow"], capture_output=True, text=True)
    assert proc.returncode != 0 and "No module named 'mlflow'" in proc.stderr


def test_mlflow_venv_has_no_modelfmt(interop):
    assert interop["plain"]["mlflow_version"].startswith("3.")
    assert interop["plain"]["modelfmt_importable"] is False
    assert interop["plain"]["flavors_importable"] is False
    assert interop["custom"]["flavors_importable"] is True


# -- ours -> MLflow ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sk_cloudpickle", "sk_skops", "sk_proba", "sk_ndarray"])
def test_mlflow_predicts_our_sklearn_model(interop, name):
    seen, ours = interop["plain"]["models"][name], interop["ours"][name]
    assert not [k for k in seen if k.endswith("error")], seen
    _assert_same(seen["predictions"], ours["predictions"])
    # validate_serving_input posts our serving_input_example.json through MLflow's parser and model.
    _assert_same(seen["serving_predictions"], ours["predictions"])


def test_mlflow_loads_our_pickle_model_without_example(interop):
    seen = interop["plain"]["models"]["sk_pickle"]
    assert "predict_error" not in seen and "example_error" not in seen
    assert seen["example_kind"] == "NoneType"
    _assert_same(seen["predictions"], interop["ours"]["sk_pickle"]["predictions"])


@pytest.mark.parametrize("name", ["sk_cloudpickle", "sk_pickle", "sk_skops", "sk_proba", "sk_ndarray", "pf_custom"])
def test_mlflow_reads_our_signature_and_example(interop, name):
    from modelfmt import Model
    from modelfmt.example import load_input_example

    report = interop["custom" if name.startswith("pf_") else "plain"]["models"][name]
    path = interop["ours"][name]["path"]
    meta = Model.load(path)
    assert report["input_schema"] == meta.get_input_schema().to_dict()
    params = meta.get_params_schema()
    assert report["params_schema"] == (params.to_dict() if params else None)
    ours = load_input_example(path)
    if ours is None:
        return
    assert report["example_kind"] == type(ours).__name__
    _assert_same(np.asarray(report["example"]).ravel(), np.asarray(ours).ravel())
    if "example_columns" in report:
        assert report["example_columns"] == list(ours.columns)


def test_mlflow_reads_our_params_schema(interop):
    seen = interop["plain"]["models"]["sk_skops"]["params_schema"]
    assert {p["name"]: (p["type"], p["default"]) for p in seen} == {"note": ("string", "x"), "k": ("long", 1)}


def test_our_custom_model_needs_modelfmt_in_mlflow(interop):
    seen = interop["plain"]["models"]["pf_custom"]
    assert "No module named 'modelfmt'" in seen["predict_error"]


@pytest.mark.parametrize("name", ["pf_custom", "pf_typehint"])
def test_mlflow_predicts_our_custom_model_with_modelfmt_importable(interop, name):
    seen, ours = interop["custom"]["models"][name], interop["ours"][name]
    assert not [k for k in seen if k.endswith("error")], seen
    _assert_same(seen["predictions"], ours["predictions"])
    _assert_same(seen["serving_predictions"], ours["predictions"])


# -- MLflow -> ours ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MLFLOW_MODELS)
def test_we_predict_mlflow_models_like_mlflow(interop, name):
    import modelfmt
    from modelfmt.example import load_input_example

    path = str(interop["mlflow_dir"] / name)
    model = modelfmt.load_model(path)
    preds = model.predict(load_input_example(path), params=MLFLOW_PARAMS.get(name))
    _assert_same(_plain(preds), interop["expected"][name])


def test_mlflow_sklearn_default_is_skops_and_loads_natively(interop, caplog):
    from sklearn.linear_model import ElasticNet

    from modelfmt.flavors import sklearn as sk_flavor
    from modelfmt import Model

    path = interop["mlflow_dir"] / "sk_skops"
    assert (path / "model.skops").is_file()
    assert Model.load(path).flavors["sklearn"]["serialization_format"] == "skops"
    with caplog.at_level(logging.WARNING):
        est = sk_flavor.load_model(path)
    assert isinstance(est, ElasticNet)
    # Its requirements pin mlflow==3.x, which is not a mismatch worth a warning here.
    assert "mlflow==" in (path / "requirements.txt").read_text()
    assert not [r for r in caplog.records if "other package versions" in r.getMessage()]


def test_mlflow_skops_trust_list_is_not_trust_for_us(interop):
    """MLflow honours skops_trusted_types from MLmodel; modelfmt wants the caller to name them."""
    import modelfmt
    from modelfmt import Model
    from modelfmt.errors import UnsafeModelError
    from modelfmt.example import load_input_example

    path = interop["mlflow_dir"] / "sk_skops_untrusted"
    assert Model.load(path).flavors["sklearn"]["skops_trusted_types"] == ["_operator.neg"]
    with pytest.raises(UnsafeModelError, match=r"_operator\.neg"):
        modelfmt.load_model(path)
    model = modelfmt.load_model(path, trusted_types=["_operator.neg"])
    _assert_same(_plain(model.predict(load_input_example(str(path)))), interop["expected"]["sk_skops_untrusted"])


def test_mlflow_predict_proba_model(interop):
    from sklearn.linear_model import LogisticRegression

    import modelfmt

    model = modelfmt.load_model(interop["mlflow_dir"] / "sk_cloudpickle")
    assert model.metadata.flavors["python_function"]["predict_fn"] == "predict_proba"
    assert isinstance(model.get_raw_model(), LogisticRegression)
    assert np.asarray(interop["expected"]["sk_cloudpickle"]).shape == (4, 2)


def test_mlflow_signatures_and_examples_read_by_us(interop):
    import pandas as pd
    import yaml

    from modelfmt import Model
    from modelfmt.example import load_input_example

    base = interop["mlflow_dir"]
    for name in MLFLOW_MODELS:
        raw = yaml.safe_load((base / name / "MLmodel").read_text())["signature"]
        sig = Model.load(base / name).signature
        assert json.loads(sig.inputs.to_json()) == json.loads(raw["inputs"]), name
        if raw.get("params"):
            assert json.loads(sig.params.to_json()) == json.loads(raw["params"]), name
    from modelfmt.types import AnyType

    assert Model.load(base / "pf_any_column").signature.inputs.inputs[2].type == AnyType()
    sk = load_input_example(str(base / "sk_skops"))
    assert isinstance(sk, pd.DataFrame) and list(sk.columns)[:2] == ["age", "sex"] and len(sk) == 3
    nd = load_input_example(str(base / "pf_ndarray"))
    assert isinstance(nd, np.ndarray) and nd.shape == (2, 3)
    assert Model.load(base / "pf_ndarray").get_input_schema().is_tensor_spec()
    assert load_input_example(str(base / "pf_typehint")) == ["ab", "cd"]
    with_params = load_input_example(str(base / "pf_params"))
    assert isinstance(with_params, pd.DataFrame) and list(with_params["x"]) == [1.0, 2.0, 4.0]
    assert {p.name: p.default for p in Model.load(base / "pf_params").get_params_schema().params} == {
        "scale": 2.0, "shift": 0}


def test_mlflow_params_schema_defaults_apply(interop):
    import pandas as pd

    import modelfmt

    model = modelfmt.load_model(interop["mlflow_dir"] / "pf_params")
    x = pd.DataFrame({"x": [1.0, 2.0]})
    np.testing.assert_allclose(model.predict(x), [2.0, 4.0])  # default scale 2.0
    np.testing.assert_allclose(model.predict(x, params={"scale": 1.0, "shift": 1}), [2.0, 3.0])


def test_mlflow_artifacts_resolve_to_absolute_paths(interop):
    import modelfmt

    model = modelfmt.load_model(interop["mlflow_dir"] / "pf_context")
    python_model = model.unwrap_python_model()
    assert type(python_model).__name__ == "WithContext"
    assert python_model.coef == 3.0 and python_model.offset == 0.5


def test_mlflow_type_hinted_model_takes_frames_and_lists(interop):
    import pandas as pd

    import modelfmt

    model = modelfmt.load_model(interop["mlflow_dir"] / "pf_typehint")
    assert model.predict(["x"]) == ["X!"]
    assert model.predict(pd.DataFrame({"s": ["a", "b"]})) == ["A!", "B!"]


def test_mlflow_code_paths_module_importing_mlflow_loads(interop):
    import modelfmt

    model = modelfmt.load_model(interop["mlflow_dir"] / "pf_code_paths")
    assert type(model.unwrap_python_model()).__module__ == "mf_shipped_code"
    # The stand-in modules served to that code while loading do not outlive the load.
    assert not [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]
    assert importlib.util.find_spec("mlflow") is None


def test_mlflow_compressed_and_function_models(interop):
    from modelfmt import Model

    base = interop["mlflow_dir"]
    conf = Model.load(base / "pf_compressed").flavors["python_function"]
    assert conf["python_model_compression"] == "lzma" and conf["python_model"].endswith(".xz")
    import modelfmt

    model = modelfmt.load_model(base / "pf_function")
    assert model.predict(["ok"]) == ["OK?"]
    assert type(model.unwrap_python_model()).__name__ == "_FunctionPythonModel"


def test_unmappable_mlflow_name_is_refused_with_its_name(interop):
    import modelfmt
    from modelfmt.errors import UnsafeModelError

    with pytest.raises(UnsafeModelError, match=r"mlflow\.types\.schema\.Schema"):
        modelfmt.load_model(interop["mlflow_dir"] / "pf_unmappable")


def test_unmappable_import_in_shipped_code_is_refused_with_its_name(tmp_path, monkeypatch):
    """A code_paths module that uses an MLflow name beyond the stand-ins fails naming that name."""
    import io

    from modelfmt.flavors import _mlflow_names
    from modelfmt.errors import UnsafeModelError

    (tmp_path / "mf_uses_mlflow.py").write_text("from mlflow.models import infer_signature\n\nclass M:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A pickle naming mf_uses_mlflow.M by reference, as cloudpickle writes it for an importable class.
    data = b"\x80\x04\x8c\x0emf_uses_mlflow\x8c\x01M\x93."
    with pytest.raises(UnsafeModelError, match=r"mlflow\.models\.infer_signature"):
        _mlflow_names.load_pickle(io.BytesIO(data))
    assert not [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]
