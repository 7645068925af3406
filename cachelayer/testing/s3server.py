"""A real S3-compatible endpoint for tests: moto's server mode in a child process.

Tests talk to it over a real TCP socket with real boto3 clients, so request signing,
multipart uploads, presigned URLs and error responses go through the same code paths as
against AWS S3, Cloudflare R2 or MinIO. Nothing is mocked in-process.

Needs the ``moto[server]`` extra (``pip install 'cachelayer[dev]'``).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MotoNotInstalledError", "MotoS3Server", "MotoServerError"]


class MotoNotInstalledError(RuntimeError):
    """``moto[server]`` (moto plus its Flask server) is not importable."""


class MotoServerError(RuntimeError):
    """The moto server process exited or did not answer within the startup timeout."""


def _free_port(host: str) -> int:
    """A TCP port the OS reports free on ``host`` right now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _require_moto() -> None:
    missing = [m for m in ("moto", "flask", "flask_cors") if importlib.util.find_spec(m) is None]
    if missing:
        raise MotoNotInstalledError(
            f"moto's S3 server needs moto[server] (missing: {', '.join(missing)}); "
            "install cachelayer[dev]"
        )


class MotoS3Server:
    """moto's S3 server running as a subprocess on ``127.0.0.1:<free port>``.

    The constructor starts ``python -m moto.server -H 127.0.0.1 -p PORT`` (stdout and
    stderr go to :attr:`log_path`) and returns once the server answers HTTP, so the
    object is usable immediately::

        with MotoS3Server() as server:
            server.create_bucket("b")
            store = S3Store("b", endpoint_url=server.endpoint_url, ...)

    ``env`` adds environment variables for the server process only, e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`` makes moto check every request's access key
    against its (empty) IAM backend, so any credentials are refused with 403
    ``InvalidAccessKeyId`` (moto ``settings.INITIAL_NO_AUTH_ACTION_COUNT``). By default moto
    accepts any credentials.

    ``startup_timeout`` is in seconds. Raises :class:`MotoNotInstalledError` if
    ``moto[server]`` is missing and :class:`MotoServerError` if the process exits early or
    never answers (the message carries the end of the log). The process is also stopped at
    interpreter exit if :meth:`stop` was never called.
    """

    #: Credentials moto accepts (any value works unless auth is enforced).
    access_key_id = "testing"
    secret_access_key = "testing"
    region = "us-east-1"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        _require_moto()
        self.host = host
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._admin_client: Any = None
        self._admin_lock = threading.Lock()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="moto-s3-", suffix=".log")
            os.close(fd)
            log_path = name
        #: Where the server's stdout/stderr go (kept after :meth:`stop` for post-mortems).
        self.log_path = Path(log_path)
        self.port = 0
        self._start()
        atexit.register(self.stop)

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>``: pass as ``endpoint_url`` to boto3 / S3Store."""
        return f"http://{self.host}:{self.port}"

    def _start(self) -> None:
        # The free port may be taken between probing and binding; try a few ports.
        last_error: Exception | None = None
        for _ in range(3):
            self.port = _free_port(self.host)
            try:
                self._spawn_and_wait()
                return
            except MotoServerError as exc:
                last_error = exc
                self._terminate()
        assert last_error is not None
        raise last_error

    def _spawn_and_wait(self) -> None:
        env = dict(os.environ)
        env.update(self._extra_env)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        cmd = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        self._proc = subprocess.Popen(
            cmd,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + self._startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                raise MotoServerError(
                    f"moto server exited with status {code} during startup; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise MotoServerError(
                    f"moto server on {self.endpoint_url} did not answer within "
                    f"{self._startup_timeout:g} s; log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered HTTP, which is all we wait for
        except OSError:
            return False

    def _log_tail(self, max_bytes: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-max_bytes:].decode("utf-8", "replace")

    def client(self) -> S3Client:
        """A new boto3 S3 client for this server (path-style addressing, test credentials)."""
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    @property
    def admin_client(self) -> S3Client:
        """One shared client (built on first use; boto3 clients are thread-safe) for set-up
        and clean-up calls, saving the ~0.1 s it takes to build a client."""
        with self._admin_lock:
            if self._admin_client is None:
                self._admin_client = self.client()
            return self._admin_client

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (in ``us-east-1``, so no location constraint) and return it.

        Raises ``botocore.exceptions.ClientError`` (e.g. ``InvalidBucketName`` for names
        outside S3's 3..63 lower-case characters, ``BucketAlreadyOwnedByYou``)."""
        self.admin_client.create_bucket(Bucket=name)
        return name

    def _terminate(self) -> None:
        client, self._admin_client = self._admin_client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None

    def stop(self) -> None:
        """Terminate the server process and wait for it (kill after 10 s). Idempotent."""
        self._terminate()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> MotoS3Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MotoS3Server {self.endpoint_url} {state}>"
