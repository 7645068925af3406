"""Running `cachelayer serve` as a real process for tests (``python -m cachelayer.server``).

The server binds port 0 and logs ``cachelayer serve listening on http://127.0.0.1:PORT``;
:class:`ServeProcess` waits for that line and stops the process with SIGTERM.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServeProcess:
    """``python -m cachelayer.server --port 0 *args`` with ``env``; output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *args: str, timeout: float = 60.0) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cachelayer.server", "--host", "127.0.0.1", "--port", "0", *args],
            env=env,
            cwd=log.parent,  # not the checkout: `-m` would import its sources, not the install
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        self.url = ""
        while time.monotonic() < deadline:
            m = _LISTENING.search(self.output())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"serve did not start:\n{self.output()}")
        # the socket is bound before the log line; wait for the app's startup to finish
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"serve never became healthy:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return int(self.proc.returncode)


def process_env(
    sim: Any,
    s3_server: Any,
    storage_url: str,
    catalog_url: str,
    *,
    drop: tuple[str, ...] = ("CACHELAYER_", "REPLICATE_"),
    **extra: str,
) -> dict[str, str]:
    """Environment of a `cachelayer` process on the simulator, the S3 server and the catalog:
    this process's environment without the variables starting with ``drop``, then the
    catalog, ``storage_url``, the simulator's delivery host allowed and marked as serving files
    (it gets the token, as replicate.delivery does), the S3 endpoint and credentials,
    the simulator's token and base URL; ``extra``: more variables (they win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        CACHELAYER_DATABASE_URL=catalog_url,
        CACHELAYER_STORAGE_URL=storage_url,
        CACHELAYER_ALLOWED_HOSTS=sim.delivery_host_port,
        CACHELAYER_TOKEN_HOSTS=sim.delivery_host_port,
        AWS_ENDPOINT_URL_S3=s3_server.endpoint_url,
        AWS_ACCESS_KEY_ID=s3_server.access_key_id,
        AWS_SECRET_ACCESS_KEY=s3_server.secret_access_key,
        AWS_REGION=s3_server.region,
        REPLICATE_API_TOKEN=sim.token,
        REPLICATE_BASE_URL=sim.base_url,
    )
    env.update(extra)
    return env


def serve_env(sim: Any, s3_server: Any, bucket: str, catalog_url: str, **extra: str) -> dict[str, str]:
    """Environment of a serve process on the simulator, the bucket (prefix ``replicate``, as
    the ``make_layer`` fixture) and the catalog, 5-second leases, no inherited ``AWS_*``.
    ``extra``: more variables."""
    return process_env(
        sim,
        s3_server,
        f"s3://{bucket}/replicate",
        catalog_url,
        drop=("CACHELAYER_", "REPLICATE_", "AWS_"),
        **{"CACHELAYER_LEASE_SECONDS": "5", **extra},
    )


def layer_options(sim: Any, s3_server: Any, bucket: str, catalog_url: str) -> dict[str, Any]:
    """``CacheLayer`` keyword arguments for the simulator, the bucket (prefix ``replicate``)
    and the catalog, auto-migrating (the ``make_layer`` fixture's defaults). Downloads are
    allowed from the simulator's delivery origin, which gets the token as replicate.delivery
    does (the API origin itself serves no outputs: :mod:`cachelayer.token_scope`)."""
    return dict(
        database_url=catalog_url,
        storage_url=f"s3://{bucket}/replicate",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=s3_server.region,
        replicate_api_token=sim.token,
        replicate_base_url=sim.base_url,
        ca_bundle=sim.ca_file,
        allowed_hosts=sim.delivery_host_port,
        token_hosts=(sim.delivery_host_port,),
        auto_migrate=True,
    )


def read_head(sock: socket.socket, chunk: int = 65536) -> bytes | None:
    """Receive from ``sock`` (``chunk`` bytes at a time) until an HTTP head's blank line;
    ``None`` when the peer closes first. For the small raw servers of tests."""
    head = b""
    while b"\r\n\r\n" not in head:
        data = sock.recv(chunk)
        if not data:
            return None
        head += data
    return head


def post_webhook(
    server: ServeProcess, body: bytes, headers: dict[str, str], timeout: float = 30.0
) -> httpx.Response:
    """POST ``body`` (JSON) with ``headers`` (the signature's) to ``server``'s webhook route;
    ``timeout`` in seconds."""
    return httpx.post(
        f"{server.url}/webhooks/replicate",
        content=body,
        headers={"content-type": "application/json", **headers},
        timeout=timeout,
    )


def files_stored(layer: Any, pid: str, n: int) -> Any:
    """The ``n`` catalog rows of prediction ``pid`` when all ``n`` are stored, else ``None``
    (a predicate for :func:`wait_for`)."""
    files = layer.catalog.files_of(pid)
    return files if len(files) == n and all(f.status == "stored" for f in files) else None


def wait_for(predicate: Any, timeout: float = 60.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate()`` until it returns something truthy (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
