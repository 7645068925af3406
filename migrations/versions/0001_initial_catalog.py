"""initial catalog: predictions, output_files (also the work queue), source_urls, checkpoints

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "checkpoints",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("state", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("version", sa.String(length=128), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=True),
        sa.Column("input", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("output", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("durable_output", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("data_removed", sa.Boolean(), nullable=False),
        sa.Column("rerun_of", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["rerun_of"], ["predictions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_predictions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_predictions_rerun_of"), ["rerun_of"], unique=False)

    op.create_table(
        "output_files",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("prediction_id", sa.String(length=64), nullable=False),
        sa.Column("output_path", sa.String(length=1024), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("store", sa.String(length=255), nullable=False),
        sa.Column("key", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("source_age_seconds", sa.Float(), nullable=True),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["prediction_id"], ["predictions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("prediction_id", "output_path", name="uq_output_files_prediction_path"),
    )
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.create_index("ix_output_files_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_output_files_model_created", ["model", "created_at", "id"], unique=False)
        batch_op.create_index("ix_output_files_queue", ["status", "available_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_output_files_source_url"), ["source_url"], unique=False)

    op.create_table(
        "source_urls",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("output_file_id", sa.BigInteger(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["output_file_id"], ["output_files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("output_file_id", "url", name="uq_source_urls_file_url"),
    )
    with op.batch_alter_table("source_urls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_source_urls_url"), ["url"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("source_urls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_source_urls_url"))

    op.drop_table("source_urls")
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_output_files_source_url"))
        batch_op.drop_index("ix_output_files_queue")
        batch_op.drop_index("ix_output_files_model_created")
        batch_op.drop_index("ix_output_files_created")

    op.drop_table("output_files")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_predictions_rerun_of"))
        batch_op.drop_index(batch_op.f("ix_predictions_model"))
        batch_op.drop_index(batch_op.f("ix_predictions_created_at"))

    op.drop_table("predictions")
    op.drop_table("checkpoints")
