"""The Open Inference Protocol's ("V2") bodies: tensors <-> model input and output. Pure functions.

Shared by the V2 REST routes (:mod:`modelfmt.serving.protocols.v2`, JSON and the binary tensor data
extension) and V2 over gRPC (:mod:`modelfmt.serving.protocols.v2_grpc`, which turns its protobuf
messages into :class:`Tensor` and back, and then uses the same :func:`to_model_input` and
:func:`from_predictions`).

The interface (the gRPC protocol relies on these names and types; the tensors live in
:mod:`~modelfmt.serving.codecs._v2_tensors`, the content types in :mod:`~modelfmt.serving.codecs._v2_content`):

- :data:`DATATYPES`: V2 datatype -> numpy dtype (``BYTES`` -> object; ``BF16`` only as binary data).
- :class:`Tensor`: one named tensor (``data`` a numpy array of ``shape``; BYTES an object array of
  ``bytes`` or ``str``; BF16 the float32 it widens to).
- :func:`tensor_from_json` / :func:`tensor_from_bytes`: a request input as JSON ``data`` (flat or
  nested) or as raw little-endian bytes (BYTES: 4-byte little-endian length prefixes) -> :class:`Tensor`.
- :func:`to_model_input`: the request's tensors and ``parameters.content_type`` (``np``, ``pd``, ``str``,
  ``base64``, ``datetime``, as MLServer defines them) -> ``(model input, params)`` for the signature.
- :func:`from_predictions`: the model's output -> output tensors (named from the output signature).
- :func:`tensor_to_json` / :func:`tensor_to_bytes`: the inverse of the two readers.
- :func:`decode_infer_request` / :func:`encode_infer_response`: whole REST bodies, JSON or binary
  (``Inference-Header-Content-Length``).
- :func:`model_metadata` / :func:`signature_tensors` (:mod:`~modelfmt.serving.codecs._v2_metadata`): the
  model metadata answer from the signature, shared by REST and gRPC.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from modelfmt.errors import PayloadError
from modelfmt.serving.codecs._v2_content import model_input, output_tensors
from modelfmt.serving.codecs._v2_metadata import dtype_datatype, model_metadata, signature_tensors, single_input
from modelfmt.serving.codecs._v2_tensors import (
    DATATYPES,
    Tensor,
    check_datatype,
    check_shape,
    tensor_from_bytes,
    tensor_from_json,
    tensor_to_bytes,
    tensor_to_json,
)

if TYPE_CHECKING:
    from modelfmt.signature import Schema

__all__ = [
    "DATATYPES",
    "InferRequest",
    "RequestedOutput",
    "Tensor",
    "check_datatype",
    "check_shape",
    "decode_infer_request",
    "dtype_datatype",
    "encode_infer_response",
    "from_predictions",
    "model_metadata",
    "signature_tensors",
    "single_input",
    "tensor_from_bytes",
    "tensor_from_json",
    "tensor_to_bytes",
    "tensor_to_json",
    "to_model_input",
]


@dataclasses.dataclass
class RequestedOutput:
    """An entry of the request's ``outputs``: its ``name`` and ``parameters`` (``binary_data``...)."""

    name: str
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class InferRequest:
    """A decoded inference request: ``id``, request ``parameters``, ``inputs``, requested ``outputs``."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    outputs: list[RequestedOutput] = dataclasses.field(default_factory=list)


def to_model_input(inputs: list[Tensor], parameters: dict[str, Any] | None, schema: Schema | None,
                   ) -> tuple[Any, dict | None]:
    """``(model input, params)`` of a request's tensors for a model of input ``schema``: a column
    signature makes a DataFrame with one column per input (MLServer's ``pd``), a tensor signature
    an array (one input) or a dict of arrays; ``parameters.content_type`` overrides; request
    parameters other than V2's own become the model's params."""
    return model_input(inputs, parameters or {}, schema)


def from_predictions(predictions: Any, output_schema: Schema | None = None) -> list[Tensor]:
    """The output tensors of ``predictions`` (array, Series, DataFrame: one tensor per column, dict)."""
    return output_tensors(predictions, output_schema)




def decode_infer_request(body: bytes, header_length: int | None = None, *,
                         single_input: tuple[str, str, list[int]] | None = None) -> InferRequest:
    """A REST inference request: JSON, or (``header_length`` given, from ``Inference-Header-Content-Length``)
    a JSON header followed by the binary data of the inputs that declare ``binary_data_size``.

    ``header_length`` 0 is the raw form: the whole body is the binary data of the model's one input,
    ``single_input`` (its name, datatype and shape, whose one ``-1`` the body's size decides; a BYTES
    input gets the body as its one element). A PayloadError names what is wrong with the body.
    """
    view = memoryview(body)
    if header_length == 0:
        return InferRequest([_raw_input(view, single_input)])
    header: Any
    if header_length is None:
        header, binary = body, view[len(view):]
    else:
        if header_length < 0 or header_length > len(view):
            raise PayloadError(f"Inference-Header-Content-Length is {header_length}, "
                               f"the body has {len(view)} bytes")
        header, binary = view[:header_length], view[header_length:]
    doc = _json_object(header)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise PayloadError(f"'id' is a string, got {type(request_id).__name__}")
    parameters = _parameters(doc.get("parameters"), "the request's")
    inputs_doc = doc.get("inputs")
    if not isinstance(inputs_doc, list) or not inputs_doc:
        raise PayloadError("the request needs 'inputs': a non-empty list of tensors "
                           "({\"name\", \"shape\", \"datatype\", \"data\"})")
    inputs, offset = [], 0
    for i, item in enumerate(inputs_doc):
        tensor, offset = _input(item, i, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise PayloadError(f"{len(binary) - offset} bytes follow the inputs' binary data "
                           "(binary_data_size of the inputs sums to less than the body holds)")
    return InferRequest(inputs, request_id, parameters, _requested_outputs(doc.get("outputs")))


def _json_object(header: Any) -> dict:
    from modelfmt.jsonenc import loads

    try:
        doc = loads(bytes(header))
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError(f"the request is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"the request is a JSON object with 'inputs', got a {type(doc).__name__}")
    return doc


def _parameters(value: Any, whose: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{whose} 'parameters' is a JSON object, got {type(value).__name__}")
    return value


def _input(item: Any, i: int, binary: Any, offset: int) -> tuple[Tensor, int]:
    if not isinstance(item, dict):
        raise PayloadError(f"inputs[{i}] is a JSON object, got {type(item).__name__}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise PayloadError(f"inputs[{i}] needs a 'name' (a string)")
    for key in ("datatype", "shape"):
        if key not in item:
            raise PayloadError(f"input {name!r} needs {key!r}")
    params = _parameters(item.get("parameters"), f"input {name!r}:")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in item:
            raise PayloadError(f"input {name!r} needs 'data' (or parameters.binary_data_size for binary data)")
        return tensor_from_json(name, item["datatype"], item["shape"], item["data"], params), offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PayloadError(f"input {name!r}: binary_data_size is a non-negative integer, got {size!r}")
    if offset + size > len(binary):
        raise PayloadError(f"input {name!r}: binary_data_size is {size}, but only {len(binary) - offset} bytes "
                           "of binary data remain in the body")
    params = {k: v for k, v in params.items() if k != "binary_data_size"}
    tensor = tensor_from_bytes(name, item["datatype"], item["shape"], binary[offset:offset + size], params)
    return tensor, offset + size


def _requested_outputs(value: Any) -> list[RequestedOutput]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"'outputs' is a list, got {type(value).__name__}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise PayloadError(f"outputs[{i}] is a JSON object with a 'name'")
        out.append(RequestedOutput(item["name"], _parameters(item.get("parameters"), f"output {item['name']!r}:")))
    return out


def _raw_input(view: Any, single_input: tuple[str, str, list[int]] | None) -> Tensor:
    """The raw form's one input: the whole body as its binary data."""
    if single_input is None:
        raise PayloadError("Inference-Header-Content-Length 0 (the raw binary form) needs a model of one input "
                           "whose datatype its signature gives; send a JSON header instead")
    name, datatype, shape = single_input
    if datatype == "BYTES":
        return Tensor(name, datatype, [1], _one_element(bytes(view)))
    itemsize = 2 if datatype == "BF16" else DATATYPES[datatype].itemsize
    shape = list(shape)
    known = itemsize
    for d in shape:
        known *= d if d != -1 else 1
    if shape.count(-1) > 1:
        raise PayloadError(f"input {name!r} has shape {shape}: the raw binary form cannot tell its size")
    if -1 in shape:
        if known == 0 or len(view) % known:
            raise PayloadError(f"input {name!r}: {len(view)} bytes are not a whole number of {shape} {datatype} "
                               "tensors")
        shape[shape.index(-1)] = len(view) // known
    return tensor_from_bytes(name, datatype, shape, view)


def _one_element(value: bytes) -> Any:
    import numpy as np

    arr = np.empty(1, dtype=object)
    arr[0] = value
    return arr


def encode_infer_response(model_name: str, model_version: str | None, outputs: list[Tensor],
                          request: InferRequest | None = None) -> tuple[bytes, int | None]:
    """The REST response body, and the JSON header's length when outputs go as binary data (requested
    with ``binary_data``/``binary_data_output``), for the ``Inference-Header-Content-Length`` header.

    When the request names ``outputs``, only those are answered, in its order (a PayloadError for a
    name the model does not produce).
    """
    from modelfmt.jsonenc import dumps

    selected: list[tuple[Tensor, dict[str, Any]]] = [(t, {}) for t in outputs]
    all_binary = False
    if request is not None:
        all_binary = request.parameters.get("binary_data_output") is True
        if request.outputs:
            by_name = {t.name: t for t in outputs}
            unknown = [o.name for o in request.outputs if o.name not in by_name]
            if unknown:
                raise PayloadError(f"unknown output(s) {', '.join(map(repr, unknown))}; the model's outputs are "
                                   f"{', '.join(map(repr, by_name))}")
            selected = [(by_name[o.name], o.parameters) for o in request.outputs]
    docs, blobs = [], []
    for tensor, params in selected:
        binary = params.get("binary_data", all_binary) is True
        if binary:
            raw = tensor_to_bytes(tensor)
            blobs.append(raw)
            parameters = {**tensor.parameters, "binary_data_size": len(raw)}
            docs.append({"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape),
                         "parameters": parameters})
        else:
            docs.append(tensor_to_json(tensor))
    doc: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        doc["model_version"] = model_version
    if request is not None and request.id is not None:
        doc["id"] = request.id
    doc["outputs"] = docs
    header = dumps(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
