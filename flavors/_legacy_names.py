"""Load models saved by modelfmt 0.1, whose pickles and ``code/`` modules use the old import names.

modelfmt 0.1 installed the top-level packages ``flavors`` and ``serving``. Its models name the first:
a ``PythonModel`` subclass's base is ``flavors.pyfunc.PythonModel``, cloudpickle's by-value functions
carry ``subimport("flavors.pyfunc")``, and a ``code/`` module may do ``from flavors import pyfunc``.
Since 0.2 that package is ``modelfmt.flavors`` and no top-level ``flavors`` is installed. Only
``flavors`` names are answered: a model has no business naming the serving package, and a flavor
module must not import it (the layering rule), not even by a computed name.

While such a model loads (:func:`legacy_names`), a finder placed first on ``sys.meta_path`` answers
the old names with the SAME module objects as the new ones (never a second copy of a file), and
:func:`new_module_name` maps the module of a pickled global for the unpickler. When the load is over,
the old names leave ``sys.modules`` again (a user module that kept a reference keeps its module).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from modelfmt.model import Model

_OLD_ROOTS = ("flavors",)
# 0.1 modules that now live elsewhere (0.1 -> 0.2 file moves); every other name keeps its place.
_MOVED = {"flavors.convert": "modelfmt.flavors.onnx.convert"}
# ``from flavors import convert`` asks for ``modelfmt.flavors.convert`` (the package's real name).
_MOVED_UNDER_NEW_ROOT = {f"modelfmt.{old}": new for old, new in _MOVED.items()}
_MISSING = object()


def is_old_name(module: str) -> bool:
    """Whether ``module`` is under 0.1's top-level package ``flavors``."""
    return module.partition(".")[0] in _OLD_ROOTS


def new_module_name(module: str) -> str:
    """The 0.2 name of a 0.1 module name (``flavors.pyfunc`` -> ``modelfmt.flavors.pyfunc``); other
    names unchanged."""
    if not is_old_name(module):
        return module
    return _MOVED.get(module) or f"modelfmt.{module}"


def saved_by_0_1(model: Model) -> bool:
    """Whether ``MLmodel`` says modelfmt 0.1 (or earlier) wrote it: only then is the shim needed."""
    version = str(model.modelfmt_version or "")
    parts = version.split(".")
    return len(parts) >= 2 and parts[0] == "0" and parts[1].isdigit() and int(parts[1]) < 2


def _alias_target(fullname: str) -> str | None:
    if is_old_name(fullname):
        return new_module_name(fullname)
    return _MOVED_UNDER_NEW_ROOT.get(fullname)


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers ``flavors[.*]`` with the already-importable ``modelfmt.flavors`` modules."""

    def __init__(self) -> None:
        self.aliased: dict[str, Any] = {}  # old name -> the module it was answered with
        self.parents: list[tuple[Any, str, Any]] = []  # (package, attribute, its value before) to restore

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> Any:
        new = _alias_target(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None  # not an old name, or one 0.2 does not have: the import fails as it would
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: Any) -> None:
        fullname = module.__name__
        real = importlib.import_module(_alias_target(fullname) or fullname)
        parent, _, leaf = fullname.rpartition(".")
        if parent and (fullname in _MOVED or fullname in _MOVED_UNDER_NEW_ROOT):
            # The import system sets ``<parent>.<leaf>`` on the (real) parent package after this returns.
            package = sys.modules[parent]
            self.parents.append((package, leaf, getattr(package, leaf, _MISSING)))
        # importlib returns what sys.modules holds after exec_module: the real module, not a copy.
        sys.modules[fullname] = real
        self.aliased[fullname] = real


_lock = threading.Lock()
_depth = 0
_finder: _AliasFinder | None = None
_stashed: dict[str, Any] = {}


@contextlib.contextmanager
def legacy_names() -> Iterator[None]:
    """Let 0.1's import names resolve to modelfmt's modules for the duration of the block (nestable)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def _enter() -> None:
    global _depth, _finder, _stashed
    with _lock:
        if _depth == 0:
            # Someone else's top-level ``flavors`` (a project on the package index) steps
            # aside while the model loads, and comes back after.
            _stashed = {n: m for n, m in sys.modules.items() if is_old_name(n)}
            for name in _stashed:
                del sys.modules[name]
            _finder = _AliasFinder()
            sys.meta_path.insert(0, _finder)
        _depth += 1


def _exit() -> None:
    global _depth, _finder, _stashed
    with _lock:
        _depth -= 1
        if _depth == 0:
            _uninstall(_finder)
            sys.modules.update(_stashed)
            _finder, _stashed = None, {}


def _uninstall(finder: _AliasFinder | None) -> None:
    if finder is None:
        return
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    for name, module in finder.aliased.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]
    for package, attr, before in reversed(finder.parents):
        if before is _MISSING:
            if hasattr(package, attr):
                delattr(package, attr)
        else:
            setattr(package, attr, before)


@contextlib.contextmanager
def legacy_names_for(model: Model) -> Iterator[None]:
    """:func:`legacy_names` when modelfmt 0.1 saved ``model``, else nothing."""
    if saved_by_0_1(model):
        with legacy_names():
            yield
    else:
        yield
