"""Checkpoints keyed by what the filter means (issue 8.13): ``--since 6h`` finds the same
checkpoint on every run, whatever time it resolves to; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cachelayer.catalog import checkpoint_name
from cachelayer.catalog.checkpoints import canonical_spec
from cachelayer.timeparse import parse_duration


def _spec(since, *, models=("acme/a",), until=None) -> dict:
    return {"since": since, "until": until, "models": sorted(models), "source": None, "statuses": []}


def test_names_follow_the_meaning_of_the_filter():
    six_hours = checkpoint_name("backfill", _spec(parse_duration("6h")))
    assert six_hours == checkpoint_name("backfill", _spec(parse_duration("360m")))
    assert six_hours == checkpoint_name("backfill", _spec(timedelta(days=0.25)))
    assert six_hours == checkpoint_name("backfill", dict(reversed(list(_spec(timedelta(hours=6)).items()))))
    assert six_hours != checkpoint_name("backfill", _spec(timedelta(hours=7)))
    assert six_hours != checkpoint_name("backfill", _spec(timedelta(hours=6), models=("acme/b",)))
    assert six_hours != checkpoint_name("scan", _spec(timedelta(hours=6)))
    # an absolute time is its own meaning; a naive one is UTC
    at = datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert checkpoint_name("backfill", _spec(at)) == checkpoint_name(
        "backfill", _spec(at.replace(tzinfo=None))
    )
    assert checkpoint_name("backfill", _spec(at)) != six_hours
    assert checkpoint_name("backfill", _spec(at)) == checkpoint_name(
        "backfill", _spec(at.astimezone(timezone(timedelta(hours=2))))
    )
    # stable across processes and versions: a checkpoint saved today is found tomorrow
    assert canonical_spec(_spec(timedelta(hours=6))) == (
        '{"models":["acme/a"],"since":{"ago_seconds":21600.0},"source":null,"statuses":[],"until":null}'
    )
    assert six_hours.startswith("backfill:") and len(six_hours) == len("backfill:") + 32
    assert checkpoint_name("backfill", "6h") != checkpoint_name("backfill", "7h")  # text works too
    with pytest.raises(TypeError):
        checkpoint_name("backfill", {"since": object()})
    with pytest.raises(ValueError):
        checkpoint_name("x" * 181, {})


def test_relative_window_resumes_across_runs(catalog):
    """Run 1 (``--since 6h``) is interrupted after a page; run 2, an hour later with the
    same ``--since 6h``, finds its cursor and state under the same name."""
    name = checkpoint_name("backfill", _spec(parse_duration("6h")))
    run1_started = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    assert catalog.checkpoints.load(name) is None
    state = {
        "window_since": (run1_started - timedelta(hours=6)).isoformat(),
        "newest_created_at": run1_started.isoformat(),
        "predictions_scanned": 100,
        "complete": False,
        "note": "odd \x00 text \ud800 kept",
    }
    catalog.checkpoints.save(name, "cD0yMDI2LTExLTIw\x00", state)

    later = checkpoint_name("backfill", _spec(parse_duration("6h")))  # run 2, resolved an hour later
    saved = catalog.checkpoints.load(later)
    assert saved is not None and saved.name == name
    assert saved.cursor == "cD0yMDI2LTExLTIw\x00" and saved.state == state
    assert saved.updated_at.tzinfo is not None
    # finishing run 2 replaces the checkpoint
    catalog.checkpoints.save(later, None, {**state, "complete": True})
    finished = catalog.checkpoints.load(name)
    assert finished is not None and (finished.cursor, finished.state) == (None, {**state, "complete": True})
    catalog.checkpoints.save(name, "next", {"n": 1})
    assert catalog.checkpoints.load(name).cursor == "next"
    assert catalog.checkpoints.delete(name) and not catalog.checkpoints.delete(name)
    assert catalog.checkpoints.load(name) is None
