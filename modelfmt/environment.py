"""Environment files: ``requirements.txt``, ``python_env.yaml`` and ``conda.yaml`` in MLflow's formats."""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Iterable

from modelfmt.errors import ModelFormatError

REQUIREMENTS_FILE = "requirements.txt"
PYTHON_ENV_FILE = "python_env.yaml"
CONDA_ENV_FILE = "conda.yaml"
UV_LOCK_FILE = "uv.lock"  # a model saved from a uv project may carry its lock (restored with uv sync)

_log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or ``None``."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pinned(dists: Iterable[str]) -> list[str]:
    """``name==version`` for each installed distribution (names not installed are kept bare)."""
    out = []
    for d in dists:
        v = installed_version(d)
        out.append(f"{d}=={v}" if v else d)
    return out


def requirement_name(line: str) -> str | None:
    """The distribution name a requirement line is about, normalised (``None`` for options/blank)."""
    line = line.split("#", 1)[0].strip()
    if not line or line.startswith("-"):
        return None
    m = _NAME_RE.match(line)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else None


def resolve_requirements(
    default: list[str], pip_requirements: Iterable[str] | str | None, extra: Iterable[str] | str | None
) -> list[str]:
    """The requirement lines to write: ``pip_requirements`` replaces ``default``; ``extra`` adds."""
    if pip_requirements is not None and extra is not None:
        raise ModelFormatError("pass only one of pip_requirements and extra_pip_requirements")
    base = _as_lines(pip_requirements) if pip_requirements is not None else list(default)
    if extra is not None:
        names = {requirement_name(r) for r in _as_lines(extra)}
        base = [r for r in base if requirement_name(r) not in names] + _as_lines(extra)
    return base


def _as_lines(reqs: Iterable[str] | str) -> list[str]:
    if isinstance(reqs, str):
        if os.path.isfile(reqs):
            with open(reqs, encoding="utf-8") as f:
                return [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        return [reqs]
    return [str(r) for r in reqs]


def write_environment(path: str, requirements: list[str]) -> dict:
    """Write the three environment files into ``path``; returns the pyfunc flavor's ``env`` block."""
    import yaml

    with open(os.path.join(path, REQUIREMENTS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(requirements) + "\n")
    py = platform.python_version()
    build = pinned(["pip", "setuptools", "wheel"])
    with open(os.path.join(path, PYTHON_ENV_FILE), "w", encoding="utf-8") as f:
        yaml.safe_dump(
            {"python": py, "build_dependencies": build, "dependencies": [f"-r {REQUIREMENTS_FILE}"]},
            f,
            default_flow_style=False,
            sort_keys=False,
        )
    pip_version = installed_version("pip")
    conda = {
        "name": "mlflow-env",
        "channels": ["conda-forge"],
        "dependencies": [f"python={py}", f"pip<={pip_version}" if pip_version else "pip", {"pip": requirements}],
    }
    with open(os.path.join(path, CONDA_ENV_FILE), "w", encoding="utf-8") as f:
        yaml.safe_dump(conda, f, default_flow_style=False, sort_keys=False)
    return {"conda": CONDA_ENV_FILE, "virtualenv": PYTHON_ENV_FILE}


def read_requirements(path: str) -> list[str]:
    """The requirement lines of a model directory (empty when it has none)."""
    fp = os.path.join(path, REQUIREMENTS_FILE)
    if not os.path.isfile(fp):
        return []
    with open(fp, encoding="utf-8") as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]


def read_python_env(path: str) -> dict | None:
    """The model's ``python_env.yaml`` as a mapping (``None`` when it has none)."""
    return _read_yaml(os.path.join(path, PYTHON_ENV_FILE))


def read_conda_env(path: str) -> dict | None:
    """The model's ``conda.yaml`` as a mapping (``None`` when it has none)."""
    return _read_yaml(os.path.join(path, CONDA_ENV_FILE))


def _read_yaml(fp: str) -> dict | None:
    import yaml

    if not os.path.isfile(fp):
        return None
    with open(fp, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ModelFormatError(f"{os.path.basename(fp)} of the model is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ModelFormatError(f"{os.path.basename(fp)} of the model is not a mapping")
    return data


def version_mismatches(requirements: list[str]) -> list[str]:
    """Human-readable lines for pinned requirements whose installed version differs (or is none)."""
    return [_describe(name, want, have) for name, want, have in _pins_not_met(requirements)]


def _pins_not_met(requirements: list[str]) -> list[tuple[str, str, str | None]]:
    """``(name, pinned version, installed version or None)`` for each ``==`` pin not met."""
    out = []
    for line in requirements:
        if "==" not in line:
            continue
        name, _, want = line.partition("==")
        name = name.split("[", 1)[0].strip()
        want = want.split(";", 1)[0].strip()
        have = installed_version(name)
        if have != want:
            out.append((name, want, have))
    return out


def _describe(name: str, want: str, have: str | None) -> str:
    return f"{name} (model: {want}, installed: {have or 'none'})"


# (model directory, what was said): each said once per process, not on every load of the same model.
_WARNED: set[tuple[str, str]] = set()


def warn_version_mismatches(path: str, needed: Iterable[str] = ()) -> None:
    """Log one warning listing packages installed at another version than the model was saved with.

    A pinned package that is not installed at all is listed only when it is in ``needed`` (distribution
    names the flavor itself imports): requirements often name packages the model never loads (the
    README's ``extra_pip_requirements=["lightgbm==4.5.0"]`` beside a linear model), and a flavor whose
    own library is missing fails to load naming it anyway. The same warning for the same model
    directory is logged once per process (a server or a Spark worker loads a model many times).
    """
    wanted = {requirement_name(n) for n in needed}
    pins = [r for r in read_requirements(path) if requirement_name(r) not in ("mlflow", "modelfmt")]
    diffs = [
        _describe(name, want, have)
        for name, want, have in _pins_not_met(pins)
        if have is not None or requirement_name(name) in wanted
    ]
    if not diffs:
        return
    key = (os.path.realpath(path), "; ".join(diffs))
    if key in _WARNED:
        return
    _WARNED.add(key)
    _log.warning("model at %s was saved with other package versions; predictions may differ: %s", path, key[1])
