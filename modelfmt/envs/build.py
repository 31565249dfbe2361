"""Build (or reuse) a model's own environment: ``env_manager="uv"`` or ``"virtualenv"``.

:func:`ensure_environment` reads what the model asks for (:mod:`modelfmt.envs.requirements`: a pin that
conflicts with modelfmt's own requirements fails here, before anything is built), finds its Python
(:mod:`modelfmt.envs.pythons`), and looks the environment up in the cache (:mod:`modelfmt.envs.cache`)
by a key of all that. A cached environment that passes the check is used as it is. Otherwise, under the
entry's lock (concurrent first runs build once; the others wait and reuse), a new one is built in a
``.build-*`` folder next to its place and renamed into place when complete, so no process ever sees a
half-built environment:

- ``uv``: ``uv venv --relocatable --python <interpreter>``, then ``uv pip install`` of the model's
  requirements and the running modelfmt's wheel in one resolution; a model with a ``uv.lock`` is
  restored with ``uv sync --frozen`` and then gets the wheel.
- ``virtualenv``: the interpreter's own ``venv`` module, then ``pip install`` (the ``virtualenv``
  package is not used; the name is MLflow's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from modelfmt.envs import cache, wheels
from modelfmt.envs.cache import Environment
from modelfmt.envs.pythons import Interpreter, find_python
from modelfmt.envs.requirements import REPLACED, EnvSpec, model_spec
from modelfmt.errors import ModelEnvironmentError
from modelfmt.open import OpenedModel, check_open_options, open_model

MANAGERS = ("uv", "virtualenv")
COMPILE_ENV = "MODELFMT_ENV_COMPILE"
_BUILD_TIMEOUT = 3600  # seconds for one installer run: a stuck index must not hang a server's start

_log = logging.getLogger(__name__)


def ensure_environment(
    model: str | os.PathLike | OpenedModel, manager: str = "uv", *, thorough: bool = False
) -> Environment:
    """The environment of ``model`` (a location or an :class:`OpenedModel`) built by ``manager``:
    the cached one when it passes the check (``thorough``: every installed file too), else a new one.

    Raises :class:`ModelEnvironmentError` for a model whose requirements conflict with modelfmt's, a
    Python version this machine does not have, or a failed build (with the installer's own words).
    """
    opened = open_model(model)
    _check_manager(manager)
    spec = model_spec(opened)
    # uv is needed to build, not to reuse: inside an environment (serve's re-exec) there is none.
    python = find_python(spec.python, _uv_if_installed())
    fingerprint = wheels.fingerprint()
    key = environment_key(spec, python, manager, fingerprint)
    root = cache.cache_root()
    env = _reusable(root, key, thorough)
    if env is not None:
        return env
    with cache.locked(root, key):
        env = _reusable(root, key, thorough)  # built meanwhile by the process we waited for
        if env is not None:
            return env
        uv = uv_binary() if manager == "uv" else None
        return _build(opened, spec, python, manager, uv, root, key, fingerprint)


def _check_manager(manager: str) -> None:
    check_open_options({"env_manager": manager})  # conda: the one message saying which to use
    if manager not in MANAGERS:
        raise ModelEnvironmentError(
            f"env_manager {manager!r} has no environment to build: use one of {', '.join(MANAGERS)}"
        )


def environment_key(spec: EnvSpec, python: Interpreter, manager: str, fingerprint: str) -> str:
    """The cache key: a digest of what is installed, the full Python version, the manager and modelfmt
    (its version and source fingerprint, so a changed checkout never reuses an older modelfmt)."""
    from modelfmt import __version__

    parts = {
        "format": cache.FORMAT,
        "manager": manager,
        "python": python.version,
        "requirements": spec.digest(),
        "modelfmt": __version__,
        "fingerprint": fingerprint,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def _reusable(root: str, key: str, thorough: bool) -> Environment | None:
    env = cache.load(root, key)
    if env is None:
        return None
    broken = cache.check(env, thorough)
    if broken is None:
        cache.touch(env)
        cache.hold(env)
        return env
    _log.warning("the cached environment %s is broken (%s): building it again", env.root, broken)
    return None


# -- building -----------------------------------------------------------------------------------
def uv_binary() -> str:
    """The uv binary: the one the ``uv`` package ships, else ``uv`` on PATH."""
    found = _uv_if_installed()
    if found is None:
        raise ModelEnvironmentError(
            "env_manager 'uv' needs uv: pip install 'modelfmt[env]' (or put uv on PATH), "
            "or use env_manager 'virtualenv'"
        )
    return found


def _uv_if_installed() -> str | None:
    try:
        import uv  # type: ignore[import-not-found,unused-ignore]

        path = uv.find_uv_bin()
        if path and os.path.isfile(path):
            return str(path)
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def _build(
    opened: OpenedModel, spec: EnvSpec, python: Interpreter, manager: str, uv: str | None, root: str, key: str,
    fingerprint: str,
) -> Environment:
    final = os.path.join(root, key)
    cache.discard(final)  # a broken entry (we hold its lock)
    started = time.monotonic()
    _log.info("building the model's environment with %s (Python %s at %s, %d requirement line(s)) in %s",
              manager, python.version, python.path, len(spec.requirements), final)
    wheel = modelfmt_wheel(root, fingerprint)
    work = tempfile.mkdtemp(prefix=f".build-{key}-", dir=root)
    try:
        env_dir = os.path.join(work, "env")
        if manager == "uv":
            assert uv is not None
            _build_uv(spec, python, uv, env_dir, work, wheel)
        else:
            _build_venv(spec, python, env_dir, work, wheel)
        if compile_mode() == "warm":
            _warm(env_dir, opened.path)
        _relocate(env_dir, final)
        cache.write_manifest(env_dir, _manifest(opened, spec, python, manager, key, fingerprint))
        os.rename(env_dir, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    shutil.rmtree(work, ignore_errors=True)
    env = cache.load(root, key)
    if env is None:  # pragma: no cover - we just wrote it
        raise ModelEnvironmentError(f"the environment built at {final} has no readable manifest")
    cache.touch(env)
    cache.hold(env)
    _log.info("built the model's environment %s in %.1f s", final, time.monotonic() - started)
    return env


def modelfmt_wheel(root: str, fingerprint: str) -> str:
    """A wheel of the running modelfmt, built once per source fingerprint under ``<root>/.wheels``."""
    digest = fingerprint[:20]
    folder = os.path.join(root, cache.WHEELS_DIR, digest)
    with cache.locked(root, cache.WHEELS_LOCK + digest):
        if not _wheel_in(folder):
            tmp = tempfile.mkdtemp(prefix=f".wheel-{digest}-", dir=root)
            try:
                wheels.modelfmt_wheel(tmp)
                os.makedirs(os.path.dirname(folder), exist_ok=True)
                cache.discard(folder)
                os.rename(tmp, folder)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        found = _wheel_in(folder)
    assert found is not None
    return found


def _wheel_in(folder: str) -> str | None:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".whl")) if os.path.isdir(folder) else []
    return os.path.join(folder, names[0]) if names else None


def _installer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["UV_PYTHON_DOWNLOADS"] = "never"  # the interpreter is chosen above; never a silent download
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: Sequence[str], what: str, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
    _log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, cwd=cwd, env=env or _installer_env(),
                              timeout=_BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ModelEnvironmentError(f"{what} did not finish in {_BUILD_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise ModelEnvironmentError(f"{what} failed: {_tail(proc.stderr or proc.stdout)}")


def _requirements_file(spec: EnvSpec, work: str) -> str:
    path = os.path.join(work, "requirements.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(spec.requirements) + "\n")
    return path


def compile_mode() -> str:
    """How builds byte-compile (``$MODELFMT_ENV_COMPILE``): ``none`` (the default, or ``0``) nothing:
    the environment's first process writes the bytecode of what it imports (its interpreter runs with
    ``-I``, which ignores ``PYTHONDONTWRITEBYTECODE``), once, atomically, for every later start;
    ``warm`` loads the model once in the new environment before it is renamed into place, so even the
    first start finds what it imports compiled; ``all`` (or ``1``) compiles every installed file.

    Measured (bench/env_start.py, 2026-12-02): a first ``serve --env-manager uv`` took 8.9 s with
    ``none`` and 12.4 s with ``warm`` (the warm-up pays the imports once more), and the cached start
    1.9 s with either; ``all`` spends ~10 s compiling every file of scikit-learn, SciPy, pandas...
    """
    value = os.environ.get(COMPILE_ENV, "none").strip().lower()
    if value in ("1", "true", "yes", "all"):
        return "all"
    if value == "warm":
        return "warm"
    return "none"


def compile_bytecode() -> bool:
    """Whether the installer byte-compiles every file it installs (:func:`compile_mode` ``all``)."""
    return compile_mode() == "all"


# Run in the new environment with -I (which also ignores PYTHONDONTWRITEBYTECODE): loads the model
# as its scorer does (modelfmt.envs._worker), so what that imports has its bytecode written before the
# rename. Serving's own modules (flask, gunicorn) compile at the first start (a fraction of a second).
_WARM_SCRIPT = """
import sys
import modelfmt.envs._worker
from modelfmt.flavor_lookup import flavor_module
flavor_module("python_function").load_model(sys.argv[1], verify=False)
"""


def _warm(env_dir: str, model_path: str) -> None:
    """Compile what the model needs by loading it once in the environment (:func:`compile_mode` ``warm``);
    a failure only costs the first start its compile time, so it is logged, not raised."""
    python = os.path.join(env_dir, "bin", "python")
    started = time.monotonic()
    proc = subprocess.run([python, "-I", "-c", _WARM_SCRIPT, model_path], capture_output=True, text=True,
                          timeout=_BUILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        _log.warning("loading the model once in its new environment failed (its first start will compile "
                     "what it imports): %s", _tail(proc.stderr or proc.stdout))
    else:
        _log.info("compiled what the model imports in %.1f s", time.monotonic() - started)


def _uv_compile() -> list[str]:
    return ["--compile-bytecode"] if compile_bytecode() else []


def _build_uv(spec: EnvSpec, python: Interpreter, uv: str, env_dir: str, work: str, wheel: str) -> None:
    _run([uv, "venv", "--quiet", "--relocatable", "--no-config", "--python", python.path, env_dir],
         f"uv venv (Python {python.version})")
    target = os.path.join(env_dir, "bin", "python")
    if spec.lock and spec.project:
        project = os.path.join(work, "project")
        os.makedirs(project)
        for path in (spec.lock, spec.project):
            shutil.copy2(path, project)
        skip = [a for name in sorted(REPLACED) for a in ("--no-install-package", name)]
        env = dict(_installer_env(), UV_PROJECT_ENVIRONMENT=env_dir)
        _run([uv, "sync", "--frozen", "--no-install-project", "--no-dev", "--python", target, *skip],
             "uv sync --frozen (the model's uv.lock)", cwd=project, env=env)
        _run([uv, "pip", "install", *_uv_compile(), "--python", target, wheel], "uv pip install (modelfmt's wheel)")
        return
    _run([uv, "pip", "install", *_uv_compile(), "--python", target, "-r", _requirements_file(spec, work), wheel],
         "uv pip install (the model's requirements and modelfmt)")


def _build_venv(spec: EnvSpec, python: Interpreter, env_dir: str, work: str, wheel: str) -> None:
    if spec.lock:
        _log.warning("env_manager 'virtualenv' installs the pins of the model's uv.lock with pip (uv restores "
                     "the lock itself)")
    try:
        _run([python.path, "-m", "venv", env_dir], f"python{python.minor} -m venv")
    except ModelEnvironmentError as e:
        raise ModelEnvironmentError(
            f"{e.message} (Debian's Pythons need the python{python.minor}-venv package; or use env_manager 'uv')"
        ) from None
    target = os.path.join(env_dir, "bin", "python")
    reqs = _requirements_file(spec, work)
    compile_flag = [] if compile_bytecode() else ["--no-compile"]
    _run([target, "-m", "pip", "install", "--quiet", "--no-input", *compile_flag, "-r", reqs, wheel],
         "pip install (the model's requirements and modelfmt)")


def _relocate(env_dir: str, final: str) -> None:
    """Point the scripts of a venv built in ``env_dir`` at ``final``, where it is renamed to (pip's
    console scripts and venv's activate scripts hold the absolute path they were written for)."""
    old, new = env_dir.encode(), final.encode()
    folders = [os.path.join(env_dir, "bin")]
    for folder in folders:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if os.path.islink(path) or not os.path.isfile(path) or os.path.getsize(path) > 1 << 20:
                continue
            with open(path, "rb") as f:
                data = f.read()
            if old in data and b"\0" not in data:
                with open(path, "wb") as f:
                    f.write(data.replace(old, new))
    cfg = os.path.join(env_dir, "pyvenv.cfg")
    with open(cfg, "rb") as f:
        data = f.read()
    with open(cfg, "wb") as f:
        f.write(data.replace(old, new))


def _manifest(
    opened: OpenedModel, spec: EnvSpec, python: Interpreter, manager: str, key: str, fingerprint: str
) -> dict[str, Any]:
    from modelfmt import __version__

    return {
        "key": key,
        "manager": manager,
        "model": opened.path,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": {"version": python.version, "base": python.path, "wanted": spec.python,
                   "source": spec.python_source},
        "requirements": list(spec.requirements),
        "replaced": list(spec.replaced),
        "lock": bool(spec.lock),
        "modelfmt": {"version": __version__, "fingerprint": fingerprint, "built_by": sys.executable},
        "site_packages": cache.site_packages_of(python.version),
    }


def _tail(text: str, lines: int = 8) -> str:
    # uv's "Using Python 3.11.7 environment at: .build-..." names a folder that is gone by now.
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("Using Python")]
    return " / ".join(kept[-lines:]) or "no output"
