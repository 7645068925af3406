"""The fetcher on real sockets: redirects inside/outside the allow-list, signed-URL expiry,
host patterns, data: URIs, length checks."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from cachelayer.errors import (
    DisallowedUrlError,
    DownloadError,
    DownloadTooLargeError,
    SourceGoneError,
)
from cachelayer.fetch import Fetcher, host_allowed, signed_url_expired
from cachelayer.testing.simulator import File


@pytest.fixture
def redirector(replicate_simulator) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that redirects to the simulator's delivery URLs or elsewhere."""
    seen: list[str] = []

    @Request.application
    def app(request: Request) -> Response:
        seen.append(request.path)
        target = request.args.get("to", "")
        return Response(status=302, headers={"Location": target})

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()


def read_all(dl) -> bytes:
    with dl:
        return dl.read()


def test_redirect_within_allow_list_is_followed(replicate_simulator, redirector):
    base, seen = redirector
    f = File(size=10_000, seed=1)
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[f])
    target = replicate_simulator.delivery_urls(pid)[0]
    port = base.rsplit(":", 1)[1]
    fetcher = Fetcher((replicate_simulator.delivery_host_port, f"127.0.0.1:{port}"), max_bytes=10**6)
    dl = fetcher.open(f"{base}/r?to={target}")
    assert hashlib.sha256(read_all(dl)).hexdigest() == f.sha256() == dl.sha256
    assert dl.size == 10_000 and seen == ["/r"]


def test_redirect_outside_allow_list_is_refused_before_it_is_requested(replicate_simulator, redirector):
    base, _ = redirector
    port = base.rsplit(":", 1)[1]
    fetcher = Fetcher((f"127.0.0.1:{port}",), max_bytes=10**6)
    before = len(replicate_simulator.requests)
    with pytest.raises(DisallowedUrlError):
        fetcher.open(f"{base}/r?to={replicate_simulator.delivery_url}/delivery/x/y.png")
    assert len(replicate_simulator.requests) == before


def test_expired_signed_url_is_gone_without_a_request(replicate_simulator):
    f = File(b"abc")
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[f])
    url = replicate_simulator.delivery_urls(pid)[0]
    signed = f"{url}?X-Amz-Date=20200101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=x"
    fetcher = Fetcher((replicate_simulator.delivery_host_port,), max_bytes=10**6)
    before = replicate_simulator.download_count(url)
    with pytest.raises(SourceGoneError):
        fetcher.open(signed)
    assert replicate_simulator.download_count(url) == before
    assert signed_url_expired("https://h/x?Expires=1") is True
    assert signed_url_expired("https://h/x?Expires=99999999999") is False


def test_404_is_source_gone_and_content_length_cap(replicate_simulator):
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[File(size=5000)])
    url = replicate_simulator.delivery_urls(pid)[0]
    with pytest.raises(DownloadTooLargeError):
        Fetcher((replicate_simulator.delivery_host_port,), max_bytes=100).open(url)
    replicate_simulator.expire_urls(pid)
    with pytest.raises(SourceGoneError) as err:
        Fetcher((replicate_simulator.delivery_host_port,), max_bytes=10**6).open(url)
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://replicate.delivery/pbxt/a/out.png", True),
        ("https://pbxt.replicate.delivery/a/out.png", True),
        ("https://REPLICATE.delivery/a", True),
        ("http://replicate.delivery.evil.com/a", False),
        ("https://evilreplicate.delivery/a", False),
        ("file:///etc/passwd", False),
        ("https://169.254.169.254/latest/meta-data", False),
        ("ftp://replicate.delivery/a", False),
    ],
)
def test_host_patterns(url, ok):
    assert host_allowed(url, ("replicate.delivery", "*.replicate.delivery")) is ok


def test_link_local_refused_even_when_a_pattern_matches():
    assert not host_allowed("http://169.254.169.254/x", ("*",))
    assert not host_allowed("http://[fe80::1]/x", ("*",))
    assert host_allowed("http://127.0.0.1:8080/x", ("127.0.0.1:8080",))
    assert not host_allowed("http://127.0.0.1:8081/x", ("127.0.0.1:8080",))


def test_data_uris():
    fetcher = Fetcher((), max_bytes=100)
    dl = fetcher.open("data:image/webp;base64,UklGRiQAAABXRUJQ")
    assert read_all(dl) == b"RIFF$\x00\x00\x00WEBP" and dl.content_type == "image/webp"
    assert read_all(fetcher.open("data:,hello%20world")) == b"hello world"
    with pytest.raises(DownloadTooLargeError):
        fetcher.open("data:application/octet-stream;base64," + "A" * 400)
    with pytest.raises(DownloadError):
        fetcher.open("data:no-comma")


def test_download_without_hashing_hands_out_the_same_bytes(replicate_simulator):
    """``hashing=False`` (the copier's, since its store hashes what it writes): same bytes
    and size, and asking for a SHA-256 that was never computed is an error, not a wrong hash."""
    f = File(size=200_000, seed=7)
    pid = replicate_simulator.seed_prediction("acme/x", input={}, output=[f])
    (url,) = replicate_simulator.delivery_urls(pid)
    fetcher = Fetcher((replicate_simulator.delivery_host_port,), max_bytes=10**6)
    dl = fetcher.open(url, hashing=False)
    assert hashlib.sha256(read_all(dl)).hexdigest() == f.sha256() and dl.size == 200_000
    with pytest.raises(ValueError, match="without hashing"):
        _ = dl.sha256
    data = fetcher.open("data:,hello", hashing=False)
    assert read_all(data) == b"hello"
    with pytest.raises(ValueError):
        _ = data.sha256
