"""The message brokers of the job-queue tests: Redis (127.0.0.1:6379) and RabbitMQ
(127.0.0.1:5672, guest/guest), started here when down (as ``.ci/run`` does), skipped when
they cannot be had, failed instead with ``CACHELAYER_REQUIRE_BROKERS=1``; and the worker
processes (Celery, RQ) run as real processes on them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
TESTS = Path(__file__).resolve().parent


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _redis_ok() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def _amqp_ok() -> bool:
    from kombu import Connection

    try:
        with Connection(AMQP_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:  # noqa: BLE001 - any failure means: not usable
        return False


def _start(commands: list[list[str]], ok, wait: float) -> str:
    """Run the first start command that exists; wait up to ``wait`` s for ``ok()``."""
    tried = []
    for cmd in commands:
        if shutil.which(cmd[0]) is None:
            continue
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        tried.append(f"{' '.join(cmd)}: exit {done.returncode} {done.stderr.strip()[:200]}")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if ok():
                return ""
            time.sleep(0.5)
    return "; ".join(tried) or "no start command found"


def require(name: str) -> str:
    """The broker URL of ``name`` (``redis`` / ``amqp``), started if down; else skip (fail
    with ``CACHELAYER_REQUIRE_BROKERS=1``)."""
    if name == "redis":
        url, ok = REDIS_URL, _redis_ok
        starts = [["redis-server", "--bind", "127.0.0.1", "--port", "6379", "--daemonize", "yes"]]
        wait = 15.0
    else:
        url, ok = AMQP_URL, _amqp_ok
        starts = [["service", "rabbitmq-server", "start"], ["rabbitmq-server", "-detached"]]
        wait = 90.0
    if ok():
        return url
    why = _start(starts, ok, wait)
    if ok():
        return url
    message = f"{name} broker not usable at {url} ({why})"
    if os.environ.get("CACHELAYER_REQUIRE_BROKERS", "") not in ("", "0"):
        pytest.fail(message + " and CACHELAYER_REQUIRE_BROKERS=1", pytrace=False)
    pytest.skip(message + "; CACHELAYER_REQUIRE_BROKERS=1 turns this skip into a failure")


class WorkerProcess:
    """A worker (``argv``) in its own session, output in ``log``; :meth:`kill` SIGKILLs the
    whole session (worker and any child it forked)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        env = dict(
            env, PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        )
        self.proc = subprocess.Popen(
            argv, env=env, cwd=log.parent, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}:\n{self.output()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the worker's whole session and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            with_term = self.proc.pid
            try:
                os.killpg(with_term, signal.SIGTERM)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill()
        self._out.close()


def celery_worker(broker: str, queue: str, env: dict[str, str], log: Path, **extra: str) -> WorkerProcess:
    """``celery -A celery_test_app worker`` (Celery's default prefork pool, one child: the
    task runs in the child, the parent acknowledges) consuming ``queue`` on ``broker``."""
    argv = [sys.executable, "-m", "celery", "-A", "celery_test_app", "worker", "-c", "1", "-Q", queue]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-n", f"{queue}@%h"]
    full = dict(env, CL_TEST_BROKER=broker, CL_TEST_QUEUE=queue, **extra)
    worker = WorkerProcess(argv, full, log)
    worker.wait_for("ready.")
    return worker


def rq_worker(queue: str, env: dict[str, str], log: Path, *, burst: bool = False) -> WorkerProcess:
    """``rq worker`` (the default forking ``Worker``) consuming ``queue`` on Redis."""
    argv = [
        str(Path(sys.executable).with_name("rq")),
        "worker",
        "--url",
        REDIS_URL,
        "--name",
        f"{queue}-{time.time_ns()}",
    ]
    if burst:
        argv.append("--burst")
    argv.append(queue)
    return WorkerProcess(argv, env, log)
