"""`cachelayer serve` receiving Replicate webhooks, as a real process over a socket.

The simulator sends real Standard-Webhooks-signed POSTs; forged, stale, tampered and
replayed deliveries are sent by the tests with the simulator's signer.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import datetime, timezone

import httpx
import pytest
from serving import files_stored, post_webhook, wait_for

from cachelayer.catalog.server_state import ServerState
from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


MB = 1024 * 1024


def test_simulator_webhooks_are_verified_recorded_and_copied(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    image = File(secrets.token_bytes(50_000), content_type="image/png", filename="out-0.png")
    big = File(size=3 * MB, seed=7, content_type="video/mp4", filename="clip.mp4")
    sim.add_model("acme/painter", outputs={"image": image, "clips": [big]})
    server = served("--workers", "2")  # no CACHELAYER_WEBHOOK_SECRET: read from the API
    layer = make_layer(webhook_url=f"{server.url}/webhooks/replicate")

    pred = layer.create("acme/painter", {"prompt": "a cat"})

    assert layer.catalog.get_prediction(pred.id) is not None  # recorded at once
    wait_for(
        lambda: any(d.event == "completed" and d.status == 200 for d in sim.webhook_deliveries),
        what="the completed webhook to be acknowledged",
    )
    files = wait_for(lambda: files_stored(layer, pred.id, 2), what="both files stored")
    by_path = {f.output_path: f for f in files}
    assert layer.store.open(by_path["/image"].key).read() == image.read()
    assert by_path["/clips/0"].sha256 == big.sha256() and by_path["/clips/0"].size == big.size
    assert layer.catalog.get_prediction(pred.id).status == "succeeded"
    assert ("GET", "/v1/webhooks/default/secret", 200) in sim.requests
    delivered = sim.webhook_deliveries
    assert [d.event for d in delivered] == ["completed"]  # webhook_events_filter=["completed"]
    assert ServerState(layer.engine).delivery_count() == 1
    # the simulator's prediction asked for exactly that webhook
    assert sim.prediction(pred.id)["webhook"] == f"{server.url}/webhooks/replicate"


def test_forged_stale_tampered_and_replayed_deliveries_are_refused_or_ignored(
    make_layer, served, replicate_simulator
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"\x89PNG fake", filename="a.png"))
    pid = sim.seed_prediction("acme/painter", {"prompt": "x"}, File(b"\x89PNG fake", filename="a.png"))
    body = json.dumps(sim.prediction(pid)).encode()
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    other_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    forged_signer = type(sim)(webhook_secret=other_secret)  # never started: only signs
    now = int(time.time())
    refused = {
        "missing_headers": (body, {}),
        "forged": (body, forged_signer.sign_webhook(body)),
        "stale": (body, sim.sign_webhook(body, timestamp=now - 6 * 60)),
        "future": (body, sim.sign_webhook(body, timestamp=now + 6 * 60)),
        "tampered": (body.replace(b'"prompt": "x"', b'"prompt": "y"'), sim.sign_webhook(body)),
        "bad_header": (body, {**sim.sign_webhook(body), "webhook-signature": "v1"}),
        "bad_timestamp": (body, {**sim.sign_webhook(body), "webhook-timestamp": "soon"}),
    }
    for name, (payload, headers) in refused.items():
        resp = post_webhook(server, payload, headers)
        assert resp.status_code in (400, 401), (name, resp.status_code, resp.text)
    assert layer.catalog.get_prediction(pid) is None  # nothing was acted on
    assert post_webhook(server, b"not json", sim.sign_webhook(b"not json")).status_code == 400

    headers = sim.sign_webhook(body)
    first = post_webhook(server, body, headers)
    assert first.status_code == 200, first.text
    assert first.json()["duplicate"] is False and first.json()["inbox"] is True
    rows = wait_for(lambda: layer.catalog.files_of(pid), what="the file queued from the inbox")
    replay = post_webhook(server, body, headers)
    assert replay.status_code == 200 and replay.json()["duplicate"] is True
    assert layer.catalog.files_of(pid) == rows
    assert ServerState(layer.engine).delivery_count() == 1

    queued = 'cachelayer_webhook_deliveries_total{outcome="queued"} 1.0'
    metrics = wait_for(lambda: queued in (text := httpx.get(f"{server.url}/metrics").text) and text)
    assert 'cachelayer_webhook_rejections_total{reason="bad_signature"} 3.0' in metrics
    assert 'cachelayer_webhook_rejections_total{reason="stale"} 2.0' in metrics
    assert 'cachelayer_webhook_rejections_total{reason="missing_headers"} 1.0' in metrics
    assert 'cachelayer_webhook_rejections_total{reason="malformed"} 2.0' in metrics
    assert 'cachelayer_webhook_deliveries_total{outcome="duplicate"} 1.0' in metrics


def test_a_60_mb_output_is_acknowledged_before_its_copy_finishes(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    big = File(size=60 * MB, seed=3, content_type="video/mp4", filename="long.mp4")
    pid = sim.seed_prediction("acme/film", {"prompt": "waves"}, big)
    body = json.dumps(sim.prediction(pid)).encode()
    server = served("--workers", "1", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    resp = post_webhook(server, body, sim.sign_webhook(body))
    acked_at = datetime.now(timezone.utc)

    assert resp.status_code == 200, resp.text
    assert resp.json()["inbox"] is True and resp.json()["prediction_id"] == pid
    (stored,) = wait_for(lambda: files_stored(layer, pid, 1), timeout=180, what="the 60 MB copy")
    assert stored.stored_at > acked_at  # the answer came before the copy was done
    assert stored.size == big.size and stored.sha256 == big.sha256()


def test_start_events_record_and_never_undo_a_finished_prediction(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    out = File(b"done", filename="x.txt", content_type="text/plain")
    pid = sim.seed_prediction("acme/writer", {"n": 1}, out)
    finished = sim.prediction(pid)
    started = {**finished, "status": "processing", "output": None, "completed_at": None}
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    for snapshot, status in ((started, "processing"), (finished, "succeeded"), (started, "succeeded")):
        raw = json.dumps(snapshot).encode()
        assert post_webhook(server, raw, sim.sign_webhook(raw)).status_code == 200
        wait_for(lambda: ServerState(layer.engine).inbox() == [], what="the inbox to be drained")
        assert layer.catalog.get_prediction(pid).status == status


@pytest.mark.parametrize("status", ["failed", "canceled", "aborted"])
def test_unsuccessful_predictions_are_recorded_as_such(make_layer, served, replicate_simulator, status):
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/broken", {"n": 1}, None, status="failed", error="CUDA out of memory")
    data = {**sim.prediction(pid), "status": status}
    raw = json.dumps(data).encode()
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    resp = post_webhook(server, raw, sim.sign_webhook(raw))

    assert resp.status_code == 200 and resp.json()["inbox"] is True
    rec = wait_for(lambda: layer.catalog.get_prediction(pid), what="the prediction recorded from the inbox")
    assert rec.status == status and rec.error == "CUDA out of memory"
