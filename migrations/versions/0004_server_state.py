"""server state and webhook deliveries for ``cachelayer serve``; index output_files.key

* ``server_state``: named values shared by every process of a catalog (the generated
  gateway secret);
* ``webhook_deliveries``: ``webhook-id`` of each accepted webhook, so redeliveries are
  acknowledged without acting twice;
* ``ix_output_files_key``: the gateway finds a file by its object key on every cache miss.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "server_state",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("webhook_id", sa.String(255), primary_key=True),
        sa.Column("prediction_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"])
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.create_index("ix_output_files_key", ["key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.drop_index("ix_output_files_key")
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("server_state")
