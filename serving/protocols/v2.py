"""The Open Inference Protocol ("V2") over REST: ``/v2``, ``/v2/health/*``, ``/v2/models/{name}[/versions/{v}]``
(metadata, ready, infer), with the binary tensor data extension. Errors are ``{"error": "..."}``.

Stub: the V2 helper implements it over :mod:`modelfmt.serving.codecs.v2`.
"""

from __future__ import annotations

from flask import Blueprint, Response

from modelfmt.jsonenc import dumps
from modelfmt.serving.runtime import Runtime

NAME = "v2"


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """V2's error answer: ``{"error": message}``."""
    return Response(dumps({"error": message}), status, content_type="application/json")


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The V2 routes over ``runtime`` (``runtime.name`` / ``runtime.version`` name the model)."""
    return Blueprint(NAME, __name__)
