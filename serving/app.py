"""The scoring app: a plain Flask factory wiring MLflow's scoring routes to the codecs and the model.

``create_app("model/")`` runs under any WSGI server (``gunicorn "modelfmt.serving.app:create_app('model/')"``);
``modelfmt serve`` adds workers, timeouts and graceful stops around it (``modelfmt.serving.server``).
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from typing import Any

from flask import Flask, Response, request
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException

from modelfmt.errors import (
    ModelfmtError,
    PayloadError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from modelfmt.jsonenc import dumps

DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
JSON_TYPE = "application/json"
_log = logging.getLogger("modelfmt.serving")
# error_code of the HTTP errors Flask raises itself (unknown route, wrong method...).
_HTTP_CODES = {404: "ENDPOINT_NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson (numpy values included)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj).decode("utf-8")

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        import orjson

        return orjson.loads(s)


class ScoringState:
    """The loaded model, its schema and readiness: built once per worker, read by every request."""

    def __init__(self, model_path: str, model: Any = None) -> None:
        from modelfmt.flavors.pyfunc import load_model
        from modelfmt.serving import metrics

        started = time.perf_counter()
        self.model = model if model is not None else load_model(model_path)
        self.load_seconds = time.perf_counter() - started
        metrics.get().load_seconds.set(self.load_seconds)
        self.path = model_path
        self.schema = self.model.metadata.get_input_schema()
        self.ready = False
        self.not_ready_reason = "the model has not scored its input example yet"
        from modelfmt.example import load_serving_input_example

        self.example = load_serving_input_example(model_path, self.model.metadata)
        self.metadata_body = self._metadata_body()
        _log.info("model %s loaded in %.2fs", model_path, self.load_seconds)

    def _metadata_body(self) -> bytes:
        import orjson

        doc = self.model.metadata.to_dict()
        if self.example is not None:
            try:
                doc["input_example"] = orjson.loads(self.example)
            except orjson.JSONDecodeError:
                pass  # warm_up reports the broken example (/ping 503) instead of the worker failing to boot
        return dumps(doc)

    def warm_up(self) -> None:
        """Score the saved input example once, so the first request is not the slow one; sets ``ready``."""
        from modelfmt.serving.codecs import decode_request

        try:
            if self.example is not None:
                data, params = decode_request(self.example, JSON_TYPE, self.schema)
                self.model.predict(data, params=params)
        except Exception as e:  # noqa: BLE001 - any failure means the same: not ready, say why
            self.not_ready_reason = f"the model failed on its own input example: {type(e).__name__}: {e}"
            _log.error("%s; /ping answers 503", self.not_ready_reason)
            return
        self.ready = True


def create_app(
    model_path: str,
    *,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    debug: bool = False,
    model: Any = None,
) -> Flask:
    """A Flask app scoring the model at ``model_path`` (loaded now, once per process).

    ``max_body_size`` is the largest accepted request body in bytes; ``debug`` puts stack traces in
    500 answers; ``model`` is an already loaded :class:`~flavors.pyfunc.PyFuncModel` to serve instead.
    """
    from modelfmt.serving import metrics

    app = Flask("modelfmt.serving")
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = max_body_size
    state = ScoringState(model_path, model)
    state.warm_up()
    app.extensions["modelfmt"] = state
    counters = metrics.get()
    _add_routes(app, state, counters, max_body_size)
    _add_error_handlers(app, debug)
    app.wsgi_app = counters.wrap(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _add_routes(app: Flask, state: ScoringState, counters: Any, max_body_size: int) -> None:
    from modelfmt import __version__
    from modelfmt.serving import metrics
    from modelfmt.serving.codecs import decode_request, encode_predictions

    @app.get("/ping")
    @app.get("/health")
    def ping() -> Response:
        if state.ready:
            return Response("\n", 200, content_type=JSON_TYPE)
        return _error("TEMPORARILY_UNAVAILABLE", state.not_ready_reason, 503)

    @app.get("/version")
    def version() -> Response:
        return Response(__version__, 200, content_type="text/plain; charset=utf-8")

    @app.get("/metadata")
    def metadata() -> Response:
        return Response(state.metadata_body, 200, content_type=JSON_TYPE)

    @app.get("/metrics")
    def metrics_view() -> Response:
        body, content_type = metrics.render()
        return Response(body, 200, content_type=content_type)

    @app.post("/invocations")
    def invocations() -> Response:
        environ = request.environ
        content_type = environ.get("CONTENT_TYPE")
        if not content_type:
            raise UnsupportedMediaTypeError(
                "the request has no Content-Type: send application/json (MLflow's JSON keys) or text/csv"
            )
        body = _read_body(environ, max_body_size)
        data, params = decode_request(body, content_type, state.schema)
        predictions = state.model.predict(data, params=params)
        counters.rows.inc(_row_count(data))
        return Response(encode_predictions(predictions), 200, content_type=JSON_TYPE)


def _read_body(environ: dict, limit: int) -> bytes:
    """The request body, refusing it (413) past ``limit`` bytes without reading what is declared too big."""
    length = environ.get("CONTENT_LENGTH")
    stream = environ["wsgi.input"]
    if length:
        try:
            n = int(length)
        except ValueError:
            n = -1
        if n < 0:  # gunicorn refuses these itself; other WSGI servers may pass them on
            raise PayloadError(f"invalid Content-Length {length!r}")
        if n > limit:
            _discard(stream, n)
            raise PayloadTooLargeError(f"the body is {n} bytes, over the limit of {limit} bytes (--max-body-size)")
        return stream.read(n)
    body = stream.read(limit + 1)  # chunked: no declared length, read one byte past the limit to know
    if len(body) > limit:
        raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes (--max-body-size)")
    return body


def _discard(stream: Any, n: int, cap: int = 8 * 1024 * 1024) -> None:
    """Read and drop up to ``cap`` bytes of a refused body: a client still sending when the connection
    closes gets a reset instead of the 413; a body far over the limit is not worth reading."""
    left = min(n, cap)
    while left > 0:
        chunk = stream.read(min(left, 256 * 1024))
        if not chunk:
            break
        left -= len(chunk)


def _row_count(data: Any) -> int:
    shape = getattr(data, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 1
    if isinstance(data, dict):
        first = next(iter(data.values()), None)
        return _row_count(first) if first is not None else 0
    if isinstance(data, (list, tuple)):
        return len(data)
    return 1


def _error(code: str, message: str, status: int, extra: dict | None = None) -> Response:
    return Response(dumps({"error_code": code, "message": message, **(extra or {})}), status, content_type=JSON_TYPE)


def _add_error_handlers(app: Flask, debug: bool) -> None:
    @app.errorhandler(ModelfmtError)
    def on_modelfmt_error(e: ModelfmtError) -> Response:
        status = e.http_status
        if status >= 500:
            return on_internal_error(e)
        return _error(e.error_code, e.message, status)

    @app.errorhandler(HTTPException)
    def on_http_error(e: HTTPException) -> Response:
        status = e.code or 500
        code = _HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        message = e.description or e.name
        if status == 405:
            message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(e.valid_methods or [])}"
        elif status == 404:
            message = f"no endpoint at {request.path}; POST /invocations scores, GET /ping checks health"
        resp = _error(code, message, status)
        if status == 405 and getattr(e, "valid_methods", None):
            resp.headers["Allow"] = ", ".join(e.valid_methods)
        return resp

    @app.errorhandler(Exception)
    def on_internal_error(e: Exception) -> Response:
        error_id = uuid.uuid4().hex[:16]
        _log.error("internal error %s on %s %s", error_id, request.method, request.path, exc_info=e)
        extra: dict = {"error_id": error_id}
        if debug:
            extra["stack_trace"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        message = f"internal server error (id {error_id}); the server log has the details"
        return _error("INTERNAL_ERROR", message, 500, extra)
