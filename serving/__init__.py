"""Deploy targets: the REST scoring server, the Spark UDF and the Docker image."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # ``modelfmt.serving.create_app`` (the REST app factory) without importing Flask whenever ``serving`` is imported.
    if name == "create_app":
        from modelfmt.serving.app import create_app

        return create_app
    raise AttributeError(f"module 'modelfmt.serving' has no attribute {name!r}")
