"""index output_files (status, created_at, id) for status-filtered listings

``cachelayer ls --status ...`` pages newest first with a keyset cursor; without this
index a status filter either sorted every matching row per page (SQLite without ANALYZE
statistics picked the queue index: 4.4 s per page of ``--status stored`` at 1,000,000
rows) or intersected two bitmaps and sorted (PostgreSQL: 27 ms for a deep page of
``--status pending``). With it each page is one backward range scan (about 2 ms on both);
see docs/BENCHMARKS.md, "Catalog at 1,000,000 rows (issue 4)".

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-20
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.create_index("ix_output_files_status_created", ["status", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("output_files", schema=None) as batch_op:
        batch_op.drop_index("ix_output_files_status_created")
