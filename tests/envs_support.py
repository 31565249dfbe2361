"""Models saved in another environment, for the tests of scoring in a model's own environment
(test_envs_scorer.py, test_envs_serve.py).

A venv with scikit-learn 1.5.2 (older than the test venv's; wheels for CPython 3.11) and a wheel of this
modelfmt is built with uv from the package index, once per test session; a script run in it fits and
saves the models and writes the predictions *that* environment gives. Every model pins the same
requirements, so all of them restore to one environment (built once per session, in the session's
environment cache, the one test_envs_build.py uses too).

The builders are cached per process (as spark_session.py's session), so both modules get the same
models and environment.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

OLD_SKLEARN = "1.5.2"


def requirements() -> list[str]:
    """The pins every model here is saved with: scikit-learn 1.5.2 and the test venv's numpy, pandas,
    cloudpickle (the saving venv gets the same)."""
    return [f"scikit-learn=={OLD_SKLEARN}", *(f"{d}=={metadata.version(d)}" for d in ("numpy", "pandas", "cloudpickle"))]


@functools.cache
def saver_python(base: str) -> str:
    """The interpreter of a uv venv (under ``base``) with scikit-learn 1.5.2 and this modelfmt (its wheel)."""
    from modelfmt.envs import cache, wheels
    from modelfmt.envs.build import modelfmt_wheel, uv_binary

    venv = Path(base) / "saver-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        uv = uv_binary()
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        env["UV_PYTHON_DOWNLOADS"] = "never"
        wheel = modelfmt_wheel(cache.cache_root(), wheels.fingerprint())
        for cmd in ([uv, "venv", "--quiet", "--no-config", "--python", sys.executable, str(venv)],
                    [uv, "pip", "install", "--quiet", "--python", str(python), *requirements(), wheel]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            assert proc.returncode == 0, proc.stderr
    return str(python)


SAVE_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np, pandas as pd, sklearn
    from sklearn.ensemble import RandomForestClassifier
    from modelfmt.flavors import pyfunc, sklearn as sk_flavor
    from modelfmt.infer import infer_signature

    out, reqs = sys.argv[1], json.loads(sys.argv[2])
    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["a", "b", "c"])
    y = (X["a"] + 0.5 * X["b"] - X["c"] > 0).astype("int64")
    # A forest: its answers do not depend on the input's memory layout (a linear model's last bits do,
    # and a frame decoded from JSON is laid out unlike one read from CSV).
    clf = RandomForestClassifier(n_estimators=7, max_depth=4, random_state=0).fit(X, y)
    sk_flavor.save_model(clf, os.path.join(out, "sk"), serialization_format="cloudpickle",
                         pyfunc_predict_fn="predict_proba", signature=infer_signature(X, clf.predict_proba(X)),
                         input_example=X.head(3), pip_requirements=reqs)
    X.to_csv(os.path.join(out, "X.csv"), index=False)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"sklearn": sklearn.__version__, "proba": clf.predict_proba(X).tolist()}, f)

    class Probe(pyfunc.PythonModel):
        # Where it runs: the scikit-learn version and interpreter of the process that scores.
        def predict(self, context, model_input, params=None):
            import sklearn
            return pd.DataFrame({"sklearn": [sklearn.__version__] * len(model_input),
                                 "python": [sys.executable] * len(model_input)})

    class Echo(pyfunc.PythonModel):
        # Answers with its input, or a piece of it as a Series, array or list (params mode).
        def predict(self, context, model_input, params=None):
            mode = (params or {}).get("mode", "frame")
            if mode == "series":
                return model_input["i"] * 2
            if mode == "array":
                return model_input["i"].to_numpy()
            if mode == "strings":
                return model_input["s"].to_numpy(dtype=object)
            if mode == "list":
                return [int(v) for v in model_input["i"]] + ["x", None]
            if mode == "fail":
                raise ValueError("no luck with " + str(len(model_input)) + " rows")
            if mode == "exit":
                os._exit(3)
            return model_input

    pyfunc.save_model(os.path.join(out, "probe"), python_model=Probe(), pip_requirements=reqs)
    frame = pd.DataFrame({"i": np.array([1, 2, 3], dtype="int64"), "s": ["a", "b", "c"],
                          "d": pd.to_datetime(["2020-01-01T00:00:00", "2021-02-03T00:00:00", "2022-03-04T05:06:07"]),
                          "b": [True, False, True]})
    pyfunc.save_model(os.path.join(out, "echo"), python_model=Echo(), pip_requirements=reqs,
                      signature=infer_signature(frame, frame, params={"mode": "frame"}))
    """
)


@functools.cache
def saved_models(base: str) -> dict[str, str]:
    """Paths of the models saved in the scikit-learn 1.5.2 venv: ``sk`` (RandomForestClassifier,
    predict_proba), ``probe`` (answers where it runs), ``echo`` (answers its input); ``X`` (CSV of the
    sk model's input) and ``expected`` (JSON: the saving venv's sklearn version and predictions)."""
    out = Path(base) / "saved-models"
    if not (out / "expected.json").exists():
        out.mkdir(exist_ok=True)
        proc = subprocess.run([saver_python(base), "-P", "-c", SAVE_SCRIPT, str(out), json.dumps(requirements())],
                              capture_output=True, text=True, timeout=600, cwd=str(out))
        assert proc.returncode == 0, proc.stderr
    return {name: str(out / name) for name in ("sk", "probe", "echo")} | {
        "X": str(out / "X.csv"), "expected": str(out / "expected.json")}


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory):
    """MODELFMT_ENV_CACHE for the session: the folder test_envs_build.py uses too (CLI runs and servers
    started by the tests inherit it)."""
    from modelfmt.envs import cache

    path = tmp_path_factory.getbasetemp() / "modelfmt-envs"
    path.mkdir(exist_ok=True)
    old = os.environ.get(cache.CACHE_ENV)
    os.environ[cache.CACHE_ENV] = str(path)
    yield str(path)
    if old is None:
        os.environ.pop(cache.CACHE_ENV, None)
    else:
        os.environ[cache.CACHE_ENV] = old


@pytest.fixture(scope="session")
def old_models(env_cache, tmp_path_factory):
    """:func:`saved_models` under the session's base temp."""
    return saved_models(str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="session")
def expected(old_models):
    """What the saving venv answered: ``{"sklearn": "1.5.2", "proba": [[p0, p1], ...]}``."""
    with open(old_models["expected"]) as f:
        return json.load(f)
