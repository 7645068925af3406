"""Soak: ``cachelayer serve`` left alone under mixed load, outages and a crash (issue 17).

One real ``python -m cachelayer.server`` process (copy workers, the sweep, the gateway in
proxy mode) on a fixed port, for ``--duration`` seconds, against:

* the Replicate simulator (in this process): a prediction of ``MODEL`` created every
  ``1/--rate`` seconds with a ``completed`` webhook to serve, ``--files-per`` files each;
* moto's S3 server (its own process) behind a TCP proxy this script owns, so the store can
  go away (``--store-outage`` seconds: the listener closed and every open connection reset)
  while objects already written survive;
* the catalog: a database on a PostgreSQL cluster of our own (``tests/pg_cluster.py``;
  restarted twice, ``pg_ctl restart -m fast``), or an SQLite file (no restarts).

Load, from threads of this process: webhooks (sent by the simulator), gateway ``GET``s of
stored files (each body compared with the simulator's bytes), and hostile requests: bogus
signatures with large chunked bodies, 128 kB ``Range`` headers, signed bodies that can never
be accepted (deep JSON, oversized ids), unsigned posts, garbage gateway paths.

Events, at fractions of the duration: 0.2 PostgreSQL restart; 0.35 store outage; 0.5 serve
killed with SIGKILL and started again after ``--down`` seconds (webhooks sent meanwhile fail
for good: the sweep must find them); 0.75 PostgreSQL restart.

Then production stops and the script waits (``--drain`` seconds at most) until every file
is stored, and checks, each a count that must be 0:

* ``lost``: files of the simulator's predictions not ``stored`` in the catalog;
* ``corrupt``: stored objects whose bytes differ from the simulator's (sha256, read from
  moto directly, not through the proxy);
* ``duplicated``: objects under the prefix that no stored row names (a second copy);
* ``http_500``: answers with status 500 (or above 500 other than 503) to any request;
* ``tracebacks``: ``Traceback`` in serve's log;
* ``rss_growth``: serve's RSS after warm-up grew by more than ``--rss-slack`` MiB from the
  first to the last third of its longest life (sampled once a second from ``/proc``).

Usage (results: ``docs/RELIABILITY.md``)::

    python bench/soak.py                                  # 10 minutes on PostgreSQL
    python bench/soak.py --duration 30 --dialect sqlite   # the suite's version
    python bench/soak.py --json                           # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchutil as bu  # noqa: E402
from chaos import TcpProxy, own_postgres  # noqa: E402

MODEL = "soak/painter"


def make_file(n: int, j: int, size: int) -> Any:
    """File ``j`` of the prediction whose input is ``{"n": n}``: distinct bytes per (n, j)."""
    from cachelayer.testing.simulator import File

    return File(size=size + 89 * n + j, seed=(11 * n + j) % 64, filename=f"out-{j}.png")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Tally:
    """Answers seen by one kind of client: status -> count, transport errors, and the
    answers that break the rules (a 500, a body that differs)."""

    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    bad: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, what: str) -> None:
        with self.lock:
            self.statuses[str(status)] += 1
            if status >= 500 and status != 503:
                self.bad.append(f"{status} {what}")

    def to_dict(self) -> dict[str, Any]:
        return {"statuses": dict(self.statuses), "errors": self.errors, "bad": self.bad[:20]}


class Serve:
    """``python -m cachelayer.server`` on a fixed port; every life logs to the same file."""

    def __init__(self, env: dict[str, str], port: int, log: Path, args: list[str]) -> None:
        self.env, self.port, self.log, self.args = env, port, log, args
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.lives: list[list[tuple[float, int]]] = []

    def start(self, timeout: float = 60.0) -> None:
        import httpx

        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cachelayer.server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            cwd=self.log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.lives.append([])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"serve never became healthy:\n{self.output()[-3000:]}")

    def sample(self, t: float) -> None:
        if self.proc is not None and self.proc.poll() is None:
            rss = _rss_kib(self.proc.pid)
            if rss is not None:
                self.lives[-1].append((t, rss))

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def rss_report(lives: list[list[tuple[float, int]]], warmup: float, slack_mib: float) -> dict[str, Any]:
    """RSS of serve's longest life after ``warmup`` seconds: MiB at the median of the first
    and last thirds, the peak, and whether it grew by more than ``slack_mib``."""
    longest = max(lives, key=len, default=[])
    if not longest:
        return {"samples": 0, "growth_mib": None, "flat": False}
    t0 = longest[0][0]
    after = [kib for t, kib in longest if t - t0 >= warmup] or [kib for _, kib in longest]
    third = max(1, len(after) // 3)
    first = statistics.median(after[:third]) / 1024
    last = statistics.median(after[-third:]) / 1024
    return {
        "samples": len(after),
        "first_third_mib": round(first, 1),
        "last_third_mib": round(last, 1),
        "peak_mib": round(max(after) / 1024, 1),
        "growth_mib": round(last - first, 1),
        "flat": last - first <= slack_mib,
    }


class Soak:
    """One soak run; :meth:`run` returns the report (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.stop_load = threading.Event()
        self.tallies = {k: Tally() for k in ("gateway", "hostile", "healthz")}
        self.created: dict[str, int] = {}  # prediction id -> n
        self.created_lock = threading.Lock()
        self.events: list[tuple[float, str]] = []
        self.t0 = 0.0

    def log(self, what: str) -> None:
        t = time.monotonic() - self.t0
        self.events.append((round(t, 1), what))
        print(f"[{t:7.1f}s] {what}", file=sys.stderr, flush=True)

    # ---- load --------------------------------------------------------------------------

    def produce(self, sim: Any, version: str, hook: str) -> None:
        client = sim.replicate_client()
        n = 0
        period = 1.0 / self.a.rate
        while not self.stop_load.wait(period):
            try:
                p = client.predictions.create(
                    version=version, input={"n": n}, webhook=hook, webhook_events_filter=["completed"]
                )
            except Exception as exc:  # the simulator is ours and never down; note it
                self.log(f"create failed: {exc}")
                continue
            with self.created_lock:
                self.created[p.id] = n
            n += 1

    def gateway_load(self, gateway: Any, serve: Serve) -> None:
        import httpx

        tally = self.tallies["gateway"]
        with httpx.Client(timeout=30) as http:
            while not self.stop_load.wait(0.05):
                pick = gateway.random_stored()
                if pick is None:
                    continue
                url, expected = pick
                try:
                    r = http.get(url)
                except httpx.HTTPError:
                    tally.errors += 1
                    continue
                tally.add(r.status_code, url)
                if r.status_code == 200 and hashlib.sha256(r.content).hexdigest() != expected:
                    tally.bad.append(f"body differs: {url}")
                with suppress(httpx.HTTPError):
                    self.tallies["healthz"].add(http.get(f"{serve.url}/healthz").status_code, "/healthz")

    def hostile_load(self, serve: Serve, sim: Any, gateway: Any) -> None:
        import httpx

        tally = self.tallies["hostile"]
        big = self.a.hostile_body_mib * 1024 * 1024

        def chunks() -> Iterator[bytes]:
            block = b"[" * 65536
            for _ in range(big // len(block)):
                yield block

        def bogus_body() -> httpx.Response:
            headers = {
                "webhook-id": "msg_" + secrets.token_hex(8),
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1," + "A" * 44,
            }
            return http.post(f"{serve.url}/webhooks/replicate", content=chunks(), headers=headers)

        def signed(body: bytes) -> httpx.Response:
            headers = sim.sign_webhook(body)
            return http.post(f"{serve.url}/webhooks/replicate", content=body, headers=headers)

        def long_range() -> httpx.Response:
            pick = gateway.random_stored()
            url = pick[0] if pick else f"{serve.url}/files/x/y"
            return http.get(url, headers={"Range": "bytes=0-" + " " * 128_000 + "x"})

        attacks = [
            bogus_body,
            lambda: signed(b"[" * 100_000 + b"]" * 100_000),
            lambda: signed(json.dumps({"id": "x" * 10_000, "status": "succeeded", "output": None}).encode()),
            lambda: http.post(f"{serve.url}/webhooks/replicate", content=b"{}"),
            long_range,
            lambda: http.get(f"{serve.url}/files/not-a-signature/../../etc/passwd"),
        ]
        i = 0
        with httpx.Client(timeout=60) as http:
            while not self.stop_load.wait(0.2):
                which = i % len(attacks)
                i += 1
                started = time.monotonic()
                try:
                    r = attacks[which]()
                except httpx.HTTPError as exc:
                    tally.errors += 1
                    if not isinstance(exc, httpx.ConnectError):  # refused while serve is down
                        self.log(f"attack {which}: {exc!r}")
                    continue
                tally.add(r.status_code, f"attack {which}")
                took = time.monotonic() - started
                if took > 5:
                    self.log(f"attack {which} took {took:.1f} s ({r.status_code})")

    def sample_rss(self, serve: Serve) -> None:
        while not self.stop_load.wait(1.0):
            serve.sample(time.monotonic() - self.t0)

    # ---- the run -----------------------------------------------------------------------

    def run(self, moto: Any = None) -> dict[str, Any]:
        """The whole run; ``moto``: a running ``MotoS3Server`` to use (left running), else
        one of its own."""
        a = self.a
        with bu_servers(moto) as (moto, tmp), catalog(a.dialect, tmp) as (database_url, pg):
            return self._run(moto, tmp, database_url, pg)

    def _run(self, moto: Any, tmp: Path, database_url: str, pg: Any) -> dict[str, Any]:
        from cachelayer.testing.simulator import ReplicateSimulator

        a = self.a
        proxy = TcpProxy(("127.0.0.1", int(moto.endpoint_url.rsplit(":", 1)[1])))
        bucket = f"soak-{secrets.token_hex(4)}"
        s3 = moto.client()
        s3.create_bucket(Bucket=bucket)
        port = _free_port()
        with ReplicateSimulator(allow_http_webhooks=True, prediction_duration=0.3) as sim:
            version = sim.add_model(
                MODEL, outputs=lambda inp: [make_file(int(inp["n"]), j, a.size) for j in range(a.files_per)]
            )
            gateway_secret = secrets.token_urlsafe(24)
            env = dict(
                bu.child_env(moto),
                CACHELAYER_DATABASE_URL=database_url,
                CACHELAYER_STORAGE_URL=f"s3://{bucket}/soak",
                CACHELAYER_ALLOWED_HOSTS=sim.delivery_host_port,
                CACHELAYER_LEASE_SECONDS="5",
                CACHELAYER_URL_MODE="gateway",
                CACHELAYER_GATEWAY_URL=f"http://127.0.0.1:{port}",
                CACHELAYER_GATEWAY_SECRET=gateway_secret,
                CACHELAYER_GATEWAY_PROXY="1",
                CACHELAYER_WEBHOOK_SECRET=sim.settings.webhook_secret,
                CACHELAYER_SWEEP_INTERVAL=str(a.sweep_interval),
                AWS_ENDPOINT_URL_S3=proxy.url,
                REPLICATE_API_TOKEN=sim.token,
                REPLICATE_BASE_URL=sim.base_url,
            )
            done = subprocess.run(
                [str(Path(sys.executable).with_name("cachelayer")), "db", "upgrade"],
                env=env,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"db upgrade failed: {done.stderr}")
            serve = Serve(
                env,
                port,
                tmp / "serve.log",
                ["--workers", str(a.workers), "--grace", "5", "--no-access-log", "--log-level", "warning"],
            )
            serve.start()
            gateway = StoredFiles(database_url, env["CACHELAYER_GATEWAY_URL"], gateway_secret, a.size)
            self.t0 = time.monotonic()
            threads = [
                threading.Thread(target=self.produce, args=(sim, version, f"{serve.url}/webhooks/replicate")),
                threading.Thread(target=self.gateway_load, args=(gateway, serve)),
                threading.Thread(target=self.hostile_load, args=(serve, sim, gateway)),
                threading.Thread(target=self.sample_rss, args=(serve,)),
                threading.Thread(target=gateway.refresh_loop, args=(self.stop_load,)),
            ]
            for t in threads:
                t.daemon = True
                t.start()
            try:
                self.timeline(serve, proxy, pg)
            finally:
                self.stop_load.set()
                for t in threads:
                    t.join(120)
            drained = self.drain(gateway, sim)
            code = serve.stop()
            proxy.stop()
            report = self.check(gateway, sim, s3, bucket, serve, drained, code)
            gateway.close()
        s3.close()
        return report

    def timeline(self, serve: Serve, proxy: TcpProxy, pg: Any) -> None:
        a = self.a

        def at(fraction: float) -> None:
            left = self.t0 + a.duration * fraction - time.monotonic()
            if left > 0:
                time.sleep(left)

        self.log(f"load on: {a.rate}/s predictions, {a.files_per} files each")
        at(0.2)
        if pg is not None:
            self.log("PostgreSQL restart 1")
            pg.restart()
        at(0.35)
        self.log(f"store outage for {a.store_outage} s")
        proxy.stop()
        time.sleep(a.store_outage)
        proxy.start()
        self.log("store back")
        at(0.5)
        self.log("serve killed (SIGKILL)")
        serve.kill()
        time.sleep(a.down)
        serve.start()
        self.log("serve started again")
        at(0.75)
        if pg is not None:
            self.log("PostgreSQL restart 2")
            pg.restart()
        at(1.0)
        self.log("load off")

    def drain(self, gateway: StoredFiles, sim: Any) -> float | None:
        """Seconds until every file of every created prediction is stored, or ``None``."""
        started = time.monotonic()
        expected = len(self.created) * self.a.files_per
        while time.monotonic() - started < self.a.drain:
            stored = gateway.stored_count(list(self.created))
            if stored is not None and stored >= expected:
                self.log(f"drained: {stored} files stored")
                return time.monotonic() - started
            time.sleep(1.0)
        self.log("drain timed out")
        return None

    def check(
        self,
        gateway: StoredFiles,
        sim: Any,
        s3: Any,
        bucket: str,
        serve: Serve,
        drained: float | None,
        code: int,
    ) -> dict[str, Any]:
        a = self.a
        rows = gateway.rows(list(self.created))
        stored = {(r.prediction_id, r.output_path): r for r in rows if str(r.status) == "stored"}
        lost, corrupt = [], []
        for pid, n in self.created.items():
            for j in range(a.files_per):
                rec = stored.get((pid, f"/{j}"))
                if rec is None:
                    lost.append(f"{pid}/{j}")
                    continue
                want = make_file(n, j, a.size).sha256()
                body = s3.get_object(Bucket=bucket, Key=rec.key)["Body"].read()
                if hashlib.sha256(body).hexdigest() != want or rec.sha256 != want:
                    corrupt.append(f"{pid}/{j}")
        keys = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="soak/"):
            keys |= {o["Key"] for o in page.get("Contents", [])}
        named = {r.key for r in stored.values()}
        duplicated = sorted(k for k in keys - named if not k.startswith("soak/_manifests/"))
        log = serve.output()
        rss = rss_report(serve.lives, a.warmup, a.rss_slack)
        bad = sum(len(t.bad) for t in self.tallies.values())
        findings = {
            "lost": len(lost),
            "corrupt": len(corrupt),
            "duplicated": len(duplicated),
            "http_500": bad,
            "tracebacks": log.count("Traceback"),
            "rss_growth": 0 if rss["flat"] else 1,
        }
        return {
            "dialect": a.dialect,
            "duration_s": a.duration,
            "predictions": len(self.created),
            "files": len(self.created) * a.files_per,
            "drain_s": None if drained is None else round(drained, 1),
            "serve_exit": code,
            "findings": findings,
            "examples": {"lost": lost[:10], "corrupt": corrupt[:10], "duplicated": duplicated[:10]},
            "requests": {k: t.to_dict() for k, t in self.tallies.items()},
            "rss": rss,
            "events": self.events,
            "ok": not any(findings.values()) and drained is not None,
        }


class StoredFiles:
    """The catalog as the load generator sees it: stored files of this run and their
    gateway URLs (rendered with the run's gateway secret), refreshed once a second; every
    catalog error (a restart) just skips a refresh."""

    def __init__(self, database_url: str, gateway_base: str, secret: str, size: int) -> None:
        from cachelayer.catalog import Catalog
        from cachelayer.catalog.db import make_engine

        self.catalog = Catalog(make_engine(database_url), retry_seconds=5)
        self.base, self.secret, self.size = gateway_base, secret, size
        self._stored: list[tuple[str, str]] = []
        self.last_error = ""
        self._lock = threading.Lock()

    def refresh_loop(self, stop: threading.Event) -> None:
        from cachelayer.gateway_urls import gateway_url, secret_bytes

        key = secret_bytes(self.secret)
        while not stop.wait(1.0):
            try:
                page = self.catalog.list_files(status="stored", limit=200)
            except Exception as exc:  # a restart: try again next second
                self.last_error = repr(exc)
                continue
            found = [(gateway_url(self.base, key, r.key), r.sha256 or "") for r in page.files if r.sha256]
            with self._lock:
                self._stored = found

    def random_stored(self) -> tuple[str, str] | None:
        import random

        with self._lock:
            return random.choice(self._stored) if self._stored else None

    def rows(self, prediction_ids: list[str]) -> list[Any]:
        out = []
        for pid in prediction_ids:
            out.extend(self.catalog.files_of(pid))
        return out

    def stored_count(self, prediction_ids: list[str]) -> int | None:
        try:
            return sum(1 for r in self.rows(prediction_ids) if str(r.status) == "stored")
        except Exception:
            return None

    def close(self) -> None:
        self.catalog.engine.dispose()


@contextmanager
def bu_servers(given: Any = None) -> Iterator[tuple[Any, Path]]:
    """moto's S3 server (``given``, or one in a process of its own, stopped afterwards) and
    a temporary directory."""
    import tempfile

    from cachelayer.testing.s3server import MotoS3Server

    moto = given if given is not None else MotoS3Server()
    with tempfile.TemporaryDirectory(prefix="cachelayer-soak-") as tmp:
        try:
            yield moto, Path(tmp)
        finally:
            if given is None:
                moto.stop()


@contextmanager
def catalog(dialect: str, tmp: Path) -> Iterator[tuple[str, Any]]:
    """``(database_url, pg)``: an SQLite file (``pg`` None) or a database on our own cluster."""
    if dialect == "sqlite":
        yield f"sqlite:///{tmp}/catalog.db", None
        return
    from cachelayer.testing.fixtures import PostgresAdmin

    with own_postgres() as pg:
        yield PostgresAdmin(pg.url).create_database("soak_"), pg


def report_md(r: dict[str, Any]) -> str:
    rss = r["rss"]
    lines = [
        f"- {r['dialect']}, {r['duration_s']} s: {r['predictions']} predictions, {r['files']} files, "
        f"drained in {r['drain_s']} s after the load; serve exit {r['serve_exit']}",
        "- findings (each must be 0): " + ", ".join(f"{k} {v}" for k, v in r["findings"].items()),
        f"- serve RSS after warm-up: {rss.get('first_third_mib')} -> {rss.get('last_third_mib')} MiB "
        f"(peak {rss.get('peak_mib')} MiB, {rss['samples']} samples)",
    ]
    for kind, t in r["requests"].items():
        lines.append(f"- {kind}: {t['statuses']}, transport errors {t['errors']}")
    lines.append("- events: " + "; ".join(f"{t} s {what}" for t, what in r["events"]))
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    p.add_argument("--dialect", choices=("postgresql", "sqlite"), default="postgresql")
    p.add_argument("--rate", type=float, default=2.0, help="predictions created per second")
    p.add_argument("--files-per", type=int, default=2)
    p.add_argument("--size", type=int, default=32 * 1024, help="bytes per file (about)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--sweep-interval", type=float, default=5.0)
    p.add_argument("--store-outage", type=float, default=8.0, help="seconds")
    p.add_argument("--down", type=float, default=5.0, help="seconds serve stays dead")
    p.add_argument("--drain", type=float, default=180.0, help="seconds to wait for the last copies")
    p.add_argument("--hostile-body-mib", type=int, default=16)
    p.add_argument("--warmup", type=float, default=30.0, help="seconds of a life before RSS counts")
    p.add_argument("--rss-slack", type=float, default=30.0, help="MiB of RSS growth allowed")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def soak(argv: list[str], moto: Any = None) -> dict[str, Any]:
    """One run with the command-line arguments ``argv``; the report as a dict."""
    return Soak(parse(argv)).run(moto)


def main(argv: list[str]) -> int:
    args = parse(argv)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = Soak(args).run()
    print(json.dumps(result) if args.json else report_md(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
