"""KServe's V1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict`` (``instances``).

``GET /v1/models/{name}`` answers ``{"name", "ready"}`` (503 while the model is not ready, as KServe);
``:predict`` takes ``{"instances": [...]}`` (or TF Serving's ``{"inputs": ...}``), read by MLflow's JSON
codec so rows mean what they mean on ``/invocations`` (whatever the ``Content-Type`` says: V1 bodies
are JSON), and answers ``{"predictions": [...]}``. Errors
are ``{"error": "..."}``; another model name is 404.
"""

from __future__ import annotations

from flask import Blueprint, Response, request

from modelfmt.errors import PayloadError
from modelfmt.jsonenc import dumps
from modelfmt.serving.codecs import JSON, MLFLOW, answer_for
from modelfmt.serving.protocols._http import read_body
from modelfmt.serving.runtime import Runtime

NAME = "v1"
_KEYS = ("instances", "inputs")


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """KServe V1's error answer: ``{"error": message}`` (an ``error_id`` of a 500 kept beside it)."""
    return Response(dumps({"error": message, **(extra or {})}), status, content_type=JSON)


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The V1 routes over ``runtime``."""
    from modelfmt.serving import metrics
    from modelfmt.serving.protocols.v2 import add_fallback

    bp = Blueprint(NAME, __name__)
    encode = answer_for(MLFLOW, JSON).encode
    rows = metrics.get().rows

    def unknown(name: str) -> Response | None:
        if name == runtime.name:
            return None
        return error_response("RESOURCE_DOES_NOT_EXIST", f"unknown model {name!r}: this server serves {runtime.name!r}",
                              404)

    @bp.get("/v1/models/<name>")
    def model_ready(name: str) -> Response:
        answer = unknown(name)
        if answer is not None:
            return answer
        ready, reason = runtime.health()
        if not ready:
            return error_response("TEMPORARILY_UNAVAILABLE", reason, 503)
        return Response(dumps({"name": runtime.name, "ready": True}), 200, content_type=JSON)

    @bp.post("/v1/models/<name>:predict")
    def predict(name: str) -> Response:
        environ = request.environ
        body = read_body(environ, max_body_size)
        answer = unknown(name)
        if answer is not None:
            return answer
        _check_keys(body)
        prepared = runtime.prepare(body, JSON)
        predictions = runtime.run(prepared)
        rows.inc(prepared.rows)
        return Response(encode(predictions), 200, content_type=JSON)

    add_fallback(bp, "/v1", error_response)
    return bp


def _check_keys(body: bytes) -> None:
    """Refuse MLflow's other JSON keys (``dataframe_split``...): V1 bodies hold ``instances`` or ``inputs``."""
    from modelfmt.jsonenc import loads

    try:
        doc = loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError(f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict) or not any(k in doc for k in _KEYS) or any(k not in (*_KEYS, "params") for k in doc):
        keys = ", ".join(map(repr, doc)) if isinstance(doc, dict) else f"a {type(doc).__name__}"
        raise PayloadError(f'a V1 predict body is {{"instances": [...]}} (or {{"inputs": ...}}); got {keys}')
