"""modelfmt.flavors.pyfunc: custom PythonModels (artifacts, predict forms, params, code paths), atomic saves,
unwrap_python_model and the version-mismatch warning."""

from __future__ import annotations

import json
import logging
import os
import sys

import numpy as np
import pandas as pd
import pytest

import modelfmt
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.flavors.pyfunc import PythonModel
from modelfmt.integrity import record_digests
from modelfmt import Model
from modelfmt.errors import (
    FlavorError,
    ModelExistsError,
    ModelFormatError,
    ParamsError,
    PredictionError,
    SchemaError,
)

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0]})


# Models are built inside functions so that cloudpickle stores their classes by value.
def _artifact_model():
    class Lookup(PythonModel):
        def load_context(self, context):
            self.paths = dict(context.artifacts)
            with open(context.artifacts["weights"]) as f:
                self.w = json.load(f)["w"]
            with open(os.path.join(context.artifacts["vocab"], "bias.txt")) as f:
                self.b = float(f.read())
            self.config = context.model_config

        def predict(self, context, model_input, params=None):
            return model_input["x"].to_numpy() * self.w + self.b

    return Lookup()


def _no_context_model():
    class NoContext(PythonModel):
        def predict(self, model_input, params=None):
            return model_input["x"].to_numpy() + 100

    return NoContext()


def _no_params_model():
    class NoParams(PythonModel):
        def predict(self, context, model_input):
            return model_input["x"].to_numpy() * -1

    return NoParams()


def _params_model():
    class WithParams(PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input["x"].to_numpy() * params["scale"] + params["shift"]

    return WithParams()


def _hinted_model():
    class Hinted(PythonModel):
        def predict(self, model_input: list[str], params=None) -> list[str]:
            return [s[::-1] for s in model_input]

    return Hinted()


def _raising_model(exc):
    class Raises(PythonModel):
        def predict(self, context, model_input, params=None):
            raise exc

    return Raises()


@pytest.fixture()
def artifacts(tmp_path):
    (tmp_path / "src").mkdir()
    weights = tmp_path / "src" / "weights.json"
    weights.write_text(json.dumps({"w": 2.0}))
    vocab = tmp_path / "src" / "vocab"
    vocab.mkdir()
    (vocab / "bias.txt").write_text("0.25")
    return {"weights": str(weights), "vocab": str(vocab)}


def _leftovers(parent) -> list[str]:
    return [n for n in os.listdir(parent) if n.startswith(".")]


# -- round trip -----------------------------------------------------------------------------------
def test_round_trip_with_file_and_directory_artifacts(tmp_path, artifacts):
    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_artifact_model(), artifacts=artifacts, model_config={"k": 1})
    conf = Model.load(path).flavors["python_function"]
    assert conf["loader_module"] == "mlflow.pyfunc.model" and conf["python_model"] == "python_model.pkl"
    assert conf["artifacts"]["weights"]["path"] == os.path.join("artifacts", "weights.json")
    assert conf["artifacts"]["vocab"]["path"] == os.path.join("artifacts", "vocab")
    assert (path / "artifacts" / "vocab" / "bias.txt").read_text() == "0.25"
    # The sources may go away: the model carries its own copies.
    os.remove(artifacts["weights"])
    model = pyfunc.load_model(path)
    np.testing.assert_allclose(model.predict(FRAME), [2.25, 4.25, 6.25])
    inner = model.unwrap_python_model()
    assert inner.paths["weights"] == str(path / "artifacts" / "weights.json")
    assert all(os.path.isabs(p) for p in inner.paths.values())
    assert inner.config == {"k": 1}


def test_artifacts_with_the_same_file_name_both_survive(tmp_path):
    class Reader(PythonModel):
        def load_context(self, context):
            self.texts = {k: open(p).read() for k, p in sorted(context.artifacts.items())}

        def predict(self, context, model_input, params=None):
            return model_input

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "w.txt").write_text(d)
    arts = {"first": str(tmp_path / "a" / "w.txt"), "second": str(tmp_path / "b" / "w.txt"),
            "again": str(tmp_path / "a" / "w.txt")}
    pyfunc.save_model(str(tmp_path / "m"), python_model=Reader(), artifacts=arts)
    inner = pyfunc.load_model(str(tmp_path / "m")).unwrap_python_model()
    assert inner.texts == {"again": "a", "first": "a", "second": "b"}


def test_modelfmt_load_and_save_model_for_python_models(tmp_path):
    modelfmt.save_model(_no_context_model(), str(tmp_path / "m"))
    model = modelfmt.load_model(str(tmp_path / "m"))
    np.testing.assert_allclose(model.predict(FRAME), [101.0, 102.0, 103.0])


@pytest.mark.parametrize("factory,expected", [
    (_no_context_model, [101.0, 102.0, 103.0]),
    (_no_params_model, [-1.0, -2.0, -3.0]),
])
def test_predict_forms(tmp_path, factory, expected):
    pyfunc.save_model(str(tmp_path / "m"), python_model=factory())
    np.testing.assert_allclose(pyfunc.load_model(tmp_path / "m").predict(FRAME), expected)


def test_params_schema_checks_and_fills_defaults(tmp_path):
    sig = modelfmt.infer_signature(FRAME, params={"scale": 2.0, "shift": 1})
    pyfunc.save_model(str(tmp_path / "m"), python_model=_params_model(), signature=sig)
    model = pyfunc.load_model(tmp_path / "m")
    np.testing.assert_allclose(model.predict(FRAME), [3.0, 5.0, 7.0])
    np.testing.assert_allclose(model.predict(FRAME, params={"scale": 0.5}), [1.5, 2.0, 2.5])
    with pytest.raises(ParamsError):
        model.predict(FRAME, params={"scale": "big"})


def test_list_type_hint_gets_a_list(tmp_path):
    pyfunc.save_model(str(tmp_path / "m"), python_model=_hinted_model(), input_example=["abc", "de"])
    model = pyfunc.load_model(tmp_path / "m")
    assert model.metadata.get_input_schema().to_dict() == [{"type": "string", "required": True}]
    assert model.predict(["xy"]) == ["yx"]
    assert model.predict(pd.DataFrame({"text": ["ab", "cd"]})) == ["ba", "dc"]


def test_signature_inferred_from_example(tmp_path, artifacts):
    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_artifact_model(), artifacts=artifacts, input_example=FRAME.head(2))
    meta = Model.load(path)
    assert meta.get_input_schema().to_dict() == [{"type": "double", "name": "x", "required": True}]
    # predict ran on the example (with the artifacts loaded) to give the output schema.
    assert meta.get_output_schema() is not None
    assert meta.saved_input_example_info["type"] == "dataframe"
    with pytest.raises(SchemaError, match="'x'"):
        pyfunc.load_model(path).predict(pd.DataFrame({"y": [1.0]}))


def test_model_errors_become_prediction_errors(tmp_path):
    pyfunc.save_model(str(tmp_path / "m"), python_model=_raising_model(ValueError("bad row")))
    with pytest.raises(PredictionError, match="ValueError: bad row"):
        pyfunc.load_model(tmp_path / "m").predict(FRAME)


# -- unwrap ---------------------------------------------------------------------------------------
def test_unwrap_python_model(tmp_path):
    original = _no_context_model()
    original.state = {"a": [1, 2]}
    pyfunc.save_model(str(tmp_path / "m"), python_model=original)
    inner = pyfunc.load_model(tmp_path / "m").unwrap_python_model()
    assert type(inner).__name__ == "NoContext" and isinstance(inner, PythonModel)
    assert inner.state == {"a": [1, 2]}


def test_unwrap_of_a_non_custom_model_is_an_error(sklearn_model_path):
    with pytest.raises(ModelFormatError, match="not a custom PythonModel"):
        pyfunc.load_model(sklearn_model_path).unwrap_python_model()


# -- code paths -----------------------------------------------------------------------------------
def test_code_paths_model_class_loads_from_the_model(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "mf_pf_shipped.py").write_text(
        "from modelfmt.flavors.pyfunc import PythonModel\n\n"
        "class Shipped(PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input['x'].to_numpy() * 7\n"
    )
    monkeypatch.setattr(sys, "path", [str(src), *sys.path])
    import mf_pf_shipped

    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=mf_pf_shipped.Shipped(), code_paths=[str(src / "mf_pf_shipped.py")])
    assert (path / "code" / "mf_pf_shipped.py").is_file()
    # Forget the module and its source: the model's code/ copy must be what loads.
    monkeypatch.delitem(sys.modules, "mf_pf_shipped")
    sys.path.remove(str(src))
    (src / "mf_pf_shipped.py").unlink()
    model = pyfunc.load_model(path)
    np.testing.assert_allclose(model.predict(FRAME), [7.0, 14.0, 21.0])
    assert sys.modules["mf_pf_shipped"].__file__.startswith(str(path))
    monkeypatch.delitem(sys.modules, "mf_pf_shipped")


# -- refusals and atomic saves --------------------------------------------------------------------
def test_not_a_python_model_is_refused(tmp_path):
    with pytest.raises(FlavorError, match="PythonModel"):
        pyfunc.save_model(str(tmp_path / "m"), python_model=object())
    assert os.listdir(tmp_path) == []


def test_missing_artifact_leaves_nothing(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        pyfunc.save_model(str(tmp_path / "m"), python_model=_no_context_model(),
                          artifacts={"a": str(tmp_path / "nope.bin")})
    assert os.listdir(tmp_path) == []


def test_unpicklable_python_model_leaves_nothing(tmp_path, artifacts):
    model = _no_context_model()
    model.stream = (i for i in range(3))
    parent = tmp_path / "out"
    parent.mkdir()
    with pytest.raises(FlavorError, match="cannot serialise"):
        pyfunc.save_model(str(parent / "m"), python_model=model, artifacts=artifacts)
    assert os.listdir(parent) == []


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("boom")])
def test_failure_during_signature_inference_leaves_nothing(tmp_path, exc):
    # predict runs on the example while saving; a KeyboardInterrupt there must abort the save cleanly.
    model = _raising_model(exc)
    if isinstance(exc, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            pyfunc.save_model(str(tmp_path / "m"), python_model=model, input_example=FRAME)
        assert os.listdir(tmp_path) == []
    else:
        # An ordinary failure only costs the output schema; the save goes on.
        pyfunc.save_model(str(tmp_path / "m"), python_model=model, input_example=FRAME)
        assert Model.load(tmp_path / "m").get_output_schema() is None
        assert _leftovers(tmp_path) == []


def test_existing_target_and_overwrite(tmp_path):
    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_no_context_model())
    with pytest.raises(ModelExistsError):
        pyfunc.save_model(str(path), python_model=_no_params_model())
    np.testing.assert_allclose(pyfunc.load_model(path).predict(FRAME), [101.0, 102.0, 103.0])
    pyfunc.save_model(str(path), python_model=_no_params_model(), overwrite=True)
    np.testing.assert_allclose(pyfunc.load_model(path).predict(FRAME), [-1.0, -2.0, -3.0])
    assert _leftovers(tmp_path) == []


def test_interrupted_overwrite_keeps_the_old_model(tmp_path, artifacts, monkeypatch):
    import shutil

    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_no_context_model())
    before = sorted(os.listdir(path))

    def interrupted_copy(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copytree", interrupted_copy)  # Ctrl-C while copying an artifact dir
    with pytest.raises(KeyboardInterrupt):
        pyfunc.save_model(str(path), python_model=_artifact_model(), artifacts=artifacts, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(path)) == before
    np.testing.assert_allclose(pyfunc.load_model(path).predict(FRAME), [101.0, 102.0, 103.0])
    assert _leftovers(tmp_path) == []


# -- loading other things ---------------------------------------------------------------------------
def test_model_without_pyfunc_flavor_is_refused(tmp_path, elasticnet):
    path = tmp_path / "m"
    sk_flavor.save_model(elasticnet, str(path))
    meta = Model.load(path)
    del meta.flavors["python_function"]
    meta.save(path)
    record_digests(path)
    with pytest.raises(ModelFormatError, match="no python_function flavor"):
        pyfunc.load_model(path)


def test_missing_pickle_is_a_format_error(tmp_path):
    pyfunc.save_model(str(tmp_path / "m"), python_model=_no_context_model())
    os.remove(tmp_path / "m" / "python_model.pkl")
    with pytest.raises(ModelFormatError, match="python_model.pkl is missing"):
        pyfunc.load_model(tmp_path / "m", verify=False)  # with digests: IntegrityError, missing: python_model.pkl


def test_one_warning_lists_version_mismatches(tmp_path, caplog):
    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_no_context_model())
    reqs = (path / "requirements.txt").read_text().splitlines()
    assert any(r.startswith("modelfmt==") for r in reqs)
    edited = [("pandas==1.0.0" if r.startswith("pandas==") else
               "cloudpickle==0.1.0" if r.startswith("cloudpickle==") else
               "modelfmt==0.0.1" if r.startswith("modelfmt==") else r) for r in reqs]
    (path / "requirements.txt").write_text("\n".join(edited) + "\n")
    record_digests(path)
    with caplog.at_level(logging.WARNING):
        pyfunc.load_model(path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "pandas (model: 1.0.0" in warnings[0] and "cloudpickle (model: 0.1.0" in warnings[0]


def test_compressed_pickle_and_unknown_compression(tmp_path):
    import lzma
    import shutil

    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_no_context_model())
    with open(path / "python_model.pkl", "rb") as src, lzma.open(path / "python_model.pkl.xz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.remove(path / "python_model.pkl")
    meta = Model.load(path)
    meta.flavors["python_function"].update(python_model="python_model.pkl.xz", python_model_compression="lzma")
    meta.save(path)
    record_digests(path)
    np.testing.assert_allclose(pyfunc.load_model(path).predict(FRAME), [101.0, 102.0, 103.0])
    meta.flavors["python_function"]["python_model_compression"] = "zstd"
    meta.save(path)
    record_digests(path)
    with pytest.raises(ModelFormatError, match="'zstd'"):
        pyfunc.load_model(path)


def test_models_from_code_are_refused_clearly(tmp_path):
    path = tmp_path / "m"
    pyfunc.save_model(str(path), python_model=_no_context_model())
    meta = Model.load(path)
    meta.flavors["python_function"]["model_code_path"] = "model.py"
    meta.save(path)
    record_digests(path)
    with pytest.raises(ModelFormatError, match="models from code"):
        pyfunc.load_model(path)


def test_failing_load_context_is_a_model_format_error(tmp_path):
    class Broken(PythonModel):
        def load_context(self, context):
            raise KeyError("tokenizer")

        def predict(self, context, model_input, params=None):
            return model_input

    model = Broken()
    pyfunc.save_model(str(tmp_path / "m"), python_model=model)
    with pytest.raises(ModelFormatError, match="Broken.load_context failed: KeyError"):
        pyfunc.load_model(str(tmp_path / "m"))
