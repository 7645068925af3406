"""serve's webhook inbox: a delivery's body is kept until it is acted on

``webhook_deliveries`` gains ``body`` (the verified raw body, cleared once acted on),
``processed_at`` (when the delivery was acted on; ``NULL``: still in the inbox) and
``error`` (why it could not be). Deliveries remembered before this revision were acted on
when received, so they get ``processed_at = received_at``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.execute("UPDATE webhook_deliveries SET processed_at = received_at")
    op.create_index("ix_webhook_deliveries_processed_at", "webhook_deliveries", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_processed_at", table_name="webhook_deliveries")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_column("error")
        batch_op.drop_column("processed_at")
        batch_op.drop_column("body")
