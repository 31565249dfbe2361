"""V2 model metadata from the model's signature, as MLServer's MLflow runtime describes a model.

A column signature maps each column to an input of shape ``[-1, 1]`` whose datatype and
``parameters.content_type`` follow the column's type (``string`` BYTES ``str``, ``binary`` BYTES
``base64``, ``datetime`` BYTES ``datetime``, arrays and objects BYTES ``pd_json``, numbers and booleans
their own datatype, ``np``); a tensor signature maps each tensor to an input of its dtype and shape
(``-1`` for variable dimensions). Unnamed inputs are ``input-0``, ``input-1``... as in MLServer;
unnamed outputs ``output-1``... (the names the answers carry).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from modelfmt.serving.codecs._v2_content import DEFAULT_INPUT_PREFIX

if TYPE_CHECKING:
    from modelfmt.model import Model
    from modelfmt.signature import Schema

_COLUMN_TYPES = {
    "boolean": ("BOOL", "np"),
    "integer": ("INT32", "np"),
    "long": ("INT64", "np"),
    "float": ("FP32", "np"),
    "double": ("FP64", "np"),
    "string": ("BYTES", "str"),
    "binary": ("BYTES", "base64"),
    "datetime": ("BYTES", "datetime"),
}
OUTPUT_PREFIX = "output-"


def model_metadata(name: str, version: str | None, model: Model) -> dict[str, Any]:
    """The model metadata answer: ``name``, ``versions`` (when known), ``platform``, ``inputs``, ``outputs``."""
    doc: dict[str, Any] = {"name": name}
    if version is not None:
        doc["versions"] = [version]
    doc["platform"] = platform(model)
    doc["inputs"] = signature_tensors(model.get_input_schema(), inputs=True)
    doc["outputs"] = signature_tensors(model.get_output_schema(), inputs=False)
    return doc


def platform(model: Model) -> str:
    """``mlflow_<flavor>``: the format, and the flavor that holds the model (``mlflow_sklearn``...)."""
    flavors = [f for f in model.flavors if f != "python_function"] or list(model.flavors) or ["python_function"]
    return f"mlflow_{flavors[0]}"


def signature_tensors(schema: Schema | None, inputs: bool = True) -> list[dict[str, Any]]:
    """The metadata tensors (``name``, ``datatype``, ``shape``, ``parameters.content_type``) of ``schema``."""
    if schema is None or not schema.inputs:
        return []
    out = []
    for i, spec in enumerate(schema.inputs):
        datatype, shape, content_type = spec_tensor(spec)
        name = spec.name if spec.name is not None else _default_name(i, inputs)
        out.append({"name": name, "datatype": datatype, "shape": shape, "parameters": {"content_type": content_type}})
    return out


def _default_name(i: int, inputs: bool) -> str:
    return f"{DEFAULT_INPUT_PREFIX}{i}" if inputs else f"{OUTPUT_PREFIX}{i + 1}"


def spec_tensor(spec: Any) -> tuple[str, list[int], str]:
    """``(datatype, shape, content_type)`` of one column or tensor spec."""
    from modelfmt.signature import TensorSpec
    from modelfmt.types import DataType

    if isinstance(spec, TensorSpec):
        return dtype_datatype(spec.dtype), list(spec.shape), "np"
    if isinstance(spec.type, DataType):
        datatype, content_type = _COLUMN_TYPES[spec.type.value]
        return datatype, [-1, 1], content_type
    return "BYTES", [-1, 1], "pd_json"  # arrays, objects, maps, any


def dtype_datatype(dtype: Any) -> str:
    """The V2 datatype of a numpy dtype (strings, bytes, objects and dates are BYTES)."""
    from modelfmt.serving.codecs._v2_tensors import DATATYPES

    dtype = np.dtype(dtype)
    if dtype.kind in "biuf":
        for datatype, candidate in DATATYPES.items():
            if candidate is not None and candidate == dtype:
                return datatype
    return "BYTES"


def single_input(schema: Schema | None) -> tuple[str, str, list[int]] | None:
    """``(name, datatype, shape)`` of a signature's one input, for the raw binary form; else ``None``."""
    if schema is None or len(schema.inputs) != 1:
        return None
    (tensor,) = signature_tensors(schema)
    return tensor["name"], tensor["datatype"], tensor["shape"]
