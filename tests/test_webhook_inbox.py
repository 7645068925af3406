"""Issue 17, item 8: `cachelayer serve` acknowledges a verified delivery after one write
(the de-duplication row holding the body) and records and queues it from that inbox in the
background, resuming after a crash; the library's `handle_webhook` stays synchronous."""

from __future__ import annotations

import json
import signal

import httpx
import pytest
from serving import wait_for
from sqlalchemy import text

from cachelayer.catalog.db import make_engine
from cachelayer.catalog.server_state import ServerState
from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


def _post(server, body: bytes, headers: dict[str, str], timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{server.url}/webhooks/replicate", content=body, headers=headers, timeout=timeout)


def _stored(layer, pid: str) -> bool:
    files = layer.catalog.files_of(pid)
    return bool(files) and all(f.status == "stored" for f in files)


def test_ack_needs_one_write_and_a_crash_before_recording_loses_nothing(
    served, replicate_simulator, make_layer, catalog_url
):
    if not catalog_url.startswith("postgresql"):
        pytest.skip("holds a PostgreSQL table lock")
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/inbox", {"n": 1}, [File(b"one", filename="a.txt")])
    body = json.dumps(sim.prediction(pid)).encode()
    layer = make_layer()
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)

    blocker = make_engine(catalog_url).connect()
    blocker.execute(text("LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE"))  # recording must wait
    try:
        headers = sim.sign_webhook(body)
        resp = _post(server, body, headers)
        assert resp.status_code == 200, resp.text  # answered while recording is impossible
        assert resp.json()["inbox"] is True
        assert ServerState(layer.engine).inbox() == [headers["webhook-id"]]
        server.stop(signal.SIGKILL)  # the process dies before it recorded anything
    finally:
        blocker.rollback()
        blocker.close()
    assert layer.catalog.get_prediction(pid) is None

    again = served("--workers", "1", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    wait_for(lambda: _stored(layer, pid), what="the delivery acted on after the restart")
    assert ServerState(layer.engine).inbox() == []
    replay = _post(again, body, headers)  # Replicate's retry of the same delivery
    assert replay.status_code == 200 and replay.json()["duplicate"] is True


def test_the_inbox_keeps_the_order_of_events(served, replicate_simulator, make_layer):
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/inbox", {"n": 2}, File(b"two", filename="b.txt"))
    finished = sim.prediction(pid)
    started = {**finished, "status": "processing", "output": None, "completed_at": None}
    server = served("--workers", "1", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    for snapshot in (started, finished, started):  # the last one arrives late
        raw = json.dumps(snapshot).encode()
        assert _post(server, raw, sim.sign_webhook(raw)).status_code == 200
    wait_for(lambda: _stored(layer, pid), what="the file stored")
    wait_for(lambda: ServerState(layer.engine).inbox() == [], what="the inbox drained")
    assert layer.catalog.get_prediction(pid).status == "succeeded"


def test_handle_webhook_stays_synchronous_for_library_users(make_layer, replicate_simulator):
    sim = replicate_simulator
    pid = sim.seed_prediction(
        "acme/inbox", {"n": 3}, [File(b"x", filename="c.txt"), File(b"y", filename="d.txt")]
    )
    body = json.dumps(sim.prediction(pid)).encode()
    layer = make_layer(webhook_secret=sim.webhook_secret)
    headers = sim.sign_webhook(body)

    outcome = layer.handle_webhook(headers, body)

    assert outcome.duplicate is False and outcome.queued == 2 and not outcome.inbox
    assert [f.status for f in layer.catalog.files_of(pid)] == ["pending", "pending"]
    assert ServerState(layer.engine).inbox() == []  # acted on, not left in the inbox
    assert layer.handle_webhook(headers, body).duplicate is True
