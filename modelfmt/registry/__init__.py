"""The model registry: named models, numbered versions, stages, aliases, transition requests, history.

- :mod:`.entities`: the records (:class:`RegisteredModel`, :class:`ModelVersion`, :class:`TransitionRequest`,
  :class:`ActivityEntry`, :class:`Page`), shaped like MLflow's so its REST API maps onto them one to one.
- :mod:`.base`: :class:`Registry`, the one interface every registry implements.
- :mod:`.store`: modelfmt's own store over SQLAlchemy (SQLite by default, PostgreSQL), Alembic migrations.
- :mod:`.rest`: a client of a registry server speaking MLflow's REST API (an MLflow tracking server, or
  ``modelfmt registry serve``), implementing the same interface.
- :mod:`.location`: which registry a URI names (``--registry-uri``, ``MODELFMT_REGISTRY_URI``,
  ``MLFLOW_REGISTRY_URI`` / ``MLFLOW_TRACKING_URI``, else the embedded default): :func:`get_registry`.
- :mod:`.resolver`: ``models:/``, ``runs:/`` and ``mlflow-artifacts:/`` locations for ``open_model``.

This package is the format layer: it never imports ``modelfmt.open``, the flavors or serving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelfmt.registry.base import Registry


def get_registry(uri: str | None = None, **options: Any) -> Registry:
    """The registry ``uri`` names, or the one the environment configures (see :mod:`.location`)."""
    from modelfmt.registry.location import get_registry as _get

    return _get(uri, **options)
