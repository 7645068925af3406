"""Seeding the account's history: predictions that ran before the test started."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cachelayer.testing.simulator.catalogue import Catalogue
from cachelayer.testing.simulator.clock import to_epoch
from cachelayer.testing.simulator.lifecycle import STATUSES, TERMINAL_STATUSES, Prediction, build_tree
from cachelayer.testing.simulator.predictions import Predictions
from cachelayer.testing.simulator.state import SimState, new_id

__all__ = ["seed_prediction"]


def seed_prediction(
    state: SimState,
    catalogue: Catalogue,
    predictions: Predictions,
    model: str,
    input: dict[str, Any] | None = None,
    output: Any = None,
    *,
    source: str = "api",
    status: str = "succeeded",
    created_at: dt.datetime | float | None = None,
    completed_at: dt.datetime | float | None = None,
    error: str | None = None,
    data_removed: bool = False,
    version_id: str | None = None,
    logs: str | None = None,
    prediction_id: str | None = None,
) -> str:
    """See :meth:`ReplicateSimulator.seed_prediction`."""
    if source not in ("api", "web"):
        raise ValueError("source must be 'api' or 'web'")
    if status not in STATUSES:
        raise ValueError(f"bad status {status!r}")
    model_name, _, vid = model.partition(":")
    vid = vid or version_id or ""
    with state.lock:
        version = catalogue.history_version(model_name, vid)
        now = state.clock.time()
        created = to_epoch(created_at) if created_at is not None else None
        completed = to_epoch(completed_at) if completed_at is not None else None
        if status in TERMINAL_STATUSES:
            if created is None:
                completed = now if completed is None else completed
                created = completed - 1.0
            elif completed is None:
                completed = created + 1.0
        elif created is None:
            created = now
        assert created is not None
        tree, files = build_tree(output)
        p = Prediction(
            id=prediction_id or new_id(),
            seq=predictions.next_seq(),
            model=model_name,
            version=catalogue.reported_version(version),
            input=dict(input or {}),
            source=source,
            created_at=created,
            duration=0.0,
            tree=tree,
            slots=[],
            final_status=status,
            error=error,
            iterator=version.iterator,
            logs=logs,
            fixed_status=status,
            started_at=(
                None
                if status in ("starting", "aborted")
                else created + min(0.1, (completed - created) / 2)
                if completed is not None
                else created
            ),
            completed_at=completed,
        )
        expires = (completed if completed is not None else now) + state.settings.url_ttl
        predictions.add(p, files, expires)
        if data_removed:
            predictions.remove(p)
        return p.id
