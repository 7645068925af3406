"""Real S3-compatible endpoints for tests, each in a child process.

:class:`MotoS3Server`: moto's server mode (Python; served with HTTP/1.1 keep-alive by
:mod:`cachelayer.testing.motoserver`). :class:`S3rverServer`: s3rver, a second, independent S3
implementation (Node.js, npm package ``s3rver``), used to check that objects
look the same to other tools and that failures clean up on a server that behaves
differently (s3rver 3.7.1 answers ``AbortMultipartUpload`` with 405 ``MethodNotAllowed`` and
``ListMultipartUploads`` with 501 ``NotImplemented``).

Tests talk to them over a real TCP socket with real boto3 clients, so request signing,
multipart uploads, presigned URLs and error responses go through the same code paths as
against AWS S3, Cloudflare R2 or MinIO. Nothing is mocked in-process.

moto needs the ``moto[server]`` extra (``pip install 'cachelayer[dev]'``); s3rver needs
Node.js and npm on ``PATH`` (it is installed on first use, see :func:`install_s3rver`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import socket
import ssl
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
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "S3RVER_VERSION",
    "MotoNotInstalledError",
    "MotoS3Server",
    "MotoServerError",
    "S3rverServer",
    "S3rverUnavailableError",
    "install_s3rver",
]


class MotoNotInstalledError(RuntimeError):
    """``moto[server]`` (moto plus its Flask server) is not importable."""


class MotoServerError(RuntimeError):
    """The server process exited or did not answer within the startup timeout."""


class S3rverUnavailableError(RuntimeError):
    """s3rver cannot be installed or started here (no Node.js/npm, or ``npm install``
    failed); the message says which and carries the end of npm's output."""


#: The s3rver release the test kit installs (npm ``s3rver``; needs Node.js >= 12).
S3RVER_VERSION = "3.7.1"


def _free_port(host: str) -> int:
    """A TCP port the OS reports free on ``host`` right now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _require_moto() -> None:
    missing = [m for m in ("moto", "flask", "flask_cors") if importlib.util.find_spec(m) is None]
    if missing:
        raise MotoNotInstalledError(
            f"moto's S3 server needs moto[server] (missing: {', '.join(missing)}); install cachelayer[dev]"
        )


_S = TypeVar("_S", bound="_ChildS3Server")


class _ChildS3Server:
    """An S3-compatible server in a child process on ``host:<free port>``: start, readiness
    probe, boto3 clients, stop. Subclasses set the credentials and build the command."""

    access_key_id = ""
    secret_access_key = ""
    region = "us-east-1"
    _name = "S3 server"

    def __init__(
        self,
        *,
        host: str,
        log_path: str | Path | None,
        env: Mapping[str, str] | None,
        startup_timeout: float,
    ) -> None:
        self.host = host
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None
        self._admin_client: Any = None
        self._admin_lock = threading.Lock()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="s3-server-", suffix=".log")
            os.close(fd)
            log_path = name
        #: Where the server's stdout/stderr go (kept after :meth:`stop` for post-mortems).
        self.log_path = Path(log_path)
        self.port = 0

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _probe_url(self) -> str:
        return f"{self.endpoint_url}/"

    #: The CA certificate (PEM) a client must trust when the server speaks HTTPS, else ``None``.
    ca_file: str | None = None

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS): pass as ``endpoint_url`` to
        boto3 / S3Store."""
        return f"{'https' if self.ca_file else 'http'}://{self.host}:{self.port}"

    def _start(self) -> None:
        # The free port may be taken between probing and binding; try a few ports.
        last_error: Exception | None = None
        for _ in range(3):
            self.port = _free_port(self.host)
            try:
                self._spawn_and_wait()
                atexit.register(self.stop)
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
        self._proc = subprocess.Popen(
            self._command(),
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
                    f"{self._name} exited with status {code} during startup; "
                    f"log {self.log_path}:\n{self._log_tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise MotoServerError(
                    f"{self._name} on {self.endpoint_url} did not answer within "
                    f"{self._startup_timeout:g} s; log {self.log_path}:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        tls = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
        try:
            with urllib.request.urlopen(self._probe_url(), timeout=2, context=tls):
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
        """A new boto3 S3 client for this server (path-style addressing, its credentials)."""
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
            verify=self.ca_file,
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

    def __enter__(self: _S) -> _S:
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
        return f"<{type(self).__name__} {self.endpoint_url} {state}>"


class MotoS3Server(_ChildS3Server):
    """moto's S3 server running as a subprocess on ``127.0.0.1:<free port>``.

    The constructor starts ``python -m cachelayer.testing.motoserver -H 127.0.0.1 -p PORT``
    (what ``python -m moto.server`` serves, but with HTTP/1.1 keep-alive, as S3 has it:
    werkzeug's server under ``moto.server`` closes every connection; stdout and stderr go
    to :attr:`log_path`) and returns once the server answers HTTP, so the object is usable
    immediately::

        with MotoS3Server() as server:
            server.create_bucket("b")
            store = S3Store("b", endpoint_url=server.endpoint_url, ...)

    ``env`` adds environment variables for the server process only, e.g.
    ``{"INITIAL_NO_AUTH_ACTION_COUNT": "0"}`` makes moto check every request's access key
    against its (empty) IAM backend, so any credentials are refused with 403
    ``InvalidAccessKeyId`` (moto ``settings.INITIAL_NO_AUTH_ACTION_COUNT``). By default moto
    accepts any credentials.

    ``tls=True`` serves HTTPS with a throwaway certificate authority
    (:func:`cachelayer.testing.tls.generate_certificate`): :attr:`endpoint_url` is then
    ``https://...`` and clients trust :attr:`ca_file` (``verify=`` in boto3,
    ``AWS_CA_BUNDLE`` for code that builds its own client); the files go with :meth:`stop`.

    ``startup_timeout`` is in seconds. Raises :class:`MotoNotInstalledError` if
    ``moto[server]`` is missing and :class:`MotoServerError` if the process exits early or
    never answers (the message carries the end of the log). The process is also stopped at
    interpreter exit if :meth:`stop` was never called.
    """

    #: Credentials moto accepts (any value works unless auth is enforced).
    access_key_id = "testing"
    secret_access_key = "testing"
    region = "us-east-1"
    _name = "moto server"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
        tls: bool = False,
    ) -> None:
        _require_moto()
        super().__init__(host=host, log_path=log_path, env=env, startup_timeout=startup_timeout)
        self._certs = None
        if tls:
            from cachelayer.testing.tls import generate_certificate

            self._certs = generate_certificate()
            self.ca_file = self._certs.ca_file
        try:
            self._start()
        except BaseException:
            self.stop()  # no TLS files left behind by a server that never started
            raise

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "cachelayer.testing.motoserver", "-H", self.host, "-p", str(self.port)]
        if self._certs is not None:
            cmd += ["--certfile", self._certs.cert_file, "--keyfile", self._certs.key_file]
        return cmd

    def stop(self) -> None:
        """Terminate the server (see :meth:`_ChildS3Server.stop`) and remove its TLS files."""
        super().stop()
        if self._certs is not None:
            shutil.rmtree(self._certs.directory, ignore_errors=True)

    def _probe_url(self) -> str:
        return f"{self.endpoint_url}/moto-api/data.json"


def s3rver_install_dir() -> Path:
    """Where :func:`install_s3rver` puts s3rver: ``$CACHELAYER_S3RVER_DIR`` if set, else
    ``~/.cache/cachelayer/s3rver-<version>`` (``$XDG_CACHE_HOME`` respected), else, when the
    home directory is not writable, ``<tmp>/cachelayer-s3rver-<version>``."""
    explicit = os.environ.get("CACHELAYER_S3RVER_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidate = cache / "cachelayer" / f"s3rver-{S3RVER_VERSION}"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
        if os.access(candidate, os.W_OK):
            return candidate
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"cachelayer-s3rver-{S3RVER_VERSION}"


def install_s3rver(directory: str | Path | None = None, *, timeout: float = 300.0) -> Path:
    """Install s3rver :data:`S3RVER_VERSION` once per machine and return its entry script.

    Runs ``npm install --prefix <directory> s3rver@<version>`` unless
    ``<directory>/node_modules/s3rver/bin/s3rver.js`` already exists (``directory``
    defaults to :func:`s3rver_install_dir`). Concurrent callers (pytest-xdist workers) are
    serialised with an ``flock`` on ``<directory>.lock``, so only one of them installs.
    ``timeout`` is in seconds. Raises :class:`S3rverUnavailableError` when ``node`` or
    ``npm`` is not on ``PATH`` or the install fails (with the end of npm's output).
    """
    import fcntl
    import shutil

    root = Path(directory) if directory is not None else s3rver_install_dir()
    script = root / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if script.is_file():
        return script
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise S3rverUnavailableError(f"s3rver needs Node.js: {tool!r} is not on PATH")
    root.mkdir(parents=True, exist_ok=True)
    with open(root.with_name(root.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if script.is_file():  # another process installed it while we waited
            return script
        cmd = [
            "npm",
            "install",
            "--prefix",
            str(root),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            f"s3rver@{S3RVER_VERSION}",
        ]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise S3rverUnavailableError(f"npm install s3rver@{S3RVER_VERSION} failed: {exc}") from exc
        if done.returncode != 0 or not script.is_file():
            tail = (done.stderr or done.stdout or "")[-2000:].strip()
            raise S3rverUnavailableError(
                f"npm install s3rver@{S3RVER_VERSION} into {root} exited {done.returncode}: {tail}"
            )
    return script


class S3rverServer(_ChildS3Server):
    """s3rver (:data:`S3RVER_VERSION`, npm) as a subprocess on ``127.0.0.1:<free port>``,
    storing objects under ``data_dir`` (a fresh temporary directory by default, removed by
    :meth:`stop`).

    Installs s3rver on first use (:func:`install_s3rver`), starts
    ``node s3rver.js -d DIR -a 127.0.0.1 -p PORT --no-vhost-buckets`` and returns once it
    answers HTTP. Its credentials are s3rver's fixed ``S3RVER`` / ``S3RVER`` (SigV4 is
    checked). Differences from AWS that matter to cachelayer, seen with 3.7.1:
    ``AbortMultipartUpload`` answers 405, ``ListMultipartUploads`` and bucket lifecycle
    configuration answer 501, ``x-amz-checksum-*`` headers are accepted but neither checked
    nor stored, ``CopySourceIfMatch`` is ignored.

    Raises :class:`S3rverUnavailableError` if it cannot be installed and
    :class:`MotoServerError` if the process exits early or never answers.
    """

    access_key_id = "S3RVER"
    secret_access_key = "S3RVER"
    region = "us-east-1"
    _name = "s3rver"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        data_dir: str | Path | None = None,
        log_path: str | Path | None = None,
        install_dir: str | Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.script = install_s3rver(install_dir)
        super().__init__(host=host, log_path=log_path, env=None, startup_timeout=startup_timeout)
        self._own_data_dir = data_dir is None
        #: Where s3rver keeps buckets, objects and unfinished multipart parts.
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="s3rver-"))
        self._start()

    def _command(self) -> list[str]:
        return [
            "node",
            str(self.script),
            "-d",
            str(self.data_dir),
            "-a",
            self.host,
            "-p",
            str(self.port),
            "--no-vhost-buckets",
        ]

    def stop(self) -> None:
        """Terminate the process (kill after 10 s) and remove a temporary data directory."""
        super().stop()
        if self._own_data_dir:
            import shutil

            shutil.rmtree(self.data_dir, ignore_errors=True)
