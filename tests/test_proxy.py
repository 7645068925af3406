"""The egress proxy (issue 19, item 3): ``CACHELAYER_PROXY``, opt-in.

Downloads go through the proxy only when ``CACHELAYER_PROXY`` names it (``HTTPS_PROXY`` and
friends are never used for them); the allow-list is still enforced on the TARGET: its name
must match and every address it resolves to must pass the policy before the proxy is asked
to ``CONNECT``. The proxy here is a small real one (threads, sockets, ``CONNECT`` only) that
records every target it was asked for.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading

import pytest
from conftest import run_cli
from serving import process_env, read_head

from cachelayer.config import Settings
from cachelayer.errors import ConfigError, DisallowedAddressError, DisallowedUrlError
from cachelayer.fetch import Fetcher
from cachelayer.testing.simulator import File, ReplicateSimulator


class ConnectProxy:
    """An HTTP proxy on 127.0.0.1 that tunnels ``CONNECT host:port`` and refuses any other
    method (405). ``targets``: every ``host:port`` (or request line) it was asked for."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                client: socket.socket = self.request
                head = read_head(client, 4096)
                if head is None:
                    return
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                owner.targets.append(target if method == "CONNECT" else f"{method} {target}")
                if method != "CONNECT":
                    client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    return
                host, _, port = target.rpartition(":")
                try:
                    upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
                except OSError:
                    client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                with upstream:
                    pair = {client: upstream, upstream: client}
                    while True:
                        ready, _, _ = select.select(list(pair), [], [], 30)
                        if not ready:
                            return
                        for sock in ready:
                            data = sock.recv(65536)
                            if not data:
                                return
                            pair[sock].sendall(data)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy():
    p = ConnectProxy()
    yield p
    p.close()


def test_downloads_go_through_the_proxy_and_are_stored(proxy, s3_server, s3_bucket, catalog_url):
    """``cachelayer run`` against the simulator over HTTPS: the API is reached directly, every
    file through the proxy's tunnel, verified with the simulator's CA, and stored."""
    with ReplicateSimulator(https=True) as sim:
        sim.add_model("acme/proxied", outputs=[File(size=3000, seed=1), File(size=5000, seed=2)])
        env = process_env(
            sim,
            s3_server,
            f"s3://{s3_bucket}/proxied",
            catalog_url,
            CACHELAYER_CA_BUNDLE=str(sim.ca_file),
            CACHELAYER_PROXY=proxy.url,
        )
        assert run_cli(env, "db", "upgrade").returncode == 0
        done = run_cli(env, "run", "acme/proxied")
        assert done.returncode == 0, done.stderr
        for url in sim.delivery_urls(sim.prediction_ids[0]):
            assert sim.download_count(url) == 1
        assert proxy.targets and set(proxy.targets) == {sim.delivery_host_port}


def test_a_target_resolving_to_a_refused_address_is_refused_before_connect(proxy):
    """Under a wildcard pattern, ``localhost`` resolves to loopback only: refused before the
    proxy hears of it (the proxy would have reached it)."""
    fetcher = Fetcher(["*"], max_bytes=1 << 20, proxy=proxy.url)
    with pytest.raises(DisallowedAddressError):
        fetcher.open("https://localhost:9/out.png")
    with pytest.raises(DisallowedUrlError):  # not in the allow-list at all
        Fetcher(["replicate.delivery"], max_bytes=1 << 20, proxy=proxy.url).open("https://example.com/x.png")
    assert proxy.targets == []


def test_without_the_setting_environment_proxies_are_ignored(monkeypatch, proxy):
    """``HTTPS_PROXY`` pointing at the proxy changes nothing for downloads."""
    with ReplicateSimulator(https=True) as sim:
        sim.add_model("acme/direct", outputs=[File(size=100, seed=3)])
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        client = sim.replicate_client()
        url = client.run("acme/direct", input={})[0].url
        fetcher = Fetcher([sim.delivery_host_port], max_bytes=1 << 20, ca_bundle=sim.ca_file)
        with fetcher.open(url) as body:
            assert len(body.read()) == 100
        assert proxy.targets == []


@pytest.mark.parametrize(
    "value",
    ["socks5://127.0.0.1:1080", "http://", "http://proxy:3128/path", "http://proxy:3128?x=1", "proxy:3128"],
)
def test_a_malformed_proxy_setting_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="CACHELAYER_PROXY"):
        Settings.from_env({"CACHELAYER_HOME": str(tmp_path), "CACHELAYER_PROXY": value})


def test_proxy_credentials_are_accepted_and_never_shown(tmp_path):
    env = {"CACHELAYER_HOME": str(tmp_path)}
    ok = Settings.from_env({**env, "CACHELAYER_PROXY": "http://me:s3cret@proxy.corp:3128"})
    assert ok.proxy == "http://me:s3cret@proxy.corp:3128"
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**env, "CACHELAYER_PROXY": "http://me:s3cret@proxy.corp:3128/x"})
    assert "s3cret" not in str(err.value)
