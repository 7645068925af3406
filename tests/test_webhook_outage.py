"""Issue 17, item 4: the webhook route during a catalog outage answers 503 with
``Retry-After`` (Replicate retries it), never 500, never a traceback; nothing acknowledged
is lost. A real PostgreSQL cluster of our own is stopped and restarted under a real
`cachelayer serve`; a SQLite catalog is locked against writers by another process."""

from __future__ import annotations

import json
import sqlite3
import threading

import httpx
import pytest
from serving import ServeProcess, serve_env, wait_for

from cachelayer.catalog import Catalog
from cachelayer.catalog.db import make_engine, upgrade
from cachelayer.testing.simulator import File

pytestmark = pytest.mark.usefixtures("http_webhooks")


def _migrate(catalog_url: str) -> None:
    engine = make_engine(catalog_url)
    upgrade(engine)
    engine.dispose()


def _delivery(sim, n: int) -> tuple[str, bytes]:
    pid = sim.seed_prediction("acme/outage", {"n": n}, File(f"file {n}".encode(), filename="o.txt"))
    return pid, json.dumps(sim.prediction(pid)).encode()


def _post(server: ServeProcess, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{server.url}/webhooks/replicate", content=body, headers=headers, timeout=120)


def _recorded(catalog_url: str, pid: str) -> bool:
    engine = make_engine(catalog_url, retry_seconds=0)
    try:
        return Catalog(engine).get_prediction(pid) is not None
    except Exception:  # the cluster may still be starting
        return False
    finally:
        engine.dispose()


def test_postgresql_down_or_restarting_answers_503_and_loses_nothing(
    own_postgres, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    sim = replicate_simulator
    _migrate(own_postgres.url)
    env = serve_env(
        sim,
        s3_server,
        s3_bucket,
        own_postgres.url,
        CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret,
        CACHELAYER_DB_RETRY_SECONDS="2",
    )
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    try:
        pid, body = _delivery(sim, 0)
        assert _post(server, body, sim.sign_webhook(body)).status_code == 200

        own_postgres.stop()
        try:
            pid1, body1 = _delivery(sim, 1)
            down = _post(server, body1, sim.sign_webhook(body1))
            assert down.status_code == 503, down.text
            assert down.headers["retry-after"].isdigit()
            assert down.json()["error"] == "unavailable"
        finally:
            own_postgres.start()
        # Replicate's retry of the refused delivery is acted on
        assert _post(server, body1, sim.sign_webhook(body1)).status_code == 200

        # deliveries during a restart: acknowledged (then kept) or refused with 503, never 500
        acked: list[str] = []
        statuses: list[int] = []
        restarting = threading.Thread(target=own_postgres.restart)
        restarting.start()
        for n in range(2, 22):
            p, b = _delivery(sim, n)
            resp = _post(server, b, sim.sign_webhook(b))
            statuses.append(resp.status_code)
            if resp.status_code == 200:
                acked.append(p)
        restarting.join(120)
        assert set(statuses) <= {200, 503}, statuses
        for p in [pid, pid1, *acked]:
            wait_for(lambda p=p: _recorded(own_postgres.url, p), timeout=60, what=f"{p} recorded")
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()


def test_sqlite_locked_against_writers_answers_503(replicate_simulator, s3_server, s3_bucket, tmp_path):
    sim = replicate_simulator
    path = tmp_path / "catalog.db"
    url = f"sqlite:///{path}"
    _migrate(url)
    env = serve_env(
        sim,
        s3_server,
        s3_bucket,
        url,
        CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret,
        CACHELAYER_DB_RETRY_SECONDS="1",
    )
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    try:
        pid, body = _delivery(sim, 0)
        assert _post(server, body, sim.sign_webhook(body)).status_code == 200
        wait_for(lambda: _recorded(url, pid), what="the first delivery recorded")

        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # the catalog cannot be written (busy timeout, then the retry)
        try:
            pid1, body1 = _delivery(sim, 1)
            locked = _post(server, body1, sim.sign_webhook(body1))
            assert locked.status_code == 503, locked.text
            assert locked.headers["retry-after"].isdigit()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert _post(server, body1, sim.sign_webhook(body1)).status_code == 200
        wait_for(lambda: _recorded(url, pid1), what="the retried delivery recorded")
    finally:
        server.stop()
    assert "Traceback" not in server.output(), server.output()
