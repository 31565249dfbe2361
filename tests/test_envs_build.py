"""A model's own environment (modelfmt.envs): built with uv (and venv + pip) from its requirements,
cached, checked before reuse, rebuilt when broken, built once by concurrent first runs.

The environments are real (uv and pip install from the package index, warm caches after the first run);
one is built per test session for a model pinning an older scikit-learn and shared by the tests here
and in test_cli_env.py (its cache directory is the same for both modules).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tomllib
import yaml

from modelfmt.envs import cache
from modelfmt.envs.build import COMPILE_ENV, ensure_environment, environment_key
from modelfmt.envs.pythons import Interpreter
from modelfmt.envs.requirements import EnvSpec, check_conflicts, model_spec, overlap
from modelfmt.errors import FlavorError, ModelEnvironmentError
from modelfmt.open import open_model

OLD_SKLEARN = "1.5.2"  # older than the test venv's, with wheels for CPython 3.11
MLFLOW_PIN = "mlflow==3.18.0"


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory):
    """MODELFMT_ENV_CACHE for the session: one folder, the same for every module that uses it."""
    path = tmp_path_factory.getbasetemp() / "modelfmt-envs"
    path.mkdir(exist_ok=True)
    old = os.environ.get(cache.CACHE_ENV)
    os.environ[cache.CACHE_ENV] = str(path)
    yield path
    if old is None:
        os.environ.pop(cache.CACHE_ENV, None)
    else:
        os.environ[cache.CACHE_ENV] = old


def save_linear(path, requirements=None, extra=None):
    """A small scikit-learn model saved by modelfmt at ``path`` (requirements as given)."""
    from sklearn.linear_model import LinearRegression

    from modelfmt.flavors import sklearn as sk_flavor

    model = LinearRegression().fit(np.arange(20.0).reshape(-1, 2), np.arange(10.0))
    sk_flavor.save_model(model, str(path), pip_requirements=requirements, extra_pip_requirements=extra,
                         serialization_format="cloudpickle")
    return str(path)


@pytest.fixture(scope="session")
def old_sklearn_model(tmp_path_factory):
    """A model whose requirements pin scikit-learn 1.5.2 and MLflow (as MLflow's models do)."""
    path = tmp_path_factory.getbasetemp() / "old-sklearn-model"
    if not (path / "MLmodel").exists():
        save_linear(path, extra=[f"scikit-learn=={OLD_SKLEARN}", MLFLOW_PIN])
    return str(path)


@pytest.fixture(scope="session")
def uv_env(env_cache, old_sklearn_model):
    """``(environment, seconds its first ensure_environment took)``, built once per session."""
    started = time.perf_counter()
    env = ensure_environment(old_sklearn_model, "uv")
    return env, time.perf_counter() - started


def current_env(model):
    """The model's uv environment now: the session's, or a new one when the checkout changed meanwhile
    (modelfmt's source fingerprint is part of the key)."""
    return ensure_environment(model, "uv")


def env_python(env, code: str) -> dict:
    """Run ``code`` (which prints one JSON value) with the environment's interpreter; ``-I``: neither
    the current directory (a checkout holds modelfmt/) nor PYTHON* variables may change what it imports."""
    proc = subprocess.run([env.python, "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


PROBE = textwrap.dedent("""
    import importlib.util, json, sys
    import modelfmt, sklearn
    print(json.dumps({"sklearn": sklearn.__version__, "modelfmt": modelfmt.__file__, "prefix": sys.prefix,
                      "python": "%d.%d" % sys.version_info[:2],
                      "mlflow": importlib.util.find_spec("mlflow") is not None}))
""")


def test_uv_environment_has_the_models_pins_and_this_modelfmt(uv_env, old_sklearn_model):
    env, first = uv_env
    print(f"first uv build: {first:.1f} s")
    assert env.manager == "uv" and os.path.isabs(env.python) and env.root == os.path.join(os.environ[cache.CACHE_ENV],
                                                                                           env.key)
    seen = env_python(env, PROBE)
    assert seen["sklearn"] == OLD_SKLEARN
    assert seen["modelfmt"].startswith(env.site_packages + os.sep)  # the wheel, not this checkout
    assert seen["prefix"] == env.root and seen["python"] == "{}.{}".format(*sys.version_info[:2])
    assert seen["mlflow"] is False  # the model's mlflow pin was replaced by modelfmt
    # The modelfmt inside names the same sources: run there, it finds this same environment.
    code = ("import json, sys; from modelfmt.envs import ensure_environment; from modelfmt.envs.wheels import "
            "fingerprint; print(json.dumps([fingerprint(), ensure_environment(sys.argv[1], 'uv').root]))")
    proc = subprocess.run([env.python, "-I", "-c", code, old_sklearn_model], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [env.manifest["modelfmt"]["fingerprint"], env.root]
    assert env.manifest["replaced"] == [MLFLOW_PIN]
    assert env.manifest["python"]["source"].startswith("python_env.yaml")
    names = {d["name"].lower().replace("_", "-") for d in env.manifest["dists"].values()}
    assert {"scikit-learn", "modelfmt", "pandas", "pyarrow"} <= names


def test_cached_environment_is_reused_at_once(uv_env, old_sklearn_model, caplog):
    env = current_env(old_sklearn_model)
    caplog.clear()
    before = cache.last_used(env.root)
    started = time.perf_counter()
    again = ensure_environment(open_model(old_sklearn_model), "uv")
    took = time.perf_counter() - started
    assert again.root == env.root and again.key == env.key
    assert took < 0.5, f"reusing the cached environment took {took:.2f} s"
    assert cache.last_used(env.root) >= before
    assert "building" not in caplog.text


def test_key_follows_python_requirements_and_modelfmt():
    spec = EnvSpec("3.11", "test", ("scikit-learn==1.5.2",))
    py = Interpreter("/usr/bin/python3.11", "3.11.7")
    key = environment_key(spec, py, "uv", "a" * 64)
    assert key == environment_key(spec, py, "uv", "a" * 64)
    others = {
        environment_key(spec, py, "uv", "b" * 64),  # a changed checkout
        environment_key(spec, Interpreter(py.path, "3.11.9"), "uv", "a" * 64),
        environment_key(spec, py, "virtualenv", "a" * 64),
        environment_key(EnvSpec("3.11", "test", ("scikit-learn==1.5.1",)), py, "uv", "a" * 64),
    }
    assert key not in others and len(others) == 4


CONCURRENT = textwrap.dedent("""
    import logging, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from modelfmt.envs import ensure_environment
    print(ensure_environment(sys.argv[1], "uv").root)
""")


def test_the_first_process_compiles_what_it_imports_for_the_next_ones(uv_env):
    # MODELFMT_ENV_COMPILE unset ("none"): the build compiles nothing; the environment's interpreter,
    # run with -I as the scorer and the re-exec run it, writes the bytecode of what it imports even
    # where PYTHONDONTWRITEBYTECODE is set, so only the first start pays for compiling.
    env, _ = uv_env
    sk = os.path.join(env.site_packages, "sklearn")
    assert not glob.glob(os.path.join(sk, "cluster", "__pycache__", "_dbscan.*.pyc"))  # never imported
    proc = subprocess.run([env.python, "-I", "-c", "import sklearn.cluster._dbscan"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert glob.glob(os.path.join(sk, "cluster", "__pycache__", "_dbscan.*.pyc"))


def test_concurrent_first_runs_build_once(tmp_path, env_cache, uv_env, old_sklearn_model):
    # Not byte-compiled (MODELFMT_ENV_COMPILE=0): the lock is what this test is about, and compiling
    # is most of a build whose packages are in uv's cache already.
    fresh = tmp_path / "cache"
    fresh.mkdir()
    # The modelfmt wheel is cached already: only the environment is built here.
    shutil.copytree(env_cache / cache.WHEELS_DIR, fresh / cache.WHEELS_DIR)
    environ = dict(os.environ, **{cache.CACHE_ENV: str(fresh), COMPILE_ENV: "0"})
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT, old_sklearn_model], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=environ)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    roots = {out.strip() for out, _ in outs}
    assert len(roots) == 1 and cache.load(str(fresh), os.path.basename(roots.pop())) is not None
    builds = sum("building the model's environment" in err for _, err in outs)
    assert builds == 1, [err for _, err in outs]
    assert not [n for n in os.listdir(fresh) if n.startswith((".build-", ".trash-"))]


def _copy_with(tmp_path, source, name, edit):
    """A copy of model ``source`` with its files changed by ``edit(path)``, opened without the digest
    check (the edit changes files the digests cover)."""
    path = tmp_path / name
    shutil.copytree(source, path)
    edit(path)
    return open_model(str(path), verify=False)


def _set_python(version):
    def edit(path):
        env = yaml.safe_load((path / "python_env.yaml").read_text())
        env["python"] = version
        (path / "python_env.yaml").write_text(yaml.safe_dump(env))

    return edit


def test_pins_for_another_python_are_not_conflicts():
    check_conflicts(['pandas<2; python_version < "3.9"', "pandas>=2.1"], "3.11")
    with pytest.raises(ModelEnvironmentError, match="'pandas<2; python_version >= \"3.9\"'"):
        check_conflicts(['pandas<2; python_version >= "3.9"'], "3.11")


def test_conflicting_pin_fails_before_anything_is_built(tmp_path, env_cache):
    model = save_linear(tmp_path / "m", extra=["pandas<2"])
    before = sorted(os.listdir(env_cache))
    with pytest.raises(ModelEnvironmentError) as err:
        ensure_environment(model, "uv")
    message = str(err.value)
    assert "'pandas<2'" in message and "'pandas>=2.0'" in message and "no version of pandas satisfies both" in message
    assert sorted(os.listdir(env_cache)) == before


def test_missing_python_version_is_a_clear_error(tmp_path, old_sklearn_model, env_cache):
    opened = _copy_with(tmp_path, old_sklearn_model, "py399", _set_python("3.99.1"))
    before = sorted(os.listdir(env_cache))
    with pytest.raises(ModelEnvironmentError) as err:
        ensure_environment(opened, "uv")
    message = str(err.value)
    assert "the model needs Python 3.99" in message and "uv python install 3.99" in message
    assert "does not fall back to another version" in message
    assert sorted(os.listdir(env_cache)) == before
    # A Python modelfmt itself does not run on: said as such, not as a missing interpreter.
    old = _copy_with(tmp_path, old_sklearn_model, "py38", _set_python("3.8.10"))
    with pytest.raises(ModelEnvironmentError, match=r"needs Python 3\.8 .* modelfmt runs on Python >=3\.10"):
        ensure_environment(old, "uv")


def test_unsupported_managers_say_which_to_use(old_sklearn_model):
    with pytest.raises(FlavorError, match="'conda' is not supported: use 'uv'"):
        ensure_environment(old_sklearn_model, "conda")
    with pytest.raises(ModelEnvironmentError, match="no environment to build"):
        ensure_environment(old_sklearn_model, "local")


def test_spec_reads_python_env_build_dependencies_and_includes(tmp_path, old_sklearn_model):
    def edit(path):
        (path / "extra.txt").write_text("# more\nthreadpoolctl>=3\n")
        (path / "requirements.txt").write_text("-r extra.txt\nscikit-learn==1.5.2\nmlflow-skinny==3.18\n")

    spec = model_spec(_copy_with(tmp_path, old_sklearn_model, "inc", edit))
    assert spec.requirements[-2:] == ("threadpoolctl>=3", "scikit-learn==1.5.2")
    assert any(r.startswith("pip==") for r in spec.requirements)  # python_env.yaml's build_dependencies
    assert spec.replaced == ("mlflow-skinny==3.18",)

    def outside(path):
        (path / "requirements.txt").write_text("-r ../../etc/passwd\n")

    with pytest.raises(ModelEnvironmentError, match="outside the model directory"):
        model_spec(_copy_with(tmp_path, old_sklearn_model, "out", outside))

    def conda_only(path):
        os.unlink(path / "python_env.yaml")
        os.unlink(path / "requirements.txt")

    spec = model_spec(_copy_with(tmp_path, old_sklearn_model, "conda", conda_only))
    assert "scikit-learn==1.5.2" in spec.requirements and spec.replaced == (MLFLOW_PIN,)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("<2", ">=2.0", False),
        ("==1.5.3", ">=2.0", False),
        ("==2.2.3", ">=2.0", True),
        (">1.5", "<1.5.1", True),
        ("~=1.4.2", ">=1.5", False),
        ("~=1.4.2", ">=1.4.5", True),
        ("==1.5.*", ">=1.5.3", True),
        ("!=2.0", ">=2.0", True),
        ("", ">=2", True),
        (">=3,<3.1", "<3", False),
    ],
)
def test_overlap_of_specifier_sets(a, b, expected):
    assert overlap(a, b) is expected


def test_corrupted_environment_is_detected_and_rebuilt(uv_env, old_sklearn_model, caplog, monkeypatch):
    monkeypatch.setenv(COMPILE_ENV, "0")  # the rebuild, not byte-compiling, is tested here
    env = current_env(old_sklearn_model)
    sklearn_dir = os.path.join(env.site_packages, "sklearn")
    # One file gone: the quick check (no pip, no RECORD read) passes, the thorough one names it.
    os.unlink(os.path.join(sklearn_dir, "base.py"))
    assert cache.check(env) is None
    assert cache.check(env, thorough=True) == f"scikit-learn {OLD_SKLEARN}: sklearn/base.py is missing"
    # The package's folder gone: the quick check finds it, and the next use rebuilds.
    shutil.rmtree(sklearn_dir)
    assert cache.check(env) == f"scikit-learn {OLD_SKLEARN}: sklearn is missing from site-packages"
    rebuilt = ensure_environment(old_sklearn_model, "uv")
    assert rebuilt.root == env.root
    assert "is broken (scikit-learn 1.5.2: sklearn is missing from site-packages): building it again" in caplog.text
    assert os.path.isfile(os.path.join(sklearn_dir, "base.py"))
    assert cache.check(rebuilt, thorough=True) is None


def test_virtualenv_manager_builds_with_venv_and_pip(env_cache, old_sklearn_model, monkeypatch):
    # pip byte-compiling ~30 packages is a third of this build; the uv tests cover compiled builds.
    monkeypatch.setenv(COMPILE_ENV, "0")
    env = ensure_environment(old_sklearn_model, "virtualenv")
    assert env.manager == "virtualenv" and env.key != ensure_environment(old_sklearn_model, "uv").key
    assert env_python(env, PROBE)["sklearn"] == OLD_SKLEARN
    # Built in a .build-* folder and renamed: its scripts point at where it is now.
    with open(os.path.join(env.root, "bin", "modelfmt"), encoding="utf-8") as f:
        assert f.readline().strip() == f"#!{env.root}/bin/python"
    proc = subprocess.run([os.path.join(env.root, "bin", "modelfmt"), "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "modelfmt, version" in proc.stdout


def test_uv_lock_is_restored_frozen(tmp_path, old_sklearn_model, monkeypatch):
    from modelfmt.envs.build import uv_binary

    monkeypatch.setenv(COMPILE_ENV, "0")  # what is installed is tested here, not how fast it starts
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "fraud-model"
        version = "0.1.0"
        requires-python = ">=3.11"
        dependencies = ["scikit-learn=={OLD_SKLEARN}", "numpy<2.3"]
    """))
    proc = subprocess.run([uv_binary(), "lock", "--quiet"], cwd=project, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lock = tomllib.loads((project / "uv.lock").read_text())
    numpy = next(p["version"] for p in lock["package"] if p["name"] == "numpy")

    def add_lock(path):
        shutil.copy(project / "pyproject.toml", path)
        shutil.copy(project / "uv.lock", path)

    opened = _copy_with(tmp_path, old_sklearn_model, "locked", add_lock)
    spec = model_spec(opened)
    assert spec.lock and f"numpy=={numpy}" in spec.requirements
    env = ensure_environment(opened, "uv")
    assert env.manifest["lock"] is True
    seen = env_python(env, "import json, numpy, sklearn; print(json.dumps([numpy.__version__, sklearn.__version__]))")
    assert seen == [numpy, OLD_SKLEARN]  # the lock's versions, not the requirements.txt's numpy


def test_unwritable_cache_is_a_clear_error(tmp_path, old_sklearn_model, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "a-file" / "envs"))
    with pytest.raises(ModelEnvironmentError, match=r"cannot create the environment cache .*a-file/envs .* set "
                                                     r"MODELFMT_ENV_CACHE to a writable folder"):
        ensure_environment(old_sklearn_model, "uv")


def test_failed_build_says_why_and_leaves_nothing(tmp_path, env_cache, uv_env):
    model = save_linear(tmp_path / "m", extra=["scikit-learn==0.0.1"])
    with pytest.raises(ModelEnvironmentError) as err:
        ensure_environment(model, "uv")
    assert str(err.value).startswith("uv pip install (the model's requirements and modelfmt) failed: ")
    assert "there is no version of scikit-learn==0.0.1" in str(err.value) and ".build-" not in str(err.value)
    assert not [n for n in os.listdir(env_cache) if n.startswith((".build-", ".trash-", ".wheel-"))]

