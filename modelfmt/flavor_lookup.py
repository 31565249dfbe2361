"""Flavor lookup: flavor names and MLflow loader modules to flavor modules, and type dispatch.

Two kinds of flavor exist: the built-ins (``modelfmt.flavors.<name>``) and plugins, registered by
other distributions under the ``modelfmt.flavors`` entry-point group (name = flavor name, value = the
module). Only modules named here or by an entry point are ever imported because an ``MLmodel`` names
them: a model file cannot make us import arbitrary code.

Rules, in the order they apply:

- Entry points are read once per process (:func:`reset_plugins` forgets them, for tests).
- A plugin cannot replace a built-in: a plugin using a built-in flavor name, or declaring a built-in
  flavor's MLflow loader module (``mlflow.sklearn``...) in ``MLFLOW_LOADER_MODULES``, has that claim
  ignored, with a :class:`PluginWarning`; the rest of the plugin keeps working.
- :func:`flavor_for` asks every plugin's ``can_save(obj)`` before the built-in type dispatch, so a
  plugin wins for a class with a scikit-learn base. Two plugins claiming one object is an error.
- A flavor module that fails to import because a library it needs is missing is a
  :class:`FlavorError` saying what to install; any other import failure is a bug and propagates as
  itself.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from modelfmt.errors import FlavorError

ENTRY_POINT_GROUP = "modelfmt.flavors"

BUILTIN_FLAVORS = {
    "python_function": "modelfmt.flavors.pyfunc",
    "sklearn": "modelfmt.flavors.sklearn",
    "spark": "modelfmt.flavors.spark",
    "onnx": "modelfmt.flavors.onnx",
}

# MLflow writes these as ``python_function.loader_module``; we write them too so MLflow can load ours.
MLFLOW_LOADER_MODULES = {
    "mlflow.pyfunc.model": "python_function",
    "mlflow.sklearn": "sklearn",
    "mlflow.spark": "spark",
    "mlflow.onnx": "onnx",
}

# Which built-in flavor saves an object, by the module of a class in its MRO (nothing heavy is imported).
_TYPE_DISPATCH = (
    ("modelfmt.flavors.pyfunc", "PythonModel", "python_function"),
    ("sklearn.", "", "sklearn"),
    ("pyspark.ml", "", "spark"),
    ("onnx", "ModelProto", "onnx"),
)

# The pip extra of each built-in flavor, for when its module cannot even be imported (a module that
# imports states its own ``EXTRA``, which wins).
_EXTRAS = {"sklearn": "sklearn", "spark": "spark", "onnx": "onnx"}


class PluginWarning(UserWarning):
    """A flavor plugin's registration was (partly) ignored: a clash with a built-in or another plugin."""


@dataclass(frozen=True)
class Plugin:
    """A flavor registered through an entry point: its ``name``, ``module`` and the ``package`` that registered it."""

    name: str
    module: str
    package: str


@dataclass
class _LoaderTable:
    names: dict[str, str]  # MLflow loader module -> plugin flavor name
    ambiguous: dict[str, list[str]]  # loader module claimed by two or more plugins -> their names
    unavailable: dict[str, str]  # plugin flavor name -> why its module could not be imported


_plugins_cache: dict[str, Plugin] | None = None
_loader_cache: _LoaderTable | None = None


def reset_plugins() -> None:
    """Forget the entry points read so far; the next lookup reads them again (for tests)."""
    global _plugins_cache, _loader_cache
    _plugins_cache = None
    _loader_cache = None


def plugins() -> dict[str, Plugin]:
    """The plugin flavors registered under :data:`ENTRY_POINT_GROUP`, by name (read once per process)."""
    global _plugins_cache
    if _plugins_cache is None:
        _plugins_cache = _read_entry_points()
    return _plugins_cache


def _read_entry_points() -> dict[str, Plugin]:
    from importlib.metadata import entry_points

    found: dict[str, Plugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        package = ep.dist.name if ep.dist is not None else "an unknown package"
        if ep.name in BUILTIN_FLAVORS:
            _warn(f"the flavor plugin {ep.name!r} from {package!r} uses the name of a built-in flavor; ignored")
        elif ep.attr:
            _warn(f"the flavor plugin {ep.name!r} from {package!r} names {ep.value!r}; the value must be a module")
        elif ep.name in found:
            first = found[ep.name]
            _warn(
                f"the flavor {ep.name!r} is registered by both {first.package!r} and {package!r}; "
                f"using {first.package!r} (first on sys.path)"
            )
        else:
            found[ep.name] = Plugin(ep.name, ep.module, package)
    return found


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def flavor_names() -> list[str]:
    """Every flavor name we can load: built-ins plus plugins."""
    return sorted(set(BUILTIN_FLAVORS) | set(plugins()))


# -- importing a flavor module ----------------------------------------------------------------
def flavor_module(name: str) -> ModuleType:
    """The module implementing flavor ``name`` (``FLAVOR_NAME``, ``save_model``, ``load_model``, ``load_pyfunc``).

    A missing library is a :class:`FlavorError` saying what to install; any other import error propagates.
    """
    target = BUILTIN_FLAVORS.get(name)
    if target is None:
        plugin = plugins().get(name)
        if plugin is None:
            raise FlavorError(f"unknown flavor {name!r}; known flavors: {', '.join(flavor_names())}")
        target = plugin.module
    try:
        return importlib.import_module(target)
    except ImportError as e:
        error = missing_library_error(name, e)
        if error is None:
            raise
        raise error from e


def missing_library_error(name: str, error: ImportError) -> FlavorError | None:
    """The :class:`FlavorError` to raise when flavor ``name`` hit ``error`` because a library is not
    installed; ``None`` when ``error`` is not that (a bug: re-raise it as it is).

    A flavor whose library is imported lazily can pass the ``ImportError`` of its own call here too.
    """
    missing = _missing_module(error, BUILTIN_FLAVORS.get(name) or _plugin_module(name))
    if missing is None:
        return None
    hint = _install_hint(name, missing)
    return FlavorError(f"the {name!r} flavor needs the module {missing!r}, which is not installed; {hint}")


def _plugin_module(name: str) -> str:
    plugin = plugins().get(name)
    return plugin.module if plugin else name


def _missing_module(error: ImportError, own_module: str) -> str | None:
    """The name of the missing third-party module behind ``error``, if that is what it is."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None  # "cannot import name ..." and friends: a version mismatch or a bug, not absence
    top = error.name.partition(".")[0]
    # A missing module of modelfmt or of the flavor's own package is a broken install or a bug.
    if top in ("modelfmt", own_module.partition(".")[0]):
        return None
    return error.name


def _install_hint(name: str, missing: str) -> str:
    if name in BUILTIN_FLAVORS:
        module = sys.modules.get(BUILTIN_FLAVORS[name])
        extra = getattr(module, "EXTRA", None) or _EXTRAS.get(name)
        if extra:
            return f"install it with: pip install 'modelfmt[{extra}]'"
        return f"install {missing!r}"
    plugin = plugins().get(name)
    package = plugin.package if plugin else "the package that provides this flavor"
    module = sys.modules.get(plugin.module) if plugin else None
    extra = getattr(module, "EXTRA", None)
    if extra:
        return f"install it with: pip install '{package}[{extra}]'"
    return f"install the library that provides it (the flavor comes from the package {package!r}, which requires it)"


def check_flavor_options(name: str, load_pyfunc: Any, options: dict[str, Any]) -> None:
    """Refuse the flavor options ``load_pyfunc`` does not take, with a :class:`FlavorError` naming them.

    A ``load_pyfunc`` with ``**kwargs`` checks its options itself. Call this before ``load_pyfunc(opened,
    **options)`` so a misspelt option is never a bare ``TypeError`` (or silently swallowed).
    """
    import inspect

    try:
        parameters = list(inspect.signature(load_pyfunc).parameters.values())[1:]  # after ``opened``
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    known = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"it takes: {', '.join(known)}" if known else "it takes none"
        raise FlavorError(f"unknown option(s) for the {name!r} flavor: {', '.join(unknown)}; {takes}")


def _importable_plugins() -> dict[str, ModuleType]:
    """Every plugin's module, skipping plugins whose library is missing (they cannot have made the object)."""
    modules = {}
    for name in sorted(plugins()):
        try:
            modules[name] = flavor_module(name)
        except FlavorError:
            continue
    return modules


# -- MLflow loader modules --------------------------------------------------------------------
def _loader_table() -> _LoaderTable:
    global _loader_cache
    if _loader_cache is not None:
        return _loader_cache
    builtin_names = set(MLFLOW_LOADER_MODULES) | set(BUILTIN_FLAVORS.values())
    claims: dict[str, list[str]] = {}
    unavailable: dict[str, str] = {}
    for name in sorted(plugins()):
        try:
            module = flavor_module(name)
        except FlavorError as e:
            unavailable[name] = e.message
            continue
        declared = getattr(module, "MLFLOW_LOADER_MODULES", ())
        if isinstance(declared, str) or not all(isinstance(d, str) for d in declared):
            _warn(f"MLFLOW_LOADER_MODULES of the flavor plugin {name!r} must be a tuple of strings; ignored")
            continue
        for loader_module in declared:
            if loader_module in builtin_names:
                owner = MLFLOW_LOADER_MODULES.get(loader_module) or loader_module
                _warn(
                    f"the flavor plugin {name!r} declares the loader module {loader_module!r} of the built-in "
                    f"{owner!r} flavor; ignored: built-in loader modules always load with the built-in flavor"
                )
            else:
                claims.setdefault(loader_module, []).append(name)
    _loader_cache = _LoaderTable(
        names={lm: names[0] for lm, names in claims.items() if len(names) == 1},
        ambiguous={lm: names for lm, names in claims.items() if len(names) > 1},
        unavailable=unavailable,
    )
    return _loader_cache


def loader_flavor(loader_module: str) -> str:
    """The flavor name behind a ``loader_module`` written in an ``MLmodel``.

    Built-in names first (MLflow's and our module paths), then plugin module paths, then the MLflow
    loader modules plugins declare (which imports the plugins, once).
    """
    if loader_module in MLFLOW_LOADER_MODULES:
        return MLFLOW_LOADER_MODULES[loader_module]
    for name, target in BUILTIN_FLAVORS.items():
        if loader_module == target:
            return name
    for name, plugin in plugins().items():
        if loader_module == plugin.module:
            return name
    table = _loader_table()
    if loader_module in table.names:
        return table.names[loader_module]
    if loader_module in table.ambiguous:
        raise FlavorError(
            f"the model's loader module {loader_module!r} is declared by more than one flavor plugin "
            f"({', '.join(_describe(n) for n in table.ambiguous[loader_module])}); uninstall all but one"
        )
    declared = sorted(set(MLFLOW_LOADER_MODULES) | set(table.names))
    unavailable = "".join(f"; the flavor {n!r} could not be imported: {why}" for n, why in table.unavailable.items())
    raise FlavorError(
        f"the model's loader module {loader_module!r} is not a flavor modelfmt knows; "
        f"supported: {', '.join(declared)} and flavors registered under the {ENTRY_POINT_GROUP!r} "
        f"entry-point group{unavailable}"
    )


def _describe(name: str) -> str:
    plugin = plugins().get(name)
    return f"{name!r} from {plugin.package!r}" if plugin else repr(name)


# -- type dispatch ----------------------------------------------------------------------------
def flavor_for(model: Any) -> str:
    """The flavor name that saves ``model``: the plugin whose ``can_save(model)`` is true, else the
    built-in its type calls for."""
    claims = [
        name for name, module in _importable_plugins().items()
        if callable(getattr(module, "can_save", None)) and module.can_save(model)
    ]
    if len(claims) > 1:
        raise FlavorError(
            f"more than one flavor plugin can save {_type_name(model)} ({', '.join(_describe(n) for n in claims)}); "
            "call the save_model of the flavor you want"
        )
    if claims:
        return claims[0]
    for cls in type(model).__mro__:
        mod = cls.__module__ or ""
        for prefix, clsname, flavor in _TYPE_DISPATCH:
            if mod.startswith(prefix) and (not clsname or cls.__name__ == clsname):
                return flavor
    raise FlavorError(
        f"no flavor saves objects of type {_type_name(model)}; pass a scikit-learn estimator, a pyspark.ml "
        "model, an onnx.ModelProto, a PythonModel, or an object a flavor plugin's can_save accepts"
    )


def _type_name(model: Any) -> str:
    return f"{type(model).__module__}.{type(model).__qualname__}"
