"""The registry store's tables (SQLAlchemy Core), as the newest migration leaves them.

:mod:`.store` queries these; the migrations (``migrations/versions/``) create and change them and never
import this module (a migration stays what it was when it shipped). Times are integer milliseconds since
the epoch (as MLflow's REST API writes them: one type on SQLite and PostgreSQL, exact ordering). Every
column a search filters or orders by has an index.

The activity log keeps ``model_id`` without a foreign key and the model's name at the time: entries outlive
a deleted model, and follow a renamed one. ``stage`` is the stage a version is in after the entry
(``None`` at registration, the target of a transition, NULL when it says nothing about stages), so that
"which version was in Production at T" is one query (:meth:`SqlRegistry.version_in_stage_at`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAME_LENGTH = 256
KEY_LENGTH = 250

metadata = MetaData()

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("description", Text, nullable=False, default=""),
    Column("last_version", Integer, nullable=False, default=0),  # versions are never renumbered
    Column("creation_time", BigInteger, nullable=False),
    Column("last_updated_time", BigInteger, nullable=False),
    Index("ix_registered_models_creation_time", "creation_time"),
    Index("ix_registered_models_last_updated_time", "last_updated_time"),
)

registered_model_tags = Table(
    "registered_model_tags",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("value", Text, nullable=False, default=""),
    Index("ix_registered_model_tags_key_value", "key", "model_id"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False, default=""),
    Column("run_id", String(64)),
    Column("run_link", Text),
    Column("description", Text, nullable=False, default=""),
    Column("current_stage", String(20), nullable=False, default="None"),
    Column("status", String(32), nullable=False, default="READY"),
    Column("status_message", Text),
    Column("signature", Text),  # JSON of the MLmodel signature
    Column("digest", String(64)),
    Column("storage_location", Text),
    Column("user_id", String(NAME_LENGTH)),
    Column("authenticated", Boolean, nullable=False, default=False),
    Column("creation_time", BigInteger, nullable=False),
    Column("last_updated_time", BigInteger, nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    Index("ix_model_versions_run_id", "run_id"),
    Index("ix_model_versions_stage", "model_id", "current_stage"),
    Index("ix_model_versions_creation_time", "creation_time"),
    Index("ix_model_versions_last_updated_time", "last_updated_time"),
)

model_version_tags = Table(
    "model_version_tags",
    metadata,
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(KEY_LENGTH), primary_key=True),
    Column("value", Text, nullable=False, default=""),
    Index("ix_model_version_tags_key", "key", "version_id"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True),
    Column("alias", String(NAME_LENGTH), primary_key=True),
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
)

transition_requests = Table(
    "transition_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("registered_models.id", ondelete="CASCADE"), nullable=False),
    Column("version_id", Integer, ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False),
    Column("to_stage", String(20), nullable=False),
    Column("comment", Text, nullable=False, default=""),
    Column("requested_by", String(NAME_LENGTH), nullable=False),
    Column("creation_time", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, default="PENDING"),
    Column("reviewed_by", String(NAME_LENGTH)),
    Column("review_comment", Text),
    Column("review_time", BigInteger),
    Column("archive_existing_versions", Boolean, nullable=False, default=True),
    Index("ix_transition_requests_model_status", "model_id", "status"),
)

activity = Table(
    "activity",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, nullable=False),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("version", Integer),
    Column("action", String(40), nullable=False),
    Column("stage", String(20)),
    Column("user_id", String(NAME_LENGTH), nullable=False),
    Column("authenticated", Boolean, nullable=False, default=False),
    Column("timestamp", BigInteger, nullable=False),
    Column("details", Text, nullable=False, default="{}"),  # JSON object
    Index("ix_activity_model_time", "model_id", "timestamp"),
    Index("ix_activity_name", "name"),
)
