"""Trust roots (issue 19, item 3).

Findings: downloads ignored ``SSL_CERT_FILE`` and ``REQUESTS_CA_BUNDLE`` (the download session
is built with ``trust_env=False``) while the API client honoured them, so behind a private CA
the API worked and every file failed with ``CERTIFICATE_VERIFY_FAILED``, was retried four
times and was reported as a *truncated* download. Now one resolution
(:func:`cachelayer.setting_values.resolve_ca_bundle`: ``CACHELAYER_CA_BUNDLE``, else ``SSL_CERT_FILE``,
else ``REQUESTS_CA_BUNDLE``) serves the API and the downloads, and a certificate failure is a
:class:`~cachelayer.errors.CertificateError`: one line naming the host and the variables to
set, exit status 2, never retried.
"""

from __future__ import annotations

import socket
import socketserver
import ssl
import threading
from pathlib import Path

import pytest
from conftest import run_cli
from serving import process_env, read_head

from cachelayer.config import Settings
from cachelayer.errors import CertificateError, ConfigError
from cachelayer.fetch import Fetcher
from cachelayer.testing.simulator import File, ReplicateSimulator
from cachelayer.testing.tls import generate_certificate, server_ssl_context

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
TRUST_VARS = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class TlsFileServer:
    """An HTTPS server on 127.0.0.1 under a private CA that serves :data:`PNG` on any GET
    and counts the TCP connections it accepted (each is one attempt, whether or not its TLS
    handshake succeeded)."""

    def __init__(self, directory: Path) -> None:
        self.certs = generate_certificate(str(directory))
        self.connections = 0
        context = server_ssl_context(self.certs)
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                try:
                    tls = context.wrap_socket(self.request, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate
                with tls:
                    if read_head(tls) is None:
                        return
                    tls.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n"
                        + f"Content-Length: {len(PNG)}\r\n\r\n".encode()
                        + PNG
                    )

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def get_request(self) -> tuple[socket.socket, object]:
                pair = super().get_request()
                owner.connections += 1
                return pair

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tls_files(tmp_path):
    server = TlsFileServer(tmp_path / "tls")
    yield server
    server.close()


def _clean_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in TRUST_VARS}


def test_no_trusted_bundle_is_one_line_exit_2_and_never_retried(cli_env, replicate_simulator, tls_files):
    """The API answers (plain HTTP here), the files sit behind a private CA nobody trusts:
    the run stops with one line naming the host and the variables, exit 2, and each file's
    server saw at most one connection (no retries, no 'truncated')."""
    sim = replicate_simulator
    sim.add_model("acme/private", outputs=[tls_files.url("a.png"), tls_files.url("b.png")])
    env = _clean_env(cli_env)
    env["CACHELAYER_ALLOWED_HOSTS"] = f"{sim.delivery_host_port},127.0.0.1:{tls_files.port}"
    done = run_cli(env, "run", "acme/private")
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{tls_files.port}" in lines[0]
    assert "CACHELAYER_CA_BUNDLE" in lines[0] and "SSL_CERT_FILE" in lines[0]
    assert "truncated" not in done.stderr.lower()
    assert 1 <= tls_files.connections <= 2


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"])
def test_the_standard_variable_alone_trusts_the_api_and_the_downloads(
    variable, s3_server, s3_bucket, catalog_url
):
    """The simulator over HTTPS under its own CA, trusted through ``SSL_CERT_FILE`` (or
    ``REQUESTS_CA_BUNDLE``) only: the API call and every download succeed."""
    with ReplicateSimulator(https=True) as sim:
        files = [File(size=3000, seed=1), File(size=4000, seed=2)]
        sim.add_model("acme/tls", outputs=files)
        env = _clean_env(process_env(sim, s3_server, f"s3://{s3_bucket}/trust", catalog_url))
        env[variable] = str(sim.ca_file)
        assert run_cli(env, "db", "upgrade").returncode == 0
        done = run_cli(env, "run", "acme/tls")
        assert done.returncode == 0, done.stderr
        for url in sim.delivery_urls(sim.prediction_ids[0]):
            assert sim.download_count(url) == 1


def test_the_fetcher_fails_at_once_on_an_untrusted_certificate(tls_files):
    fetcher = Fetcher([f"127.0.0.1:{tls_files.port}"], max_bytes=1 << 20, retries=4)
    with pytest.raises(CertificateError) as err:
        fetcher.open(tls_files.url("a.png"))
    assert f"127.0.0.1:{tls_files.port}" in str(err.value)
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    assert tls_files.connections == 1
    trusted = Fetcher([f"127.0.0.1:{tls_files.port}"], max_bytes=1 << 20, ca_bundle=tls_files.certs.ca_file)
    with trusted.open(tls_files.url("a.png")) as body:
        assert body.read() == PNG


def test_bundle_resolution_order(tmp_path):
    """``CACHELAYER_CA_BUNDLE`` over ``SSL_CERT_FILE`` over ``REQUESTS_CA_BUNDLE``; none:
    ``None`` (certifi's bundle, the default of requests and httpx); a variable naming a
    missing file is refused with its name."""
    ca = [generate_certificate(str(tmp_path / str(i))).ca_file for i in range(3)]
    base = {"CACHELAYER_HOME": str(tmp_path / "home")}
    names = ("CACHELAYER_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    for first in range(3):
        env = {**base, **{names[i]: ca[i] for i in range(first, 3)}}
        assert Settings.from_env(env).ca_bundle == ca[first]
    assert Settings.from_env(base).ca_bundle is None
    assert Settings.from_env({**base, "SSL_CERT_FILE": ca[1]}, ca_bundle=ca[0]).ca_bundle == ca[0]
    with pytest.raises(ConfigError, match="SSL_CERT_FILE"):
        Settings.from_env({**base, "SSL_CERT_FILE": str(tmp_path / "nope.pem")})
