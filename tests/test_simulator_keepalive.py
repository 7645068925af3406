"""The simulator keeps HTTP/1.1 connections alive, as Replicate's API and CDN do: clients
that reuse connections (a ``requests.Session``, the ``replicate`` client's httpx pool) open
one connection, not one per request. Faults still cut the connection mid-body, many slow
requests are answered concurrently, and stopping does not wait for idle connections."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import requests
import urllib3

from cachelayer.testing.simulator import CHUNK_SIZE, File, ReplicateSimulator

PNG = b"\x89PNG\r\n\x1a\n" + b"pretend image" * 10


@pytest.fixture(params=[False, True], ids=["http", "https"])
def sim(request: pytest.FixtureRequest) -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator(https=request.param) as s:
        yield s


def _pool_connections(session: requests.Session, url: str) -> int:
    """How many connections the session's urllib3 pools for ``url`` have opened."""
    pools: Any = session.get_adapter(url).poolmanager.pools
    return sum(pools[key].num_connections for key in pools.keys())  # noqa: SIM118 - no __iter__


def _output_url(sim: ReplicateSimulator, outputs: Any = None) -> str:
    sim.add_model("acme/painter", outputs=outputs if outputs is not None else File(PNG))
    pred = sim.replicate_client().predictions.create(model="acme/painter", input={}, wait=True)
    return str(pred.output.url if hasattr(pred.output, "url") else pred.output)


def _session(sim: ReplicateSimulator) -> requests.Session:
    """A session trusting the simulator's CA (``REQUESTS_CA_BUNDLE`` would override
    ``session.verify``, so it ignores the environment)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = sim.ca_file or True
    return session


def test_a_session_reuses_one_connection_per_origin_for_api_and_delivery_requests(
    sim: ReplicateSimulator,
) -> None:
    url = _output_url(sim)
    session = _session(sim)
    headers = {"Authorization": f"Bearer {sim.token}"}
    for target in (url, f"{sim.base_url}/v1/account", url, f"{sim.base_url}/v1/predictions", url):
        resp = session.get(target, headers=headers, timeout=10)
        assert resp.status_code == 200, target
        assert resp.headers.get("Connection", "").lower() != "close", target
    assert session.get(url, timeout=10).content == PNG
    # one to the API origin, one to the delivery origin (werkzeug's server closed every one: 6)
    assert _pool_connections(session, url) == 2


def test_the_replicate_client_reuses_its_connection(sim: ReplicateSimulator) -> None:
    sim.add_model("acme/painter", outputs=File(PNG))
    transport = httpx.HTTPTransport(verify=sim.ssl_context() or True)
    client = sim.replicate_client(transport=transport)
    for _ in range(4):
        pred = client.predictions.create(model="acme/painter", input={}, wait=True)
        assert client.predictions.get(pred.id).status == "succeeded"
    pool: Any = transport._pool
    assert len(pool.connections) == 1
    transport.close()


def test_truncated_and_dropped_bodies_still_cut_the_connection(sim: ReplicateSimulator) -> None:
    big = File(size=3 * CHUNK_SIZE + 123, seed=7)
    url = _output_url(sim, big)
    errors = (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)
    session = _session(sim)
    assert hashlib.sha256(session.get(url, timeout=10).content).hexdigest() == big.sha256()

    sim.inject_fault("truncate", path_prefix="/delivery/")
    resp = session.get(url, stream=True, timeout=10)
    assert resp.headers["Content-Length"] == str(big.size)
    got = 0
    with pytest.raises(errors):
        for chunk in resp.iter_content(65536):
            got += len(chunk)
    assert got < big.size

    sim.inject_fault("drop")
    resp = session.get(url, stream=True, timeout=10)
    with pytest.raises(errors):
        resp.content  # noqa: B018

    # the next download on the same session opens a fresh connection and gets every byte
    assert hashlib.sha256(session.get(url, timeout=10).content).hexdigest() == big.sha256()
    assert sim.download_count(url) == 4


def test_a_truncated_body_ends_in_eof_on_a_raw_socket() -> None:
    with ReplicateSimulator() as sim:
        big = File(size=2 * CHUNK_SIZE, seed=3)
        url = _output_url(sim, big)
        path = "/" + url.split("/", 3)[3]
        sim.inject_fault("truncate", path_prefix="/delivery/")
        host, port = sim.delivery_host_port.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {sim.delivery_host_port}\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):  # the server closes: recv returns b""
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert f"Content-Length: {big.size}".encode() in head
        assert len(body) == big.size // 2


def test_64_slow_requests_are_answered_concurrently() -> None:
    with ReplicateSimulator(latency=0.5) as sim:
        url = f"{sim.base_url}/v1/account"
        start = time.monotonic()
        with ThreadPoolExecutor(64) as pool:
            codes = list(pool.map(lambda _: requests.get(url, timeout=30).status_code, range(64)))
        elapsed = time.monotonic() - start
        assert codes == [401] * 64
        assert elapsed < 2.5, elapsed  # queued behind a small thread pool it would take 1 s per batch


def test_stop_does_not_wait_for_idle_kept_alive_connections(sim: ReplicateSimulator) -> None:
    before = threading.active_count()
    with ReplicateSimulator(https=sim.https) as other:
        session = _session(other)
        assert session.get(f"{other.base_url}/v1/account", timeout=10).status_code == 401
        start = time.monotonic()
        other.stop()
        assert time.monotonic() - start < 3
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before
    session.close()
