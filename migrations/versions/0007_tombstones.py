"""deleted predictions leave a tombstone: table ``tombstones``

``cachelayer delete`` and ``prune`` (issue 18 items 2 and 3) remove a prediction's objects
and keep one row per deleted prediction: id, model, reason, when the delete was asked
(``requested_at``) and finished (``deleted_at``, ``NULL`` while under way), files and bytes
freed. File rows of a deleted prediction keep their place with status ``deleting`` /
``deleted`` (``output_files.status`` is a ``VARCHAR(16)``: no DDL). Downgrade drops the
table (and with it every record that a prediction was deleted).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tombstones",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_tombstones_deleted_at", "tombstones", ["deleted_at"])


def downgrade() -> None:
    op.drop_index("ix_tombstones_deleted_at", table_name="tombstones")
    op.drop_table("tombstones")
