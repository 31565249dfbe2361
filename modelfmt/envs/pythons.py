"""Find the Python a model's environment is built on: one already on this machine, or one uv manages.

No pyenv and no build of Python: the interpreter is this one (when its major.minor matches), a
``python3.X`` on ``PATH`` (each probed, so a pyenv shim for an inactive version is passed over), or a
Python that uv manages (``uv python find --managed-python``). ``uv python install X.Y`` runs only when
``MODELFMT_ENV_INSTALL_PYTHON=1`` says so (it downloads a Python build, which needs the network). Only
major.minor has to match the version the model was saved with, as in MLflow; when no such interpreter is
found the error says which version and how to provide one, with no fallback to another version.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import sys

from modelfmt.errors import ModelEnvironmentError

INSTALL_ENV = "MODELFMT_ENV_INSTALL_PYTHON"
_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.executable)"

_log = logging.getLogger(__name__)
_FOUND: dict[str, Interpreter] = {}  # "3.11" -> the interpreter found first (probing costs a process)


@dataclasses.dataclass(frozen=True)
class Interpreter:
    """A Python interpreter on this machine: its absolute ``path`` and full ``version`` (``3.11.7``)."""

    path: str
    version: str

    @property
    def minor(self) -> str:
        """``major.minor``."""
        return ".".join(self.version.split(".")[:2])


def find_python(version: str, uv: str | None = None) -> Interpreter:
    """An interpreter of Python ``version`` (``major.minor``); ``uv`` is the uv binary, if any.

    A :class:`ModelEnvironmentError` says which version is missing and how to provide it.
    """
    if version in _FOUND and os.path.exists(_FOUND[version].path):
        return _FOUND[version]
    found = _here(version) or _on_path(version) or (_uv_managed(version, uv) if uv else None)
    if found is None and uv and os.environ.get(INSTALL_ENV, "").lower() in ("1", "true", "yes"):
        _log.info("installing Python %s with uv (%s is set)", version, INSTALL_ENV)
        proc = _run([uv, "python", "install", version])
        if proc.returncode != 0:
            raise ModelEnvironmentError(f"uv python install {version} failed: {_tail(proc.stderr)}")
        found = _uv_managed(version, uv)
    if found is None:
        raise ModelEnvironmentError(
            f"the model needs Python {version} and this machine has none (looked at this interpreter, "
            f"python{version} on PATH{' and the Pythons uv manages' if uv else ''}): install it (e.g. "
            f"apt-get install python{version}, or uv python install {version}) and put python{version} "
            f"on PATH, or set {INSTALL_ENV}=1 to let uv download it; modelfmt does not fall back to "
            "another version"
        )
    _FOUND[version] = found
    return found


def _here(version: str) -> Interpreter | None:
    if "{}.{}".format(*sys.version_info[:2]) != version:
        return None
    # The base interpreter, not this venv's: the model's venv must not see this one's packages.
    base = getattr(sys, "_base_executable", None) or sys.executable
    path = os.path.realpath(base) if os.path.exists(base) else sys.executable
    return Interpreter(path, platform.python_version())


def _on_path(version: str) -> Interpreter | None:
    seen: set[str] = set()
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = os.path.join(folder or ".", f"python{version}")
        if exe in seen or not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            continue
        seen.add(exe)
        found = probe(exe)
        if found is not None and found.minor == version:
            return found
    return None


def _uv_managed(version: str, uv: str) -> Interpreter | None:
    # Managed Pythons only: uv's own search of PATH stops at the first interpreter that fails to run
    # (a pyenv shim), and PATH was searched above.
    proc = _run([uv, "python", "find", "--managed-python", "--no-python-downloads", version])
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    found = probe(proc.stdout.strip().splitlines()[-1])
    return found if found is not None and found.minor == version else None


def probe(exe: str) -> Interpreter | None:
    """The interpreter ``exe`` runs (its real path and version), or ``None`` when it does not run."""
    try:
        proc = _run([exe, "-I", "-S", "-c", _PROBE])
    except OSError:
        return None
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        return None
    return Interpreter(os.path.realpath(lines[1]), lines[0])


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired as e:
        raise ModelEnvironmentError(f"{cmd[0]} did not answer in {e.timeout:.0f} s: {' '.join(cmd[1:])}") from None


def _tail(text: str, lines: int = 3) -> str:
    kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(kept[-lines:]) or "no output"
