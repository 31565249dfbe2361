"""``models:/``, ``runs:/`` and ``mlflow-artifacts:/`` locations, resolved for ``open_model``.

Stub: the registry client implements these (returning :class:`~modelfmt.uris.Resolved`).
"""

from __future__ import annotations

from modelfmt.errors import ModelFormatError
from modelfmt.uris import Resolved


def resolve_models_uri(location: str) -> Resolved:
    """``models:/NAME/VERSION``, ``models:/NAME/STAGE``, ``models:/NAME/latest``, ``models:/NAME@ALIAS``."""
    raise ModelFormatError(f"cannot open {location!r}: models:/ locations are not implemented yet")


def resolve_runs_uri(location: str) -> Resolved:
    """``runs:/RUN_ID/PATH`` against an MLflow tracking server."""
    raise ModelFormatError(f"cannot open {location!r}: runs:/ locations are not implemented yet")


def resolve_artifacts_uri(location: str) -> Resolved:
    """``mlflow-artifacts:/...`` against an MLflow tracking server."""
    raise ModelFormatError(f"cannot open {location!r}: mlflow-artifacts:/ locations are not implemented yet")
