"""Issue 17, item 8: on PostgreSQL a webhook is acknowledged from the event loop, on
connections of its own (``cachelayer.catalog.async_deliveries``): the copy threads holding
every connection of the catalog's pool (as they do under load) cannot hold up an
acknowledgement, and a redelivery is still recognised. Before, the acknowledgement waited
for a pooled connection (``pool_timeout``, 30 s) and then answered 503."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from cachelayer.catalog.server_state import ServerState
from cachelayer.server import create_app
from cachelayer.testing.simulator import File


def test_acks_on_postgresql_need_no_connection_of_the_catalogs_pool(
    make_layer, replicate_simulator, catalog_url
):
    if not catalog_url.startswith("postgresql"):
        pytest.skip("SQLite acknowledges in a thread (one writer)")
    sim = replicate_simulator
    layer = make_layer(webhook_secret=sim.webhook_secret)
    bodies = []
    for n in range(3):
        pid = sim.seed_prediction("acme/ackloop", {"n": n}, File(f"f{n}".encode(), filename="a.txt"))
        bodies.append(json.dumps(sim.prediction(pid)).encode())
    app = create_app(layer, workers=0)
    with TestClient(app) as client:
        first = sim.sign_webhook(bodies[0])
        assert client.post("/webhooks/replicate", content=bodies[0], headers=first).status_code == 200
        pool = layer.engine.pool
        held = [layer.engine.connect() for _ in range(pool.size() + pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            for body in bodies[1:]:
                headers = sim.sign_webhook(body)
                resp = client.post("/webhooks/replicate", content=body, headers=headers)
                assert resp.status_code == 200, resp.text
                assert resp.json()["inbox"] is True
                again = client.post("/webhooks/replicate", content=body, headers=headers)
                assert again.status_code == 200 and again.json()["duplicate"] is True
        finally:
            for conn in held:
                conn.close()
    state = ServerState(layer.engine)
    assert state.delivery_count() == 3
