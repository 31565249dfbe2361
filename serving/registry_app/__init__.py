"""The registry server: MLflow's registry REST API, its artifact routes and modelfmt's extensions over
any :class:`~modelfmt.registry.base.Registry` (``modelfmt registry serve``).

- :mod:`.app`: :func:`create_registry_app` (the Flask factory), errors, identity.
- :mod:`.fields`: reading a request's fields as MLflow's server does (pure, no Flask).
- :mod:`.mlflow_api`, :mod:`.artifacts`, :mod:`.extensions`: the routes.
- :mod:`.server`: the gunicorn launcher (:func:`~.server.run`).
"""

from __future__ import annotations

from modelfmt.serving.registry_app.app import create_registry_app

__all__ = ["create_registry_app"]
