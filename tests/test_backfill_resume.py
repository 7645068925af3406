"""Backfill and worker findings of issue 8 (items 3, 6, 9, 12) and issue 9 item 7, against the
simulator, moto S3 and both catalogs."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone

import pytest
from hostile_net import body_server

from cachelayer import ReplicateConfigError
from cachelayer.scan import ScanFilter
from cachelayer.testing.simulator import File

NOW = datetime.now(timezone.utc)


def seed(sim, n: int, *, start: int = 0, minutes_ago: float = 5.0, source: str = "web"):
    made = []
    for i in range(start, start + n):
        created = NOW - timedelta(minutes=minutes_ago, seconds=i)
        made.append(
            sim.seed_prediction(
                "acme/painter",
                input={"i": i},
                output=[File(size=500, seed=i, filename=f"o{i}.png")],
                source=source,
                created_at=created,
                completed_at=created + timedelta(seconds=1),
            )
        )
    return made


def stored_ids(layer) -> set[str]:
    return {f.prediction_id for f in layer.catalog.iter_files(status="stored")}


def test_foreign_next_link_in_a_checkpoint_never_gets_the_token(make_layer, replicate_simulator):
    layer = make_layer()
    with body_server(b'{"results": [], "next": null}') as hostile:
        name = ScanFilter().checkpoint_name()
        layer.catalog.checkpoints.save(
            name, hostile.url("/v1/predictions?cursor=x"), {"predictions_scanned": 3}
        )
        with pytest.raises(ReplicateConfigError, match="pagination link"):
            layer.backfill()
        assert hostile.seen == []


def test_resumed_backfill_takes_predictions_created_since_the_interrupted_run(
    make_layer, replicate_simulator
):
    sim = replicate_simulator
    old = seed(sim, 250, minutes_ago=30)  # more than one page of the listing
    layer = make_layer()
    # An interrupted run: it scanned the first page and saved its checkpoint, then died.
    first, cursor = layer.api.list_page(ScanFilter().first_page())
    assert cursor, "the history must span several pages"
    name = ScanFilter().checkpoint_name()
    newest = max(p.created_at for p in first)
    for p in first:
        layer.enqueue(p)
    layer.catalog.checkpoints.save(
        name, cursor, {"predictions_scanned": len(first), "complete": False, "newest": newest.isoformat()}
    )
    new = seed(sim, 5, start=1000, minutes_ago=1)  # created while the run was down
    summary = layer.backfill()
    assert summary.resumed
    assert stored_ids(layer) >= set(old) | set(new)


def test_worker_once_takes_over_a_dead_local_worker_before_exiting(make_layer, replicate_simulator):
    sim = replicate_simulator
    pids = seed(sim, 3)
    layer = make_layer()
    for pid in pids:
        layer.enqueue(sim.prediction(pid))
    # A worker of this host that was killed (its pid no longer exists) holds one file.
    dead = subprocess_pid_that_exited()
    owner = f"{socket.gethostname()[:30]}:{dead}:deadbeef"
    row = layer.catalog.files_of(pids[0])[0]
    assert layer.catalog.queue.claim(row.id, owner, 3600) is not None
    summary = layer.work(once=True, concurrency=2)
    assert stored_ids(layer) == set(pids)
    assert summary.files_leased_elsewhere == 0


def test_worker_once_waits_for_a_lapsing_foreign_lease(make_layer, replicate_simulator):
    sim = replicate_simulator
    pids = seed(sim, 2)
    layer = make_layer()
    for pid in pids:
        layer.enqueue(sim.prediction(pid))
    row = layer.catalog.files_of(pids[0])[0]
    assert layer.catalog.queue.claim(row.id, "other-host:1:cafe", 1.5) is not None  # another machine, gone
    summary = layer.work(once=True, concurrency=2)
    assert stored_ids(layer) == set(pids)
    assert summary.files_leased_elsewhere == 0


def test_retry_failed_requeues_after_a_setting_is_fixed(make_layer, replicate_simulator):
    sim = replicate_simulator
    pids = seed(sim, 2)
    wrong = make_layer(allowed_hosts="cdn.example.com")  # a mistyped allow-list
    for pid in pids:
        wrong.enqueue(sim.prediction(pid))
    first = wrong.work(once=True)
    assert first.files_failed == 2
    fixed = make_layer()
    assert fixed.work(once=True).files_stored == 0  # failed files stay failed...
    summary = fixed.work(once=True, retry_failed=True)  # ...until asked
    assert summary.files_requeued == 2 and summary.files_stored == 2
    assert stored_ids(fixed) == set(pids)


def test_source_api_is_filtered_here_and_web_scans_warn_past_14_days(make_layer, replicate_simulator):
    sim = replicate_simulator
    api = seed(sim, 3, source="api", minutes_ago=2)
    web = seed(sim, 2, start=50, source="web", minutes_ago=2)
    layer = make_layer()
    summary = layer.backfill(source="api")
    assert stored_ids(layer) == set(api)
    listing = [p for (m, p, _s) in sim.requests if m == "GET" and p.startswith("/v1/predictions?")]
    assert not any("source=api" in p for p in listing)
    summary = layer.backfill(source="web", since=NOW - timedelta(days=30))
    assert any("14 days" in w for w in summary.warnings)
    assert stored_ids(layer) == set(api) | set(web)


def subprocess_pid_that_exited() -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_a_relative_window_keeps_its_checkpoint_across_runs():
    first = ScanFilter.build(since=timedelta(hours=6), models=["b/b", "a/a"])
    later = ScanFilter.build(since=timedelta(hours=6), models=["a/a", "b/b"])
    assert first.checkpoint_name() == later.checkpoint_name()
    assert ScanFilter.build(since=timedelta(hours=7)).checkpoint_name() != first.checkpoint_name()
    absolute = ScanFilter.build(since=NOW - timedelta(hours=6))
    assert absolute.checkpoint_name() != first.checkpoint_name()


def test_a_prediction_the_catalog_refuses_is_counted_and_the_scan_goes_on(make_layer, replicate_simulator):
    sim = replicate_simulator
    good = seed(sim, 3)
    created = NOW - timedelta(minutes=5, seconds=30)
    sim.seed_prediction(
        "acme/" + "m" * 1100,  # a model name longer than the catalog can record (1,024 bytes)
        input={},
        output=[File(b"x", filename="x.png")],
        source="web",
        created_at=created,
        completed_at=created,
    )
    layer = make_layer()
    summary = layer.backfill()
    # failures are grouped by a human reason (errors.failure_reason), not by class
    ((reason, count),) = summary.failures.items()
    assert summary.predictions_failed == 1 and count == 1 and reason.startswith("cannot record prediction")
    assert summary.exit_code == 1
    assert stored_ids(layer) == set(good)
