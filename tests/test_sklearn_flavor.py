"""modelfmt.flavors.sklearn: formats, predict functions, signatures, atomic saves, code paths, skops trust."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import yaml
from sklearn.base import BaseEstimator, RegressorMixin

import modelfmt
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt import Model
from modelfmt.errors import FlavorError, ModelExistsError, ModelFormatError, UnsafeModelError
from modelfmt.integrity import record_digests


def _double(x):
    """A function skops does not trust (it lives in this test module)."""
    return x * 2


class MeanRegressor(RegressorMixin, BaseEstimator):
    """A custom estimator class (importable from this module), outside skops' trusted set."""

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


class _Boom:
    """An estimator whose pickling raises ``exc`` (a failure half way through a save)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def predict(self, X):
        return np.zeros(len(X))

    def __reduce__(self):
        raise self.exc


def _leftovers(parent) -> list[str]:
    """Temporary build directories a save left beside its target."""
    return [n for n in os.listdir(parent) if n.startswith(".")]


@pytest.fixture(scope="module")
def classifier(diabetes):
    from sklearn.linear_model import LogisticRegression

    X, y = diabetes
    return LogisticRegression(max_iter=500).fit(X, y > y.median())


# -- formats -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,file_name,serializer", [
    ("cloudpickle", "model.pkl", "cloudpickle"),
    ("pickle", "model.pkl", "cloudpickle"),
    ("skops", "model.skops", "skops"),
])
def test_round_trip_each_format(tmp_path, elasticnet, diabetes, fmt, file_name, serializer):
    X, _ = diabetes
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path), serialization_format=fmt)
    assert (path / file_name).is_file()
    conf = Model.load(path).flavors
    assert conf["sklearn"]["serialization_format"] == fmt and conf["sklearn"]["pickled_model"] == file_name
    assert conf["python_function"]["loader_module"] == "mlflow.sklearn"
    assert conf["python_function"]["model_path"] == file_name
    reqs = (path / "requirements.txt").read_text()
    assert "scikit-learn==" in reqs and f"{serializer}==" in reqs
    est = sk_flavor.load_model(path)
    assert type(est) is type(elasticnet)
    np.testing.assert_array_equal(est.predict(X), elasticnet.predict(X))
    np.testing.assert_array_equal(pyfunc.load_model(path).predict(X), elasticnet.predict(X))


def test_unknown_format_is_refused(tmp_path, elasticnet):
    with pytest.raises(FlavorError, match="serialization_format 'joblib'"):
        sk_flavor.save_model(elasticnet, str(tmp_path / "m"), serialization_format="joblib")
    assert not (tmp_path / "m").exists()


def test_modelfmt_save_model_picks_sklearn(tmp_path, elasticnet):
    saved = modelfmt.save_model(elasticnet, str(tmp_path / "m"))
    assert "sklearn" in Model.load(tmp_path / "m").flavors
    assert saved.model_uuid == Model.load(tmp_path / "m").model_uuid


# -- predict functions and signatures ---------------------------------------------------------
def test_predict_proba_as_pyfunc_predict_fn(tmp_path, classifier, diabetes):
    X, _ = diabetes
    path = tmp_path / "m"
    sk_flavor.save_model(classifier, str(path), pyfunc_predict_fn="predict_proba", input_example=X.head(2))
    model = pyfunc.load_model(path)
    assert model.metadata.flavors["python_function"]["predict_fn"] == "predict_proba"
    np.testing.assert_allclose(model.predict(X.head(5)), classifier.predict_proba(X.head(5)))
    # The inferred output schema is the probability matrix's: a (-1, 2) float64 tensor.
    out = model.metadata.get_output_schema().to_dict()
    assert out == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]


def test_missing_predict_fn_is_refused(tmp_path, elasticnet):
    with pytest.raises(FlavorError, match="predict_proba"):
        sk_flavor.save_model(elasticnet, str(tmp_path / "m"), pyfunc_predict_fn="predict_proba")


def test_signature_inferred_from_dataframe_example(tmp_path, elasticnet, diabetes):
    X, _ = diabetes
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path), input_example=X.head(3))
    meta = Model.load(path)
    inputs = meta.get_input_schema().to_dict()
    assert [c["name"] for c in inputs] == list(X.columns)
    assert {c["type"] for c in inputs} == {"double"}
    assert meta.get_output_schema() is not None
    assert meta.saved_input_example_info["type"] == "dataframe"
    assert json.loads((path / "input_example.json").read_text())["columns"] == list(X.columns)
    serving = json.loads((path / "serving_input_example.json").read_text())
    assert len(serving["dataframe_split"]["data"]) == 3


def test_signature_inferred_from_ndarray_example(tmp_path, diabetes):
    from sklearn.linear_model import Ridge

    X, y = diabetes
    est = Ridge().fit(X.to_numpy(), y)
    path = tmp_path / "m"
    sk_flavor.save_model(est, str(path), input_example=X.to_numpy()[:2])
    schema = Model.load(path).get_input_schema()
    assert schema.is_tensor_spec()
    assert schema.to_dict() == [{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 10]}}]


def test_explicit_signature_wins_and_metadata_kept(tmp_path, elasticnet, diabetes):
    X, _ = diabetes
    sig = modelfmt.infer_signature(X[["age", "bmi"]])
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path), signature=sig, metadata={"owner": "team-a"})
    meta = Model.load(path)
    assert meta.get_input_schema().input_names() == ["age", "bmi"]
    assert meta.metadata == {"owner": "team-a"}


# -- atomic saves ------------------------------------------------------------------------------
def test_existing_target_needs_overwrite(tmp_path, elasticnet, classifier, diabetes):
    X, _ = diabetes
    path = tmp_path / "m"
    path.mkdir()
    (path / "keep.txt").write_text("user data")
    with pytest.raises(ModelExistsError, match="not a model"):  # overwrite replaces models, never user files
        sk_flavor.save_model(elasticnet, str(path), overwrite=True)
    assert os.listdir(path) == ["keep.txt"]
    (path / "keep.txt").unlink()
    sk_flavor.save_model(elasticnet, str(path))
    with pytest.raises(ModelExistsError, match="overwrite=True"):
        sk_flavor.save_model(classifier, str(path))
    sk_flavor.save_model(classifier, str(path), overwrite=True)
    np.testing.assert_array_equal(sk_flavor.load_model(path).predict(X), classifier.predict(X))
    assert _leftovers(tmp_path) == []


def test_empty_existing_target_is_fine(tmp_path, elasticnet):
    (tmp_path / "m").mkdir()
    sk_flavor.save_model(elasticnet, str(tmp_path / "m"))
    assert (tmp_path / "m" / "MLmodel").is_file()


@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle", "skops"])
def test_unpicklable_model_leaves_nothing(tmp_path, fmt):
    from sklearn.linear_model import Ridge

    est = Ridge().fit(np.eye(3), [1.0, 2.0, 3.0])
    est.stream_ = (i for i in range(3))  # no serializer can write a generator
    with pytest.raises(FlavorError, match="cannot serialise Ridge"):
        sk_flavor.save_model(est, str(tmp_path / "m"), serialization_format=fmt)
    assert os.listdir(tmp_path) == []


def test_failure_mid_save_leaves_nothing(tmp_path, elasticnet):
    # The model file is written; writing MLmodel then fails on metadata YAML cannot represent.
    with pytest.raises(yaml.YAMLError):
        sk_flavor.save_model(elasticnet, str(tmp_path / "m"), metadata={"bad": object()})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("disk full")])
def test_interrupted_save_keeps_the_old_model(tmp_path, elasticnet, diabetes, exc):
    X, _ = diabetes
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path))
    before = sorted(os.listdir(path))
    with pytest.raises(type(exc)):
        sk_flavor.save_model(_Boom(exc), str(path), overwrite=True)
    assert sorted(os.listdir(path)) == before
    np.testing.assert_array_equal(sk_flavor.load_model(path).predict(X), elasticnet.predict(X))
    assert _leftovers(tmp_path) == []


def test_interrupted_first_save_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        sk_flavor.save_model(_Boom(KeyboardInterrupt()), str(tmp_path / "m"))
    assert os.listdir(tmp_path) == []


# -- code paths ---------------------------------------------------------------------------------
def test_code_paths_are_copied_and_importable(tmp_path, elasticnet, monkeypatch):
    import sys

    src = tmp_path / "src"
    (src / "mf_sk_pkg").mkdir(parents=True)
    (src / "mf_sk_pkg" / "__init__.py").write_text("VALUE = 41\n")
    (src / "mf_sk_helper.py").write_text("def plus_one(x):\n    return x + 1\n")
    (src / "mf_sk_pkg" / "__pycache__").mkdir()
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path), code_paths=[str(src / "mf_sk_helper.py"), str(src / "mf_sk_pkg")])
    assert sorted(os.listdir(path / "code")) == ["mf_sk_helper.py", "mf_sk_pkg"]
    assert not (path / "code" / "mf_sk_pkg" / "__pycache__").exists()
    flavors = Model.load(path).flavors
    assert flavors["sklearn"]["code"] == "code" and flavors["python_function"]["code"] == "code"
    monkeypatch.setattr(sys, "path", list(sys.path))
    pyfunc.load_model(path)
    import mf_sk_helper
    import mf_sk_pkg

    assert mf_sk_helper.plus_one(mf_sk_pkg.VALUE) == 42


def test_native_load_model_imports_code_paths(tmp_path, diabetes, monkeypatch):
    import importlib
    import sys

    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    X, y = diabetes
    src = tmp_path / "src"
    src.mkdir()
    (src / "mf_sk_scaler.py").write_text(
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class Half(TransformerMixin, BaseEstimator):\n"
        "    def fit(self, X, y=None):\n        return self\n"
        "    def transform(self, X):\n        return X / 2\n"
    )
    monkeypatch.setattr(sys, "path", [str(src), *sys.path])
    pipe = make_pipeline(importlib.import_module("mf_sk_scaler").Half(), LinearRegression()).fit(X, y)
    sk_flavor.save_model(pipe, str(tmp_path / "m"), code_paths=[str(src / "mf_sk_scaler.py")])
    # A fresh process: the module is importable only from the model's code/ folder.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(src)])
    monkeypatch.delitem(sys.modules, "mf_sk_scaler")
    loaded = sk_flavor.load_model(str(tmp_path / "m"))
    np.testing.assert_allclose(loaded.predict(X.head(3)), pipe.predict(X.head(3)))


def test_missing_code_path_is_refused(tmp_path, elasticnet):
    with pytest.raises(ModelFormatError, match="does not exist"):
        sk_flavor.save_model(elasticnet, str(tmp_path / "m"), code_paths=[str(tmp_path / "nope.py")])
    assert os.listdir(tmp_path) == []


# -- environment --------------------------------------------------------------------------------
def test_one_warning_lists_version_mismatches(tmp_path, elasticnet, caplog):
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path), extra_pip_requirements=["mlflow==3.18.0"])
    reqs = (path / "requirements.txt").read_text().splitlines()
    edited = [("scikit-learn==0.20.0" if r.startswith("scikit-learn==") else
               "numpy==1.0.0" if r.startswith("numpy==") else r) for r in reqs]
    (path / "requirements.txt").write_text("\n".join(edited) + "\n")
    record_digests(path)
    with caplog.at_level(logging.WARNING):
        pyfunc.load_model(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "scikit-learn (model: 0.20.0, installed:" in warnings[0]
    assert "numpy (model: 1.0.0, installed:" in warnings[0]
    assert "mlflow" not in warnings[0]  # MLflow's own pin is not a mismatch for modelfmt


def test_no_warning_when_versions_match(tmp_path, elasticnet, caplog):
    sk_flavor.save_model(elasticnet, str(tmp_path / "m"))
    with caplog.at_level(logging.WARNING):
        pyfunc.load_model(tmp_path / "m")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- skops trust ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def untrusted_skops_model(tmp_path_factory, diabetes):
    """A skops model with a custom function and a custom estimator class: both outside the trusted set."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = diabetes
    pipe = make_pipeline(FunctionTransformer(_double), MeanRegressor()).fit(X, y)
    path = tmp_path_factory.mktemp("skops") / "m"
    sk_flavor.save_model(pipe, str(path), serialization_format="skops", trusted_types=UNTRUSTED)
    return path, pipe


UNTRUSTED = [f"{__name__}.MeanRegressor", f"{__name__}._double"]


def test_skops_save_of_types_default_trust_refuses_needs_trusted_types(tmp_path, diabetes):
    """Saving what modelfmt would then refuse to load is refused, naming the types."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = diabetes
    pipe = make_pipeline(FunctionTransformer(_double), MeanRegressor()).fit(X, y)
    with pytest.raises(UnsafeModelError) as info:
        sk_flavor.save_model(pipe, str(tmp_path / "m"), serialization_format="skops")
    assert all(name in info.value.message for name in UNTRUSTED) and "trusted_types=" in info.value.message
    assert not (tmp_path / "m").exists()
    with pytest.raises(UnsafeModelError, match=UNTRUSTED[1]):
        sk_flavor.save_model(pipe, str(tmp_path / "m"), serialization_format="skops", trusted_types=UNTRUSTED[:1])
    sk_flavor.save_model(pipe, str(tmp_path / "m"), serialization_format="skops", trusted_types=UNTRUSTED)
    # Written for MLflow's loader (which reads it from MLmodel); modelfmt does not read it.
    assert Model.load(tmp_path / "m").flavors["sklearn"]["skops_trusted_types"] == sorted(UNTRUSTED)


@pytest.mark.parametrize("loader", [sk_flavor.load_model, pyfunc.load_model], ids=["sklearn", "pyfunc"])
def test_untrusted_skops_types_are_refused_by_name(untrusted_skops_model, loader):
    path, _ = untrusted_skops_model
    with pytest.raises(UnsafeModelError) as info:
        loader(path)
    message = str(info.value)
    assert all(name in message for name in UNTRUSTED), message
    assert "trusted_types=" in message


def test_partly_trusted_lists_only_the_rest(untrusted_skops_model):
    path, _ = untrusted_skops_model
    with pytest.raises(UnsafeModelError) as info:
        sk_flavor.load_model(path, trusted_types=[UNTRUSTED[0]])
    assert UNTRUSTED[1] in str(info.value) and UNTRUSTED[0] not in str(info.value)


@pytest.mark.parametrize("loader", [sk_flavor.load_model, pyfunc.load_model], ids=["sklearn", "pyfunc"])
def test_trusted_types_let_the_model_load(untrusted_skops_model, diabetes, loader):
    path, pipe = untrusted_skops_model
    X, _ = diabetes
    model = loader(path, trusted_types=UNTRUSTED)
    np.testing.assert_allclose(model.predict(X.head(4)), pipe.predict(X.head(4)))


def test_trust_listed_in_the_model_itself_does_not_count(untrusted_skops_model, tmp_path):
    """MLmodel's skops_trusted_types is written by whoever made the file, so it grants nothing."""
    import shutil

    src, _ = untrusted_skops_model
    path = tmp_path / "m"
    shutil.copytree(src, path)
    meta = Model.load(path)
    meta.flavors["sklearn"]["skops_trusted_types"] = UNTRUSTED
    meta.save(path)
    with pytest.raises(UnsafeModelError):
        sk_flavor.load_model(path)


def test_default_trusted_skops_model_loads_without_trust(tmp_path, diabetes):
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X, y = diabetes
    pipe = make_pipeline(FunctionTransformer(np.abs), StandardScaler(), Ridge()).fit(X, y)
    sk_flavor.save_model(pipe, str(tmp_path / "m"), serialization_format="skops")
    np.testing.assert_allclose(sk_flavor.load_model(tmp_path / "m").predict(X), pipe.predict(X))
