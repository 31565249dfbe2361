"""Safe formats by default: the sklearn flavor saves stock models with skops (no pickle), falls back to
cloudpickle with one warning naming the types that forced it, and still writes what MLflow's loader needs
(``skops_trusted_types``): a forest and an encoder pipeline saved here load and predict alike in MLflow.
Trust never comes from the model directory, except from a model signed by a key the caller trusts."""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modelfmt import Model, trust
from modelfmt.errors import UnsafeModelError
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.open import open_model

ROOT = Path(__file__).resolve().parents[1]
LOAD_OURS = Path(__file__).resolve().parent / "mlflow_scripts" / "load_ours.py"
MLFLOW_PYTHON = os.environ.get("MODELFMT_MLFLOW_PYTHON", str(ROOT / "bench" / ".venv-mlflow" / "bin" / "python"))
HALVE = f"{__name__}.halve"


def halve(x):
    """A user's function: outside every default trust (skops calls it at predict time)."""
    return x / 2


def _frame(n: int = 60) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(7)
    X = pd.DataFrame({
        "amount": rng.normal(50, 20, n),
        "age": rng.integers(18, 80, n).astype(float),
        "country": rng.choice(["fr", "de", "us"], n),
    })
    y = ((X["amount"] > 50) ^ (X["country"] == "us")).to_numpy().astype(int)
    return X, y


def _forest():
    from sklearn.ensemble import RandomForestClassifier

    X, y = _frame()
    X = X[["amount", "age"]]
    return RandomForestClassifier(n_estimators=8, max_depth=4, random_state=0).fit(X, y), X


def _encoder_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = _frame()
    pre = ColumnTransformer([
        ("onehot", OneHotEncoder(handle_unknown="ignore"), ["country"]),
        ("scale", StandardScaler(), ["amount", "age"]),
    ])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(X, y), X


def _halving_pipeline():
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = _frame()
    X = X[["amount", "age"]]
    return make_pipeline(FunctionTransformer(halve), LinearRegression()).fit(X, y), X


def _fallbacks(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, sk_flavor.PickleFallbackWarning)]


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """The forest and the encoder pipeline saved with the defaults: name -> (path, estimator, X)."""
    base = tmp_path_factory.mktemp("safe_formats")
    out = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, (est, X) in {"forest": _forest(), "pipeline": _encoder_pipeline()}.items():
            path = str(base / name)
            sk_flavor.save_model(est, path, input_example=X.head(4), pyfunc_predict_fn="predict_proba")
            out[name] = (path, est, X)
    assert _fallbacks(caught) == []
    return out


@pytest.mark.parametrize("name", ["forest", "pipeline"])
def test_stock_models_save_with_skops_by_default(stock, name):
    path, est, X = stock[name]
    assert sorted(os.listdir(path)).count("model.skops") == 1 and "model.pkl" not in os.listdir(path)
    conf = Model.load(path).flavors["sklearn"]
    assert conf["serialization_format"] == "skops" and conf["pickled_model"] == "model.skops"
    assert "skops==" in Path(path, "requirements.txt").read_text()
    assert trust.load_risks(open_model(path)) == []  # nothing in it runs code when it loads
    np.testing.assert_allclose(pyfunc.load_model(path, allow_pickle=False).predict(X), est.predict_proba(X))


def test_the_forest_writes_mlflow_its_trust_list(stock):
    # MLflow's loader trusts only what MLmodel lists beyond skops' defaults: the forest's Tree.
    assert Model.load(stock["forest"][0]).flavors["sklearn"]["skops_trusted_types"] == ["sklearn.tree._tree.Tree"]


def test_mlflow_loads_and_predicts_our_default_saves(stock, tmp_path):
    if not os.path.exists(MLFLOW_PYTHON):
        if os.environ.get("CI"):
            raise RuntimeError(f"MLflow venv interpreter {MLFLOW_PYTHON} is missing (make mlflow-venv builds it)")
        pytest.skip(f"no MLflow venv at {MLFLOW_PYTHON} (make mlflow-venv)")
    spec = {"models": [{"name": n, "path": p, "params": None} for n, (p, _e, _x) in stock.items()]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    proc = subprocess.run([MLFLOW_PYTHON, str(LOAD_OURS), str(tmp_path / "spec.json"), str(tmp_path / "out.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["modelfmt_importable"] is False
    for name, (_path, est, X) in stock.items():
        seen = report["models"][name]
        assert not [k for k in seen if k.endswith("error")], seen
        np.testing.assert_allclose(np.asarray(seen["predictions"]), est.predict_proba(X.head(4)), rtol=1e-12)


def test_an_untrusted_type_falls_back_to_cloudpickle_with_one_warning(tmp_path):
    est, X = _halving_pipeline()
    path = str(tmp_path / "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sk_flavor.save_model(est, path)
    (message,) = _fallbacks(caught)
    assert message.startswith("Pipeline saved with cloudpickle, not skops:") and HALVE in message
    assert "trusted_types=[...]" in message
    assert sorted(os.listdir(path)).count("model.pkl") == 1 and "model.skops" not in os.listdir(path)
    assert Model.load(path).flavors["sklearn"]["serialization_format"] == "cloudpickle"
    assert "cloudpickle==" in Path(path, "requirements.txt").read_text()
    np.testing.assert_allclose(pyfunc.load_model(path).predict(X), est.predict(X))


def test_caller_trusted_types_keep_skops_and_loading_needs_them_again(tmp_path):
    est, X = _halving_pipeline()
    path = str(tmp_path / "m")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sk_flavor.save_model(est, path, trusted_types=[HALVE])
    assert _fallbacks(caught) == []
    conf = Model.load(path).flavors["sklearn"]
    assert conf["serialization_format"] == "skops" and HALVE in conf["skops_trusted_types"]
    # The model lists the type for MLflow; modelfmt does not take trust from an unsigned model.
    with pytest.raises(UnsafeModelError, match=f"holds types modelfmt does not trust by default: {HALVE}"):
        pyfunc.load_model(path)
    np.testing.assert_allclose(pyfunc.load_model(path, trusted_types=[HALVE]).predict(X), est.predict(X))


def test_an_explicit_format_still_chooses(tmp_path):
    est, _X = _halving_pipeline()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sk_flavor.save_model(est, str(tmp_path / "cp"), serialization_format="cloudpickle")
    assert _fallbacks(caught) == [] and (tmp_path / "cp" / "model.pkl").is_file()
    with pytest.raises(UnsafeModelError, match=HALVE):
        sk_flavor.save_model(est, str(tmp_path / "sk"), serialization_format="skops")
    assert not (tmp_path / "sk").exists()


def _key_pair(folder: Path) -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "signer.pem", folder / "signer.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(private), str(public)


def test_only_a_model_signed_by_a_trusted_key_may_carry_its_own_trust_list(tmp_path, monkeypatch):
    from modelfmt.signing import sign_model

    monkeypatch.delenv("MODELFMT_PUBLIC_KEY", raising=False)
    monkeypatch.delenv(trust.TRUSTED_TYPES_ENV, raising=False)
    est, X = _halving_pipeline()
    path = str(tmp_path / "m")
    sk_flavor.save_model(est, path, trusted_types=[HALVE])  # MLmodel's skops_trusted_types names it
    private, public = _key_pair(tmp_path)
    _sig, fingerprint = sign_model(path, private)
    # Signed, and the caller trusts the key: the signer vouches for the model's list.
    opened = open_model(path, public_key=public)
    assert opened.signed_by == fingerprint
    np.testing.assert_allclose(pyfunc.load_model(path, public_key=public).predict(X), est.predict(X))
    np.testing.assert_allclose(sk_flavor.load_model(path, public_key=public).predict(X), est.predict(X))
    # Signed, but no key given: nothing vouches for the list; the caller's own trust is still needed.
    assert open_model(path).signed_by is None
    with pytest.raises(UnsafeModelError, match=f"does not trust by default: {HALVE}"):
        pyfunc.load_model(path)
    # Unsigned (the signature removed): the same MLmodel list is not read.
    os.remove(os.path.join(path, "model.sig"))
    with pytest.raises(UnsafeModelError, match=f"does not trust by default: {HALVE}"):
        sk_flavor.load_model(path)
