"""A throw-away PostgreSQL cluster of our own, for tests that stop and restart the server.

Never the shared server on 5432: :class:`OwnPostgres` runs ``initdb`` into a new temporary
directory and ``pg_ctl`` on a free port on 127.0.0.1 (trust authentication, its socket in
that directory, ``fsync`` off), as the ``postgres`` system user when the tests run as root
(``initdb`` refuses root). Binaries come from ``/usr/lib/postgresql/*/bin`` (newest) or
``PATH``. Only this object's own ``pg_ctl`` commands touch its own data directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


class OwnPostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries, or no non-root user to run them as."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    if found:
        return Path(found[-1])
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise OwnPostgresUnavailable("no initdb/pg_ctl found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OwnPostgres:
    """``start()``, ``restart()``, ``stop()``, ``destroy()``; ``url`` is the SQLAlchemy URL
    of its ``postgres`` database (user ``postgres``, no password)."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise OwnPostgresUnavailable("running as root and there is no postgres user") from None
            self.user = "postgres"
        self.root = Path(tempfile.mkdtemp(prefix="cachelayer-own-pg-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def _options(self) -> str:
        return f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w", "start")

    def restart(self) -> None:
        """Fast restart: clients are disconnected, the server is down for about a second."""
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            self._options(),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        """Stop (if running) and delete the cluster's directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
