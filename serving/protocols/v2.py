"""The Open Inference Protocol ("V2") over REST: ``/v2``, ``/v2/health/*``, ``/v2/models/{name}[/versions/{v}]``
(metadata, ready, infer), with the binary tensor data extension. Errors are ``{"error": "..."}``.

The bodies are the codec's (:mod:`modelfmt.serving.codecs.v2`); this module wires routes to them and to
the runtime (``prepare_input`` then ``run``, so batching and timeouts apply as on ``/invocations``).
The model answers to ``runtime.name`` (and ``runtime.version`` when it has one): any other name or
version is 404. Statuses are KServe's: 400 for a bad request, 404 for an unknown model, 503 while the
model is not ready. Infer bodies are read whatever their ``Content-Type`` says, as Triton reads them:
tritonclient sends none, the kserve client ``application/octet-stream`` with binary data, ``curl -d``
a form type; the body itself (JSON, or a JSON header and binary data) decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, request

from modelfmt.errors import PayloadError
from modelfmt.jsonenc import dumps
from modelfmt.serving.codecs import JSON
from modelfmt.serving.codecs.v2 import (
    decode_infer_request,
    encode_infer_response,
    from_predictions,
    model_metadata,
    single_input,
    to_model_input,
)
from modelfmt.serving.protocols._http import read_body
from modelfmt.serving.runtime import Runtime

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

NAME = "v2"
EXTENSIONS = ("binary_tensor_data",)
HEADER_LENGTH = "Inference-Header-Content-Length"
OCTET_STREAM = "application/octet-stream"


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """V2's error answer: ``{"error": message}`` (an ``error_id`` of a 500 kept beside it)."""
    body: dict[str, Any] = {"error": message}
    if extra:
        body.update(extra)
    return Response(dumps(body), status, content_type=JSON)


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The V2 routes over ``runtime`` (``runtime.name`` / ``runtime.version`` name the model)."""
    from modelfmt import __version__
    from modelfmt.serving import metrics

    bp = Blueprint(NAME, __name__)
    server_body = dumps({"name": "modelfmt", "version": __version__, "extensions": list(EXTENSIONS)})
    metadata_body = dumps(model_metadata(runtime.name, runtime.version, runtime.metadata))
    raw_input = single_input(runtime.schema)
    output_schema = runtime.metadata.get_output_schema()
    rows = metrics.get().rows

    def check_model(name: str, version: str | None) -> Response | None:
        """A 404 answer when ``name``/``version`` is not the model served, else ``None``."""
        if name != runtime.name:
            return error_response("RESOURCE_DOES_NOT_EXIST",
                                  f"unknown model {name!r}: this server serves {runtime.name!r}", 404)
        if version is not None and version != runtime.version:
            has = f"it is version {runtime.version!r}" if runtime.version else "it has no versions"
            return error_response("RESOURCE_DOES_NOT_EXIST", f"model {name!r} has no version {version!r} ({has})", 404)
        return None

    def not_ready() -> Response | None:
        ready, reason = runtime.health()
        return None if ready else error_response("TEMPORARILY_UNAVAILABLE", reason, 503)

    @bp.get("/v2")
    def server_metadata() -> Response:
        return Response(server_body, 200, content_type=JSON)

    @bp.get("/v2/health/live")
    def live() -> Response:
        return Response(b'{"live":true}', 200, content_type=JSON)

    @bp.get("/v2/health/ready")
    def ready() -> Response:
        return not_ready() or Response(b'{"ready":true}', 200, content_type=JSON)

    @bp.get("/v2/models/<name>")
    @bp.get("/v2/models/<name>/versions/<version>")
    def metadata(name: str, version: str | None = None) -> Response:
        return check_model(name, version) or Response(metadata_body, 200, content_type=JSON)

    @bp.get("/v2/models/<name>/ready")
    @bp.get("/v2/models/<name>/versions/<version>/ready")
    def model_ready(name: str, version: str | None = None) -> Response:
        answer = check_model(name, version) or not_ready()
        return answer or Response(dumps({"name": runtime.name, "ready": True}), 200, content_type=JSON)

    @bp.post("/v2/models/<name>/infer")
    @bp.post("/v2/models/<name>/versions/<version>/infer")
    def infer(name: str, version: str | None = None) -> BaseResponse:
        environ = request.environ
        body = read_body(environ, max_body_size)  # read before any refusal: a client still sending gets it
        header_length = _header_length(environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
        answer = check_model(name, version) or not_ready()
        if answer is not None:
            return answer
        batcher = runtime.batcher
        if batcher is not None:
            batcher.preparing()  # a batch leader waits for requests being prepared
        try:
            infer_request = decode_infer_request(body, header_length, single_input=raw_input)
            data, params = to_model_input(infer_request.inputs, infer_request.parameters, runtime.schema)
            prepared = runtime.prepare_input(data, params)
        finally:
            if batcher is not None:
                batcher.prepared()
        predictions = runtime.run(prepared)
        rows.inc(prepared.rows)
        outputs = from_predictions(predictions, output_schema)
        out, json_length = encode_infer_response(runtime.name, runtime.version, outputs, infer_request)
        if json_length is None:
            return Response(out, 200, content_type=JSON)
        resp = Response(out, 200, content_type=OCTET_STREAM)
        resp.headers[HEADER_LENGTH] = str(json_length)
        return resp

    add_fallback(bp, "/v2", error_response)
    return bp


def add_fallback(bp: Blueprint, prefix: str, errors: Any) -> None:
    """Answer unknown paths under ``prefix`` (404) and wrong methods on known ones (405) in the
    protocol's own error body: Flask raises those before any blueprint is chosen, so the app's
    handlers would answer them in the first protocol's body."""
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @bp.route(f"{prefix}/<path:rest>", methods=methods, endpoint="fallback")
    def fallback(rest: str) -> Response:
        from flask import current_app
        from werkzeug.exceptions import HTTPException

        adapter = current_app.url_map.bind("localhost")
        allowed = []
        for method in methods:
            if method == request.method:
                continue
            try:
                endpoint, _ = adapter.match(request.path, method)
            except HTTPException:
                continue
            if endpoint != f"{bp.name}.fallback":
                allowed.append(method)
        if allowed:
            resp = errors("METHOD_NOT_ALLOWED",
                          f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}", 405)
            resp.headers["Allow"] = ", ".join(allowed)
            return resp
        return errors("ENDPOINT_NOT_FOUND", f"no endpoint at {request.path}", 404)


def _header_length(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise PayloadError(f"{HEADER_LENGTH} is a non-negative integer, got {value!r}")
    return n
