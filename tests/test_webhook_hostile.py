"""Issue 17, items 3 and 4: hostile or hopeless webhook deliveries to a real `cachelayer serve`.

* Bodies are bounded before authentication: a missing or malformed signature header is
  refused before any of the body is read, and 8 concurrent 63 MiB chunked bodies with a
  plausible but wrong signature raise the server's peak RSS (``VmHWM`` in ``/proc``) by
  less than 100 MB.
* A signed body that can never be accepted answers 400 (never 500 or 503).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

MB = 1024 * 1024

pytestmark = pytest.mark.usefixtures("http_webhooks")


def _peak_rss(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _raw_exchange(url: str, head: bytes, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send ``head`` (+ ``body``) on a fresh socket; return what the server answers (its
    first bytes) without sending anything more."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head + body)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


def test_unsigned_or_malformed_headers_are_refused_before_the_body(served, replicate_simulator):
    sim = replicate_simulator
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    signed = sim.sign_webhook(b"{}")
    cases = {
        "no headers": {},
        "no signature": {k: v for k, v in signed.items() if k != "webhook-signature"},
        "timestamp not a number": {**signed, "webhook-timestamp": "soon"},
        "stale": {**signed, "webhook-timestamp": str(int(time.time()) - 3600)},
        "signature not v1,<base64>": {**signed, "webhook-signature": "v1"},
        "signature not base64": {**signed, "webhook-signature": "v1,***"},
        "webhook-id too long": {**signed, "webhook-id": "m" * 300},
    }
    for name, headers in cases.items():
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (
            f"POST /webhooks/replicate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {50 * MB}\r\n{lines}\r\n"
        ).encode()
        # 50 MB declared, 10 bytes sent: the answer must come without the rest of the body
        answer = _raw_exchange(server.url, head, b'{"id": "x"')
        assert answer.split(b" ", 2)[1:2] in ([b"400"], [b"401"]), (name, answer[:200])


def test_bogus_signed_bodies_cost_bounded_memory(served, replicate_simulator):
    sim = replicate_simulator
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    pid = server.proc.pid
    chunk = b" " * MB
    statuses: list[int | str] = []

    def body():
        yield b'{"id": "p1", "x": "'
        for _ in range(63):
            yield chunk
        yield b'"}'

    def post() -> None:
        headers = {**sim.sign_webhook(b"something else"), "content-type": "application/json"}
        try:
            r = httpx.post(f"{server.url}/webhooks/replicate", content=body(), headers=headers, timeout=120)
            statuses.append(r.status_code)
        except httpx.HTTPError as exc:  # the server may refuse before the whole body is sent
            statuses.append(type(exc).__name__)

    httpx.get(f"{server.url}/healthz")  # warm
    before = _peak_rss(pid)
    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    peak = _peak_rss(pid)

    assert len(statuses) == 8
    assert all(s in (401, 503) for s in statuses), statuses
    assert 401 in statuses
    assert peak - before < 100 * MB, f"peak RSS rose by {(peak - before) / MB:.0f} MB"


def test_signed_bodies_that_can_never_be_accepted_answer_400(served, replicate_simulator, make_layer):
    sim = replicate_simulator
    server = served("--workers", "0", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    ok = {"id": "p-ok", "status": "succeeded", "output": None, "model": "acme/m"}
    bodies = {
        "deep array": b"[" * 100_000 + b"]" * 100_000,
        "deep object in a prediction": json.dumps({**ok, "input": {"a": "x"}})
        .encode()
        .replace(b'"x"', b'{"a":' * 5000 + b"1" + b"}" * 5000),
        "10,000-character id": json.dumps({**ok, "id": "p" * 10_000}).encode(),
        "no id": json.dumps({"status": "succeeded"}).encode(),
        "not an object": b"[1, 2]",
        "not JSON": b"\xff\xfe not json",
        "model over 1,024 bytes": json.dumps({**ok, "model": "m" * 2000}).encode(),
        "input nested 500 deep (parses)": json.dumps({**ok, "input": {"a": "x"}})
        .encode()
        .replace(b'"x"', b"[" * 500 + b"]" * 500),
    }
    for name, raw in bodies.items():
        resp = httpx.post(
            f"{server.url}/webhooks/replicate", content=raw, headers=sim.sign_webhook(raw), timeout=60
        )
        assert resp.status_code == 400, (name, resp.status_code, resp.text[:300])
        assert resp.json()["error"] == "malformed", name
    layer = make_layer()
    assert layer.catalog.get_prediction("p-ok") is None
    fine = json.dumps(ok).encode()
    resp = httpx.post(f"{server.url}/webhooks/replicate", content=fine, headers=sim.sign_webhook(fine))
    assert resp.status_code == 200, resp.text
