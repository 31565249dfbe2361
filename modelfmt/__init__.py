"""modelfmt: one model directory, MLflow-compatible, to serve, score in-line, or score in Spark.

Public names are resolved lazily so that ``import modelfmt`` imports no pandas, scikit-learn, pyspark
or onnx.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_LAZY = {
    "Model": "modelfmt.model",
    "open_model": "modelfmt.open",
    "OpenedModel": "modelfmt.open",
    "register_resolver": "modelfmt.open",
    "ModelSignature": "modelfmt.signature",
    "Schema": "modelfmt.signature",
    "ColSpec": "modelfmt.signature",
    "TensorSpec": "modelfmt.signature",
    "ParamSchema": "modelfmt.signature",
    "ParamSpec": "modelfmt.signature",
    "DataType": "modelfmt.types",
    "Array": "modelfmt.types",
    "Object": "modelfmt.types",
    "Property": "modelfmt.types",
    "Map": "modelfmt.types",
    "infer_signature": "modelfmt.infer",
    "enforce_schema": "modelfmt.enforce",
    "enforce_params": "modelfmt.enforce",
    "load_input_example": "modelfmt.example",
    "ModelfmtError": "modelfmt.errors",
    "SchemaError": "modelfmt.errors",
    "ModelFormatError": "modelfmt.errors",
    # Implemented by the flavors and serving packages; resolved only when first used.
    "load_model": "modelfmt.flavors.pyfunc",
    "PyFuncModel": "modelfmt.flavors.pyfunc",
    "PythonModel": "modelfmt.flavors.pyfunc",
    "spark_udf": "modelfmt.serving.spark.udf",
}

__all__ = sorted(_LAZY) + ["save_model", "__version__"]


def save_model(model: Any, path: str, **kwargs: Any) -> Any:
    """Save ``model`` to ``path`` with the flavor its type calls for (see ``modelfmt.flavors.<name>.save_model``).

    Returns the saved ``Model`` (the ``MLmodel`` descriptor), as the flavors' ``save_model`` do.
    """
    from modelfmt.flavor_lookup import flavor_for, flavor_module

    flavor = flavor_for(model)
    module = flavor_module(flavor)
    if flavor == "python_function":
        return module.save_model(path, python_model=model, **kwargs)
    return module.save_model(model, path, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelfmt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
