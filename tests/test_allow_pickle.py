"""Refusing pickle: ``allow_pickle=False`` and ``MODELFMT_ALLOW_PICKLE=false`` refuse every model whose
loading unpickles a file (cloudpickle, pickle, ``python_model.pkl``, MLflow's pickled models) or imports
``code/``, before any of it runs; skops models load. ``modelfmt.trust.load_risks`` names what loading runs.

The pickled models here are booby-trapped: unpickling them writes a marker file, so "refused before
anything is unpickled" is checked by the marker's absence (and the trap is shown to work when allowed).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from modelfmt import trust
from modelfmt.errors import FlavorError, PickleRefusedError
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.open import open_model

PKL_LINE = "unpickles model.pkl (cloudpickle): loading runs code from the file"


class _Trap:
    """An "estimator" whose pickle runs ``exec`` when it is loaded (the attack a pickle file allows)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def predict(self, X):
        return X

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))


def _trap_model():
    from modelfmt.flavors.pyfunc import PythonModel

    class TrapModel(PythonModel):
        def __init__(self, marker):
            self.marker = marker

        def predict(self, context, model_input, params=None):
            return model_input

        def __reduce__(self):
            return (exec, (f"open({self.marker!r}, 'w').write('unpickled')",))

    return TrapModel


@pytest.fixture()
def marker(tmp_path):
    return str(tmp_path / "unpickled.txt")


@pytest.fixture()
def trapped_sklearn(tmp_path, marker):
    path = str(tmp_path / "sk_trap")
    sk_flavor.save_model(_Trap(marker), path, serialization_format="cloudpickle")
    assert not os.path.exists(marker)
    return path


@pytest.fixture()
def trapped_custom(tmp_path, marker):
    path = str(tmp_path / "pf_trap")
    pyfunc.save_model(path, python_model=_trap_model()(marker))
    return path


@pytest.fixture(scope="module")
def skops_model(tmp_path_factory, elasticnet, diabetes):
    path = str(tmp_path_factory.mktemp("safe") / "skops")
    sk_flavor.save_model(elasticnet, path, input_example=diabetes[0].head(2))  # skops: the default
    return path


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(trust.ALLOW_PICKLE_ENV, raising=False)


def test_the_trap_runs_when_pickle_is_allowed(trapped_sklearn, marker):
    assert sk_flavor.load_model(trapped_sklearn) is None  # exec's result
    assert open(marker).read() == "unpickled"


@pytest.mark.parametrize("load", [sk_flavor.load_model, pyfunc.load_model], ids=["sklearn", "pyfunc"])
def test_allow_pickle_false_refuses_a_pickled_sklearn_model_before_unpickling(trapped_sklearn, marker, load):
    with pytest.raises(PickleRefusedError) as info:
        load(trapped_sklearn, allow_pickle=False)
    message = str(info.value)
    assert "pickle is not allowed (allow_pickle=False)" in message and PKL_LINE in message
    assert "allow_pickle=True" in message and "serialization_format='skops'" in message
    assert not os.path.exists(marker)


def test_pickle_format_and_mlflow_pickled_models_are_refused(tmp_path, marker):
    path = str(tmp_path / "pickle")
    sk_flavor.save_model(_Trap(marker), path, serialization_format="pickle")
    with pytest.raises(PickleRefusedError, match=r"unpickles model\.pkl \(pickle\)"):
        pyfunc.load_model(path, allow_pickle=False)
    # As MLflow writes them: its own loader names, a pickle under its own file name, no modelfmt fields.
    mlflow_dir = tmp_path / "mlflow_sk"
    mlflow_dir.mkdir()
    (mlflow_dir / "model.pkl").write_bytes(open(os.path.join(path, "model.pkl"), "rb").read())
    (mlflow_dir / "MLmodel").write_text(yaml.safe_dump({
        "mlflow_version": "3.18.0",
        "flavors": {
            "python_function": {"loader_module": "mlflow.sklearn", "model_path": "model.pkl", "python_version": "3.11"},
            "sklearn": {"pickled_model": "model.pkl", "serialization_format": "cloudpickle", "sklearn_version": "1.9"},
        },
    }))
    with pytest.raises(PickleRefusedError, match=r"unpickles model\.pkl \(cloudpickle\)"):
        pyfunc.load_model(str(mlflow_dir), allow_pickle=False, verify=False)
    assert not os.path.exists(marker)


def test_custom_python_models_are_refused(trapped_custom, marker):
    with pytest.raises(PickleRefusedError) as info:
        pyfunc.load_model(trapped_custom, allow_pickle=False)
    assert "unpickles python_model.pkl (cloudpickle)" in str(info.value)
    assert "custom PythonModel class" in str(info.value)
    assert not os.path.exists(marker)
    # The pyfunc hook refuses too, for a caller that opened the model itself.
    with pytest.raises(PickleRefusedError):
        pyfunc.load_pyfunc(open_model(trapped_custom, allow_pickle=False))
    assert not os.path.exists(marker)


def test_a_model_shipping_code_is_refused_before_code_goes_on_sys_path(tmp_path, elasticnet, marker):
    src = tmp_path / "mf_pickle_gate_helper.py"
    src.write_text(f"open({marker!r}, 'w').write('imported')\n")
    path = str(tmp_path / "with_code")
    sk_flavor.save_model(elasticnet, path, code_paths=[str(src)])  # skops, but code/ ships with it
    before = list(sys.path)
    with pytest.raises(PickleRefusedError, match=r"imports code/ \(put first on sys\.path\)"):
        sk_flavor.load_model(path, allow_pickle=False)
    with pytest.raises(PickleRefusedError, match="imports code/"):
        pyfunc.load_model(path, allow_pickle=False)
    assert sys.path == before and not os.path.exists(marker)


def test_skops_models_load_and_predict_with_pickle_refused(skops_model, elasticnet, diabetes, monkeypatch):
    X = diabetes[0].head(5)
    assert trust.load_risks(open_model(skops_model)) == []
    est = sk_flavor.load_model(skops_model, allow_pickle=False)
    np.testing.assert_array_equal(est.predict(X), elasticnet.predict(X))
    monkeypatch.setenv(trust.ALLOW_PICKLE_ENV, "false")
    np.testing.assert_array_equal(pyfunc.load_model(skops_model).predict(X), elasticnet.predict(X))


@pytest.mark.parametrize("value", ["false", "0", "no", "OFF"])
def test_the_environment_variable_refuses(trapped_sklearn, marker, monkeypatch, value):
    monkeypatch.setenv(trust.ALLOW_PICKLE_ENV, value)
    with pytest.raises(PickleRefusedError, match="pickle is not allowed \\(MODELFMT_ALLOW_PICKLE=false\\)"):
        pyfunc.load_model(trapped_sklearn)
    assert not os.path.exists(marker)


def test_an_explicit_allow_pickle_wins_over_the_environment(trapped_sklearn, marker, monkeypatch):
    monkeypatch.setenv(trust.ALLOW_PICKLE_ENV, "false")
    assert sk_flavor.load_model(trapped_sklearn, allow_pickle=True) is None
    assert os.path.exists(marker)


def test_a_bad_environment_value_is_an_error(trapped_sklearn, monkeypatch):
    monkeypatch.setenv(trust.ALLOW_PICKLE_ENV, "perhaps")
    with pytest.raises(FlavorError, match="MODELFMT_ALLOW_PICKLE is true or false, got 'perhaps'"):
        pyfunc.load_model(trapped_sklearn)
    assert trust.pickle_allowed({}, {trust.ALLOW_PICKLE_ENV: "True"}) is True
    assert trust.pickle_allowed({}, {}) is True


def test_refused_before_an_environment_is_built(trapped_sklearn, marker):
    # env_manager="uv" would build the model's environment first: the refusal comes before that.
    with pytest.raises(PickleRefusedError):
        pyfunc.load_model(trapped_sklearn, allow_pickle=False, env_manager="uv")
    assert not os.path.exists(marker)


def test_load_risks_names_what_loading_runs(trapped_sklearn, trapped_custom, tmp_path, elasticnet):
    assert trust.load_risks(open_model(trapped_sklearn)) == [PKL_LINE]
    assert trust.load_risks(open_model(trapped_custom)) == [
        "unpickles python_model.pkl (cloudpickle): loading runs code from the file",
        "custom PythonModel class: its load_context and predict run code chosen by whoever made the model",
    ]
    src = tmp_path / "mf_risk_helper.py"
    src.write_text("X = 1\n")
    path = str(tmp_path / "code")
    sk_flavor.save_model(elasticnet, path, code_paths=[str(src)])
    (line,) = trust.load_risks(open_model(path))
    assert line.startswith("imports code/ ")


def test_the_cli_refuses_with_one_line(trapped_sklearn, marker, tmp_path):
    rows = tmp_path / "rows.json"
    rows.write_text('{"dataframe_split": {"columns": ["a"], "data": [[1.0]]}}')
    env = {**os.environ, trust.ALLOW_PICKLE_ENV: "false"}
    out = subprocess.run([sys.executable, "-m", "modelfmt", "predict", trapped_sklearn, "-i", str(rows)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("modelfmt: error: refusing to load") and "MODELFMT_ALLOW_PICKLE=true" in line
    assert not os.path.exists(marker)


def test_serve_refuses_to_start_on_a_pickled_model(trapped_sklearn, marker):
    from modelfmt.serving.testing import free_port

    env = {**os.environ, trust.ALLOW_PICKLE_ENV: "false"}
    out = subprocess.run([sys.executable, "-m", "modelfmt", "serve", trapped_sklearn, "--port", str(free_port()),
                          "--workers", "1"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0
    assert "cannot load the model: refusing to load" in out.stderr and "MODELFMT_ALLOW_PICKLE=false" in out.stderr
    assert not os.path.exists(marker)
