"""modelfmt.open: resolving locations, the checks on the paths MLmodel names, opening options, and
that opening a model runs none of its code."""

from __future__ import annotations

import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

import modelfmt
from modelfmt.errors import FlavorError, IntegrityError, ModelFormatError, ModelNotFoundError
from modelfmt.flavors import pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.integrity import record_digests
from modelfmt.model import Model
from modelfmt.open import OPEN_OPTIONS, OpenedModel, open_model, register_resolver

FRAME = pd.DataFrame({"x": [1.0, 2.0, 3.0]})


def _custom_model():
    class Scale(pyfunc.PythonModel):
        def load_context(self, context):
            with open(context.artifacts["weights"]) as f:
                self.w = float(f.read())

        def predict(self, context, model_input, params=None):
            return model_input["x"].to_numpy() * self.w

    return Scale()


@pytest.fixture
def sk_model(sklearn_model_path, tmp_path):
    """A private copy of the saved ElasticNet (its MLmodel gets edited)."""
    return str(shutil.copytree(sklearn_model_path, tmp_path / "sk"))


@pytest.fixture(scope="module")
def saved_custom(tmp_path_factory):
    root = tmp_path_factory.mktemp("custom")
    (root / "weights.txt").write_text("2.0")
    (root / "helper_mod.py").write_text("VALUE = 1\n")
    path = root / "model"
    pyfunc.save_model(
        str(path), python_model=_custom_model(), artifacts={"weights": str(root / "weights.txt")},
        code_paths=[str(root / "helper_mod.py")], input_example=FRAME,
    )
    return str(path)


@pytest.fixture
def custom_model(saved_custom, tmp_path):
    return str(shutil.copytree(saved_custom, tmp_path / "custom"))


def _edit(path: str, edit) -> None:
    file = os.path.join(path, "MLmodel")
    with open(file, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    edit(doc)
    with open(file, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f)


def _set(doc: dict, field: str, value) -> None:
    """Set a dotted MLmodel field (``flavors.sklearn.pickled_model``), creating mappings on the way."""
    *parents, last = field.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


# -- resolvers ------------------------------------------------------------------------------------
def test_plain_absolute_path(sk_model):
    opened = open_model(sk_model)
    assert isinstance(opened, OpenedModel)
    assert opened.path == sk_model and opened.source == sk_model
    assert "sklearn" in opened.model.flavors and opened.options == {}


def test_relative_path_and_pathlike(sk_model, monkeypatch):
    parent, name = os.path.split(sk_model)
    monkeypatch.chdir(parent)
    assert open_model(name).path == sk_model
    from pathlib import Path

    assert open_model(Path(name)).path == sk_model


def test_file_uris(sk_model, tmp_path, monkeypatch):
    assert open_model("file://" + sk_model).path == sk_model
    assert open_model("file://localhost" + sk_model).path == sk_model
    assert open_model("file:" + sk_model).path == sk_model
    parent, name = os.path.split(sk_model)
    monkeypatch.chdir(parent)
    assert open_model("file:" + name).path == sk_model
    spaced = shutil.copytree(sk_model, tmp_path / "my model")
    opened = open_model("file://" + str(spaced).replace(" ", "%20"))
    assert opened.path == str(spaced) and opened.source.endswith("my%20model")


def test_file_uri_of_another_host_is_refused(sk_model):
    with pytest.raises(ModelNotFoundError, match=r"host \('fileserver'\)"):
        open_model("file://fileserver" + sk_model)


@pytest.mark.parametrize("location, scheme", [("s3://bucket/model", "s3"), ("gs://bucket/model", "gs")])
def test_unknown_scheme_says_not_supported(location, scheme):
    with pytest.raises(ModelFormatError, match=rf"the '{scheme}' scheme is not supported") as e:
        open_model(location)
    assert location in str(e.value) and "file:" in str(e.value) and "models:" in str(e.value)


def test_windows_drive_is_not_a_scheme():
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        open_model("C:\\models\\fraud")


def test_missing_directory_is_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model directory"):
        open_model(str(tmp_path / "nope"))
    with pytest.raises(ModelNotFoundError, match="MLmodel"):
        open_model(str(tmp_path))


def test_registered_resolver(sk_model, diabetes):
    seen = []

    def resolve(location):
        seen.append(location)
        return sk_model

    register_resolver("testmodels", resolve)
    opened = open_model("testmodels:/elasticnet/1")
    assert opened.path == sk_model and opened.source == "testmodels:/elasticnet/1"
    assert seen == ["testmodels:/elasticnet/1"]
    X = diabetes[0].head(3)
    expected = sk_flavor.load_model(sk_model).predict(X)
    np.testing.assert_allclose(pyfunc.load_model("testmodels:/elasticnet/1").predict(X), expected)


def test_an_opened_model_passes_through(sk_model):
    opened = open_model(sk_model)
    assert open_model(opened) is opened
    with_trust = open_model(opened, trusted_types=["x.Y"])
    assert with_trust.options == {"trusted_types": ["x.Y"]} and with_trust.model is opened.model
    assert opened.options == {}


def test_loaders_take_an_opened_model_without_parsing_again(sk_model, monkeypatch, diabetes):
    opened = open_model(sk_model)
    calls = []
    real = Model.load.__func__

    def counting(cls, path):
        calls.append(path)
        return real(cls, path)

    monkeypatch.setattr(Model, "load", classmethod(counting))
    X = diabetes[0].head(5)
    np.testing.assert_allclose(pyfunc.load_model(opened).predict(X), sk_flavor.load_model(opened).predict(X))
    assert calls == []
    modelfmt.load_model(sk_model)
    assert len(calls) == 1


# -- paths named in MLmodel -------------------------------------------------------------------------
SK_FIELDS = [
    "flavors.sklearn.pickled_model",
    "flavors.sklearn.code",
    "flavors.python_function.model_path",
    "flavors.python_function.code",
    "flavors.python_function.env.conda",
    "flavors.python_function.env.virtualenv",
    "flavors.python_function.data",
    "flavors.onnx.data",
    "flavors.spark.model_data",
    "saved_input_example_info.artifact_path",
    "saved_input_example_info.serving_input_path",
]
CUSTOM_FIELDS = [
    "flavors.python_function.python_model",
    "flavors.python_function.artifacts.weights.path",
]
BAD = [
    ("../x.pkl", "points outside the model directory"),
    ("sub/../../x.pkl", "points outside the model directory"),
    ("/etc/passwd", "is an absolute path"),
]


@pytest.mark.parametrize("value, why", BAD, ids=["dotdot", "inner-dotdot", "absolute"])
@pytest.mark.parametrize("field", SK_FIELDS)
def test_paths_outside_are_refused_naming_the_field(sk_model, field, value, why):
    _edit(sk_model, lambda doc: _set(doc, field, value))
    with pytest.raises(ModelFormatError) as e:
        open_model(sk_model)
    assert str(e.value).startswith(f"MLmodel field {field} ({value!r}) {why}")


@pytest.mark.parametrize("value, why", BAD, ids=["dotdot", "inner-dotdot", "absolute"])
@pytest.mark.parametrize("field", CUSTOM_FIELDS)
def test_custom_model_paths_outside_are_refused(custom_model, field, value, why):
    _edit(custom_model, lambda doc: _set(doc, field, value))
    with pytest.raises(ModelFormatError) as e:
        pyfunc.load_model(custom_model)
    assert str(e.value).startswith(f"MLmodel field {field} ({value!r}) {why}")


def test_other_shapes_of_path_fields(sk_model):
    """A plain-string artifact, MLflow's extra_files list and the old ``env: conda.yaml`` form."""
    cases = [
        ("flavors.python_function.artifacts", {"w": "../w.txt"}, "flavors.python_function.artifacts.w"),
        ("flavors.sklearn.extra_files", [{"path": "extra/a"}, {"path": "../b"}], "flavors.sklearn.extra_files[1]"),
        ("flavors.python_function.env", "../conda.yaml", "flavors.python_function.env"),
    ]
    for field, value, named in cases:
        path = sk_model + "-" + named.replace("[", "_").replace("]", "")
        shutil.copytree(sk_model, path)
        _edit(path, lambda doc, field=field, value=value: _set(doc, field, value))
        with pytest.raises(ModelFormatError) as e:
            open_model(path)
        assert str(e.value).startswith(f"MLmodel field {named} ("), str(e.value)


def test_a_path_field_that_is_not_a_string(sk_model):
    _edit(sk_model, lambda doc: _set(doc, "flavors.sklearn.pickled_model", ["model.pkl"]))
    with pytest.raises(ModelFormatError, match=r"flavors\.sklearn\.pickled_model should name a file"):
        open_model(sk_model)


def test_the_message_of_the_brief(sk_model):
    _edit(sk_model, lambda doc: _set(doc, "flavors.sklearn.pickled_model", "../x.pkl"))
    with pytest.raises(ModelFormatError) as e:
        sk_flavor.load_model(sk_model)
    assert str(e.value) == (
        "MLmodel field flavors.sklearn.pickled_model ('../x.pkl') points outside the model directory"
    )


def test_symlink_out_is_refused(sk_model, tmp_path):
    outside = tmp_path / "elsewhere.pkl"
    shutil.move(os.path.join(sk_model, "model.pkl"), outside)
    os.symlink(outside, os.path.join(sk_model, "model.pkl"))
    pattern = r"flavors\.\w+\.(pickled_model|model_path) \('model\.pkl'\) is a symlink"
    with pytest.raises(ModelFormatError, match=pattern):
        open_model(sk_model)


def test_symlink_out_inside_a_named_directory_is_refused(custom_model, tmp_path):
    (tmp_path / "evil.py").write_text("X = 1\n")
    os.symlink(tmp_path / "evil.py", os.path.join(custom_model, "code", "evil.py"))
    pattern = r"flavors\.python_function\.code \('code'\) holds 'code/evil\.py', a symlink"
    with pytest.raises(ModelFormatError, match=pattern):
        open_model(custom_model)


def test_symlinked_model_directory_and_inner_symlinks_are_fine(sk_model, tmp_path, diabetes):
    link = tmp_path / "current"
    os.symlink(sk_model, link)
    X = diabetes[0].head(3)
    expected = sk_flavor.load_model(sk_model).predict(X)
    opened = open_model(str(link))
    assert opened.path == str(link) and opened.verified  # the digests are checked through the link
    # An inner symlink passes the path checks; the digests record regular files, so for them it is a change.
    os.rename(os.path.join(sk_model, "model.pkl"), os.path.join(sk_model, "real.pkl"))
    os.symlink("real.pkl", os.path.join(sk_model, "model.pkl"))
    with pytest.raises(IntegrityError, match=r"changed: model\.pkl; unexpected: real\.pkl\."):
        open_model(str(link))
    np.testing.assert_allclose(modelfmt.load_model(str(link), verify=False).predict(X), expected)


def test_saved_models_pass_the_checks(sk_model, custom_model):
    for path in (sk_model, custom_model):
        opened = open_model(path)
        assert opened.path == path


# -- options --------------------------------------------------------------------------------------
def test_open_options_are_known_and_kept(sk_model):
    assert OPEN_OPTIONS == frozenset(
        {"trusted_types", "verify", "public_key", "certificate", "allow_pickle", "env_manager"}
    ) and isinstance(OPEN_OPTIONS, frozenset)
    assert open_model(sk_model, trusted_types=["a.B"]).options == {"trusted_types": ["a.B"]}


def test_unknown_open_option_is_refused(sk_model):
    with pytest.raises(FlavorError, match=r"unknown option\(s\) trusted_typo: .*trusted_types"):
        open_model(sk_model, trusted_typo=["a.B"])
    with pytest.raises(FlavorError, match="trusted_types is a list of type names"):
        open_model(sk_model, trusted_types="a.B")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"verify": "no"}, "verify is True or False"),
        ({"allow_pickle": 0}, "allow_pickle is True or False"),
        ({"public_key": 3}, "public_key is a PEM file's path or a list of them"),
        ({"env_manager": "conda"}, "'conda' is not supported: use 'uv'"),
        ({"env_manager": "pip"}, "env_manager is one of local, uv, virtualenv"),
    ],
)
def test_open_option_values_are_checked(sk_model, options, message):
    with pytest.raises(FlavorError, match=message):
        open_model(sk_model, **options)


def test_unknown_flavor_option_is_refused(sk_model):
    with pytest.raises(FlavorError, match=r"'sklearn' flavor: bogus"):
        pyfunc.load_model(sk_model, bogus=1)
    with pytest.raises(FlavorError, match="bogus"):
        sk_flavor.load_model(sk_model, bogus=1)


# -- nothing runs ---------------------------------------------------------------------------------
def test_opening_imports_and_unpickles_nothing(tmp_path):
    code = tmp_path / "boom_on_import.py"
    code.write_text("raise RuntimeError('boom_on_import was imported')\n\nclass M:\n    pass\n")
    path = str(tmp_path / "m")
    pyfunc.save_model(path, python_model=_custom_model(), artifacts={"weights": str(code)}, code_paths=[str(code)])
    # A python_model.pkl naming the class in code/ by reference: unpickling it imports that module.
    with open(os.path.join(path, "python_model.pkl"), "wb") as f:
        f.write(b"\x80\x04\x8c\x0eboom_on_import\x8c\x01M\x93)\x81.")
    record_digests(path)  # the edit above, as intended
    before = list(sys.path)
    opened = open_model(path)
    assert "boom_on_import" not in sys.modules and sys.path == before
    assert opened.model.flavors["python_function"]["code"] == "code"
    opened.add_code_to_sys_path()
    try:
        assert sys.path[0] == os.path.join(path, "code") and "boom_on_import" not in sys.modules
        with pytest.raises(ModelFormatError, match="boom_on_import was imported"):
            pyfunc.load_model(opened)
    finally:
        sys.path.remove(os.path.join(path, "code"))
        sys.modules.pop("boom_on_import", None)
