"""The Open Inference Protocol ("V2") over gRPC: ``inference.GRPCInferenceService`` and ``grpc.health.v1``.

- Runs in every server worker, created after fork (grpcio is not fork-safe), on ``--grpc-port``
  shared by the workers with ``SO_REUSEPORT``, over the worker's own :class:`~modelfmt.serving.runtime.Runtime`
  (the HTTP app's): the same signature checks and the same adaptive batching as HTTP.
- Requests carry their tensors as typed ``contents`` or as ``raw_input_contents`` (tritonclient's
  default); both become :class:`~modelfmt.serving.codecs.v2.Tensor` through the V2 codec. Outputs go as
  ``raw_output_contents`` when the request sent raw inputs (as Triton answers) or asks for binary
  (``binary_data_output`` on the request, ``binary_data`` on a requested output), else as typed
  ``contents``; FP16 and BF16 have no typed field and always go raw.
- Errors are gRPC status codes with a message: the client's faults ``INVALID_ARGUMENT``, an unknown
  model or version ``NOT_FOUND``, a model not ready ``UNAVAILABLE``, past the server's ``--timeout``
  ``DEADLINE_EXCEEDED`` (the worker is then retired, as after an HTTP 504), ours ``INTERNAL`` with an
  error id that the log has.
- Needs the ``grpc`` extra (grpcio, protobuf, grpcio-health-checking): ``serve`` checks for it before
  it starts (:func:`modelfmt.serving.server.check_grpc`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing.util
import uuid
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from modelfmt.errors import DeployError, ModelfmtError, PayloadError
from modelfmt.serving.codecs import v2 as codec
from modelfmt.serving.protocols.grpc_v2 import inference_pb2 as pb
from modelfmt.serving.protocols.grpc_v2 import inference_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from modelfmt.serving.runtime import Runtime

SERVICE = "inference.GRPCInferenceService"
_log = logging.getLogger("modelfmt.serving")
# The typed field of InferTensorContents that holds each datatype (FP16, BF16: none, raw only).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# HTTP statuses of our errors (modelfmt.errors) -> gRPC codes.
_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


# -- protobuf <-> V2 tensors ----------------------------------------------------------------------
def parameters_from_pb(params: Any) -> dict[str, Any]:
    """A protobuf ``map<string, InferParameter>`` as a plain dict (unset values left out)."""
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(value, choice)
    return out


def parameters_to_pb(params: dict[str, Any], target: Any) -> None:
    """Fill a protobuf parameters map from ``params`` (bool, int, float, str values; others as str)."""
    for key, value in params.items():
        if isinstance(value, (bool, np.bool_)):
            target[key].bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            target[key].int64_param = int(value)
        elif isinstance(value, (float, np.floating)):
            target[key].double_param = float(value)
        else:
            target[key].string_param = str(value)


def tensors_from_request(request: Any) -> list[codec.Tensor]:
    """The input tensors of a ``ModelInferRequest``: from ``raw_input_contents`` (one entry per input,
    in order) or from each input's typed ``contents``; a PayloadError naming the input otherwise."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise PayloadError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
                           "send one per input, in the order of inputs")
    tensors = []
    for i, tensor in enumerate(request.inputs):
        params = parameters_from_pb(tensor.parameters)
        shape = list(tensor.shape)
        if raw:
            if tensor.HasField("contents"):
                raise PayloadError(f"input {tensor.name!r} has contents while the request has raw_input_contents: "
                                   "send the data of all inputs one way")
            tensors.append(codec.tensor_from_bytes(tensor.name, tensor.datatype, shape, raw[i], params))
        else:
            tensors.append(codec.tensor_from_json(tensor.name, tensor.datatype, shape,
                                                  _typed_contents(tensor), params))
    return tensors


def _typed_contents(tensor: Any) -> list:
    field = CONTENTS_FIELDS.get(tensor.datatype)
    if field is None:
        if tensor.datatype in codec.DATATYPES:
            raise PayloadError(f"input {tensor.name!r} is {tensor.datatype}, which has no typed contents field: "
                               "send it in raw_input_contents")
        raise PayloadError(f"input {tensor.name!r} has unknown datatype {tensor.datatype!r}; V2's datatypes: "
                           f"{', '.join(codec.DATATYPES)}")
    contents = tensor.contents
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise PayloadError(f"input {tensor.name!r} is {tensor.datatype}, whose data goes in contents.{field}, "
                           f"but the request fills contents.{others[0]}")
    return list(getattr(contents, field))


def infer_request(request: Any) -> codec.InferRequest:
    """A ``ModelInferRequest`` as the codec's :class:`~modelfmt.serving.codecs.v2.InferRequest`."""
    return codec.InferRequest(
        inputs=tensors_from_request(request),
        id=request.id or None,
        parameters=parameters_from_pb(request.parameters),
        outputs=[codec.RequestedOutput(o.name, parameters_from_pb(o.parameters)) for o in request.outputs],
    )


def wants_raw_outputs(request: Any, decoded: codec.InferRequest) -> bool:
    """Whether the answer's data goes in ``raw_output_contents``: as asked (``binary_data_output`` on the
    request, ``binary_data`` on the requested outputs), else as the inputs came (raw or typed)."""
    asked = decoded.parameters.get("binary_data_output")
    if isinstance(asked, bool):
        return asked
    flags = [o.parameters["binary_data"] for o in decoded.outputs if isinstance(o.parameters.get("binary_data"), bool)]
    if flags:
        return any(flags)
    return bool(request.raw_input_contents)


def _flat(tensor: codec.Tensor) -> list:
    data = tensor.data
    if tensor.datatype == "BYTES":
        items = data.ravel().tolist() if isinstance(data, np.ndarray) else list(data)
        return [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in items]
    return np.asarray(data).ravel().tolist()


def infer_response(runtime: Runtime, request_id: str, outputs: list[codec.Tensor], raw: bool) -> Any:
    """The ``ModelInferResponse`` of ``outputs`` (raw bytes or typed contents, as ``raw`` says; FP16 and
    BF16 force raw, since a response uses one form for all its outputs)."""
    raw = raw or any(t.datatype not in CONTENTS_FIELDS for t in outputs)
    response = pb.ModelInferResponse(model_name=runtime.name, model_version=runtime.version or "", id=request_id)
    for tensor in outputs:
        out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=[int(d) for d in tensor.shape])
        parameters_to_pb(tensor.parameters, out.parameters)
        if raw:
            response.raw_output_contents.append(codec.tensor_to_bytes(tensor))
        else:
            getattr(out.contents, CONTENTS_FIELDS[tensor.datatype]).extend(_flat(tensor))
    return response


def select_outputs(outputs: list[codec.Tensor], requested: list[codec.RequestedOutput]) -> list[codec.Tensor]:
    """The outputs the request names, in its order (all of them when it names none)."""
    if not requested:
        return outputs
    by_name = {t.name: t for t in outputs}
    unknown = [o.name for o in requested if o.name not in by_name]
    if unknown:
        raise PayloadError(f"the request asks for output {unknown[0]!r}; the model's outputs: "
                           f"{', '.join(by_name) or '(none)'}")
    return [by_name[o.name] for o in requested]


# -- metadata ---------------------------------------------------------------------------------------
def model_metadata(runtime: Runtime) -> Any:
    """The ``ModelMetadataResponse`` of the served model: the V2 codec's metadata from its signature
    (the same as REST's ``GET /v2/models/{name}``; ``-1`` a variable dimension)."""
    doc = codec.model_metadata(runtime.name, runtime.version, runtime.metadata)
    response = pb.ModelMetadataResponse(name=doc["name"], versions=doc.get("versions", []), platform=doc["platform"])
    for target, tensors in ((response.inputs, doc["inputs"]), (response.outputs, doc["outputs"])):
        for tensor in tensors:  # TensorMetadata has no parameters (REST's content_type hints)
            target.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response


# -- the service ------------------------------------------------------------------------------------
class _Abort(Exception):
    """A status to answer with (raised inside the servicer, answered by :func:`_answer`)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _status_of(error: Exception, runtime: Runtime) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, _Abort):
        return error.code, error.message
    if isinstance(error, ModelfmtError) and error.http_status < 500:
        return _STATUS_CODES.get(error.http_status, grpc.StatusCode.INVALID_ARGUMENT), error.message
    if isinstance(error, ModelfmtError) and error.http_status in _STATUS_CODES:
        return _STATUS_CODES[error.http_status], error.message
    error_id = uuid.uuid4().hex[:16]
    _log.error("internal error %s on gRPC ModelInfer", error_id, exc_info=error)
    runtime.after_internal_error()  # as after an HTTP 500: the model's state may be at fault
    return grpc.StatusCode.INTERNAL, f"internal server error (id {error_id}); the server log has the details"


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over one :class:`~modelfmt.serving.runtime.Runtime`.

    ``timeout`` is the server's request timeout in seconds; ``on_timeout`` is called once a request
    has run past it (the worker's retirement: the stuck model call cannot be stopped).
    """

    def __init__(self, runtime: Runtime, timeout: float, on_timeout: Any = None, threads: int = 16) -> None:
        from modelfmt import __version__

        self.runtime, self.timeout, self.on_timeout = runtime, timeout, on_timeout
        self.version = __version__
        self._metadata = model_metadata(runtime)  # the signature does not change: built once
        # Model calls run here, so that the handler thread can give up on one past the timeout.
        self._calls = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="modelfmt-grpc-infer")

    def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 - the protocol's method names
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.runtime.health()[0])

    def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(name="modelfmt", version=self.version, extensions=[])

    def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return _answer(context, self.runtime, lambda: self._ready(request))

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        def metadata() -> Any:
            self._check_model(request.name, request.version)
            return self._metadata

        return _answer(context, self.runtime, metadata)

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        return _answer(context, self.runtime, lambda: self._infer(request, context))

    def _ready(self, request: Any) -> Any:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.runtime.health()[0])

    def _check_model(self, name: str, version: str) -> None:
        runtime = self.runtime
        if name != runtime.name:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"unknown model {name!r}: this server serves {runtime.name!r}")
        if version and version != runtime.version:
            served = f"version {runtime.version}" if runtime.version else "no versions (a model directory)"
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version!r}: it serves {served}")

    def _infer(self, request: Any, context: Any) -> Any:
        self._check_model(request.model_name, request.model_version)
        ready, reason = self.runtime.health()
        if not ready:
            raise _Abort(grpc.StatusCode.UNAVAILABLE, f"model {self.runtime.name!r} is not ready: {reason}")
        future = self._calls.submit(self._score, request)
        remaining = context.time_remaining()
        wait = self.timeout if remaining is None else min(self.timeout, max(remaining, 0.0))
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            if remaining is not None and remaining <= self.timeout:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the request ran past its deadline") from None
            _log.error("gRPC ModelInfer ran past the timeout of %gs: answered DEADLINE_EXCEEDED; retiring the worker",
                       self.timeout)
            if self.on_timeout is not None:
                self.on_timeout()
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                         f"the request ran past the server's timeout of {self.timeout:g}s") from None

    def _score(self, request: Any) -> Any:
        runtime = self.runtime
        batcher = runtime.batcher
        if batcher is not None:
            batcher.preparing()  # as Runtime.prepare: a batch leader waits for requests being prepared
        try:
            decoded = infer_request(request)
            data, params = codec.to_model_input(decoded.inputs, decoded.parameters, runtime.schema)
            prepared = runtime.prepare_input(data, params)
        finally:
            if batcher is not None:
                batcher.prepared()
        predictions = runtime.run(prepared)
        outputs = codec.from_predictions(predictions, runtime.metadata.get_output_schema())
        outputs = select_outputs(outputs, decoded.outputs)
        return infer_response(runtime, request.id, outputs, wants_raw_outputs(request, decoded))


def _answer(context: Any, runtime: Runtime, call: Any) -> Any:
    """``call()``'s response, or its error answered as a gRPC status (never an exception out of the
    handler: grpcio would answer UNKNOWN and log a traceback)."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - every failure becomes a status; ours are logged with an id
        code, message = _status_of(e, runtime)
    context.abort(code, message)


class HealthServicer(health.HealthServicer):
    """``grpc.health.v1.Health``: ``SERVING`` while the runtime is ready (its ``/ping``), for the server
    (service ``""``) and for :data:`SERVICE`; other services are unknown (``NOT_FOUND``)."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self._refresh()

    def _refresh(self) -> Any:
        status = (health_pb2.HealthCheckResponse.SERVING if self.runtime.health()[0]
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for service in ("", SERVICE):
            self.set(service, status)  # what Watch streams tell their clients
        return status

    def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.service not in ("", SERVICE):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self._refresh())


# -- the per-worker server --------------------------------------------------------------------------
def start_server(runtime: Runtime, host: str, port: int, *, threads: int, timeout: float,
                 max_message_size: int, on_timeout: Any = None) -> grpc.Server:
    """Start, in this worker, a gRPC server on ``host:port`` (``SO_REUSEPORT``: every worker listens on
    it) with the inference and health services over ``runtime``; returns it (stop it with ``stop``)."""
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="modelfmt-grpc"),
        options=[("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", max_message_size),
                 ("grpc.max_send_message_length", max_message_size)],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(runtime, timeout, on_timeout, threads), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(runtime), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio raises on a port it cannot bind (older versions returned 0)
        raise DeployError(f"--grpc-port {port}: cannot listen on {address}: {e}") from e
    if bound == 0:
        raise DeployError(f"--grpc-port {port}: cannot listen on {address}")
    server.start()
    _log.info("V2 over gRPC listening on %s", address)
    return server


def start_in_worker(guard: Any, options: dict[str, Any]) -> grpc.Server:
    """Start V2 over gRPC in a server worker that has loaded its app: ``guard`` is the worker's
    :class:`~modelfmt.serving.timeouts.TimeoutGuard` (around the Flask app whose runtime is served;
    a request past the timeout retires the worker through it, as an HTTP 504 does), ``options`` the
    ``host``, ``port``, ``threads``, ``timeout`` and ``max_message_size``. Stopped at the worker's exit."""
    runtime = guard.app.extensions["modelfmt"]
    servers: list[grpc.Server] = []

    def retire() -> None:
        guard._retire()  # the HTTP side's retirement: no new requests, the worker exits once they are done
        for server in servers:  # and no new calls here: clients reconnect to the other workers
            server.stop(options["timeout"])

    server = start_server(runtime, options["host"], options["port"], threads=options["threads"],
                          timeout=options["timeout"], max_message_size=options["max_message_size"], on_timeout=retire)
    servers.append(server)
    # Run at this process's normal exit, and also at a multiprocessing child's (granian's workers), whose
    # exit skips atexit handlers.
    multiprocessing.util.Finalize(None, stop, args=(server, options["timeout"]), exitpriority=10)
    return server


def stop(server: grpc.Server, grace: float) -> None:
    """Stop ``server`` gracefully: no new calls (clients are told to go to another worker), the calls
    in flight get up to ``grace`` seconds to finish. Safe to call twice."""
    server.stop(grace).wait(grace + 1)
