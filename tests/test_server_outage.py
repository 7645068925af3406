"""`cachelayer serve` while what it depends on is down (issue 17 item 4): the gateway,
/healthz and /metrics answer 503 with ``Retry-After`` (never 500, never a traceback) while
the catalog (a private PostgreSQL cluster, stopped and restarted under it) or the store (a
private moto server, stopped) is gone, and SIGTERM ends within a bound of ``--grace``
with the catalog down, leaving its files to be taken over."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest
from serving import ServeProcess, layer_options, serve_env, wait_for

from cachelayer import CacheLayer, gateway_urls
from cachelayer.catalog.server_state import gateway_secret
from cachelayer.testing.s3server import MotoS3Server
from cachelayer.testing.simulator import File

MB = 1024 * 1024


@pytest.fixture
def procs() -> Iterator[list[ServeProcess]]:
    """Serve processes to stop afterwards; none may have answered 500 or printed a traceback."""
    started: list[ServeProcess] = []
    yield started
    for p in started:
        p.stop()
        out = p.output()
        assert "Traceback" not in out and '" 500 ' not in out, out


def _layer(sim, s3, bucket: str, database_url: str, **options) -> CacheLayer:
    return CacheLayer(**{**layer_options(sim, s3, bucket, database_url), **options})


def _migrate(layer: CacheLayer) -> None:
    with layer:
        layer.catalog  # noqa: B018 -- opening it migrates it (auto_migrate)


@pytest.fixture
def aws(monkeypatch, s3_server) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)


def _is_503_with_retry_after(resp: httpx.Response) -> bool:
    return resp.status_code == 503 and int(resp.headers["retry-after"]) > 0


def test_catalog_down_and_restarted_under_the_gateway_answers_503_never_500(
    own_postgres, replicate_simulator, s3_server, s3_bucket, tmp_path, aws, procs
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"pixels", filename="p.png"))
    # a budget far past any client's patience: only the route's own deadline answers in time
    env = serve_env(sim, s3_server, s3_bucket, own_postgres.url, CACHELAYER_DB_RETRY_SECONDS="600")
    _migrate(_layer(sim, s3_server, s3_bucket, own_postgres.url))
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    procs.append(server)
    layer = _layer(sim, s3_server, s3_bucket, own_postgres.url, url_mode="gateway", gateway_url=server.url)
    url = layer.run("acme/painter", {})
    assert httpx.get(url).status_code == 302
    secret = gateway_secret(layer.engine, None)
    layer.close()

    def unknown() -> str:  # a well-signed key never looked up before: the catalog is asked
        return gateway_urls.gateway_url(server.url, secret, f"missing/{secrets.token_hex(8)}.png")

    own_postgres.stop()
    gone = httpx.get(unknown(), timeout=60)
    assert _is_503_with_retry_after(gone), (gone.status_code, gone.text)
    assert _is_503_with_retry_after(httpx.head(unknown(), timeout=60))
    health = httpx.get(f"{server.url}/healthz", timeout=60)
    assert _is_503_with_retry_after(health) and health.json()["status"] == "unavailable"
    metrics = httpx.get(f"{server.url}/metrics", timeout=60)
    assert metrics.status_code == 200 and "cachelayer_catalog_up 0.0" in metrics.text

    own_postgres.start()
    assert wait_for(lambda: httpx.get(f"{server.url}/healthz", timeout=60).status_code == 200)
    assert httpx.get(unknown(), timeout=60).status_code == 404

    # a fast restart while GETs keep coming: each is waited out or answered 503, never 500
    statuses: list[int] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            statuses.append(httpx.get(unknown(), timeout=60).status_code)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        wait_for(lambda: len(statuses) >= 3, what="GETs before the restart")
        before = len(statuses)
        own_postgres.restart()
        wait_for(lambda: len(statuses) >= before + 3, what="GETs after the restart")
    finally:
        stop.set()
        asker.join(120)
    assert set(statuses) <= {404, 503}, statuses
    assert statuses[-1] == 404


def test_store_down_gateway_proxy_answers_503_with_retry_after(
    replicate_simulator, tmp_path, aws, procs, monkeypatch
):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=File(b"pixels" * 1000, filename="p.png"))
    s3 = MotoS3Server(log_path=tmp_path / "moto.log")
    try:
        s3.create_bucket("outage")
        catalog = f"sqlite:///{tmp_path / 'catalog.db'}"
        _migrate(_layer(sim, s3, "outage", catalog))
        env = serve_env(sim, s3, "outage", catalog, CACHELAYER_GATEWAY_PROXY="1")
        server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
        procs.append(server)
        layer = _layer(sim, s3, "outage", catalog, url_mode="gateway", gateway_url=server.url)
        url = layer.run("acme/painter", {})
        layer.close()
        assert httpx.get(url).content == b"pixels" * 1000
    finally:
        s3.stop()
    resp = httpx.get(url, headers={"range": "bytes=0-5"}, timeout=120)
    assert _is_503_with_retry_after(resp), (resp.status_code, resp.text)
    assert httpx.head(url).status_code == 200  # from the catalog: the store is not asked
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the catalog is fine


@pytest.mark.usefixtures("http_webhooks")
def test_sigterm_with_the_catalog_down_exits_within_the_grace_and_loses_nothing(
    own_postgres, replicate_simulator, s3_server, s3_bucket, tmp_path, aws, procs
):
    sim = replicate_simulator
    big = File(size=60 * MB, seed=5, content_type="video/mp4", filename="big.mp4")
    pid = sim.seed_prediction("acme/film", {}, big)
    layer = _layer(sim, s3_server, s3_bucket, own_postgres.url)
    env = serve_env(
        sim,
        s3_server,
        s3_bucket,
        own_postgres.url,
        CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret,
        CACHELAYER_DB_RETRY_SECONDS="600",
    )
    layer.catalog  # noqa: B018 -- migrates the catalog
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "1", "--grace", "3")
    procs.append(server)
    body = json.dumps(sim.prediction(pid)).encode()
    delivered = httpx.post(f"{server.url}/webhooks/replicate", content=body, headers=sim.sign_webhook(body))
    assert delivered.status_code == 200
    wait_for(layer.catalog.queue.lease_owners, what="the copy to be claimed")
    layer.close()

    own_postgres.stop()
    server.proc.terminate()  # SIGTERM
    try:
        server.proc.wait(30)  # ten times the grace: it must have ended by then
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running 30 s after SIGTERM with --grace 3:\n{server.output()}")
    assert server.proc.returncode == 0, server.output()

    own_postgres.start()
    layer = _layer(sim, s3_server, s3_bucket, own_postgres.url)
    try:
        (row,) = layer.catalog.files_of(pid)
        assert row.status in ("pending", "stored")  # in flight: its lease lapses, nothing lost

        def stored() -> bool:
            layer.work(once=True)
            return layer.catalog.files_of(pid)[0].status == "stored"

        wait_for(stored, what="the file taken over after its lease lapsed", interval=1)
        assert layer.catalog.files_of(pid)[0].sha256 == big.sha256()
    finally:
        layer.close()
