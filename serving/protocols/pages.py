"""The model's pages: ``GET /`` (the model, its signature, a form to try it), ``/openapi.json`` and
``/docs`` (Swagger UI from the ``docs`` extra). Errors answer in MLflow's body.

Stub: the OpenAPI helper implements it.
"""

from __future__ import annotations

from flask import Blueprint, Response

from modelfmt.serving.protocols import mlflow
from modelfmt.serving.runtime import Runtime

NAME = "pages"


def error_response(error_code: str, message: str, status: int, extra: dict | None = None) -> Response:
    """MLflow's error body (these pages sit beside its routes)."""
    return mlflow.error_response(error_code, message, status, extra)


def blueprint(runtime: Runtime, max_body_size: int) -> Blueprint:
    """The pages of ``runtime``'s model."""
    return Blueprint(NAME, __name__)
