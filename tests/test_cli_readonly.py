"""The read-only commands (`ls`, `show`, `resolve`, `stats`, `export`) need the catalog alone.

The catalog is filled by a real persist (the Replicate simulator -> moto's S3 server); then
the installed `cachelayer` script runs as a subprocess with no Replicate token, the S3
endpoint pointing at a closed port and the Replicate API pointing at a tripwire listener
that counts connections. Each command must exit 0 with the recorded data and durable URLs
rendered from the recorded keys, and nothing may have been contacted.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from conftest import run_cli

from cachelayer.testing.simulator import File


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tripwire:
    """A TCP listener on loopback that accepts, counts and closes every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tripwire() -> Iterator[Tripwire]:
    t = Tripwire()
    yield t
    t.close()


@pytest.fixture
def seeded(make_layer, replicate_simulator, catalog_url, s3_bucket) -> dict[str, Any]:
    """Two predictions persisted into S3 through a real CacheLayer."""
    files = [File(size=500 + i, seed=i, filename=f"img-{i}.png") for i in range(3)]
    pids = [
        replicate_simulator.seed_prediction("acme/offline", input={"n": i}, output=files) for i in range(2)
    ]
    layer = make_layer()
    for pid in pids:
        layer.persist(pid)
    records = [f for pid in pids for f in layer.catalog.files_of(pid)]
    assert len(records) == 6 and all(r.status == "stored" for r in records)
    return {"pids": pids, "records": records, "storage": f"s3://{s3_bucket}/replicate", "bucket": s3_bucket}


def _broken_env(seeded: dict[str, Any], catalog_url: str, tripwire: Tripwire, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHELAYER_", "REPLICATE_", "AWS_"))}
    env.update(
        CACHELAYER_DATABASE_URL=catalog_url,
        CACHELAYER_STORAGE_URL=seeded["storage"],
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{_closed_port()}",
        REPLICATE_BASE_URL=f"http://127.0.0.1:{tripwire.port}/v1",
        NO_COLOR="1",
        **extra,
    )
    return env


def _run_all(env: dict[str, str], calls: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {name: pool.submit(run_cli, env, *args, timeout=60) for name, args in calls.items()}
        return {name: f.result() for name, f in futures.items()}


def _calls(seeded: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    rec = seeded["records"][0]
    return {
        "ls": ("ls", "--format", "jsonl"),
        "ls_table": ("ls",),
        "show": ("show", seeded["pids"][0], "--format", "json"),
        "show_table": ("show", seeded["pids"][0]),
        "resolve": ("resolve", rec.source_url, "--format", "jsonl"),
        "stats": ("stats", "--format", "json"),
        "export": ("export", "--format", "jsonl"),
    }


def _check(out: dict[str, Any], seeded: dict[str, Any], expected_url: Any) -> None:
    for name, done in out.items():
        assert done.returncode == 0, (name, done.stderr)
        assert "Traceback" not in done.stderr, name
    records = {r.id: r for r in seeded["records"]}
    listed = [json.loads(line) for line in out["ls"].stdout.splitlines()]
    assert {row["id"] for row in listed} == set(records)
    for row in listed:
        assert row["durable_url"] == expected_url(records[row["id"]].key)
        assert row["key"] == records[row["id"]].key and row["status"] == "stored"
    exported = [json.loads(line) for line in out["export"].stdout.splitlines()]
    assert exported == listed
    shown = json.loads(out["show"].stdout)
    assert shown["prediction"]["id"] == seeded["pids"][0] and shown["prediction"]["input"] == {"n": 0}
    assert sorted(f["durable_url"] for f in shown["files"]) == sorted(
        expected_url(r.key) for r in seeded["records"] if r.prediction_id == seeded["pids"][0]
    )
    for f in shown["files"]:
        assert f["durable_url"] in out["show_table"].stdout
    rec = seeded["records"][0]
    (answer,) = [json.loads(line) for line in out["resolve"].stdout.splitlines()]
    assert answer["durable_url"] == expected_url(rec.key) and answer["key"] == rec.key
    (stats,) = json.loads(out["stats"].stdout)
    assert stats["model"] == "acme/offline" and stats["files"] == stats["stored"] == 6
    assert stats["stored_bytes"] == 2 * (500 + 501 + 502)
    table = out["ls_table"].stdout
    assert all(expected_url(r.key) in table for r in seeded["records"])


def test_read_only_commands_need_no_token_and_no_storage(seeded, catalog_url, tripwire):
    """s3 URL mode (the default) and public mode: no credentials either."""
    env = _broken_env(seeded, catalog_url, tripwire)
    out = _run_all(env, _calls(seeded))
    _check(out, seeded, lambda key: f"s3://{seeded['bucket']}/{key}")

    base = "https://cdn.example.com/files"
    public = _run_all({**env, "CACHELAYER_PUBLIC_BASE_URL": base}, _calls(seeded))
    _check(public, seeded, lambda key: f"{base}/{quote(key)}")
    assert tripwire.connections == 0


def test_presigned_urls_are_signed_locally_without_reaching_storage(seeded, catalog_url, tripwire):
    """Presigning needs credentials but no request: the endpoint is a closed port."""
    env = _broken_env(
        seeded,
        catalog_url,
        tripwire,
        CACHELAYER_URL_MODE="presigned",
        CACHELAYER_PRESIGN_TTL="600",
        AWS_ACCESS_KEY_ID="AKIDEXAMPLE",
        AWS_SECRET_ACCESS_KEY="secret",
        AWS_REGION="us-east-1",
    )
    endpoint = env["AWS_ENDPOINT_URL_S3"]
    out = _run_all(env, {"ls": ("ls", "--format", "jsonl"), "export": ("export",)})
    for done in out.values():
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out["ls"].stdout.splitlines()]
    assert len(rows) == 6
    for row in rows:
        url = urlsplit(row["durable_url"])
        assert f"{url.scheme}://{url.netloc}" == endpoint
        assert row["key"] in url.path and "X-Amz-Signature=" in url.query and "X-Amz-Expires=600" in url.query
    assert tripwire.connections == 0
