"""The registry server's Flask app: MLflow's registry REST API over any :class:`~modelfmt.registry.base.Registry`.

``create_registry_app(registry)`` mounts three blueprints: :mod:`.mlflow_api` (``/api/2.0/mlflow/...``,
MLflow's routes, methods and JSON shapes), :mod:`.artifacts` (``/api/2.0/mlflow-artifacts/...``: list,
download and upload a version's files, as MLflow's clients do) and :mod:`.extensions`
(``/api/2.0/modelfmt/...``: transition requests and history, which MLflow's server does not have).

Errors are MLflow's body ``{"error_code": ..., "message": ...}`` with MLflow's statuses
(:func:`modelfmt.registry.wire.error_status`: an existing resource is 400 as MLflow answers it); an
unknown route is 404 ``ENDPOINT_NOT_FOUND``, the code MLflow's clients look for; only our own faults are 5xx.

Identity (before accounts): the username of HTTP basic auth (what MLflow's clients send for
``MLFLOW_TRACKING_USERNAME``; the password is not checked yet), else the ``X-Modelfmt-User`` header,
else ``anonymous``; the store records every such name as unauthenticated.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from modelfmt.errors import ModelfmtError, RegistryError
from modelfmt.registry import wire
from modelfmt.serving.registry_app.fields import Fields

if TYPE_CHECKING:
    from modelfmt.registry.base import Registry

USER_HEADER = "X-Modelfmt-User"
ANONYMOUS = "anonymous"
# Largest JSON body read (uploads stream and have no limit here).
MAX_JSON_BODY = 16 * 1024 * 1024
EXTENSION_KEY = "modelfmt.registry"
UPLOADS_FOLDER = ".uploads"
_log = logging.getLogger("modelfmt.serving.registry")


class AppState:
    """What the handlers share: the registry, where uploads go (``None``: uploads refused), and whether a
    version may be created from a path on the server's own disk."""

    def __init__(self, registry: Registry, uploads_dir: str | None, allow_local_sources: bool) -> None:
        self.registry, self.uploads_dir, self.allow_local_sources = registry, uploads_dir, allow_local_sources
        # A version -> its directory as last checked against its digests (artifacts.py).
        self.verified: dict[tuple[str, int, str, str], str] = {}
        self.lock = threading.Lock()


def create_registry_app(registry: Registry, uploads_dir: str | None = None, *,
                        allow_local_sources: bool = True, debug: bool = False) -> Flask:
    """A Flask app serving ``registry`` over MLflow's registry REST API (see the module docstring).

    ``uploads_dir`` is where ``PUT /api/2.0/mlflow-artifacts/artifacts/<path>`` writes files that a
    later ``model-versions/create`` may name as ``mlflow-artifacts:/<path>`` (``None``: a ``.uploads``
    folder under the registry's ``artifact_root`` when it has a local one, else uploads are refused).
    ``allow_local_sources`` lets ``model-versions/create`` name a directory on the server's disk (what
    ``mlflow.register_model("path/")`` sends); a server reachable from other machines should refuse it,
    since it reads whatever model directory the server can read. ``debug`` logs tracebacks of 4xx too.
    """
    from modelfmt.serving.registry_app import artifacts, extensions, mlflow_api

    if uploads_dir is None:
        root = getattr(registry, "artifact_root", None)
        if isinstance(root, str) and "://" not in root:
            import os

            # A leading dot: the store keeps versions in <root>/<model name>/, and no model is called that.
            uploads_dir = os.path.join(root, UPLOADS_FOLDER)
    app = Flask("modelfmt.serving.registry")
    app.extensions[EXTENSION_KEY] = AppState(registry, uploads_dir, allow_local_sources)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    for module in (mlflow_api, artifacts, extensions):
        app.register_blueprint(module.blueprint())

    @app.get("/health")
    @app.get("/ping")
    def health() -> Response:
        return Response("OK", 200, mimetype="text/plain")

    @app.get("/version")
    def version() -> Response:
        from modelfmt import __version__

        return Response(__version__, 200, mimetype="text/plain")

    _add_error_handlers(app, debug)
    return app


# -- what handlers use ---------------------------------------------------------------------------
def state() -> AppState:
    """The app's :class:`AppState`."""
    return current_app.extensions[EXTENSION_KEY]


def registry() -> Registry:
    """The registry this app serves."""
    return state().registry


def current_user() -> str:
    """Who sends this request (see the module docstring)."""
    auth = request.authorization
    if auth is not None and auth.type == "basic" and auth.username:
        return auth.username
    return request.headers.get(USER_HEADER, "").strip() or ANONYMOUS


def fields() -> Fields:
    """This request's fields: the query string of a GET that has one (repeated parameters as lists, as
    MLflow's server reads them), else the JSON body (an empty body is no fields)."""
    if request.method == "GET" and request.args:
        return Fields(request.args.to_dict(flat=False), query=True)
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise RegistryError(f"the request body is over {MAX_JSON_BODY // (1024 * 1024)} MiB", "REQUEST_TOO_LARGE")
    raw = request.get_data(cache=True)
    if not raw.strip():
        return Fields(request.args.to_dict(flat=False), query=True)
    import orjson

    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RegistryError(f"the request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RegistryError(f"the request body must be a JSON object, not {type(body).__name__}")
    return Fields(body)


def ok(payload: dict[str, Any] | None = None) -> Response:
    """A 200 JSON answer (``{}`` when there is nothing to say, as MLflow's server answers)."""
    return jsonify(payload or {})


def error(code: str, message: str, status: int) -> Response:
    """MLflow's error body with ``status``."""
    resp = jsonify({"error_code": code, "message": message})
    resp.status_code = status
    return resp


def _add_error_handlers(app: Flask, debug: bool) -> None:
    @app.errorhandler(ModelfmtError)
    def on_modelfmt_error(e: ModelfmtError) -> Response:
        status = wire.error_status(e)
        if status >= 500 and not isinstance(e, RegistryError):
            return on_internal_error(e)
        if status >= 500:
            _log.error("%s %s: %s", request.method, request.path, e.message)
        elif debug:
            _log.info("%s %s: %s", request.method, request.path, e, exc_info=e)
        return error(e.error_code, e.message, status)

    @app.errorhandler(HTTPException)
    def on_http_error(e: HTTPException) -> Response:
        status = e.code or 500
        if status == 404:
            return error("ENDPOINT_NOT_FOUND", f"no API endpoint at {request.method} {request.path}", 404)
        if status == 405:
            allowed = [m for m in getattr(e, "valid_methods", None) or [] if m not in ("HEAD", "OPTIONS")]
            resp = error("ENDPOINT_NOT_FOUND", f"{request.method} is not served at {request.path}; "
                         f"use {' or '.join(allowed)}", 405)
            resp.headers["Allow"] = ", ".join(allowed)
            return resp
        if status == 413:
            return error("REQUEST_TOO_LARGE", e.description or "request too large", 413)
        code = "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return error(code, e.description or e.name, status)

    @app.errorhandler(Exception)
    def on_internal_error(e: Exception) -> Response:
        error_id = uuid.uuid4().hex[:16]
        _log.error("internal error %s on %s %s", error_id, request.method, request.path, exc_info=e)
        return error("INTERNAL_ERROR", f"internal server error (id {error_id}); the server log has the details", 500)
