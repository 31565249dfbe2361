"""Models saved by modelfmt 0.1.0 (tests/fixtures/v010, made by make_fixtures.py there) keep loading.

Their pickles and code/ modules name 0.1's top-level packages (``flavors.pyfunc.PythonModel``,
``subimport("flavors.pyfunc")``, ``from flavors import pyfunc``); the shim in
``modelfmt.flavors._legacy_names`` answers those names with the same modules as ``modelfmt.flavors``,
only while such a model loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import requests

import modelfmt
import modelfmt.flavors
from modelfmt.errors import ModelFormatError
from modelfmt.flavors import _legacy_names, pyfunc
from modelfmt.flavors import sklearn as sk_flavor
from modelfmt.integrity import record_digests
from modelfmt.model import Model

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "v010")
X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 0.125]})
# What make_fixtures.py printed under modelfmt 0.1.0.
EXPECTED = {
    "code_subclass": [10.5, 20.25, 30.125],
    "function_model": [2.0, 4.0, 6.0],
    "main_subclass": [1.5, 2.25, 3.125],
}
# modelfmt/, flavors/ and serving/ of the installed (editable) tree.
PACKAGE_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep
    for m in (modelfmt, modelfmt.flavors, importlib.import_module("modelfmt.serving"))
)


def _old_names() -> list[str]:
    return sorted(n for n in sys.modules if n.partition(".")[0] in ("flavors", "serving"))


def _files_loaded_twice() -> dict[str, list[str]]:
    """Files of this checkout behind two different module objects in ``sys.modules``."""
    by_file: dict[str, dict[int, str]] = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and os.path.abspath(file).startswith(PACKAGE_DIRS):
            by_file.setdefault(os.path.abspath(file), {})[id(module)] = name
    return {f: sorted(mods.values()) for f, mods in by_file.items() if len(mods) > 1}


@pytest.fixture
def v010(tmp_path):
    """A fresh copy of the fixtures (loading writes __pycache__ into code/); forgets the code module after."""
    copy = shutil.copytree(FIXTURES, tmp_path / "v010", ignore=shutil.ignore_patterns("make_fixtures.py"))
    path_before = list(sys.path)
    yield copy
    sys.path[:] = path_before
    sys.modules.pop("v010_scaler", None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_custom_models_load_and_predict_as_in_0_1(v010, name):
    assert Model.load(v010 / name).modelfmt_version == "0.1.0"
    model = modelfmt.load_model(str(v010 / name))
    assert model.predict(X).tolist() == EXPECTED[name]
    inner = model.unwrap_python_model()
    assert isinstance(inner, modelfmt.flavors.pyfunc.PythonModel)
    # The old names are gone again; no module file was imported a second time under them.
    assert _old_names() == []
    assert _files_loaded_twice() == {}
    assert not [f for f in sys.meta_path if type(f).__module__ == _legacy_names.__name__]


def test_code_module_gets_the_same_pyfunc_module(v010):
    model = modelfmt.load_model(str(v010 / "code_subclass"))
    user_module = sys.modules["v010_scaler"]
    # ``from flavors import pyfunc`` in the model's code/ bound the one and only pyfunc module.
    assert user_module.pyfunc is pyfunc
    assert type(model.unwrap_python_model()).__mro__[1] is pyfunc.PythonModel
    assert "flavors" not in sys.modules


def test_by_value_pickles_resolve_to_the_same_modules(v010):
    function_model = modelfmt.load_model(str(v010 / "function_model")).unwrap_python_model()
    assert function_model.func.__globals__["pf"] is pyfunc  # subimport("flavors.pyfunc")
    subclass = modelfmt.load_model(str(v010 / "main_subclass")).unwrap_python_model()
    assert pyfunc.PythonModel in type(subclass).__mro__
    assert _old_names() == [] and _files_loaded_twice() == {}


def test_sklearn_model_loads(v010):
    path = str(v010 / "sklearn_lr")
    np.testing.assert_allclose(modelfmt.load_model(path).predict(X), [2.5, 5.75, 8.875])
    np.testing.assert_allclose(sk_flavor.load_model(path).predict(X), [2.5, 5.75, 8.875])
    assert _old_names() == []


def test_old_names_are_not_importable_outside_a_load(v010):
    modelfmt.load_model(str(v010 / "code_subclass"))
    assert importlib.util.find_spec("flavors") is None and importlib.util.find_spec("serving") is None
    with pytest.raises(ModuleNotFoundError):
        import flavors  # noqa: F401


def test_shim_is_only_for_0_1_models(tmp_path):
    """A 0.2 model's code doing ``from flavors import ...`` does not get the old names."""
    code = tmp_path / "uses_old_name.py"
    code.write_text(
        "from modelfmt.flavors import pyfunc as _pf\n\n\n"
        "class M(_pf.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input['a'].to_numpy()\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import uses_old_name

        pyfunc.save_model(str(tmp_path / "m"), python_model=uses_old_name.M(), code_paths=[str(code)])
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("uses_old_name", None)
    (tmp_path / "m" / "code" / "uses_old_name.py").write_text("from flavors import pyfunc\n" + code.read_text())
    record_digests(tmp_path / "m")
    try:
        with pytest.raises(ModelFormatError, match="No module named 'flavors'"):
            modelfmt.load_model(str(tmp_path / "m"))
    finally:
        sys.modules.pop("uses_old_name", None)


def test_a_failed_load_removes_the_shim(v010):
    broken = v010 / "main_subclass"
    data = (broken / "python_model.pkl").read_bytes()
    (broken / "python_model.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cannot unpickle"):
        modelfmt.load_model(str(broken))
    assert _old_names() == []
    assert not [f for f in sys.meta_path if type(f).__module__ == _legacy_names.__name__]


def test_nested_shims_and_someone_elses_flavors_package(monkeypatch):
    """While the shim is active, ``flavors`` is ours; an unrelated ``flavors`` comes back after."""
    import types

    theirs = types.ModuleType("flavors")
    monkeypatch.setitem(sys.modules, "flavors", theirs)
    with _legacy_names.legacy_names():
        with _legacy_names.legacy_names():
            import flavors.pyfunc

            assert flavors.pyfunc is pyfunc and sys.modules["flavors"] is modelfmt.flavors
        assert sys.modules["flavors.pyfunc"] is pyfunc  # still inside the outer block
    assert sys.modules["flavors"] is theirs and "flavors.pyfunc" not in sys.modules


def test_moved_modules_keep_their_new_packages_intact():
    import modelfmt.flavors
    import modelfmt.flavors.onnx.convert as convert

    had = hasattr(modelfmt.flavors, "convert")
    with _legacy_names.legacy_names():
        from flavors import convert as old

        assert old is convert
    assert hasattr(modelfmt.flavors, "convert") == had
    assert _old_names() == [] and "modelfmt.flavors.convert" not in sys.modules


def test_the_serving_package_is_never_aliased():
    # A flavor must not import serving, not even by a computed name: 0.1's ``serving`` is not answered.
    with _legacy_names.legacy_names():
        with pytest.raises(ImportError):
            import serving  # noqa: F401
    assert _old_names() == []


def test_a_0_1_model_served_over_http(v010):
    from modelfmt.serving.testing import serving

    with serving(str(v010 / "code_subclass")) as url:
        resp = requests.post(
            url + "/invocations",
            json={"dataframe_split": {"columns": ["a", "b"], "data": X.to_numpy().tolist()}},
            timeout=30,
        )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"predictions": EXPECTED["code_subclass"]}
