"""The scoring app: a plain Flask factory that loads the model once and mounts the protocols on it.

``create_app("model/")`` runs under any WSGI server (``gunicorn "modelfmt.serving.app:create_app('model/')"``);
``modelfmt serve`` adds workers, timeouts and graceful stops around it (``modelfmt.serving.server``).
Each protocol (``modelfmt.serving.protocols``) brings its routes and its error body; this module adds
``/metrics`` and the error handlers, which answer in the body of the protocol whose route failed.

The two routes a busy server answers all the time, ``POST /invocations`` and ``GET /ping``, are
dispatched in front of Flask (:func:`_hot_dispatch`): the same functions the Flask routes call, the same
error answers and log lines, the same metrics, without building a request context per request (about a
third of a 1-row request's CPU time). Every other method and path goes through Flask, and the whole app
does when anything registers per-request hooks (``before_request``...) that the shortcut would skip.
"""

from __future__ import annotations

import logging
import os
import traceback
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, request
from flask.json.provider import JSONProvider
from werkzeug.exceptions import HTTPException

from modelfmt.errors import ModelfmtError
from modelfmt.jsonenc import dumps
from modelfmt.serving.protocols import mlflow, pages, v1, v2

if TYPE_CHECKING:
    from modelfmt.flavors.pyfunc import PyFuncModel
    from modelfmt.open import OpenedModel
    from modelfmt.serving.batching import BatchConfig
    from modelfmt.serving.runtime import Runtime

DEFAULT_MAX_BODY_SIZE = 100 * 1024 * 1024
JSON_TYPE = "application/json"
# The protocols mounted, in order; the first one's error body answers requests no protocol routes
# (unknown paths, wrong methods).
PROTOCOLS: tuple[ModuleType, ...] = (mlflow, v2, v1, pages)
_log = logging.getLogger("modelfmt.serving")
# error_code of the HTTP errors Flask raises itself (unknown route, wrong method...).
_HTTP_CODES = {
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class OrjsonProvider(JSONProvider):
    """Flask's JSON through orjson (numpy values included)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return dumps(obj).decode("utf-8")

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        import orjson

        return orjson.loads(s)


def create_app(
    model: str | os.PathLike | OpenedModel,
    *,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    debug: bool = False,
    loaded: PyFuncModel | None = None,
    batching: BatchConfig | None = None,
    model_name: str | None = None,
) -> Flask:
    """A Flask app scoring ``model``: a location or an :class:`~modelfmt.open.OpenedModel` (whose parsed
    ``MLmodel`` is reused), loaded now, once per process.

    ``max_body_size`` is the largest accepted request body in bytes; ``debug`` puts stack traces in
    500 answers; ``loaded`` is an already loaded :class:`~modelfmt.flavors.pyfunc.PyFuncModel` of
    ``model`` to serve instead of loading it again; ``batching`` the adaptive batching limits
    (``None``: the runtime's defaults); ``model_name`` the name the model answers to in V2 and KServe
    routes (``None``: its registered name, else its directory's name).
    """
    from modelfmt.serving import metrics
    from modelfmt.serving.runtime import Runtime

    app = Flask("modelfmt.serving")
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = max_body_size
    counters = metrics.get()
    runtime = Runtime.load(model, loaded, batching=batching, model_name=model_name)
    counters.load_seconds.set(runtime.load_seconds)
    runtime.warm_up()
    app.extensions["modelfmt"] = runtime
    for protocol in PROTOCOLS:
        app.register_blueprint(protocol.blueprint(runtime, max_body_size))

    @app.get("/metrics")
    def metrics_view() -> Response:
        body, content_type = metrics.render()
        return Response(body, 200, content_type=content_type)

    # Every fixed route gets its own metrics label; routes with variables stay under "other" (bounded labels).
    counters.add_known_paths(rule.rule for rule in app.url_map.iter_rules() if not rule.arguments)
    _add_error_handlers(app, runtime, debug)
    flask_only = app.wsgi_app
    app.extensions["modelfmt.flask_wsgi_app"] = counters.wrap(flask_only)  # the same app without the shortcut
    app.wsgi_app = counters.wrap(_hot_dispatch(app, runtime, max_body_size, debug))  # type: ignore[method-assign]
    return app


def _hot_dispatch(app: Flask, runtime: Runtime, max_body_size: int, debug: bool) -> Callable:
    """A WSGI app answering MLflow's hot routes itself and handing everything else to ``app``'s Flask app.

    The shortcut applies only where Flask would run nothing more than the route: no per-request hooks
    registered, and the route's URL rule the MLflow protocol's own (no other protocol took the path).
    """
    flask_wsgi = app.wsgi_app
    hooks = (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs,
             app.url_value_preprocessors, app.url_default_functions)
    if any(any(funcs.values()) for funcs in hooks):
        return flask_wsgi
    routes = {
        key: handler
        for key, handler in mlflow.hot_routes(runtime, max_body_size).items()
        if _endpoint_of(app, *key) == f"{mlflow.NAME}.{handler.__name__}"
    }
    if not routes:
        return flask_wsgi
    errors = mlflow.error_response

    def dispatch(environ: dict, start_response: Callable) -> Any:
        handler = routes.get((environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")))
        if handler is None:
            return flask_wsgi(environ, start_response)
        try:
            answer = handler(environ)
        except ModelfmtError as e:
            if e.http_status >= 500:
                answer = _internal_error(e, environ, runtime, debug, errors)
            else:
                answer = errors(e.error_code, e.message, e.http_status)
        except Exception as e:  # noqa: BLE001 - our fault: the same 500 (error id, log line) as Flask's handler
            answer = _internal_error(e, environ, runtime, debug, errors)
        if isinstance(answer, Response):
            return answer(environ, start_response)
        status, body, content_type = answer
        start_response(_STATUS_LINES[status], [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return dispatch


# Status lines as werkzeug writes them (its reason phrases, upper case).
_STATUS_LINES = {200: "200 OK"}


def _endpoint_of(app: Flask, method: str, path: str) -> str | None:
    """The endpoint Flask routes ``method path`` to, or ``None`` when none does."""
    try:
        endpoint, _ = app.url_map.bind("localhost").match(path, method)
    except HTTPException:
        return None
    return str(endpoint)


def _internal_error(
    e: Exception, environ: dict, runtime: Runtime, debug: bool, errors: Callable[..., Response]
) -> Response:
    """The 500 of a fault of ours on a request: logged with an error id that the answer gives."""
    error_id = uuid.uuid4().hex[:16]
    method, path = environ.get("REQUEST_METHOD", ""), _request_path(environ)
    _log.error("internal error %s on %s %s", error_id, method, path, exc_info=e)
    extra: dict = {"error_id": error_id}
    if debug:
        extra["stack_trace"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    message = f"internal server error (id {error_id}); the server log has the details"
    # A fault of ours may be the model's state, not this request's: check it on its own example.
    runtime.after_internal_error()
    return errors("INTERNAL_ERROR", message, 500, extra)


def _request_path(environ: dict) -> str:
    """``request.path`` of Flask for ``environ`` (PATH_INFO decoded as werkzeug decodes it)."""
    from werkzeug.wsgi import get_path_info

    return "/" + get_path_info(environ).lstrip("/")


def _error_response() -> Callable[..., Response]:
    """The ``error_response`` of the protocol whose route is answering (the first protocol's otherwise)."""
    name = request.blueprint
    for protocol in PROTOCOLS:
        if protocol.NAME == name:
            return protocol.error_response
    return PROTOCOLS[0].error_response


def _add_error_handlers(app: Flask, runtime: Runtime, debug: bool) -> None:
    @app.errorhandler(ModelfmtError)
    def on_modelfmt_error(e: ModelfmtError) -> Response:
        status = e.http_status
        if status >= 500:
            return on_internal_error(e)
        return _error_response()(e.error_code, e.message, status)

    @app.errorhandler(HTTPException)
    def on_http_error(e: HTTPException) -> Response:
        status = e.code or 500
        code = _HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        message = e.description or e.name
        allowed = getattr(e, "valid_methods", None) or []  # set on MethodNotAllowed (405) only
        if status == 405:
            message = f"{request.method} is not allowed on {request.path}; allowed: {', '.join(allowed)}"
        elif status == 404:
            message = f"no endpoint at {request.path}; POST /invocations scores, GET /ping checks health"
        resp = _error_response()(code, message, status)
        if status == 405 and allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(Exception)
    def on_internal_error(e: Exception) -> Response:
        return _internal_error(e, request.environ, runtime, debug, _error_response())
