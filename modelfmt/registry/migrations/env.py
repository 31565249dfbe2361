"""Alembic's environment for the registry store: run by :func:`modelfmt.registry.store.upgrade` on the
connection it passes in ``config.attributes["connection"]`` (never from an ``alembic.ini``)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
