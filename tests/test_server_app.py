"""`cachelayer serve` as a process: SIGTERM with copies in flight, health, metrics, the click
command, and the app mounted inside another ASGI app."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from serving import serve_env, wait_for

from cachelayer.server.command import serve_command
from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


MB = 1024 * 1024


def _signed_post(sim, server, data) -> httpx.Response:
    body = json.dumps(data).encode()
    return httpx.post(f"{server.url}/webhooks/replicate", content=body, headers=sim.sign_webhook(body))


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 (a server still starting refuses connections)."""
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _metrics(server) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{server.url}/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("cachelayer_"), family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_sigterm_releases_files_in_flight_and_exits_cleanly(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    big = File(size=60 * MB, seed=5, content_type="video/mp4", filename="big.mp4")
    pid = sim.seed_prediction("acme/film", {}, big)
    server = served("--workers", "1", "--grace", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()
    assert _signed_post(sim, server, sim.prediction(pid)).status_code == 200

    wait_for(layer.catalog.queue.lease_owners, what="the copy to be claimed")
    assert server.stop(signal.SIGTERM) == 0

    assert layer.catalog.queue.lease_owners() == []  # released, not left to lapse
    (row,) = layer.catalog.files_of(pid)
    assert row.status in ("pending", "stored")
    assert "released 1 file(s) in flight" in server.output() or row.status == "stored"
    layer.work(once=True)
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "stored" and row.sha256 == big.sha256()


def test_metrics_count_copies_webhooks_and_gateway_requests(make_layer, served, replicate_simulator):
    sim = replicate_simulator
    out = File(b"x" * 12345, content_type="image/png", filename="m.png")
    pid = sim.seed_prediction("acme/painter", {}, [out])
    server = served("--workers", "2", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer(url_mode="gateway", gateway_url=server.url)
    assert _signed_post(sim, server, sim.prediction(pid)).status_code == 200
    assert httpx.post(f"{server.url}/webhooks/replicate", content=b"{}").status_code == 400
    (row,) = wait_for(
        lambda: [f for f in layer.catalog.files_of(pid) if f.status == "stored"], what="the copy"
    )
    url = layer.durable_url(row)
    assert httpx.get(url).status_code in (302, 307)
    assert httpx.get(url + "x").status_code == 403

    m = wait_for(lambda: (m := _metrics(server))[("cachelayer_copied_files_total", ())] == 1 and m)
    assert m[("cachelayer_copied_bytes_total", ())] == 12345
    assert m[("cachelayer_files_stored", ())] == 1
    assert m[("cachelayer_stored_bytes", ())] == 12345
    assert m[("cachelayer_queue_depth", ())] == 0
    assert m[("cachelayer_catalog_up", ())] == 1
    assert m[("cachelayer_files", (("status", "pending"),))] == 0
    assert m[("cachelayer_webhook_deliveries_total", (("outcome", "queued"),))] == 1
    assert m[("cachelayer_webhook_rejections_total", (("reason", "missing_headers"),))] == 1
    assert m[("cachelayer_gateway_requests_total", (("status", "302"),))] == 1
    assert m[("cachelayer_gateway_requests_total", (("status", "403"),))] == 1
    assert m[("cachelayer_gateway_request_seconds_count", ())] == 2
    health = httpx.get(f"{server.url}/healthz").json()
    assert health == {"status": "ok", "catalog": "ok", "workers": "running", "sweep": None}


def test_healthz_answers_503_when_the_catalog_is_gone(request, served, catalog_url):
    if not catalog_url.startswith("postgresql"):
        pytest.skip("drops the PostgreSQL database under the server")
    server = served("--workers", "0")
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    request.getfixturevalue("_cachelayer_postgres_admin").drop_database(catalog_url)
    resp = httpx.get(f"{server.url}/healthz")
    assert resp.status_code == 503 and resp.json()["status"] == "unavailable"
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.status_code == 200 and "cachelayer_catalog_up 0.0" in metrics.text


def test_serve_command_reports_bad_settings_in_one_line(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("CACHELAYER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CACHELAYER_HOME", str(tmp_path))
    monkeypatch.setenv("CACHELAYER_URL_MODE", "gateway")
    result = CliRunner().invoke(serve_command, ["--port", "0"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "cachelayer: error: CACHELAYER_URL_MODE=gateway needs CACHELAYER_GATEWAY_URL (where serve is reached)"
    ]
    assert "--workers" in CliRunner().invoke(serve_command, ["--help"]).output


def test_serve_refuses_a_busy_port(tmp_path, catalog_url):
    if not catalog_url.startswith("sqlite"):
        pytest.skip("one backend is enough")
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAYER_")}
        env.update(CACHELAYER_HOME=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "cachelayer.server", "--port", str(port), "--workers", "0"],
            env=env,
            cwd=tmp_path,  # not the checkout: `-m` would import its sources, not the install
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"cachelayer: error: cannot listen on 127.0.0.1:{port}")
    )


def test_the_app_mounts_inside_another_asgi_app(
    make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path
):
    """The README's mounting example: gateway and webhooks under /cachelayer of a host app
    whose lifespan starts the copy workers."""
    sim = replicate_simulator
    pid = sim.seed_prediction(
        "acme/painter", {}, File(b"mounted!", content_type="text/plain", filename="m.txt")
    )
    make_layer().catalog  # noqa: B018
    script = tmp_path / "host_app.py"
    script.write_text(
        textwrap.dedent(
            """
            import contextlib, socket, sys
            import uvicorn
            from starlette.applications import Starlette
            from starlette.responses import PlainTextResponse
            from starlette.routing import Mount, Route
            from cachelayer.server import create_app

            cachelayer_app = create_app(workers=2)

            @contextlib.asynccontextmanager
            async def lifespan(app):
                cachelayer_app.state.cachelayer.start_workers()  # a mounted app's lifespan does not run
                yield
                cachelayer_app.state.cachelayer.stop_workers()

            async def home(request):
                return PlainTextResponse("host app")

            app = Starlette(routes=[Route("/", home), Mount("/cachelayer", cachelayer_app)], lifespan=lifespan)

            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            print("listening on http://127.0.0.1:%d" % sock.getsockname()[1], flush=True)
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
            """
        )
    )
    env = serve_env(sim, s3_server, s3_bucket, catalog_url, CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    proc = subprocess.Popen(
        [sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = proc.stdout.readline()
        base = line.split("listening on ")[1].strip()
        wait_for(lambda: _answers(f"{base}/cachelayer/healthz"), what="the host app")
        assert httpx.get(f"{base}/").text == "host app"
        body = json.dumps(sim.prediction(pid)).encode()
        resp = httpx.post(
            f"{base}/cachelayer/webhooks/replicate", content=body, headers=sim.sign_webhook(body)
        )
        assert resp.status_code == 200
        layer = make_layer(url_mode="gateway", gateway_url=f"{base}/cachelayer")
        (row,) = wait_for(
            lambda: [f for f in layer.catalog.files_of(pid) if f.status == "stored"], what="copy"
        )
        assert httpx.get(layer.durable_url(row), follow_redirects=True).content == b"mounted!"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
