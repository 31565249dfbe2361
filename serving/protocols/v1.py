"""KServe's V1 protocol: ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict`` (``instances``).

Stub: the V2 helper implements it.
"""

from __future__ import annotations

from flask import Blueprint, Response

from modelfmt.jsonenc import dumps
from modelfmt.serving.runtime import Runtime

NAME = "v1"


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """KServe V1's error answer: ``{"error": message}``."""
    return Response(dumps({"error": message}), status, content_type="application/json")


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The V1 routes over ``runtime``."""
    return Blueprint(NAME, __name__)
