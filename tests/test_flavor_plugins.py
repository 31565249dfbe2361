"""Third-party flavors through a real entry point.

Each test writes packages and a ``*.dist-info`` (METADATA + entry_points.txt) into a temporary
directory and runs a fresh interpreter with it on ``PYTHONPATH``: entry points are read once per
process, so each scenario gets its own. The child prints one JSON object of what it saw; the
assertions are here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

# A stand-in for a boosting library: a class with a scikit-learn base, as xgboost's sklearn API has.
BOOSTLIB = '''
import numpy as np
from sklearn.base import BaseEstimator


class Booster(BaseEstimator):
    def __init__(self, weights=(1.0,), bias=0.0):
        self.weights = list(weights)
        self.bias = bias

    def predict(self, X):
        return np.asarray(X, dtype=float) @ np.asarray(self.weights, dtype=float) + self.bias
'''

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _readme_example() -> str:
    """The plugin flavor: the README's complete example ("Writing a flavor"), so the example is tested."""
    with open(README) as f:
        text = f.read()
    section = text[text.index("### A complete example"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```\n")]


# An MLflow-style model directory: what mlflow.xgboost writes, with this toy's data file.
MLFLOW_STYLE_MLMODEL = """\
flavors:
  python_function:
    data: model.json
    env:
      virtualenv: python_env.yaml
    loader_module: mlflow.xgboost
    python_version: 3.11.7
  xgboost:
    code: null
    data: model.json
    model_class: xgboost.sklearn.XGBRegressor
    model_format: json
    xgb_version: 2.1.0
mlflow_version: 3.18.0
model_uuid: 0f1e2d3c4b5a69788796a5b4c3d2e1f0
utc_time_created: '2026-11-30 10:00:00.000000'
"""


def _install(site, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write ``modules`` (name -> source) and a ``<dist>-0.1.dist-info`` registering ``entry_points``."""
    for name, source in modules.items():
        pkg = site / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[modelfmt.flavors]\n{lines}")


def _run(site, script: str, cwd) -> dict:
    """Run ``script`` in a fresh interpreter that sees ``site``; returns the JSON it printed last."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    # -P: the checkout's top-level folders (flavors/, serving/) must not shadow anything.
    proc = subprocess.run(
        [sys.executable, "-P", "-c", textwrap.dedent(script)], cwd=cwd, env=env,
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def boost_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install(site, "boost-flavor", {"boost": "boost_flavor"}, {"boostlib": BOOSTLIB, "boost_flavor": _readme_example()})
    return site


def test_plugin_flavor_saves_loads_and_serves(boost_site, tmp_path):
    mlflow_style = tmp_path / "mlflow_xgb"
    mlflow_style.mkdir()
    (mlflow_style / "MLmodel").write_text(MLFLOW_STYLE_MLMODEL)
    (mlflow_style / "model.json").write_text(json.dumps({"weights": [10.0, -1.0], "bias": 0.25}))
    script = f"""
        import json, urllib.request
        import pandas as pd
        from sklearn.linear_model import LinearRegression
        import modelfmt
        from modelfmt.errors import FlavorError
        from modelfmt.flavor_lookup import flavor_for, loader_flavor
        from modelfmt.serving.testing import serving
        from boostlib import Booster
        import boost_flavor

        out = {{}}
        booster = Booster(weights=[1.0, 2.0], bias=0.5)
        X = pd.DataFrame({{"a": [1.0, 2.0], "b": [3.0, 4.0]}})
        out["dispatch"] = [flavor_for(booster), flavor_for(LinearRegression())]
        saved = modelfmt.save_model(booster, {str(tmp_path / "boost")!r}, input_example=X)
        out["flavors"] = sorted(saved.flavors)
        out["loader_module"] = saved.flavors["python_function"]["loader_module"]
        out["inputs"] = [c.name for c in saved.signature.inputs.inputs]
        loaded = modelfmt.load_model({str(tmp_path / "boost")!r})
        out["predict"] = loaded.predict(X).tolist()
        out["scaled"] = modelfmt.load_model({str(tmp_path / "boost")!r}, scale=2.0).predict(X).tolist()
        native = boost_flavor.load_model({str(tmp_path / "boost")!r})
        out["native"] = [type(native).__name__, native.weights, native.bias]
        out["mlflow_loader"] = loader_flavor("mlflow.xgboost")
        out["mlflow_style"] = modelfmt.load_model({str(mlflow_style)!r}).predict(X).tolist()
        try:
            modelfmt.load_model({str(tmp_path / "boost")!r}, learning_rate=0.1)
        except FlavorError as e:
            out["unknown_option"] = str(e)
        with serving({str(tmp_path / "boost")!r}) as url:
            body = json.dumps({{"dataframe_split": {{"columns": ["a", "b"], "data": [[1.0, 1.0], [0.0, 2.0]]}}}})
            req = urllib.request.Request(url + "/invocations", data=body.encode(),
                                         headers={{"Content-Type": "application/json"}})
            with urllib.request.urlopen(req, timeout=30) as resp:
                out["served"] = [resp.status, json.loads(resp.read())]
        print(json.dumps(out))
    """
    out = _run(boost_site, script, tmp_path)
    # The plugin wins over the sklearn flavor for a BaseEstimator subclass; plain sklearn stays sklearn.
    assert out["dispatch"] == ["boost", "sklearn"]
    assert out["flavors"] == ["boost", "python_function"]
    assert out["loader_module"] == "boost_flavor"
    assert out["inputs"] == ["a", "b"]  # finish_model inferred the signature from the example
    assert out["predict"] == [7.5, 10.5]  # 1*a + 2*b + 0.5
    assert out["scaled"] == [15.0, 21.0]  # a flavor option reaches load_pyfunc
    assert out["native"] == ["Booster", [1.0, 2.0], 0.5]
    assert out["mlflow_loader"] == "boost"
    assert out["mlflow_style"] == [7.25, 16.25]  # 10*a - b + 0.25, loaded through the plugin
    assert "learning_rate" in out["unknown_option"] and "'boost'" in out["unknown_option"]
    assert out["served"] == [200, {"predictions": [3.5, 4.5]}]


def test_plugins_cannot_take_over_builtins_and_missing_libraries_say_what_to_install(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    grabby = 'FLAVOR_NAME = "grabby"\nMLFLOW_LOADER_MODULES = ("mlflow.sklearn", "mlflow.grabby", "mlflow.dup")\n'
    _install(site, "grabby-flavor", {"grabby": "grabby_flavor", "sklearn": "grabby_flavor"}, {"grabby_flavor": grabby})
    _install(site, "dup-flavor", {"dup": "dup_flavor"}, {"dup_flavor": 'MLFLOW_LOADER_MODULES = ("mlflow.dup",)\n'})
    _install(site, "needs-lib", {"needslib": "needslib_flavor"}, {"needslib_flavor": "import not_installed_lib_xyz\n"})
    script = """
        import json, warnings
        from sklearn.linear_model import LinearRegression
        from modelfmt.errors import FlavorError
        from modelfmt import flavor_lookup as fl

        out = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["names"] = fl.flavor_names()
            out["sklearn_module"] = fl.flavor_module("sklearn").__name__
            out["mlflow.sklearn"] = fl.loader_flavor("mlflow.sklearn")
            out["mlflow.grabby"] = fl.loader_flavor("mlflow.grabby")
        out["warnings"] = sorted(str(w.message) for w in caught if issubclass(w.category, fl.PluginWarning))
        for what, call in [("dup", lambda: fl.loader_flavor("mlflow.dup")),
                           ("needslib", lambda: fl.flavor_module("needslib")),
                           ("unknown_loader", lambda: fl.loader_flavor("mlflow.catboost"))]:
            try:
                call()
            except FlavorError as e:
                out[what] = str(e)
        # A plugin whose library is missing cannot have made the object: type dispatch goes on.
        out["dispatch"] = fl.flavor_for(LinearRegression())
        print(json.dumps(out))
    """
    out = _run(site, script, tmp_path)
    assert out["names"] == ["dup", "grabby", "needslib", "onnx", "python_function", "sklearn", "spark"]
    assert out["sklearn_module"] == "modelfmt.flavors.sklearn"
    assert out["mlflow.sklearn"] == "sklearn"  # a built-in loader name stays with the built-in
    assert out["mlflow.grabby"] == "grabby"  # the plugin's other declarations still count
    assert any("'sklearn'" in w and "built-in flavor" in w and "grabby-flavor" in w for w in out["warnings"])
    assert any("'mlflow.sklearn'" in w and "'grabby'" in w and "ignored" in w for w in out["warnings"])
    assert "more than one flavor plugin" in out["dup"] and "'dup'" in out["dup"] and "'grabby'" in out["dup"]
    assert "'not_installed_lib_xyz'" in out["needslib"] and "not installed" in out["needslib"]
    assert "'needs-lib'" in out["needslib"]  # names the package that brought the flavor
    assert "'mlflow.catboost'" in out["unknown_loader"] and "needslib" in out["unknown_loader"]
    assert out["dispatch"] == "sklearn"


def test_a_plugin_that_fails_to_import_shows_its_own_error(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    broken = 'raise RuntimeError("boom: the flavor module is broken")\n'
    _install(site, "broken-flavor", {"broken": "broken_flavor"}, {"broken_flavor": broken})
    # An ImportError that is not a missing library (a name missing from a module) is a bug too.
    bad_name = "from modelfmt.errors import NoSuchName\n"
    _install(site, "badname-flavor", {"badname": "badname_flavor"}, {"badname_flavor": bad_name})
    script = """
        import json
        from modelfmt import flavor_lookup as fl
        import modelfmt

        out = {}
        for name in ("broken", "badname"):
            try:
                fl.flavor_module(name)
            except Exception as e:
                out[name] = [type(e).__name__, str(e)]
        try:
            modelfmt.save_model(object(), "never")
        except Exception as e:
            out["save"] = [type(e).__name__, str(e)]
        print(json.dumps(out))
    """
    out = _run(site, script, tmp_path)
    assert out["broken"] == ["RuntimeError", "boom: the flavor module is broken"]
    assert out["badname"][0] == "ImportError" and "NoSuchName" in out["badname"][1]
    # Type dispatch imports plugins, so a broken one shows there too instead of a misleading "no flavor".
    assert out["save"][0] == "ImportError" and "NoSuchName" in out["save"][1]  # "badname" sorts first


# -- the lookup's pure parts, in this process -----------------------------------------------------
def test_flavor_options_are_checked_against_load_pyfunc():
    from modelfmt.errors import FlavorError
    from modelfmt.flavor_lookup import check_flavor_options

    def named(opened, scale=1.0, *, threads=1):
        return None

    def open_ended(opened, **options):
        return None

    check_flavor_options("boost", named, {"scale": 2.0, "threads": 4})
    check_flavor_options("boost", open_ended, {"anything": 1})  # it checks its own options
    expected = r"unknown option\(s\) for the 'boost' flavor: learning_rate; it takes: scale, threads"
    with pytest.raises(FlavorError, match=expected):
        check_flavor_options("boost", named, {"learning_rate": 0.1, "scale": 2.0})
    with pytest.raises(FlavorError, match="it takes none"):
        check_flavor_options("boost", lambda opened: None, {"x": 1})


def test_only_a_missing_third_party_module_counts_as_not_installed():
    from modelfmt.flavor_lookup import missing_library_error

    error = missing_library_error("onnx", ModuleNotFoundError("No module named 'onnxruntime'", name="onnxruntime"))
    assert error is not None
    assert error.message == (
        "the 'onnx' flavor needs the module 'onnxruntime', which is not installed; "
        "install it with: pip install 'modelfmt[onnx]'"
    )
    # Our own missing module, a name missing from a module, or an ImportError without a name: bugs.
    assert missing_library_error("onnx", ModuleNotFoundError("x", name="modelfmt.nope")) is None
    not_a_name = ImportError("cannot import name 'X' from 'sklearn'", name="sklearn")
    assert missing_library_error("sklearn", not_a_name) is None
    assert missing_library_error("sklearn", ModuleNotFoundError("no name")) is None
