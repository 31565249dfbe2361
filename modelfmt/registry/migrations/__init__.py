"""Alembic migrations of the registry store (modelfmt.registry.store runs them at open)."""
