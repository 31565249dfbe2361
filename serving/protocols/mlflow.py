"""MLflow's scoring protocol: ``POST /invocations``, ``/ping``, ``/health``, ``/version``, ``/metadata``.

Errors are MLflow's ``{"error_code": ..., "message": ...}``. The body is decoded by the codec
registered for its ``Content-Type`` and the answer encoded by the one ``Accept`` asks for (JSON's
``{"predictions": ...}`` by default; 406 when none is acceptable).

:func:`hot_routes` gives the app the two routes every request of a busy server takes (``POST
/invocations``, ``GET /ping``) as plain WSGI-level handlers over the same functions the Flask routes
call, so the app can answer them without building Flask's request context (see
:mod:`modelfmt.serving.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request

from modelfmt.errors import UnsupportedMediaTypeError
from modelfmt.jsonenc import dumps
from modelfmt.serving.codecs import JSON, MLFLOW, answer_for
from modelfmt.serving.protocols._http import read_body
from modelfmt.serving.runtime import Runtime

NAME = MLFLOW


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """MLflow's error answer: ``{"error_code", "message"}`` plus ``extra`` fields (``error_id``...)."""
    return Response(dumps({"error_code": error_code, "message": message, **(extra or {})}), status, content_type=JSON)


PING_BODY = b"\n"


def score(runtime: Runtime, environ: dict, max_body_size: int, rows: Any) -> tuple[bytes, str]:
    """``(answer body, its media type)`` of ``POST /invocations`` for the WSGI ``environ``; ``rows`` is
    the rows-scored counter. Raises the request's :class:`~modelfmt.errors.ModelfmtError` (415, 406,
    413, 400...) or the model's failure."""
    content_type = environ.get("CONTENT_TYPE")
    if not content_type:
        raise UnsupportedMediaTypeError(
            "the request has no Content-Type: send application/json (MLflow's JSON keys) or text/csv"
        )
    # The body is read before a 406 too: a client still sending gets the answer, not a reset.
    body = read_body(environ, max_body_size)
    answer = answer_for(MLFLOW, environ.get("HTTP_ACCEPT"))
    prepared = runtime.prepare(body, content_type)
    predictions = runtime.run(prepared)
    rows.inc(prepared.rows)
    return answer.encode(predictions), answer.media_type


HotHandler = Callable[[dict], "tuple[int, bytes, str] | Response"]


def hot_routes(runtime: Runtime, max_body_size: int) -> dict[tuple[str, str], HotHandler]:
    """``{(method, path): handler}`` for ``POST /invocations`` and ``GET /ping``: each handler takes the
    WSGI environ and returns ``(status, body, content type)`` of a success, or the :class:`Response`
    of a refusal the route answers itself (``/ping``'s 503); errors are raised, as the Flask routes
    raise them, for the app's error handlers to answer."""
    from modelfmt.serving import metrics

    rows = metrics.get().rows

    def invocations(environ: dict) -> tuple[int, bytes, str] | Response:
        body, media_type = score(runtime, environ, max_body_size, rows)
        return 200, body, media_type

    def ping(environ: dict) -> tuple[int, bytes, str] | Response:
        ready, reason = runtime.health()
        if ready:
            return 200, PING_BODY, JSON
        return error_response("TEMPORARILY_UNAVAILABLE", reason, 503)

    return {("POST", "/invocations"): invocations, ("GET", "/ping"): ping}


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The protocol's routes over ``runtime``; bodies over ``max_body_size`` bytes are refused (413)."""
    from modelfmt import __version__
    from modelfmt.serving import metrics

    bp = Blueprint(NAME, __name__)
    metadata_body = _metadata_body(runtime)
    rows = metrics.get().rows

    @bp.get("/ping")
    @bp.get("/health")
    def ping() -> Response:
        ready, reason = runtime.health()
        if ready:
            return Response(PING_BODY, 200, content_type=JSON)
        return error_response("TEMPORARILY_UNAVAILABLE", reason, 503)

    @bp.get("/version")
    def version() -> Response:
        return Response(__version__, 200, content_type="text/plain; charset=utf-8")

    @bp.get("/metadata")
    def metadata() -> Response:
        return Response(metadata_body, 200, content_type=JSON)

    @bp.post("/invocations")
    def invocations() -> Response:
        body, media_type = score(runtime, request.environ, max_body_size, rows)
        return Response(body, 200, content_type=media_type)

    return bp


def _metadata_body(runtime: Runtime) -> bytes:
    """``/metadata``: the ``MLmodel`` document, with the input example when it is valid JSON."""
    import orjson

    doc = runtime.metadata.to_dict()
    if runtime.example is not None:
        try:
            doc["input_example"] = orjson.loads(runtime.example)
        except orjson.JSONDecodeError:
            pass  # warm_up reports the broken example (/ping 503) instead of the worker failing to boot
    return dumps(doc)
