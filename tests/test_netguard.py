"""Hostile URLs and servers on loopback, with a connect audit (issue 8.1, 8.2, 8.4, 8.7; 9.5).

Every test runs real sockets: the servers are :class:`hostile_net.HostileServer` on
127.0.0.x, and :func:`hostile_net.connect_audit` records each ``socket.connect`` attempted
in this process, so "zero attempts to a refused address" is observed, not assumed.
"""

from __future__ import annotations

import threading

import pytest
import requests
from hostile_net import HostileServer, body_server, connect_audit, send_response, trickle

from cachelayer.errors import (
    ConfigError,
    DisallowedAddressError,
    DisallowedUrlError,
    DownloadError,
    DownloadStalledError,
    DownloadTimeoutError,
    MalformedUrlError,
    TruncatedDownloadError,
)
from cachelayer.fetch import DEFAULT_TOKEN_HOSTS, Fetcher

DEFAULT = ("replicate.delivery", "*.replicate.delivery")
METADATA_SPELLINGS = [
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://0xa9fea9fe/latest/meta-data/",
    "http://0251.0376.0251.0376/latest/meta-data/",
    "http://169.254.43518/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "http://[::a9fe:a9fe]/latest/meta-data/",
    "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    "http://[2002:a9fe:a9fe::]/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[fe80::1]/",
    "http://127.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://224.0.0.1/",
]


# ---- 8.1: the host checked is the host connected ------------------------------------------------


def test_backslash_userinfo_bypass_is_refused_before_any_connection():
    with body_server() as loop, connect_audit() as attempts:
        fetcher = Fetcher(DEFAULT, max_bytes=10**6)
        for url in (
            f"http://{loop.host_port}\\@replicate.delivery/out-0.png",
            f"http://{loop.host_port}\\\\@replicate.delivery/out-0.png",
            f"http://{loop.host_port}@replicate.delivery/out-0.png",
            f"http://replicate.delivery@{loop.host_port}/out-0.png",
            f"http://{loop.host_port}%5C@replicate.delivery/out-0.png",
            f"http://{loop.host_port}#@replicate.delivery/out-0.png",
            f"http://{loop.host_port}?@replicate.delivery/out-0.png",
            f"http://{loop.host_port}／@replicate.delivery/out-0.png",
            "http://169.254.169.254\\@replicate.delivery/latest/meta-data",
        ):
            with pytest.raises(DisallowedUrlError) as err:
                fetcher.open(url)
            assert "\n" not in str(err.value)
        fetcher.close()
    assert attempts == []
    assert loop.seen == []


def test_bypass_inside_a_redirect_is_refused(replicate_simulator):
    with body_server() as target:
        hops = [
            f"http://{target.host_port}\\@replicate.delivery/out-0.png",
            f"http://{target.host_port}/out-0.png",  # allowed hop? no: not on the list
            "http://169.254.169.254\\@replicate.delivery/x",
            "http://169.254.169.254/latest/meta-data",
            "http://2852039166/",
            "http://localhost:1/x",
        ]
        location = iter(hops)

        def redirect(req, sock):
            send_response(sock, status="302 Found", headers={"Location": next(location)})

        with HostileServer(redirect) as redirector, connect_audit() as attempts:
            fetcher = Fetcher((redirector.host_port, "*"), max_bytes=10**6)
            for _ in hops:
                with pytest.raises(DisallowedUrlError):
                    fetcher.open(redirector.url("/r"))
            fetcher.close()
    assert target.seen == []
    assert {a for a in attempts} <= {redirector.address}
    assert len(redirector.seen) == len(hops)


def test_guard_holds_even_when_the_url_check_is_skipped():
    """The connect-time guard is the last line: requests' own parsing of the bypass URL
    picks 127.0.0.1, and the pool's connection refuses it without connecting."""
    with body_server() as loop, connect_audit() as attempts:
        fetcher = Fetcher(DEFAULT, max_bytes=10**6)
        with pytest.raises(DisallowedUrlError):
            fetcher.session.get(f"http://{loop.host_port}\\@replicate.delivery/out-0.png", timeout=5)
        star = Fetcher(("*",), max_bytes=10**6)
        with pytest.raises(DisallowedAddressError):
            star.session.get(f"http://localhost:{loop.port}/out-0.png", timeout=5)
        with pytest.raises(DisallowedAddressError):
            star.session.get(f"http://127.0.0.1:{loop.port}/out-0.png", timeout=5)
        fetcher.close()
        star.close()
    assert attempts == [] and loop.seen == []


def test_a_name_is_checked_after_dns_at_connect_time():
    """``localhost`` passes the wildcard's name check but resolves to loopback: refused at
    connect time, before any connection (what DNS rebinding would exploit)."""
    with body_server() as loop, connect_audit() as attempts:
        fetcher = Fetcher(("*",), max_bytes=10**6, retries=0)
        with pytest.raises(DisallowedAddressError) as err:
            fetcher.open(f"http://localhost:{loop.port}/out-0.png")
        assert "loopback" in str(err.value)
        fetcher.close()
    assert attempts == [] and loop.seen == []


# ---- 8.2: private addresses under a wildcard -----------------------------------------------------


@pytest.mark.parametrize("url", METADATA_SPELLINGS)
def test_wildcard_never_reaches_private_addresses(url):
    with connect_audit() as attempts:
        fetcher = Fetcher(("*",), max_bytes=10**6, retries=0, timeout=(0.5, 0.5))
        with pytest.raises(DisallowedUrlError):
            fetcher.open(url)
        fetcher.close()
    assert attempts == []


def test_explicit_pattern_allows_exactly_that_host_and_port():
    with body_server(b"hello") as loop, connect_audit() as attempts:
        fetcher = Fetcher((loop.host_port,), max_bytes=10**6)
        with fetcher.open(loop.url()) as dl:
            assert dl.read() == b"hello"
        with pytest.raises(DisallowedUrlError):
            fetcher.open(f"http://127.0.0.1:{loop.port + 1 if loop.port < 65535 else 1}/x")
        with pytest.raises(DisallowedUrlError):
            fetcher.open(f"http://localhost:{loop.port}/x")
        with pytest.raises(DisallowedUrlError):  # same address, other spelling: not named
            fetcher.open(f"http://[::ffff:127.0.0.1]:{loop.port}/x")
        # the host without a port names the host for every port
        with Fetcher(("127.0.0.1",), max_bytes=10**6).open(loop.url()) as dl:
            assert dl.read() == b"hello"
        fetcher.close()
    assert set(attempts) == {loop.address}


def test_a_bare_name_reaches_public_addresses_only_a_name_with_port_any():
    """``replicate.delivery`` (no port) must not be turned into a private address by DNS;
    ``minio.internal:9000``-style patterns (name and port) may reach private ones."""
    with body_server(b"named") as loop, connect_audit() as attempts:
        with pytest.raises(DisallowedAddressError):
            Fetcher(("localhost",), max_bytes=100, retries=0).open(f"http://localhost:{loop.port}/x")
        assert attempts == []
        with Fetcher((f"localhost:{loop.port}",), max_bytes=100).open(
            f"http://localhost:{loop.port}/x"
        ) as dl:
            assert dl.read() == b"named"
    assert {a[1] for a in attempts} == {loop.port}
    assert {a[0] for a in attempts} <= {"127.0.0.1", "::1"}


def test_bad_patterns_are_config_errors():
    for bad in ("host:abc", "*evil.com", "a.*.com", "[::1", "host:70000", "user@host", "http://x"):
        with pytest.raises(ConfigError):
            Fetcher((bad,), max_bytes=1)
    with pytest.raises(ConfigError):
        Fetcher(DEFAULT, max_bytes=1, token_hosts=("bad:port",))


# ---- 8.4: malformed URLs give one typed line ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://replicate.delivery:99999/x.png",
        "https://replicate.delivery:0/x.png",
        "https://replicate.delivery:abc/x.png",
        "https://replicate.delivery:/x.png",
        "https://replicate.delivery＃@127.0.0.1/x.png",
        "https://replicate.delivery/x＃.png\u3000",
        "https://ｒeplicate.delivery/x.png",
        "https://[replicate.delivery/x.png",
        "https://[::1/x.png",
        "https://]replicate.delivery/x.png",
        "https://[fe80::1%25eth0]/x.png",
        "https://replicate.delivery/a b.png",
        " https://replicate.delivery/x.png",
        "https://replicate.delivery/x.png\n",
        "https://replicate.delivery\t/x.png",
        "https://replicate.delivery/\x00.png",
        "https://replicate.delivery/\ud800.png",
        "https:///x.png",
        "https:replicate.delivery/x.png",
        "https://",
        "https://replicate..delivery/x",
        "https://-replicate.delivery/x",
        "https://replicate.delivery./x",
        "https://1.2.3.999/x",
        "https://09.1.1.1/x",
        "https://a.123/x",
        "replicate.delivery/x.png",
        "",
        "ftp://replicate.delivery/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
    ],
)
def test_malformed_urls_raise_one_typed_line(url):
    with connect_audit() as attempts:
        fetcher = Fetcher(DEFAULT + ("*",), max_bytes=10)
        with pytest.raises(DisallowedUrlError) as err:
            fetcher.open(url)
        fetcher.close()
    assert isinstance(err.value, DownloadError)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400
    assert attempts == []


def test_malformed_url_subclass():
    with pytest.raises(MalformedUrlError, match="port 99999"):
        Fetcher(DEFAULT, max_bytes=10).open("https://replicate.delivery:99999/x.png")


# ---- 8.7: deadline and stall rule ----------------------------------------------------------------


def test_one_byte_per_second_source_is_cut_by_the_stall_rule():
    stop = threading.Event()
    with HostileServer(lambda req, sock: trickle(sock, 100_000, 1, 0.02, stop)) as slow:
        fetcher = Fetcher(
            (slow.host_port,),
            max_bytes=10**6,
            stall_bytes_per_second=1000,
            stall_window=0.3,
            download_timeout=60,
        )
        with pytest.raises(DownloadStalledError) as err, fetcher.open(slow.url()) as dl:
            dl.read()
        stop.set()
    assert isinstance(err.value, TruncatedDownloadError)  # retryable by the pipeline
    assert "CACHELAYER_STALL" in str(err.value)
    assert 0 < dl.size < 100_000


def test_download_deadline_cuts_a_steady_slow_source():
    stop = threading.Event()
    with HostileServer(lambda req, sock: trickle(sock, 10**7, 200, 0.01, stop)) as slow:
        fetcher = Fetcher((slow.host_port,), max_bytes=10**8, stall_bytes_per_second=0, download_timeout=0.5)
        with pytest.raises(DownloadTimeoutError) as err, fetcher.open(slow.url()) as dl:
            dl.read()
        stop.set()
    assert not isinstance(err.value, DownloadStalledError)
    assert isinstance(err.value, TruncatedDownloadError)
    assert "CACHELAYER_DOWNLOAD_TIMEOUT" in str(err.value)


def test_deadline_covers_silent_bodies_and_unanswered_requests():
    release = threading.Event()

    def headers_then_silence(req, sock):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        release.wait(10)

    def never_answer(req, sock):
        release.wait(10)

    with HostileServer(headers_then_silence) as silent, HostileServer(never_answer) as mute:
        fetcher = Fetcher(
            (silent.host_port, mute.host_port),
            max_bytes=100,
            download_timeout=0.4,
            timeout=(5, 30),
            retries=3,
        )
        with pytest.raises(DownloadTimeoutError), fetcher.open(silent.url()) as dl:
            dl.read()
        with pytest.raises(DownloadTimeoutError):
            fetcher.open(mute.url())
        release.set()


def test_retry_after_cannot_hold_a_worker_past_the_deadline():
    def busy(req, sock):
        send_response(sock, b"busy", status="503 Service Unavailable", headers={"Retry-After": "99999"})

    with HostileServer(busy) as server:
        fetcher = Fetcher((server.host_port,), max_bytes=100, download_timeout=0.5, retries=10)
        with pytest.raises(DownloadTimeoutError):
            fetcher.open(server.url())
    assert 1 <= len(server.seen) <= 3


@pytest.mark.parametrize(
    "kwargs",
    [{"download_timeout": float("nan")}, {"stall_window": -1}, {"stall_bytes_per_second": float("inf")}],
)
def test_time_settings_are_validated(kwargs):
    with pytest.raises(ConfigError):
        Fetcher(DEFAULT, max_bytes=1, **kwargs)


# ---- 9.5: the token goes to Replicate's hosts only ------------------------------------------------


def auth_of(server: HostileServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.seen]


def test_token_only_to_token_hosts_and_never_across_a_redirect():
    with body_server(b"other") as other:
        targets = iter([f"http://{other.host_port}/o.png", "/same.png"])

        def api(req, sock):
            if req.path.startswith("/redirect"):
                send_response(sock, status="302 Found", headers={"Location": next(targets)})
            else:
                send_response(sock, b"api")

        with HostileServer(api) as api_host:
            fetcher = Fetcher(
                (api_host.host_port, other.host_port),
                max_bytes=100,
                api_token="r8_secret",
                token_hosts=(api_host.host_port,),
            )
            for url in (api_host.url("/a.png"), other.url("/b.png"), api_host.url("/redirect1")):
                with fetcher.open(url) as dl:
                    dl.read()
            with fetcher.open(api_host.url("/redirect2")) as dl:  # same-host redirect keeps it
                assert dl.read() == b"api"
    assert auth_of(api_host) == ["Bearer r8_secret"] * 4
    assert auth_of(other) == [None, None]


def test_token_rules_http_wildcards_and_defaults():
    with body_server() as server:
        port = server.port
        cases = [
            ({"api_token": "t", "token_hosts": ("127.0.0.1",)}, None),  # http needs host:port named
            ({"api_token": "t", "token_hosts": ("*",)}, None),
            ({"api_token": None, "token_hosts": (server.host_port,)}, None),
            ({"api_token": "t"}, None),  # defaults: Replicate's hosts only
            ({"api_token": "t", "token_hosts": (f"127.0.0.1:{port}",)}, "Bearer t"),
        ]
        for kwargs, _ in cases:
            with Fetcher((server.host_port,), max_bytes=100, **kwargs).open(server.url()) as dl:
                dl.read()
    assert auth_of(server) == [expected for _, expected in cases]
    # the API host is no file host: only its download path gets the token (token_scope.py)
    assert DEFAULT_TOKEN_HOSTS == ("replicate.delivery", "*.replicate.delivery")


def test_what_requests_does_by_default_on_cross_host_redirects():
    """requests itself drops Authorization when a redirect changes host or port
    (``Session.should_strip_auth``); the fetcher follows redirects by hand and decides per
    hop, so the rule does not depend on that."""
    with body_server() as other:

        def redirect(req, sock):
            send_response(sock, status="302 Found", headers={"Location": other.url("/x")})

        with HostileServer(redirect) as first, requests.Session() as s:
            s.trust_env = False
            s.get(first.url("/r"), headers={"Authorization": "Bearer t"}, timeout=5).close()
    assert auth_of(first) == ["Bearer t"]
    assert auth_of(other) == [None]
