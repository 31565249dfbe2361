"""What a model's own environment is made of, read from its environment files before anything is built.

The Python version comes from ``python_env.yaml`` (MLflow's ``python:`` field), else the ``python_version``
``MLmodel`` records, else ``conda.yaml``'s ``python=X.Y``, else this interpreter's; only major.minor has
to match, as in MLflow. The requirements come from ``python_env.yaml`` (its ``build_dependencies`` and
``dependencies``, ``-r requirements.txt`` read from the model directory), else ``requirements.txt``, else
the ``pip:`` list of ``conda.yaml``. A model that carries a ``uv.lock`` (with the ``pyproject.toml`` it
locks) is restored from the lock instead.

The model's ``modelfmt``, ``mlflow`` and ``mlflow-skinny`` pins are replaced by the running modelfmt
(installed from a wheel of it), and a model pin that no version could satisfy together with modelfmt's
own requirements (``pandas<2`` where modelfmt needs ``pandas>=2.0``) is a
:class:`~modelfmt.errors.ModelEnvironmentError` naming both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import platform
import re
import sys
from typing import Any

from modelfmt.environment import (
    PYTHON_ENV_FILE,
    REQUIREMENTS_FILE,
    UV_LOCK_FILE,
    read_conda_env,
    read_python_env,
    requirement_name,
)
from modelfmt.errors import ModelEnvironmentError
from modelfmt.open import OpenedModel

# Never installed from the model's requirements: the environment gets the running modelfmt instead,
# which loads MLflow's models without MLflow.
REPLACED = frozenset({"modelfmt", "mlflow", "mlflow-skinny"})
_PROJECT_FILE = "pyproject.toml"
_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)\s*=?\s*(\S+)\s*$")

_log = logging.getLogger(__name__)
_SAID: set[tuple[str, str]] = set()  # (model directory, replaced lines): said once per process


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """The environment a model asks for.

    ``python`` is ``major.minor`` and ``python_source`` says where it was read; ``requirements`` are the
    requirement lines to install (pip options such as ``--extra-index-url`` included), without the
    ``replaced`` ones; ``lock`` is the model's ``uv.lock`` (with ``project``, its ``pyproject.toml``)
    when the environment is restored from it.
    """

    python: str
    python_source: str
    requirements: tuple[str, ...]
    replaced: tuple[str, ...] = ()
    lock: str | None = None
    project: str | None = None

    def digest(self) -> str:
        """A digest of what would be installed: the requirement lines, or the lock's bytes."""
        h = hashlib.sha256("\n".join(self.requirements).encode())
        for path in (self.lock, self.project):
            if path:
                with open(path, "rb") as f:
                    h.update(b"\0" + f.read())
        return h.hexdigest()


def model_spec(opened: OpenedModel) -> EnvSpec:
    """The :class:`EnvSpec` of an opened model, checked against modelfmt's own requirements."""
    path = opened.path
    python, source = _python_version(opened)
    lock = os.path.join(path, UV_LOCK_FILE)
    project = os.path.join(path, _PROJECT_FILE)
    if os.path.isfile(lock) and not os.path.isfile(project):
        _log.warning("model at %s has a %s but no %s beside it: restoring from its requirements", path,
                     UV_LOCK_FILE, _PROJECT_FILE)
    if os.path.isfile(lock) and os.path.isfile(project):
        lines = locked_requirements(lock)
        kept, replaced = split_replaced(lines)
        spec = EnvSpec(python, source, tuple(kept), tuple(replaced), lock, project)
    else:
        kept, replaced = split_replaced(_requirement_lines(path))
        spec = EnvSpec(python, source, tuple(kept), tuple(replaced))
    check_python(spec)
    check_conflicts(spec.requirements, python)
    _say_replaced(path, spec.replaced)
    return spec


# -- the Python version -------------------------------------------------------------------------
def _python_version(opened: OpenedModel) -> tuple[str, str]:
    """``(major.minor, where it was read)``."""
    env = read_python_env(opened.path) or {}
    conf = opened.model.flavors.get("python_function") or {}
    conda = read_conda_env(opened.path) or {}
    conda_python = next(
        (d.split("=", 1)[1] for d in conda.get("dependencies") or [] if isinstance(d, str)
         and re.match(r"^python\s*=", d)),
        None,
    )
    for value, source in (
        (env.get("python"), PYTHON_ENV_FILE),
        (conf.get("python_version"), "MLmodel"),
        (conda_python, "conda.yaml"),
    ):
        m = _VERSION.match(str(value or "").lstrip("="))
        if m:
            return f"{m.group(1)}.{m.group(2)}", f"{source} (python {str(value).strip()})"
    here = "{}.{}".format(*sys.version_info[:2])
    return here, f"this interpreter ({platform.python_version()}; the model records no Python version)"


def check_python(spec: EnvSpec) -> None:
    """A :class:`ModelEnvironmentError` when modelfmt itself cannot run on the model's Python."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    needs = _own_metadata().get("Requires-Python")
    if needs and not SpecifierSet(needs).contains(Version(spec.python + ".0"), prereleases=True):
        raise ModelEnvironmentError(
            f"the model needs Python {spec.python} ({spec.python_source}), but modelfmt runs on Python "
            f"{needs}: restore this model with MLflow, or save it again under a newer Python"
        )


# -- requirement lines --------------------------------------------------------------------------
def _requirement_lines(path: str) -> list[str]:
    """The model's requirement lines, from ``python_env.yaml``, ``requirements.txt`` or ``conda.yaml``."""
    env = read_python_env(path)
    if env is not None:
        lines: list[str] = []
        for entry in [*(env.get("build_dependencies") or []), *(env.get("dependencies") or [])]:
            lines += _expand(path, str(entry), PYTHON_ENV_FILE)
        return lines
    if os.path.isfile(os.path.join(path, REQUIREMENTS_FILE)):
        return _expand(path, f"-r {REQUIREMENTS_FILE}", "the model")
    conda = read_conda_env(path) or {}
    for dep in conda.get("dependencies") or []:
        if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
            return [ln for entry in dep["pip"] for ln in _expand(path, str(entry), "conda.yaml")]
    _log.warning("model at %s has no requirements: its environment gets only modelfmt's dependencies", path)
    return []


def _expand(root: str, line: str, where: str, depth: int = 0) -> list[str]:
    """``line`` as requirement lines: ``-r file`` / ``-c file`` read from the model directory."""
    line = line.split(" #", 1)[0].strip()
    if not line or line.startswith("#"):
        return []
    m = _INCLUDE.match(line)
    if not m:
        return [line]
    name = m.group(2)
    full = os.path.realpath(os.path.join(root, name))
    if os.path.isabs(name) or not full.startswith(os.path.realpath(root) + os.sep):
        raise ModelEnvironmentError(f"{where} includes {name!r}, a file outside the model directory")
    if depth > 5 or not os.path.isfile(full):
        raise ModelEnvironmentError(f"{where} includes {name!r}, which the model directory does not hold")
    with open(full, encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    if m.group(1) in ("-c", "--constraint"):
        return [f"-c {full}"]  # the installer reads it from the model directory
    out: list[str] = []
    for ln in text.splitlines():
        out += _expand(root, ln, name, depth + 1)
    return out


def split_replaced(lines: list[str]) -> tuple[list[str], list[str]]:
    """``(lines to install, lines replaced by the running modelfmt)``."""
    kept: list[str] = []
    replaced: list[str] = []
    for line in lines:
        (replaced if requirement_name(line) in REPLACED else kept).append(line)
    return kept, replaced


def _say_replaced(path: str, replaced: tuple[str, ...]) -> None:
    if not replaced:
        return
    key = (os.path.realpath(path), ", ".join(replaced))
    if key in _SAID:
        return
    _SAID.add(key)
    from modelfmt import __version__

    _log.warning(
        "the model's environment gets this modelfmt (%s) instead of %s: modelfmt loads the model without MLflow",
        __version__, key[1],
    )


def locked_requirements(lock: str) -> list[str]:
    """``name==version`` for every package a ``uv.lock`` pins from an index (for the conflict check
    and the Docker image; the environment itself is restored with ``uv sync --frozen``)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise ModelEnvironmentError(f"reading the model's {UV_LOCK_FILE} needs Python 3.11 or newer") from None

    with open(lock, "rb") as f:
        data = tomllib.load(f)
    out = []
    for pkg in data.get("package") or []:
        source = pkg.get("source") or {}
        if "registry" in source and pkg.get("name") and pkg.get("version"):
            out.append(f"{pkg['name']}=={pkg['version']}")
    return out


# -- conflicts with modelfmt's own requirements ---------------------------------------------------
def _own_metadata() -> Any:
    from importlib import metadata

    return metadata.metadata("modelfmt")


def own_requirements(python: str) -> dict[str, Any]:
    """modelfmt's own (non-extra) requirements on Python ``python``: normalised name -> Requirement."""
    from importlib import metadata

    from packaging.requirements import Requirement

    out = {}
    for text in metadata.requires("modelfmt") or []:
        req = Requirement(text)
        env = {"python_version": python, "python_full_version": python + ".0", "extra": ""}
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        out[requirement_name(req.name) or req.name] = req
    return out


def check_conflicts(lines: tuple[str, ...] | list[str], python: str) -> None:
    """A :class:`ModelEnvironmentError` naming the first model pin no version can satisfy together
    with modelfmt's own requirement on the same package."""
    from packaging.requirements import InvalidRequirement, Requirement

    own = own_requirements(python)
    for line in lines:
        if line.startswith("-"):
            continue
        try:
            req = Requirement(line.split(" #", 1)[0].strip())
        except InvalidRequirement:
            continue  # a URL or path line: uv or pip reports it
        if req.marker is not None and not req.marker.evaluate({"python_version": python, "extra": ""}):
            continue  # not installed on the model's Python
        mine = own.get(requirement_name(req.name) or req.name)
        if mine is not None and not req.url and not overlap(str(req.specifier), str(mine.specifier)):
            raise _conflict(line, mine)


def _conflict(line: str, mine: Any) -> ModelEnvironmentError:
    from modelfmt import __version__

    return ModelEnvironmentError(
        f"the model requires {line!r}, but modelfmt {__version__} requires {str(mine)!r}: no version of "
        f"{mine.name} satisfies both; save the model again with a compatible {mine.name}, or score it "
        "with env_manager='local'"
    )


def overlap(a: str, b: str) -> bool:
    """Whether some version satisfies both specifier sets ``a`` and ``b`` (``">=2"``, ``"<2,!=1.5"``).

    packaging has no intersection test; the versions tried are the bounds of both sets and their
    neighbours, which is where two sets of ``<``, ``<=``, ``==``, ``!=``, ``~=``, ``>=``, ``>`` meet.
    """
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        sa, sb = SpecifierSet(a), SpecifierSet(b)
    except InvalidSpecifier:
        return True
    candidates = {Version("0"), Version("999999")}
    for spec in [*sa, *sb]:
        if spec.operator == "===":
            return True
        try:
            v = Version(spec.version.removesuffix(".*"))
        except InvalidVersion:
            return True
        rel = v.release
        candidates |= {v, Version(".".join(map(str, (*rel, 1)))), Version(".".join(map(str, (*rel, 0, 1))))}
        for i in range(len(rel)):
            for step in (-1, 1):
                if rel[i] + step >= 0:
                    candidates.add(Version(".".join(map(str, (*rel[:i], rel[i] + step)))))
    return any(sa.contains(c, prereleases=True) and sb.contains(c, prereleases=True) for c in candidates)
