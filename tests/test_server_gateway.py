"""The gateway of `cachelayer serve`, as a real process: durable URLs on a private bucket.

moto does not enforce presigned-URL expiry, so "still works after the TTL" is checked on
what the gateway hands out: each redirect carries a URL signed at request time whose
``X-Amz-Date + X-Amz-Expires`` lies in the future, and its bytes are the source's.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from serving import ServeProcess, serve_env

from cachelayer import gateway_urls
from cachelayer.catalog.server_state import gateway_secret
from cachelayer.testing.simulator import File

MB = 1024 * 1024


@pytest.fixture
def gateway(make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path):
    """``start(*args, **env) -> (server, layer)``: a serve process and a gateway-mode layer
    pointing at it, sharing the catalog (and so the generated secret)."""
    make_layer().catalog  # noqa: B018 -- migrate first
    procs: list[ServeProcess] = []

    def start(*args: str, layer_options: dict | None = None, **env: str):
        full = serve_env(replicate_simulator, s3_server, s3_bucket, catalog_url, **env)
        server = ServeProcess(full, tmp_path / f"serve-{len(procs)}.log", "--workers", "0", *args)
        procs.append(server)
        layer = make_layer(url_mode="gateway", gateway_url=server.url, **(layer_options or {}))
        return server, layer

    yield start
    for p in procs:
        p.stop()
        out = p.output()
        assert "Traceback" not in out and " 500 " not in out, out


def _expiry(url: str) -> datetime:
    q = parse_qs(urlsplit(url).query)
    signed = datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return signed + timedelta(seconds=int(q["X-Amz-Expires"][0]))


def test_gateway_urls_redirect_to_the_bytes_and_outlive_the_presign_ttl(gateway, replicate_simulator):
    sim = replicate_simulator
    image = File(secrets.token_bytes(300_000), content_type="image/png", filename="cat.png")
    sim.add_model("acme/painter", outputs=[image])
    server, layer = gateway(CACHELAYER_PRESIGN_TTL="2")

    (url,) = layer.run("acme/painter", {"prompt": "a cat"})

    assert url.startswith(f"{server.url}/files/") and url.endswith("cat.png")
    first = httpx.get(url)
    assert first.status_code in (302, 307)
    location = first.headers["location"]
    assert "X-Amz-Signature=" in location and "cat.png?" in location
    assert first.headers["cache-control"] == "no-store"  # TTL 2 s: a quarter is under a second
    assert httpx.get(url, follow_redirects=True).content == image.read()
    assert httpx.get(location.split("?")[0]).status_code == 403  # the bucket is private

    time.sleep(2.5)  # the first presigned URL has expired by now
    assert _expiry(location) < datetime.now(timezone.utc)
    again = httpx.get(url)
    assert again.status_code in (302, 307)
    assert again.headers["location"] != location
    assert _expiry(again.headers["location"]) > datetime.now(timezone.utc)
    got = httpx.get(again.headers["location"])
    assert got.status_code == 200 and got.content == image.read()
    assert got.headers["content-type"] == "image/png"

    head = httpx.head(url)
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == image.size
    assert head.headers["etag"] == f'"{image.sha256()}"' and head.headers["content-type"] == "image/png"


def test_redirects_are_cacheable_for_a_quarter_of_the_ttl(gateway, replicate_simulator):
    replicate_simulator.add_model(
        "acme/painter", outputs=File(b"abc", filename="a.txt", content_type="text/plain")
    )
    server, layer = gateway(CACHELAYER_PRESIGN_TTL="3600")
    url = layer.run("acme/painter", {})
    a, b = httpx.get(url), httpx.get(url)
    assert a.headers["cache-control"] == "public, max-age=900"
    assert a.headers["location"] == b.headers["location"]  # reused within the quarter
    assert _expiry(a.headers["location"]) - datetime.now(timezone.utc) > timedelta(seconds=3000)


def test_tampered_and_unknown_urls_answer_403_or_404_never_5xx(gateway, replicate_simulator):
    replicate_simulator.add_model("acme/painter", outputs=File(b"pixels", filename="p.png"))
    server, layer = gateway()
    url = layer.run("acme/painter", {})
    prefix, sig, key = url.split("/", 5)[3], url.split("/")[4], url.split("/", 5)[5]
    assert prefix == "files"
    assert httpx.get(url).status_code in (302, 307)

    secret = gateway_secret(layer.engine, None)
    unknown_key = "replicate/nope/out.png"
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    cases = {
        f"{server.url}/files/{flipped}/{key}": 403,
        f"{server.url}/files/{sig}/{key}x": 403,
        f"{server.url}/files/{sig[:-3]}/{key}": 403,
        f"{server.url}/files/{sig}/": 404,
        f"{server.url}/files/{gateway_urls.signature(secret, unknown_key)}/{unknown_key}": 404,
        f"{server.url}/files/{sig}/{quote('../' + key)}": 403,
        f"{server.url}/files/%00/{key}": 403,
        f"{server.url}/files/{sig}/{key}/%ff%fe": 403,
        f"{server.url}/files/": 404,
        f"{server.url}/files": 404,
    }
    for target, expected in cases.items():
        for method in ("GET", "HEAD"):
            resp = httpx.request(method, target)
            assert resp.status_code == expected, (method, target, resp.status_code)
    rng = secrets.SystemRandom()
    for _ in range(200):  # random single-character damage anywhere after /files/
        chars = list(url)
        i = rng.randrange(len(f"{server.url}/files/"), len(chars))
        chars[i] = rng.choice("aZ9-_~.%/")
        damaged = "".join(chars)
        if damaged == url:
            continue
        assert httpx.get(damaged).status_code in (403, 404), damaged
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'cachelayer_gateway_requests_total{status="403"}' in metrics


def test_a_configured_gateway_secret_is_what_signs_urls(gateway, replicate_simulator):
    replicate_simulator.add_model("acme/painter", outputs=File(b"pixels", filename="p.png"))
    secret = secrets.token_urlsafe(24)
    server, layer = gateway(CACHELAYER_GATEWAY_SECRET=secret, layer_options={"gateway_secret": secret})
    url = layer.run("acme/painter", {})
    key = url.split("/", 5)[5]
    assert url.split("/")[4] == gateway_urls.signature(secret.encode(), key)
    assert httpx.get(url).status_code in (302, 307)
    other, _ = gateway(CACHELAYER_GATEWAY_SECRET="another secret of enough length")
    assert httpx.get(url.replace(server.url, other.url)).status_code == 403


def test_proxy_mode_streams_bytes_with_range_etag_and_conditionals(gateway, replicate_simulator):
    video = File(size=5 * MB + 123, seed=11, content_type="video/mp4", filename="clip.mp4")
    replicate_simulator.add_model("acme/director", outputs=video)
    server, layer = gateway(CACHELAYER_GATEWAY_PROXY="1")
    url = layer.run("acme/director", {})
    data = video.read()
    etag = f'"{video.sha256()}"'

    full = httpx.get(url)
    assert full.status_code == 200 and full.content == data
    assert full.headers["content-type"] == "video/mp4" and full.headers["etag"] == etag
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["cache-control"] == "public, max-age=31536000, immutable"

    ranges = {
        "bytes=0-99": (0, 99),
        "bytes=1000-": (1000, len(data) - 1),
        "bytes=-500": (len(data) - 500, len(data) - 1),
        f"bytes={len(data) - 10}-{len(data) + 1000}": (len(data) - 10, len(data) - 1),
        "bytes=4194300-4194400": (4194300, 4194400),
    }
    for header, (start, end) in ranges.items():
        part = httpx.get(url, headers={"range": header})
        assert part.status_code == 206, header
        assert part.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
        assert part.content == data[start : end + 1]
    bad = httpx.get(url, headers={"range": f"bytes={len(data)}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    assert httpx.get(url, headers={"range": "bytes=5-1"}).status_code == 200  # invalid: ignored
    assert httpx.get(url, headers={"range": "bytes=0-1,5-9"}).status_code == 200  # several: whole
    assert httpx.get(url, headers={"if-none-match": etag}).status_code == 304
    stale = httpx.get(url, headers={"range": "bytes=0-9", "if-range": '"other"'})
    assert stale.status_code == 200 and len(stale.content) == len(data)
    fresh = httpx.get(url, headers={"range": "bytes=0-9", "if-range": etag})
    assert fresh.status_code == 206 and fresh.content == data[:10]
    head = httpx.head(url)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert hashlib.sha256(full.content).hexdigest() == video.sha256()


def test_the_local_store_is_always_proxied(
    replicate_simulator, catalog_url, tmp_path, s3_server, s3_bucket, make_layer
):
    sim = replicate_simulator
    page = File(b"<h1>hello</h1>" * 100, content_type="text/html", filename="index.html")
    sim.add_model("acme/web", outputs=page)
    storage = (tmp_path / "objects").as_uri()
    make_layer(storage_url=storage).catalog  # noqa: B018 -- migrate
    env = serve_env(sim, s3_server, s3_bucket, catalog_url, CACHELAYER_STORAGE_URL=storage)
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    try:
        layer = make_layer(storage_url=storage, url_mode="gateway", gateway_url=server.url)
        url = layer.run("acme/web", {})
        resp = httpx.get(url)
        assert resp.status_code == 200 and resp.content == page.read()
        assert resp.headers["content-type"].startswith("text/html")
        assert resp.headers["x-content-type-options"] == "nosniff"
        part = httpx.get(url, headers={"range": "bytes=4-7"})
        assert part.status_code == 206 and part.content == page.read()[4:8]
    finally:
        assert server.stop() == 0


def test_a_hostile_range_header_is_refused_while_healthz_answers(gateway, replicate_simulator):
    """Issue 17: ``Range: bytes=0-`` + 128,000 spaces + ``x`` held the event loop for
    49 s (a backtracking regular expression); now it is refused (416) on sight and every
    other route keeps answering."""
    replicate_simulator.add_model("acme/painter", outputs=File(b"pixels" * 1000, filename="p.png"))
    server, layer = gateway(CACHELAYER_GATEWAY_PROXY="1")
    url = layer.run("acme/painter", {})
    hostile = "bytes=0-" + " " * 128_000 + "x"
    answers: dict[int, httpx.Response] = {}

    def attack(i: int) -> None:
        answers[i] = httpx.get(url, headers={"range": hostile}, timeout=600)

    attackers = [threading.Thread(target=attack, args=(i,)) for i in range(2)]
    for t in attackers:
        t.start()
    health = [httpx.get(f"{server.url}/healthz", timeout=600).status_code]
    while any(t.is_alive() for t in attackers):
        health.append(httpx.get(f"{server.url}/healthz", timeout=600).status_code)
    for t in attackers:
        t.join()
    assert set(health) == {200}
    assert [a.status_code for a in answers.values()] == [416, 416]
    assert answers[0].headers["content-range"] == "bytes */6000"
    assert httpx.get(url, headers={"range": "bytes=0-5"}).content == b"pixels"  # still served
