"""The registry's first schema: models, versions, tags, aliases, transition requests, the activity log.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create every table (the columns of modelfmt/registry/schema.py as of this revision)."""
    op.create_table(
        "registered_models",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False, unique=True),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("last_version", sa.Integer, nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("last_updated_time", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_registered_models_creation_time", "registered_models", ["creation_time"])
    op.create_index("ix_registered_models_last_updated_time", "registered_models", ["last_updated_time"])
    op.create_table(
        "registered_model_tags",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_registered_model_tags_key_value", "registered_model_tags", ["key", "model_id"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64)),
        sa.Column("run_link", sa.Text),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("current_stage", sa.String(20), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("status_message", sa.Text),
        sa.Column("signature", sa.Text),
        sa.Column("digest", sa.String(64)),
        sa.Column("storage_location", sa.Text),
        sa.Column("user_id", sa.String(256)),
        sa.Column("authenticated", sa.Boolean, nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("last_updated_time", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
    )
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])
    op.create_index("ix_model_versions_stage", "model_versions", ["model_id", "current_stage"])
    op.create_index("ix_model_versions_creation_time", "model_versions", ["creation_time"])
    op.create_index("ix_model_versions_last_updated_time", "model_versions", ["last_updated_time"])
    op.create_table(
        "model_version_tags",
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(250), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_model_version_tags_key", "model_version_tags", ["key", "version_id"])
    op.create_table(
        "aliases",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("alias", sa.String(256), primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
                  nullable=False),
    )
    op.create_table(
        "transition_requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("registered_models.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("model_versions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("to_stage", sa.String(20), nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("creation_time", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reviewed_by", sa.String(256)),
        sa.Column("review_comment", sa.Text),
        sa.Column("review_time", sa.BigInteger),
        sa.Column("archive_existing_versions", sa.Boolean, nullable=False),
    )
    op.create_index("ix_transition_requests_model_status", "transition_requests", ["model_id", "status"])
    op.create_table(
        "activity",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("stage", sa.String(20)),
        sa.Column("user_id", sa.String(256), nullable=False),
        sa.Column("authenticated", sa.Boolean, nullable=False),
        sa.Column("timestamp", sa.BigInteger, nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_activity_model_time", "activity", ["model_id", "timestamp"])
    op.create_index("ix_activity_name", "activity", ["name"])


def downgrade() -> None:
    """Drop every table."""
    for table in ("activity", "transition_requests", "aliases", "model_version_tags", "model_versions",
                  "registered_model_tags", "registered_models"):
        op.drop_table(table)
