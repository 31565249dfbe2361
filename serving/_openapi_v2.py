"""The Open Inference Protocol ("V2") part of the server's OpenAPI document (:mod:`modelfmt.serving.openapi`):
the protocol's request, response and error shapes as its REST API documents them, its routes for one
model, and a V2 request of the model's input example (a column signature: one input per column, as
MLServer's ``pd`` content type reads them; a tensor signature: its tensors, flattened row-major).
"""

from __future__ import annotations

from typing import Any

from modelfmt.signature import ColSpec, Schema, TensorSpec
from modelfmt.types import DataType

V2_ERROR = "#/components/schemas/V2Error"
# A column's V2 datatype and, where MLServer needs one to read it back, its content type.
_V2_TYPES: dict[DataType, tuple[str, str | None]] = {
    DataType.boolean: ("BOOL", None),
    DataType.integer: ("INT32", None),
    DataType.long: ("INT64", None),
    DataType.float: ("FP32", None),
    DataType.double: ("FP64", None),
    DataType.string: ("BYTES", "str"),
    DataType.binary: ("BYTES", "base64"),
    DataType.datetime: ("BYTES", "datetime"),
}
V2_DATATYPES = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"]
V2_DATATYPES += ["FP16", "FP32", "FP64", "BF16", "BYTES"]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": V2_ERROR}}}}


# -- components and routes --------------------------------------------------------------
def v2_components(schema: Schema | None) -> dict:
    names = schema.input_names() if schema is not None else []
    parameters = {"type": "object", "description": "content_type (np, pd, str, base64, datetime); in a "
                  "request's own parameters, every other name is one of the model's params"}
    tensor: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", **({"enum": names} if names else {})},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": V2_DATATYPES},
            "parameters": parameters,
            "data": {"description": "the values, flat (row-major) or nested to the shape"},
        },
        "required": ["name", "shape", "datatype"],
    }
    output = {**tensor, "properties": {**tensor["properties"], "name": {"type": "string"}}}
    return {
        "V2InferRequest": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "parameters": parameters,
                "inputs": {"type": "array", "items": tensor},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "parameters": parameters}, "required": ["name"]}},
            },
            "required": ["inputs"],
        },
        "V2InferResponse": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": parameters,
                "outputs": {"type": "array", "items": output},
            },
            "required": ["model_name", "outputs"],
        },
        "V2Error": {
            "type": "object",
            "description": "the Open Inference Protocol's error body",
            "properties": {"error": {"type": "string"}},
            "required": ["error"],
        },
    }


def v2_paths(name: str, version: str | None, example: dict | None) -> dict:
    model = {"name": "model_name", "in": "path", "required": True, "schema": {"type": "string", "enum": [name]}}
    body: dict = {"schema": _ref("V2InferRequest")}
    if example is not None:
        body["example"] = example
    binary = {
        "schema": {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": "the binary tensor data extension: the JSON request (its length in the "
            "Inference-Header-Content-Length header), then each input's raw little-endian bytes",
        }
    }
    infer = {
        "summary": "Score tensors (the Open Inference Protocol, V2)",
        "requestBody": {"required": True, "content": {"application/json": body, "application/octet-stream": binary}},
        "responses": {
            "200": {"description": "the output tensors", "content": {"application/json": {
                "schema": _ref("V2InferResponse")}}},
            "400": _error("the tensors do not match the model's signature"),
            "404": _error("no model of that name (or version)"),
            "503": _error("the model is not ready"),
        },
    }
    health = {"200": {"description": "yes"}, "503": _error("no")}
    paths: dict = {
        "/v2": {"get": {"summary": "V2 server metadata: name, version, extensions", "responses": {
            "200": {"description": "the server's metadata", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                                 "extensions": {"type": "array", "items": {"type": "string"}}}}}}}}}},
        "/v2/health/live": {"get": {"summary": "V2 liveness", "responses": health}},
        "/v2/health/ready": {"get": {"summary": "V2 readiness", "responses": health}},
        "/v2/models/{model_name}/ready": {"get": {"summary": "V2 model readiness", "parameters": [model],
                                                  "responses": {**health, "404": _error("no model of that name")}}},
        "/v2/models/{model_name}": {"get": {
            "summary": "V2 model metadata: inputs and outputs with datatypes and shapes",
            "parameters": [model],
            "responses": {"200": {"description": "the model's metadata", "content": {"application/json": {
                "schema": {"type": "object"}}}}, "404": _error("no model of that name")},
        }},
        "/v2/models/{model_name}/infer": {"post": {**infer, "operationId": "v2_infer", "parameters": [model]}},
    }
    if version is not None:
        ver = {"name": "model_version", "in": "path", "required": True, "schema": {"type": "string", "enum": [version]}}
        paths["/v2/models/{model_name}/versions/{model_version}/infer"] = {
            "post": {**infer, "operationId": "v2_infer_version", "parameters": [model, ver]}
        }
    return paths


# -- examples --------------------------------------------------------------------------------------
def v2_columns_example(columns: list[str], rows: list[list], schema: Schema | None) -> dict:
    """A V2 request of the example's columns, one input each (MLServer's ``pd`` content type)."""
    types = {s.name: s.type for s in schema.inputs if isinstance(s, ColSpec)} if schema is not None else {}
    inputs = []
    for i, c in enumerate(columns):
        values = [r[i] for r in rows]
        dtype = types.get(c)
        datatype, content_type = _V2_TYPES.get(dtype, (None, None)) if isinstance(dtype, DataType) else (None, None)
        if datatype is None:
            datatype, content_type = _guess_v2(values)
        tensor: dict = {"name": c, "shape": [len(values)], "datatype": datatype, "data": values}
        if content_type:
            tensor["parameters"] = {"content_type": content_type}
        inputs.append(tensor)
    return {"parameters": {"content_type": "pd"}, "inputs": inputs}


def _guess_v2(values: list) -> tuple[str, str | None]:
    if all(isinstance(v, bool) for v in values):
        return "BOOL", None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "INT64", None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "FP64", None
    return "BYTES", "str"


def v2_tensors_example(inputs: Any, schema: Schema) -> dict | None:
    """A V2 request of a tensor example (``inputs``: one array, or an object of named arrays)."""
    import numpy as np

    from modelfmt.serving.codecs.v2 import DATATYPES

    names = {np.dtype(v): k for k, v in DATATYPES.items() if v is not None and k != "BYTES"}
    specs = [s for s in schema.inputs if isinstance(s, TensorSpec)]
    named = inputs if isinstance(inputs, dict) else {specs[0].name or "input-0": inputs}
    by_name = {s.name: s for s in specs}
    out = []
    for key, value in named.items():
        spec = by_name.get(key, specs[0] if len(specs) == 1 else None)
        try:
            arr = np.asarray(value, dtype=spec.dtype if spec is not None and spec.dtype.kind in "biuf" else None)
        except (TypeError, ValueError):
            return None
        datatype = names.get(arr.dtype, "BYTES")
        flat = arr.reshape(-1).tolist()
        out.append({"name": key, "shape": list(arr.shape), "datatype": datatype, "data": flat})
    return {"inputs": out}
