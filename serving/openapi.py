"""The scoring server's OpenAPI 3.1 document, generated from one model's signature. A pure function.

:func:`openapi_document` describes what the server answers for this model: ``POST /invocations`` in
each of MLflow's request formats (JSON ``dataframe_split``, ``dataframe_records``, ``instances``,
``inputs`` with ``params``; CSV; Parquet; Arrow IPC), with the signature's real column names and types
and its params; the Open Inference Protocol's ``POST /v2/models/{model_name}/infer`` with the
protocol's request and response shapes; the health and metadata routes; and each protocol's error
body (MLflow's ``{"error_code", "message"}``, V2's ``{"error"}``). Examples are built from the model's
saved input example (``serving_input_example.json``): the same rows in every format.

Column types map to JSON Schema (2020-12, OpenAPI 3.1's dialect) as MLflow's JSON reads them:
``binary`` is base64 text, ``datetime`` ISO 8601 text, an optional column may be ``null``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from modelfmt.serving._openapi_v2 import v2_columns_example, v2_components, v2_paths, v2_tensors_example
from modelfmt.signature import ColSpec, ParamSchema, Schema, TensorSpec
from modelfmt.types import AnyType, Array, ColType, DataType, Map, Object, SparkMLVector

OPENAPI_VERSION = "3.1.0"
ERROR = "#/components/schemas/Error"
PARQUET = "application/vnd.apache.parquet"
ARROW = "application/vnd.apache.arrow.stream"
_PRIMITIVES: dict[DataType, dict] = {
    DataType.boolean: {"type": "boolean"},
    DataType.integer: {"type": "integer", "format": "int32"},
    DataType.long: {"type": "integer", "format": "int64"},
    DataType.float: {"type": "number", "format": "float"},
    DataType.double: {"type": "number", "format": "double"},
    DataType.string: {"type": "string"},
    DataType.binary: {"type": "string", "contentEncoding": "base64"},
    DataType.datetime: {"type": "string", "format": "date-time"},
}



def openapi_document(
    schema: Schema | None,
    params: ParamSchema | None = None,
    *,
    name: str = "model",
    version: str | None = None,
    server_version: str = "",
    example: Any = None,
    predictions: Any = None,
) -> dict:
    """The OpenAPI 3.1 document (a JSON-ready dict) of a server scoring a model with input ``schema``
    and ``params`` (either ``None`` when the model has none), named ``name`` (and registered
    ``version``) in V2 routes. ``example`` is the parsed ``serving_input_example.json`` (or ``None``),
    ``predictions`` the ``/invocations`` answer to it (the responses' example; ``None``: none shown).
    """
    formats = _formats(schema)
    components = _components(schema, params, formats)
    examples = _examples(example, schema, formats) if isinstance(example, dict) else {}
    title = f"{name} (version {version})" if version else name
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": f"modelfmt scoring server: {title}",
            "version": server_version or "0",
            "description": _description(schema),
        },
        "paths": {
            "/invocations": {"post": _invocations(formats, examples, predictions)},
            "/ping": {"get": _health("MLflow's health check: 200 once the model scores its input example.")},
            "/version": {"get": _plain("modelfmt's version.")},
            "/metadata": {"get": _metadata()},
            **v2_paths(name, version, examples.get("v2")),
        },
        "components": {"schemas": components},
    }


# -- what the model takes -------------------------------------------------------------------------
def _formats(schema: Schema | None) -> list[str]:
    """The JSON keys this model reads: a type-hinted model only ``inputs`` (as MLflow), tensors
    ``inputs`` and ``instances``, columns (or no signature) all four."""
    if schema is not None and schema.from_type_hint:
        return ["inputs"]
    if schema is not None and schema.is_tensor_spec():
        return ["inputs", "instances"]
    return ["dataframe_split", "dataframe_records", "instances", "inputs"]


def _description(schema: Schema | None) -> str:
    if schema is None:
        return "The model has no signature: its input is not checked, and any table or tensor is taken."
    return "Generated from the model's signature: `POST /invocations` (MLflow) and the V2 infer route."


def column_schema(dtype: ColType) -> dict:
    """The JSON Schema of one value of a column of type ``dtype``, as MLflow's JSON format writes it."""
    if isinstance(dtype, DataType):
        return dict(_PRIMITIVES[dtype])
    if isinstance(dtype, Array):
        return {"type": "array", "items": column_schema(dtype.dtype)}
    if isinstance(dtype, Object):
        props = {p.name: _nullable(column_schema(p.dtype), p.required) for p in dtype.properties}
        required = [p.name for p in dtype.properties if p.required]
        return {"type": "object", "properties": props, **({"required": required} if required else {})}
    if isinstance(dtype, Map):
        return {"type": "object", "additionalProperties": column_schema(dtype.value_type)}
    if isinstance(dtype, SparkMLVector):
        return {"type": "array", "items": {"type": "number"}, "description": "a Spark ML vector's values"}
    if isinstance(dtype, AnyType):
        return {}
    return {}


def _nullable(schema: dict, required: bool) -> dict:
    # An optional column may be missing or null in a row (a missing value).
    return schema if required else {"anyOf": [schema, {"type": "null"}]}


def tensor_schema(spec: TensorSpec, drop_rows: bool = False) -> dict:
    """Nested arrays of the tensor's shape (``-1``: any length) holding its dtype's JSON values;
    ``drop_rows``: one row of it (the shape without its first dimension)."""
    kind = spec.dtype.kind
    by_kind: dict[str, dict] = {
        "b": {"type": "boolean"},
        "i": {"type": "integer"},
        "u": {"type": "integer", "minimum": 0},
    }
    schema = by_kind.get(kind, {"type": "number"} if kind in "fc" else {"type": "string"})
    for dim in reversed(spec.shape[1:] if drop_rows else spec.shape):
        schema = {"type": "array", "items": schema, **({"minItems": dim, "maxItems": dim} if dim >= 0 else {})}
    return schema


def _row(schema: Schema | None) -> dict:
    """One row: an object of named columns (positional values for unnamed ones)."""
    cols = [s for s in schema.inputs if isinstance(s, ColSpec)] if schema is not None else []
    if schema is None or not cols:
        return {"type": "object", "description": "one row: column name -> value"}
    if not schema.has_input_names():
        return {"type": "array", "prefixItems": [column_schema(c.type) for c in cols]}
    props = {c.name: _nullable(column_schema(c.type), c.required) for c in cols if c.name is not None}
    return {"type": "object", "properties": props, "required": schema.required_input_names()}


def _columns(schema: Schema | None) -> dict:
    """``inputs`` as columns: column name -> its values."""
    if schema is None or not schema.has_input_names():
        return {"type": "object", "additionalProperties": {"type": "array"}}
    props = {
        c.name: {"type": "array", "items": _nullable(column_schema(c.type), c.required)}
        for c in schema.inputs
        if isinstance(c, ColSpec) and c.name is not None
    }
    return {"type": "object", "properties": props, "required": schema.required_input_names()}


def _tensors(schema: Schema, rows: bool) -> dict:
    specs = [s for s in schema.inputs if isinstance(s, TensorSpec)]
    if len(specs) == 1 and specs[0].name is None:
        one = tensor_schema(specs[0], drop_rows=rows)
        return {"type": "array", "items": one} if rows else one
    props = {s.name or f"input-{i}": tensor_schema(s, drop_rows=rows) for i, s in enumerate(specs)}
    named = {"type": "object", "properties": props, "required": list(props)}
    return {"type": "array", "items": named} if rows else named


def _params(params: ParamSchema | None) -> dict:
    """``params``: each of the signature's params, with its type and default."""
    if params is None:
        return {"type": "object", "description": "the model declares no params"}
    props = {}
    for p in params.params:
        one = column_schema(p.dtype)
        if p.shape is not None:
            one = {"type": "array", "items": one}
        props[p.name] = {**one, "default": p.to_dict()["default"]}
    # Names the signature does not declare are ignored (with a warning in the server log), as in MLflow.
    return {"type": "object", "properties": props, "description": "params the signature does not declare are ignored"}


def _components(schema: Schema | None, params: ParamSchema | None, formats: list[str]) -> dict:
    tensors = schema is not None and schema.is_tensor_spec() and not schema.from_type_hint
    if schema is not None and schema.from_type_hint:
        inputs: dict = {"description": "the input as the model's type hint takes it"}
    else:
        inputs = _tensors(schema, rows=False) if tensors and schema is not None else _columns(schema)
    bodies = {
        "dataframe_split": {
            "type": "object",
            "properties": {
                "columns": {"type": "array", "items": _column_names(schema)},
                "data": {"type": "array", "items": {"type": "array"}, "description": "rows, in `columns`' order"},
                "index": {"type": "array"},
            },
            "required": ["data"],
        },
        "dataframe_records": {"type": "array", "items": {"$ref": "#/components/schemas/Row"}},
        "instances": _tensors(schema, rows=True) if tensors and schema is not None else {
            "type": "array", "items": {"$ref": "#/components/schemas/Row"}
        },
        "inputs": inputs,
    }
    out = {
        "Row": _row(schema),
        "Params": _params(params),
        **{_pascal(k): {
            "type": "object",
            "properties": {k: bodies[k], "params": {"$ref": "#/components/schemas/Params"}},
            "required": [k],
        } for k in formats},
        "Predictions": {
            "type": "object",
            "properties": {"predictions": {"description": "the model's output: a list (one item per row) "
                                           "or an object of named outputs"}},
            "required": ["predictions"],
        },
        "Error": {
            "type": "object",
            "description": "MLflow's error body",
            "properties": {
                "error_code": {"type": "string", "examples": ["BAD_REQUEST", "INVALID_PARAMETER_VALUE"]},
                "message": {"type": "string"},
                "error_id": {"type": "string", "description": "in 500 answers: find it in the server log"},
            },
            "required": ["error_code", "message"],
        },
        **v2_components(schema),
    }
    return out


def _column_names(schema: Schema | None) -> dict:
    names = schema.input_names() if schema is not None else []
    return {"type": "string", "enum": names} if names else {"type": "string"}


def _pascal(key: str) -> str:
    return "".join(part.capitalize() for part in key.split("_")) + "Request"


# -- routes ----------------------------------------------------------------------------------------
def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, ref: str = ERROR) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _invocations(formats: list[str], examples: dict, predictions: Any) -> dict:
    json_examples = {k: {"summary": k, "value": examples[k]} for k in formats if k in examples}
    json_body: dict = {"schema": {"oneOf": [_ref(_pascal(k)) for k in formats]}}
    if json_examples:
        json_body["examples"] = json_examples
    content: dict = {"application/json": json_body}
    if "dataframe_split" in formats:
        csv_body: dict = {"schema": {"type": "string", "description": "a header row of column names, then rows"}}
        if "csv" in examples:
            csv_body["example"] = examples["csv"]
        content["text/csv"] = csv_body
        for media, what in ((PARQUET, "a Parquet file"), (ARROW, "an Arrow IPC stream")):
            content[media] = {"schema": {"type": "string", "contentMediaType": media, "description": f"{what} of "
                                         "the columns above (pandas: `df.to_parquet()`, pyarrow: `ipc.new_stream`)"}}
    answer: dict = {"schema": _ref("Predictions")}
    if predictions is not None:
        answer["example"] = predictions
    return {
        "summary": "Score rows (MLflow's protocol)",
        "operationId": "invocations",
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": "the predictions: JSON by default; Parquet or Arrow when `Accept` asks for them",
                "content": {
                    "application/json": answer,
                    PARQUET: {"schema": {"type": "string", "contentMediaType": PARQUET}},
                    ARROW: {"schema": {"type": "string", "contentMediaType": ARROW}},
                },
            },
            "400": _error("the body does not match the signature, or the model refused it"),
            "406": _error("no answer of the types `Accept` names"),
            "413": _error("the body is over the server's --max-body-size"),
            "415": _error("a Content-Type the server does not read"),
            "500": _error("a fault of the server's or the model's (with an error_id)"),
            "503": _error("the model is not ready"),
        },
    }


def _health(summary: str) -> dict:
    return {"summary": summary, "responses": {"200": {"description": "ready"}, "503": _error("not ready")}}


def _plain(summary: str) -> dict:
    return {
        "summary": summary,
        "responses": {"200": {"description": summary, "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }


def _metadata() -> dict:
    return {
        "summary": "The model's MLmodel document (with its input example)",
        "responses": {"200": {"description": "MLmodel as JSON", "content": {"application/json": {"schema": {
            "type": "object"}}}}},
    }


# -- examples --------------------------------------------------------------------------------------
def _examples(example: dict, schema: Schema | None, formats: list[str]) -> dict:
    """The saved example in every format it converts to: the JSON bodies by key, ``csv``, ``v2``."""
    params = example.get("params")
    extra = {"params": params} if isinstance(params, dict) else {}
    out: dict = {}
    for key in formats:
        if key in example:
            out[key] = {key: example[key], **extra}
    split = _as_split(example)
    if split is not None:
        columns, rows = split
        records = [dict(zip(columns, r, strict=True)) for r in rows]
        derived = {
            "dataframe_split": {"columns": columns, "data": rows},
            "dataframe_records": records,
            "instances": records,
            "inputs": {c: [r[i] for r in rows] for i, c in enumerate(columns)},
        }
        for key in formats:
            out.setdefault(key, {key: derived[key], **extra})
        out["csv"] = _csv(columns, rows)
        out["v2"] = v2_columns_example(columns, rows, schema)
    elif "inputs" in example and schema is not None and schema.is_tensor_spec():
        instances = _tensor_rows(example["inputs"])
        if instances is not None and "instances" in formats:
            out.setdefault("instances", {"instances": instances, **extra})
        v2 = v2_tensors_example(example["inputs"], schema)
        if v2 is not None:
            out["v2"] = v2
    if "v2" in out and extra:
        # V2 takes the model's params as request parameters (all but the protocol's own).
        out["v2"]["parameters"] = {**out["v2"].get("parameters", {}), **extra["params"]}
    return out


def _tensor_rows(inputs: Any) -> list | None:
    """A tensor example as ``instances``: its rows (named tensors: one object per row)."""
    if isinstance(inputs, list):
        return inputs
    if isinstance(inputs, dict) and inputs and all(isinstance(v, list) for v in inputs.values()):
        lengths = {len(v) for v in inputs.values()}
        if len(lengths) == 1:
            return [{k: v[i] for k, v in inputs.items()} for i in range(lengths.pop())]
    return None


def _as_split(example: dict) -> tuple[list[str], list[list]] | None:
    """``(columns, rows)`` of a tabular example (``dataframe_split`` or ``dataframe_records``)."""
    split = example.get("dataframe_split")
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
        columns = [str(c) for c in split["columns"]]
        return columns, [list(r) for r in split["data"] if isinstance(r, list) and len(r) == len(columns)]
    records = example.get("dataframe_records")
    if isinstance(records, list) and records and all(isinstance(r, dict) for r in records):
        columns = list(records[0])
        return columns, [[r.get(c) for c in columns] for r in records]
    return None


def _csv(columns: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(["" if v is None else v for v in r] for r in rows)
    return buf.getvalue()
