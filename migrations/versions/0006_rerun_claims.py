"""rerun claims get their own table: ``rerun_claims``

Until now a claim on rerunning a prediction was a ``checkpoints`` row named
``rerun:<prediction id>`` with its owner, ``claimed_at`` (ISO 8601) and ``rerun_id`` in the
JSON ``state``. Upgrade creates ``rerun_claims`` (prediction id, owner, claimed at, rerun
id) and moves those rows into it; downgrade moves them back.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cachelayer.catalog.types import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PREFIX = "rerun:"
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
_checkpoints = sa.table(
    "checkpoints",
    sa.column("name", sa.String()),
    sa.column("cursor", sa.Text()),
    sa.column("state", _JSON),
    sa.column("updated_at", UTCDateTime()),
)
_claims = sa.table(
    "rerun_claims",
    sa.column("prediction_id", sa.String()),
    sa.column("owner", sa.String()),
    sa.column("claimed_at", UTCDateTime()),
    sa.column("rerun_id", sa.String()),
)
_OLD_CLAIMS = _checkpoints.c.name.like(f"{_PREFIX}%")


def _claimed_at(state: dict[str, Any], updated_at: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(state["claimed_at"]))
    except (KeyError, ValueError):
        return updated_at


def upgrade() -> None:
    op.create_table(
        "rerun_claims",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rerun_id", sa.String(64), nullable=True),
    )
    conn = op.get_bind()
    rows = conn.execute(sa.select(_checkpoints).where(_OLD_CLAIMS)).all()
    moved = [
        {
            "prediction_id": row.name[len(_PREFIX) :],
            "owner": str((row.state or {}).get("owner") or "")[:64],
            "claimed_at": _claimed_at(row.state or {}, row.updated_at),
            "rerun_id": (row.state or {}).get("rerun_id"),
        }
        for row in rows
    ]
    if moved:
        conn.execute(_claims.insert(), moved)
    conn.execute(_checkpoints.delete().where(_OLD_CLAIMS))


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(_claims)).all()
    back = [
        {
            "name": f"{_PREFIX}{row.prediction_id}",
            "cursor": None,
            "state": {
                "owner": row.owner,
                "claimed_at": row.claimed_at.isoformat(),
                **({"rerun_id": row.rerun_id} if row.rerun_id else {}),
            },
            "updated_at": row.claimed_at,
        }
        for row in rows
    ]
    if back:
        conn.execute(_checkpoints.insert(), back)
    op.drop_table("rerun_claims")
