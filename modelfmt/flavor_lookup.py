"""Flavor lookup: flavor names and MLflow loader modules to our flavor modules, and type dispatch.

Only modules listed here or registered under the ``modelfmt.flavors`` entry-point group are ever
imported because an ``MLmodel`` names them: a model file cannot make us import arbitrary code.
"""

from __future__ import annotations

import importlib
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

# Which flavor saves an object, by the module of a class in its MRO (so nothing heavy is imported).
_TYPE_DISPATCH = (
    ("modelfmt.flavors.pyfunc", "PythonModel", "python_function"),
    ("sklearn.", "", "sklearn"),
    ("pyspark.ml", "", "spark"),
    ("onnx", "ModelProto", "onnx"),
)

# The pip extra that provides each optional flavor's libraries.
_EXTRAS = {"sklearn": "sklearn", "spark": "spark", "onnx": "onnx"}


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def flavor_names() -> list[str]:
    """Every flavor name we can load: built-ins plus third-party entry points."""
    return sorted(set(BUILTIN_FLAVORS) | set(_entry_points()))


def flavor_module(name: str) -> ModuleType:
    """The module implementing flavor ``name`` (``save_model``, ``load_model``, ``_load_pyfunc``)."""
    target = BUILTIN_FLAVORS.get(name) or _entry_points().get(name)
    if target is None:
        raise FlavorError(f"unknown flavor {name!r}; known flavors: {', '.join(flavor_names())}")
    try:
        return importlib.import_module(target)
    except ImportError as e:
        extra = _EXTRAS.get(name)
        hint = f"; install it with: pip install 'modelfmt[{extra}]'" if extra else ""
        raise FlavorError(f"the {name!r} flavor needs a library that is not installed ({e.name}){hint}") from e


def loader_flavor(loader_module: str) -> str:
    """The flavor name behind a ``loader_module`` written in an ``MLmodel``."""
    if loader_module in MLFLOW_LOADER_MODULES:
        return MLFLOW_LOADER_MODULES[loader_module]
    for name, target in {**BUILTIN_FLAVORS, **_entry_points()}.items():
        if loader_module == target:
            return name
    raise FlavorError(
        f"the model's loader module {loader_module!r} is not a flavor modelfmt knows; "
        f"supported: {', '.join(sorted(MLFLOW_LOADER_MODULES))} and flavors registered under "
        f"the {ENTRY_POINT_GROUP!r} entry-point group"
    )


def flavor_for(model: Any) -> str:
    """The flavor name that saves ``model``, chosen from its type."""
    for cls in type(model).__mro__:
        mod = cls.__module__ or ""
        for prefix, clsname, flavor in _TYPE_DISPATCH:
            if mod.startswith(prefix) and (not clsname or cls.__name__ == clsname):
                return flavor
    for name, target in _entry_points().items():
        module = importlib.import_module(target)
        can_save = getattr(module, "can_save", None)
        if can_save is not None and can_save(model):
            return name
    raise FlavorError(
        f"no flavor saves objects of type {type(model).__module__}.{type(model).__qualname__}; "
        "pass a scikit-learn estimator, a pyspark.ml model, an onnx.ModelProto or a PythonModel"
    )
