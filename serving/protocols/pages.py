"""The model's pages: ``GET /`` (the model, its signature, a form to try it), ``/openapi.json`` and
``/docs`` (Swagger UI from the ``docs`` extra). Errors answer in MLflow's body.

- ``/``: flavors, the signature's tables, requirements, the integrity state of the opened model, and a
  form prefilled with the input example. A small script posts it to ``/invocations`` and shows the
  answer; without scripts the form posts to ``/`` itself, which scores it and shows the same answer.
  Rendered by Jinja2 with autoescaping on (column names, flavors and requirements are the model's data).
- ``/openapi.json``: :func:`modelfmt.serving.openapi.openapi_document` of the model, built on the
  first request (with the answer to the input example as the responses' example) and kept.
- ``/docs``: Swagger UI's own files from the installed ``flask-swagger-ui`` package (the ``docs``
  extra), served from here: nothing is fetched from elsewhere (its online validator is turned off).
  Without the extra, ``/docs`` answers 404 naming the extra to install.
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any

from flask import Blueprint, Response, request, send_from_directory
from jinja2 import Environment, FileSystemLoader

from modelfmt.errors import ModelfmtError
from modelfmt.jsonenc import dumps
from modelfmt.serving.codecs import JSON
from modelfmt.serving.protocols import mlflow
from modelfmt.serving.runtime import Runtime

NAME = "pages"
PAGES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pages")
# The package whose dist/ folder holds Swagger UI's files (its version follows Swagger UI's own).
SWAGGER_PACKAGE = "flask_swagger_ui"
DOCS_EXTRA = "pip install 'modelfmt[docs]'"
HTML = "text/html; charset=utf-8"
# The model page loads only its own files; the form and the script talk to this server only.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """MLflow's error body (these pages sit beside its routes)."""
    return mlflow.error_response(error_code, message, status, extra)


def swagger_ui_dir() -> str | None:
    """The folder of Swagger UI's static files from the ``docs`` extra, or ``None`` when not installed."""
    spec = importlib.util.find_spec(SWAGGER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        dist = os.path.join(location, "dist")
        if os.path.isfile(os.path.join(dist, "swagger-ui-bundle.js")):
            return dist
    return None


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The pages of ``runtime``'s model."""
    bp = Blueprint(NAME, __name__)
    env = Environment(loader=FileSystemLoader(PAGES_DIR), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    info = model_info(runtime)
    swagger = swagger_ui_dir()
    cache: dict[str, bytes] = {}

    def page(answer: str | None = None, error: str | None = None, body: str | None = None, status: int = 200):
        html = env.get_template("index.html").render(
            **info, answer=answer, error=error, body=info["example"] if body is None else body
        )
        return _html(html, status, csp=True)

    @bp.get("/")
    def index() -> Response:
        return page()

    @bp.post("/")
    def index_form() -> Response:
        # The form without scripts: score the body as /invocations would, show the answer on the page.
        body = request.form.get("body", "")
        if len(body) > max_body_size:
            return page(error=f"the body is over the limit of {max_body_size} bytes", body="", status=413)
        try:
            answer = score_json(runtime, body.encode("utf-8"))
        except ModelfmtError as e:
            if e.http_status >= 500:
                raise
            return page(error=f"{e.error_code}: {e.message}", body=body, status=e.http_status)
        return page(answer=json.dumps(answer, indent=2), body=body)

    @bp.get("/openapi.json")
    def openapi() -> Response:
        if "openapi" not in cache:
            cache["openapi"] = dumps(openapi_for(runtime))
        return Response(cache["openapi"], 200, content_type=JSON)

    @bp.get("/docs")
    def docs() -> Response:
        if swagger is None:
            message = f"Swagger UI is not installed: {DOCS_EXTRA} serves it here (the API: /openapi.json)"
            if request.accept_mimetypes.accept_html:
                return _html(env.get_template("no_docs.html").render(message=message), 404)
            return error_response("ENDPOINT_NOT_FOUND", message, 404)
        return _html(env.get_template("docs.html").render(title=info["title"]), 200)

    @bp.get("/docs/<path:filename>")
    def docs_files(filename: str) -> Response:
        if swagger is None:
            return error_response("ENDPOINT_NOT_FOUND", f"Swagger UI is not installed: {DOCS_EXTRA}", 404)
        return send_from_directory(swagger, filename, max_age=3600)

    @bp.get("/_pages/<filename>")
    def own_files(filename: str) -> Response:
        # Only the page's stylesheet and scripts; the templates and the package's module stay unserved.
        if not filename.endswith((".css", ".js")):
            return error_response("ENDPOINT_NOT_FOUND", f"no file {filename!r} here", 404)
        return send_from_directory(PAGES_DIR, filename, max_age=3600)

    return bp


def _html(text: str, status: int, csp: bool = False) -> Response:
    resp = Response(text, status, content_type=HTML)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    if csp:
        resp.headers["Content-Security-Policy"] = _CSP
    return resp


def score_json(runtime: Runtime, body: bytes) -> Any:
    """The ``/invocations`` JSON answer (parsed) to a JSON ``body``, as the route computes it."""
    import orjson

    from modelfmt.serving.codecs import MLFLOW, answer_for

    predictions = runtime.run(runtime.prepare(body, JSON))
    return orjson.loads(answer_for(MLFLOW, JSON).encode(predictions))


def example_document(runtime: Runtime) -> dict | None:
    """The model's serving input example as parsed JSON (``None``: none, or not a JSON object)."""
    import orjson

    if runtime.example is None:
        return None
    try:
        doc = orjson.loads(runtime.example)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def openapi_for(runtime: Runtime) -> dict:
    """The OpenAPI document of ``runtime``'s model, with the answer to its input example when it scores."""
    from modelfmt import __version__
    from modelfmt.serving.openapi import openapi_document

    example = example_document(runtime)
    predictions = None
    if example is not None and runtime.ready:
        try:
            predictions = score_json(runtime, runtime.example or b"")
        except Exception:  # noqa: BLE001 - the document is still right without the example answer
            predictions = None
    return openapi_document(
        runtime.schema,
        runtime.params_schema,
        name=runtime.name,
        version=runtime.version,
        server_version=__version__,
        example=example,
        predictions=predictions,
    )


def model_info(runtime: Runtime) -> dict:
    """What the model page shows, as plain values for the template (escaped there)."""
    from modelfmt.signature import ColSpec
    from modelfmt.types import type_name

    meta = runtime.metadata
    signature = meta.signature
    opened = runtime.opened

    def specs(schema: Any) -> list[dict]:
        rows = []
        for i, s in enumerate(schema.inputs if schema is not None else []):
            if isinstance(s, ColSpec):
                rows.append({"name": s.name or f"#{i}", "type": type_name(s.type), "required": s.required})
            else:
                rows.append({"name": s.name or f"#{i}", "type": f"tensor {s.dtype.name} {list(s.shape)}",
                             "required": True})
        return rows

    params = signature.params.params if signature is not None and signature.params else []
    title = f"{runtime.name} (version {runtime.version})" if runtime.version else runtime.name
    return {
        "title": title,
        "flavors": [{"name": k, "details": _flavor_details(v)} for k, v in sorted(meta.flavors.items())],
        "inputs": specs(signature.inputs if signature is not None else None),
        "outputs": specs(signature.outputs if signature is not None else None),
        "params": [{"name": p.name, "type": p.dtype.value + ("[]" if p.shape else ""),
                    "default": json.dumps(p.to_dict()["default"])} for p in params],
        "has_signature": signature is not None and signature.inputs is not None,
        "requirements": _requirements(opened.path) if opened is not None else [],
        "integrity": _integrity(opened),
        "example": _example_text(runtime),
        "created": meta.utc_time_created,
        "run_id": meta.run_id,
    }


def _flavor_details(conf: Any) -> str:
    """A flavor's short facts (its versions, loader, serialization format) in one line."""
    if not isinstance(conf, dict):
        return ""
    keys = [k for k in conf if k.endswith("_version") or k in ("loader_module", "serialization_format", "env")]
    return ", ".join(f"{k}: {conf[k]}" for k in keys if isinstance(conf[k], (str, int, float)))


def _requirements(path: str) -> list[str]:
    from modelfmt.environment import read_requirements

    try:
        return read_requirements(path)
    except (OSError, UnicodeDecodeError):
        return []


def _integrity(opened: Any) -> dict:
    """The integrity state as known when the model was opened: ``state`` (``verified``, ``signed``,
    ``unchecked``, ``unknown``) and a sentence saying what it means."""
    if opened is None:
        return {"state": "unknown", "text": "unknown: the server was given a loaded model"}
    if opened.signed_by:
        return {"state": "signed", "text": f"signature verified: signed by the key {opened.signed_by}"}
    if opened.verified:
        return {"state": "verified", "text": "every file matches the digests recorded when it was saved"}
    return {"state": "unchecked", "text": "not checked: the model has no recorded digests, or checking was off"}


def _example_text(runtime: Runtime) -> str:
    """The input example for the form: pretty JSON, or the bytes as they are when not JSON."""
    doc = example_document(runtime)
    if doc is not None:
        return json.dumps(doc, indent=2)
    if runtime.example is None:
        return ""
    return runtime.example.decode("utf-8", errors="replace")
