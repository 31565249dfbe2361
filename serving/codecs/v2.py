"""The Open Inference Protocol's ("V2") bodies: tensors <-> model input and output. Pure functions.

Shared by the V2 REST routes (:mod:`modelfmt.serving.protocols.v2`, JSON and the binary tensor data
extension) and V2 over gRPC (:mod:`modelfmt.serving.protocols.v2_grpc`, which turns its protobuf
messages into :class:`Tensor` and back, and then uses the same :func:`to_model_input` and
:func:`from_predictions`).

Interface (the V2 REST helper implements the bodies; the gRPC helper relies on the names and types):

- :data:`DATATYPES`: V2 datatype -> numpy dtype (``BYTES`` -> object; ``BF16`` only as binary data).
- :class:`Tensor`: one named tensor (``data`` a numpy array of ``shape``, or a list for BYTES).
- :func:`tensor_from_json` / :func:`tensor_from_bytes`: a request input as JSON ``data`` (flat or
  nested) or as raw little-endian bytes (BYTES: 4-byte little-endian length prefixes) -> :class:`Tensor`.
- :func:`to_model_input`: the request's tensors and ``parameters.content_type`` (``np``, ``pd``, ``str``,
  ``base64``, ``datetime``, as MLServer defines them) -> ``(model input, params)`` for the signature.
- :func:`from_predictions`: the model's output -> output tensors (named from the output signature).
- :func:`tensor_to_json` / :func:`tensor_to_bytes`: the inverse of the two readers.
- :func:`decode_infer_request` / :func:`encode_infer_response`: whole REST bodies, JSON or binary
  (``Inference-Header-Content-Length``).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from modelfmt.signature import Schema

DATATYPES: dict[str, Any] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
    "BF16": None,  # no numpy dtype: binary data only, widened to FP32 on reading
}


@dataclasses.dataclass
class Tensor:
    """One named V2 tensor: ``datatype`` (a key of :data:`DATATYPES`), ``shape``, ``data`` (a numpy array
    of that shape; BYTES: an object array of ``bytes`` or ``str``), and its ``parameters``."""

    name: str
    datatype: str
    shape: list[int]
    data: Any
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)


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


def tensor_from_json(name: str, datatype: str, shape: list[int], data: Any,
                     parameters: dict[str, Any] | None = None) -> Tensor:
    """A tensor from a JSON input (``data`` flat or nested); a PayloadError naming the input when the
    datatype is unknown or the data does not fill the shape."""
    raise NotImplementedError


def tensor_from_bytes(name: str, datatype: str, shape: list[int], raw: bytes,
                      parameters: dict[str, Any] | None = None) -> Tensor:
    """A tensor from raw little-endian bytes (BYTES: each element a 4-byte little-endian length and
    its bytes), as the binary extension and gRPC's ``raw_input_contents`` carry it."""
    raise NotImplementedError


def to_model_input(inputs: list[Tensor], parameters: dict[str, Any] | None, schema: Schema | None,
                   ) -> tuple[Any, dict | None]:
    """``(model input, params)`` of a request's tensors for a model of input ``schema``: a column
    signature makes a DataFrame with one column per input (MLServer's ``pd``), a tensor signature
    an array (one input) or a dict of arrays; ``parameters.content_type`` overrides; request
    parameters other than V2's own become the model's params."""
    raise NotImplementedError


def from_predictions(predictions: Any, output_schema: Schema | None = None) -> list[Tensor]:
    """The output tensors of ``predictions`` (array, Series, DataFrame: one tensor per column, dict)."""
    raise NotImplementedError


def tensor_to_json(tensor: Tensor) -> dict[str, Any]:
    """The JSON output object of ``tensor`` (``name``, ``datatype``, ``shape``, flat ``data``)."""
    raise NotImplementedError


def tensor_to_bytes(tensor: Tensor) -> bytes:
    """The raw little-endian bytes of ``tensor`` (BYTES length-prefixed)."""
    raise NotImplementedError


def decode_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """A REST inference request: JSON, or (``header_length`` given, from ``Inference-Header-Content-Length``)
    a JSON header followed by the binary data of the inputs that declare ``binary_data_size``."""
    raise NotImplementedError


def encode_infer_response(model_name: str, model_version: str | None, outputs: list[Tensor],
                          request: InferRequest | None = None) -> tuple[bytes, int | None]:
    """The REST response body, and the JSON header's length when outputs go as binary data (requested
    with ``binary_data``/``binary_data_output``), for the ``Inference-Header-Content-Length`` header."""
    raise NotImplementedError
