"""``cachelayer serve`` under load over loopback (issue 10): the gateway and the webhook route.

Every server is a real ``python -m cachelayer.server`` process; moto's S3 server and the
load generator are processes of their own; the Replicate simulator runs in this process.
All of them share the machine (2 cores here), so the numbers include the load generator's
own CPU.

1. **gateway**: ``--files`` stored files (1 KB each, copied by ``CacheLayer.persist`` from
   the simulator into a private moto bucket, catalog on SQLite), their gateway URLs hit in
   random order by ``--connections`` keep-alive connections for ``--duration`` seconds
   (after a 2 s warm-up): requests/s and latency p50/p99. Modes, each a fresh server:

   * ``baseline``: a bare Starlette route answering a constant ``302`` under the same
     uvicorn settings: the ceiling of the stack, measured in the same run;
   * ``redirect``: ``302`` to a presigned URL (``CACHELAYER_PRESIGN_TTL=3600``, so a
     presigned URL is reused for 900 s, as in production);
   * ``redirect-nocache``: ``CACHELAYER_PRESIGN_TTL=3``: every request is signed afresh
     and looked up (the worst case: first hits after a deploy);
   * ``redirect-log``: ``redirect`` with uvicorn's access log on (the default of
     ``cachelayer serve``; ``--no-access-log`` turns it off);
   * ``proxy``: ``CACHELAYER_GATEWAY_PROXY=1``: the 1 KB bodies streamed from moto.

   The load generator is ``wrk`` (``apt-get install -y wrk``; a Lua script picks a random
   URL per request) or, with ``--loadgen python`` or when wrk is missing, the Python one in
   this file (asyncio + uvloop, raw HTTP/1.1 keep-alive).

2. **webhooks**: ``--webhooks`` simulated predictions, each with one ``--webhook-file-kb``
   output, are announced to a server with ``--workers 8`` copy threads by signed
   ``completed`` webhooks (``--webhook-concurrency`` at a time, each sent once): acks/s and
   ack latency p50/p99 while the copies run, then how many files the workers had stored by
   the end of the burst and the time until all were stored. Since issue 17 a delivery is
   acknowledged after one write (the inbox) and recorded and queued in the background, so
   "all stored" includes draining the inbox. The summary checks issue 17's targets with
   copies running: ack p99 < 100 ms at 8 concurrent deliveries, < 500 ms at 64, and
   >= 300 acks/s at 64 on PostgreSQL (``targets`` in ``--json``).

Usage::

    python bench/serve.py                                    # both parts, ~2 minutes
    python bench/serve.py --parts gateway --modes redirect,baseline --duration 20
    python bench/serve.py --parts webhooks --webhooks 2000 --webhook-concurrency 64
    python bench/serve.py --parts webhooks --catalog postgresql --webhook-concurrency 8,64   # issue 17
    python bench/serve.py --loadgen python                   # without wrk
    python bench/serve.py --parts webhooks --catalog postgresql --webhook-concurrency 8,64 \
        --other-code /path/to/other/checkout --rounds 3 --ack-only      # A/B, interleaved

``--other-code DIR`` runs every webhook run twice, with this code and with the
``cachelayer`` of another checkout (``PYTHONPATH``), alternating the order every round
(``--rounds N``), and prints the per-round p99 ratios (this / other): on a shared machine
only such interleaved ratios mean anything. ``--ack-only`` stops each server after the
burst instead of waiting for every copy (acknowledgements measured, minutes saved).

``--json`` prints the results as one JSON object (what the small test in ``tests/`` reads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve()
MODES = ("baseline", "redirect", "redirect-nocache", "redirect-log", "proxy")
_LISTENING = re.compile(r"listening on (http://\S+)")

BASELINE_APP = textwrap.dedent(
    """
    import socket, sys
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def redirect(request):
        return Response(b"", 302, headers={"location": "http://127.0.0.1:1/x", "cache-control": "no-store"})

    app = Starlette(routes=[Route("/files/{sig}/{key:path}", redirect, methods=["GET", "HEAD"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print("listening on http://127.0.0.1:%d" % sock.getsockname()[1], file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, server_header=False)).run(
        sockets=[sock]
    )
    """
)


# ---- processes ---------------------------------------------------------------------------


class Server:
    """A server process that logs ``listening on http://...``; stopped with SIGTERM."""

    def __init__(self, cmd: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = _LISTENING.search(log.read_text(errors="replace"))
            if m:
                self.url = m.group(1)
                self._wait_ready()
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"server did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def _wait_ready(self) -> None:
        import httpx

        for _ in range(600):
            try:
                httpx.get(self.url + "/files/x/y", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process has used so far (``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()


def _env(base: dict[str, str], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHELAYER_", "REPLICATE_", "AWS_"))}
    env.update(base)
    env.update(extra)
    return env


# ---- load generators ---------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def _load(
    host: str, port: int, requests: list[bytes], concurrency: int, duration: float | None, once: bool
) -> dict[str, Any]:
    """Send ``requests`` over ``concurrency`` keep-alive connections: each once (``once``)
    or picked at random until ``duration`` seconds have passed. Latencies in seconds."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    queue = iter(requests) if once else None
    deadline = time.perf_counter() + duration if duration else None

    def next_request() -> bytes | None:
        if queue is not None:
            return next(queue, None)
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        return random.choice(requests)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        while (req := next_request()) is not None:
            t0 = time.perf_counter()
            try:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if m and int(m.group(1)):
                    await reader.readexactly(int(m.group(1)))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
    }


def python_load(
    url: str, requests: list[bytes], concurrency: int, duration: float | None, once: bool = False
) -> dict[str, Any]:
    """Run :func:`_load` in a child process (its own GIL); returns its stats."""
    spec = Path(tempfile.mkstemp(suffix=".json")[1])
    parts = urlsplit(url)
    spec.write_text(
        json.dumps(
            {
                "host": parts.hostname,
                "port": parts.port,
                "requests": [r.decode("latin-1") for r in requests],
                "concurrency": concurrency,
                "duration": duration,
                "once": once,
            }
        )
    )
    try:
        done = subprocess.run(
            [sys.executable, str(BENCH), "--child-load", str(spec)],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        spec.unlink()
    return dict(json.loads(done.stdout))


def _child_load(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    requests = [r.encode("latin-1") for r in spec["requests"]]
    result = asyncio.run(
        _load(spec["host"], spec["port"], requests, spec["concurrency"], spec["duration"], spec["once"])
    )
    print(json.dumps(result))


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


WRK_THREADS = 1  # one wrk thread drives 64 connections and leaves the other core to the server


def wrk_load(url: str, paths: list[str], connections: int, duration: float, tmp: Path) -> dict[str, Any]:
    """``wrk -t1 -c N -d S --latency`` over ``paths`` (random per request)."""
    script = tmp / "paths.lua"
    listed = ",\n".join(json.dumps(p) for p in paths)
    script.write_text(
        "local paths = {\n" + listed + "\n}\n"
        "math.randomseed(os.time())\n"
        'request = function() return wrk.format("GET", paths[math.random(#paths)]) end\n'
    )
    cmd = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else float("nan")

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": total,
        "rps": rps,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": (int(non.group(1)) if non else 0) + (sum(int(g) for g in sock.groups()) if sock else 0),
        "loadgen": "wrk",
    }


# ---- the bench -----------------------------------------------------------------------------


class Bench:
    """The simulator (here), moto (a process) and a SQLite catalog in ``tmp``."""

    def __init__(self, tmp: Path, moto: Any = None, catalog: str = "sqlite") -> None:
        from cachelayer.testing.s3server import MotoS3Server
        from cachelayer.testing.simulator import ReplicateSimulator

        self.tmp = tmp
        self.own_moto = moto is None
        self.moto = moto or MotoS3Server(log_path=tmp / "moto.log")
        self.bucket = f"bench-serve-{secrets.token_hex(6)}"
        self.moto.create_bucket(self.bucket)
        self.sim = ReplicateSimulator().start()
        self.kind = catalog
        self.databases: list[str] = []
        self.catalog = self.new_catalog("catalog")
        self.base_env = {
            "CACHELAYER_DATABASE_URL": self.catalog,
            "CACHELAYER_STORAGE_URL": f"s3://{self.bucket}/replicate",
            "CACHELAYER_ALLOWED_HOSTS": self.sim.delivery_host_port,
            "AWS_ENDPOINT_URL_S3": self.moto.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.moto.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.moto.secret_access_key,
            "AWS_REGION": self.moto.region,
            "REPLICATE_API_TOKEN": self.sim.token,
            "REPLICATE_BASE_URL": self.sim.base_url,
        }
        self.servers: list[Server] = []

    def new_catalog(self, name: str) -> str:
        """A fresh, migrated catalog: a SQLite file, or a database on the local PostgreSQL."""
        if self.kind == "postgresql":
            from cachelayer.testing.fixtures import DEFAULT_POSTGRES_URL, PostgresAdmin

            self.admin = PostgresAdmin(os.environ.get("CACHELAYER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL)
            url = self.admin.create_database("bench_serve_")
            self.databases.append(url)
        else:
            url = f"sqlite:///{self.tmp}/{name}.db"
        from cachelayer.catalog.db import make_engine, upgrade

        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url

    def layer(self, **options: Any) -> Any:
        from cachelayer import CacheLayer

        for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            os.environ[k] = self.base_env[k]
        return CacheLayer(
            database_url=self.catalog,
            storage_url=f"s3://{self.bucket}/replicate",
            allowed_hosts=self.sim.delivery_host_port,
            replicate_api_token=self.sim.token,
            replicate_base_url=self.sim.base_url,
            **options,
        )

    def serve(self, *args: str, **env: str) -> Server:
        cmd = [sys.executable, "-m", "cachelayer.server", "--port", "0", *args]
        server = Server(cmd, _env(self.base_env, **env), self.tmp / f"serve-{len(self.servers)}.log")
        self.servers.append(server)
        return server

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        self.sim.stop()
        if self.own_moto:
            self.moto.stop()
        for url in self.databases:
            self.admin.drop_database(url)

    # ---- part 1 ------------------------------------------------------------------------------

    def seed_gateway(self, files: int) -> list[str]:
        """``files`` stored 1 KB files (10 per prediction); their gateway URL paths."""
        from cachelayer.testing.simulator import File

        layer = self.layer()
        keys: list[str] = []
        for p in range(0, files, 10):
            outputs = [
                File(secrets.token_bytes(1000), filename=f"{i}.png") for i in range(min(10, files - p))
            ]
            pid = self.sim.seed_prediction("bench/gateway", {"n": p}, outputs)
            layer.persist(pid)
            keys += [f.key for f in layer.catalog.files_of(pid)]
        from cachelayer import gateway_urls
        from cachelayer.catalog.server_state import gateway_secret

        secret = gateway_secret(layer.engine, None)
        layer.close()
        return [urlsplit(gateway_urls.gateway_url("http://x", secret, k)).path for k in keys]

    def gateway(
        self, modes: Sequence[str], files: int, connections: int, duration: float, loadgen: str
    ) -> dict[str, Any]:
        paths = self.seed_gateway(files)
        results: dict[str, Any] = {"files": len(paths), "connections": connections, "duration": duration}
        for mode in modes:
            if mode == "baseline":
                script = self.tmp / "baseline_app.py"
                script.write_text(BASELINE_APP)
                server = Server([sys.executable, str(script)], _env({}), self.tmp / "baseline.log")
                self.servers.append(server)
            else:
                args = ["--workers", "0"] + ([] if mode == "redirect-log" else ["--no-access-log"])
                env = {
                    "redirect": {"CACHELAYER_PRESIGN_TTL": "3600"},
                    "redirect-log": {"CACHELAYER_PRESIGN_TTL": "3600"},
                    "redirect-nocache": {"CACHELAYER_PRESIGN_TTL": "3"},
                    "proxy": {"CACHELAYER_GATEWAY_PROXY": "1"},
                }[mode]
                server = self.serve(*args, **env)
            host = urlsplit(server.url).hostname
            requests = [f"GET {p} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode() for p in paths]
            if loadgen == "wrk":
                wrk_load(server.url, paths, connections, 2, self.tmp)  # warm-up
                cpu = server.cpu_seconds()
                stats = wrk_load(server.url, paths, connections, duration, self.tmp)
            else:
                python_load(server.url, requests, connections, 2)
                cpu = server.cpu_seconds()
                stats = python_load(server.url, requests, connections, duration)
                stats["loadgen"] = "python"
            stats["server_cpu_ms_per_request"] = (
                (server.cpu_seconds() - cpu) * 1000 / max(1, stats["requests"])
            )
            stats["load_average_after"] = round(os.getloadavg()[0], 2)
            results[mode] = stats
            server.stop()
            _print(f"gateway {mode:17} {_line(stats)}")
        return results

    # ---- part 2 ------------------------------------------------------------------------------

    def webhooks(
        self,
        count: int,
        file_kb: int,
        concurrency: int,
        workers: int,
        external: bool = False,
        other_code: str | None = None,
        ack_only: bool = False,
    ) -> dict[str, Any]:
        """``ack_only``: stop the server after the burst instead of waiting until every file
        is stored (what it left is not copied; ``all_stored_seconds`` is NaN).
        ``external``: the copies run in a separate ``cachelayer worker`` process (same
        threads) instead of the server's own threads. ``other_code``: a checkout whose
        ``cachelayer`` the server (and worker) run instead of this one (``PYTHONPATH``)."""
        from cachelayer.testing.simulator import File

        # a fresh catalog per run, so the counts below are this run's
        self.runs = getattr(self, "runs", 0) + 1
        self.catalog = self.new_catalog(f"webhooks-{self.runs}")
        self.base_env["CACHELAYER_DATABASE_URL"] = self.catalog
        bodies = []
        for i in range(count):
            out = File(
                size=file_kb * 1024, seed=i % 32, filename="out.bin", content_type="application/octet-stream"
            )
            pid = self.sim.seed_prediction("bench/webhooks", {"n": i}, out)
            bodies.append(json.dumps(self.sim.prediction(pid)).encode())
        code = {"PYTHONPATH": other_code} if other_code else {}
        server = self.serve(
            "--workers",
            "0" if external else str(workers),
            "--no-access-log",
            CACHELAYER_WEBHOOK_SECRET=self.sim.webhook_secret,
            **code,
        )
        worker = None
        if external and workers:
            cli = str(Path(sys.executable).with_name("cachelayer"))
            worker = subprocess.Popen(
                [cli, "worker", "--concurrency", str(workers), "--quiet"],
                env=_env(self.base_env, **code),
                stdout=subprocess.DEVNULL,
                stderr=open(self.tmp / f"worker-{self.runs}.log", "wb"),  # noqa: SIM115
            )
        host = urlsplit(server.url).hostname
        requests = []
        for body in bodies:
            headers = "".join(f"{k}: {v}\r\n" for k, v in self.sim.sign_webhook(body).items())
            requests.append(
                (
                    f"POST /webhooks/replicate HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n{headers}\r\n"
                ).encode()
                + body
            )
        layer = self.layer()
        started = time.monotonic()
        cpu = server.cpu_seconds()
        stats = python_load(server.url, requests, concurrency, None, once=True)
        stats["server_cpu_ms_per_request"] = (server.cpu_seconds() - cpu) * 1000 / max(1, stats["requests"])
        stats["load_average_after"] = round(os.getloadavg()[0], 2)
        counts = layer.catalog.queue.counts()
        stats["stored_by_end_of_burst"] = counts.get("stored", 0)
        while workers and not ack_only and layer.catalog.queue.counts().get("stored", 0) < count:
            time.sleep(0.2)
        stats["all_stored_seconds"] = time.monotonic() - started if workers and not ack_only else float("nan")
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
        stats["copy_mb_per_s"] = count * file_kb / 1024 / stats["all_stored_seconds"]
        stats.update(
            webhooks=count,
            file_kb=file_kb,
            concurrency=concurrency,
            workers=workers,
            external_workers=external,
            loadgen="python",
            code="other" if other_code else "this",
        )
        layer.close()
        server.stop()
        _print(
            f"webhooks c={concurrency:<3} {'out' if external else 'in '} {stats['code']:5} {_line(stats)}; "
            "stored by the end of the burst "
            f"{stats['stored_by_end_of_burst']}/{count}, "
            f"all stored after {stats['all_stored_seconds']:.1f} s "
            f"({stats['copy_mb_per_s']:.1f} MB/s)"
        )
        return stats


#: Issue 17's acknowledgement targets with copies running: ack p99 (ms) by concurrency,
#: and acks/s at 64 concurrent deliveries on PostgreSQL.
P99_TARGETS_MS = {8: 100.0, 64: 500.0}
ACKS_PER_SECOND_TARGET = 300.0


def ack_targets(runs: Sequence[dict[str, Any]], catalog: str) -> list[dict[str, Any]]:
    """Each target that applies to ``runs`` (webhook results with copies running), with the
    measured value and whether it was met."""
    out: list[dict[str, Any]] = []
    for s in runs:
        if not s["workers"] or s["concurrency"] not in P99_TARGETS_MS:
            continue
        where = f"c={s['concurrency']} {'worker process' if s['external_workers'] else 'in serve'}"
        limit = P99_TARGETS_MS[s["concurrency"]]
        out.append(
            {"what": f"ack p99 < {limit:.0f} ms, {where}", "value": s["p99_ms"], "met": s["p99_ms"] < limit}
        )
        if s["concurrency"] == 64 and catalog == "postgresql":
            met = s["rps"] >= ACKS_PER_SECOND_TARGET
            what = f"acks/s >= {ACKS_PER_SECOND_TARGET:.0f}, {where}"
            out.append({"what": what, "value": s["rps"], "met": met})
    return out


def compare(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """This code against ``--other-code``, per concurrency and placement: the medians over
    the rounds of p99, acks/s and server CPU per ack, and the median of the per-round
    p99 ratios (this / other: below 1 is better)."""
    import statistics

    out: list[dict[str, Any]] = []
    keys = sorted({(s["concurrency"], s["external_workers"]) for s in runs})
    for c, external in keys:
        mine = [
            s for s in runs if (s["concurrency"], s["external_workers"], s["code"]) == (c, external, "this")
        ]
        other = [
            s for s in runs if (s["concurrency"], s["external_workers"], s["code"]) == (c, external, "other")
        ]
        row: dict[str, Any] = {"concurrency": c, "external_workers": external, "rounds": len(mine)}
        for name, group in (("this", mine), ("other", other)):
            for k in ("p99_ms", "rps", "server_cpu_ms_per_request", "load_average_after"):
                row[f"{name}_{k}"] = statistics.median(s[k] for s in group)
        row["p99_ratios"] = [a["p99_ms"] / b["p99_ms"] for a, b in zip(mine, other, strict=False)]
        row["p99_ratio_median"] = statistics.median(row["p99_ratios"])
        out.append(row)
    return out


_QUIET = False


def _print(text: str) -> None:
    if not _QUIET:
        print(text, file=sys.stderr, flush=True)


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['rps']:8.0f} req/s  p50 {s['p50_ms']:6.2f} ms  p99 {s['p99_ms']:6.2f} ms  "
        f"server CPU {s['server_cpu_ms_per_request']:.3f} ms/req  "
        f"({s['requests']} requests, {s['errors']} errors)"
    )


def run(
    *,
    parts: Sequence[str] = ("gateway", "webhooks"),
    modes: Sequence[str] = MODES,
    files: int = 1000,
    connections: int = 64,
    duration: float = 10.0,
    loadgen: str = "auto",
    webhooks: int = 1000,
    webhook_file_kb: int = 256,
    webhook_concurrency: Sequence[int] = (8, 64),
    workers: int = 8,
    placements: Sequence[str] = ("in",),
    catalog: str = "sqlite",
    moto: Any = None,
    other_code: str | None = None,
    rounds: int = 1,
    ack_only: bool = False,
) -> dict[str, Any]:
    """Run the bench; returns the results (also what ``--json`` prints). ``other_code``: a
    checkout of another commit whose webhook runs alternate with this code's, ``rounds``
    times (the order swapped every other round), and ``comparison`` in the results."""
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_before": round(os.getloadavg()[0], 2),
        },
        "loadgen": loadgen,
        "catalog": catalog,
    }
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        bench = Bench(Path(tmp), moto, catalog)
        try:
            if "gateway" in parts:
                results["gateway"] = bench.gateway(modes, files, connections, duration, loadgen)
            if "webhooks" in parts:
                codes: list[str | None] = [None, other_code] if other_code else [None]
                results["webhooks"] = [
                    bench.webhooks(webhooks, webhook_file_kb, c, workers, placement == "out", code, ack_only)
                    for r in range(max(1, rounds))
                    for c in webhook_concurrency
                    for placement in placements
                    for code in (codes if r % 2 == 0 else codes[::-1])
                ]
                ours = [s for s in results["webhooks"] if s["code"] == "this"]
                results["targets"] = ack_targets(ours, catalog)
                if other_code:
                    results["comparison"] = compare(results["webhooks"])
        finally:
            bench.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    global _QUIET, WRK_THREADS
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", default="gateway,webhooks")
    ap.add_argument("--modes", default=",".join(MODES), help=f"gateway modes: {', '.join(MODES)}")
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per gateway mode")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    ap.add_argument("--wrk-threads", type=int, default=WRK_THREADS)
    ap.add_argument("--webhooks", type=int, default=1000)
    ap.add_argument("--webhook-file-kb", type=int, default=256)
    ap.add_argument("--webhook-concurrency", default="8,64")
    ap.add_argument("--workers", type=int, default=8, help="copy threads of the webhook server")
    ap.add_argument(
        "--placement",
        default="in",
        help="where the copies run: in (serve --workers N), out (serve --workers 0 + cachelayer worker), "
        "or in,out",
    )
    ap.add_argument("--catalog", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument(
        "--other-code",
        help="a checkout of another commit: its webhook runs alternate with this code's (PYTHONPATH)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="webhook rounds (with --other-code: A/B pairs)")
    ap.add_argument(
        "--ack-only",
        action="store_true",
        help="stop each webhook server after the burst (acks measured; copies not waited for)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child-load", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_load:
        _child_load(args.child_load)
        return 0
    if args.other_code and not (Path(args.other_code) / "cachelayer" / "server").is_dir():
        ap.error(f"--other-code {args.other_code}: no cachelayer/server there")
    WRK_THREADS = args.wrk_threads
    _QUIET = args.json
    results = run(
        parts=args.parts.split(","),
        modes=args.modes.split(","),
        files=args.files,
        connections=args.connections,
        duration=args.duration,
        loadgen=args.loadgen,
        webhooks=args.webhooks,
        webhook_file_kb=args.webhook_file_kb,
        webhook_concurrency=[int(c) for c in args.webhook_concurrency.split(",")],
        workers=args.workers,
        placements=args.placement.split(","),
        catalog=args.catalog,
        other_code=args.other_code,
        rounds=args.rounds,
        ack_only=args.ack_only,
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _summary(results)
    return 0


def _summary(results: dict[str, Any]) -> None:
    g = results.get("gateway")
    if g:
        print(
            f"\ngateway: {g['files']} files, {g['connections']} connections, {g['duration']:.0f} s per mode"
        )
        base = g.get("baseline", {}).get("rps")
        for mode in MODES:
            if mode in g:
                s = g[mode]
                ratio = f"  ({s['rps'] / base:.2f} x baseline)" if base and mode != "baseline" else ""
                print(f"  {mode:17} {_line(s)}{ratio}")
    print(
        f"catalog {results['catalog']}, load generator {results['loadgen']}, load average before "
        f"{results['machine']['load_average_before']}"
    )
    for s in results.get("webhooks", []):
        print(
            f"webhooks ({s['code']} code): {s['webhooks']} x {s['file_kb']} KB, {s['workers']} workers "
            f"({'cachelayer worker' if s['external_workers'] else 'in serve'}), concurrency "
            f"{s['concurrency']}: {s['rps']:.0f} acks/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
            f"server CPU {s['server_cpu_ms_per_request']:.2f} ms/ack; "
            f"{s['stored_by_end_of_burst']} stored by the end of the burst, "
            f"all after {s['all_stored_seconds']:.1f} s"
        )
    for row in results.get("comparison", []):
        ratios = ", ".join(f"{r:.2f}" for r in row["p99_ratios"])
        where = "worker process" if row["external_workers"] else "in serve"
        print(
            f"this vs other, c={row['concurrency']} {where}, medians of {row['rounds']} rounds: "
            f"p99 {row['this_p99_ms']:.1f} vs {row['other_p99_ms']:.1f} ms "
            f"(ratios {ratios}; median {row['p99_ratio_median']:.2f}), acks/s {row['this_rps']:.0f} vs "
            f"{row['other_rps']:.0f}, server CPU {row['this_server_cpu_ms_per_request']:.2f} vs "
            f"{row['other_server_cpu_ms_per_request']:.2f} ms/ack"
        )
    for t in results.get("targets", []):
        print(f"target {t['what']}: {t['value']:.1f} -> {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
