"""mirror copies: ``file_copies``

One row per output file and mirror store (``CACHELAYER_MIRROR_URLS``): the copy's store,
key, sha256, size and its place in the mirror queue (status, attempts, error, backoff,
lease). The primary copy stays on ``output_files``. Upgrade creates the table (empty: the
mirror workers queue every stored file of a catalog the first time they run); downgrade
drops it.

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "file_copies",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column(
            "file_id",
            sa.BigInteger(),
            sa.ForeignKey("output_files.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("store", sa.String(255), nullable=False),
        sa.Column("key", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("available_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("file_id", "store", name="uq_file_copies_file_store"),
    )
    op.create_index("ix_file_copies_queue", "file_copies", ["status", "available_at"])


def downgrade() -> None:
    op.drop_index("ix_file_copies_queue", table_name="file_copies")
    op.drop_table("file_copies")
