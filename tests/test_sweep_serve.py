"""`cachelayer serve` sweeping (issue 17.1, the acceptance test): predictions complete while
serve is down and every webhook delivery fails; serve started with a 2 s sweep interval
stores every file."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import run_cli
from serving import wait_for
from test_sweep import create_unheard, dead_webhook_url, stored

from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


def metric(server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def test_serve_stores_what_webhooks_missed_while_it_was_down(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    outputs = [File(b"a" * 5000, filename="a.png"), File(b"b" * 7000, filename="b.png")]
    sim.add_model("acme/painter", outputs=outputs)
    sim.add_model("acme/slow", outputs=outputs, duration=10)
    down = dead_webhook_url()  # where serve will not be listening
    layer = make_layer(webhook_url=down)
    unheard = [create_unheard(sim, "acme/painter", down) for _ in range(2)]
    created = layer.create("acme/slow", {"prompt": "recorded as starting"})
    assert layer.catalog.get_prediction(created.id).status == "starting"
    sim.advance(20)  # it finishes while serve is down
    wait_for(
        lambda: (
            sum(d.prediction_id == created.id for d in sim.webhook_deliveries) >= sim.webhook_max_attempts
        ),
        what="its webhook attempts to fail",
    )
    assert all(d.status is None for d in sim.webhook_deliveries)

    server = served("--workers", "2", "--sweep-interval", "2")

    for pid in [*unheard, created.id]:
        wait_for(lambda pid=pid: stored(layer, pid, 2), what=f"the files of {pid} stored")
    wait_for(lambda: metric(server, "cachelayer_sweep_recovered_files_total") == 6, what="6 files recovered")
    assert metric(server, 'cachelayer_sweep_runs_total{outcome="ok"}') >= 1
    assert metric(server, 'cachelayer_sweep_runs_total{outcome="failed"}') == 0
    health = httpx.get(f"{server.url}/healthz", timeout=10).json()
    assert health["sweep"]["last_ok_age_seconds"] >= 0
    wait_for(lambda: metric(server, 'cachelayer_sweep_runs_total{outcome="ok"}') >= 3, what="more passes")
    assert metric(server, "cachelayer_sweep_recovered_files_total") == 6  # nothing twice


def test_serve_without_a_sweep_and_a_bad_interval(served, cli_env):
    server = served("--workers", "0", "--sweep-interval", "0")
    assert httpx.get(f"{server.url}/healthz", timeout=10).json()["sweep"] is None
    assert metric(server, 'cachelayer_sweep_runs_total{outcome="ok"}') == 0
    bad = run_cli(cli_env, "serve", "--port", "0", "--sweep-interval", "-1")
    assert bad.returncode == 2, bad.stderr
    assert bad.stderr.startswith("cachelayer: error:") and "sweep_interval" in bad.stderr
    assert bad.stderr.count("\n") == 1
