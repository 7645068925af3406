"""Chaos campaign: ``kill -9``, delivery faults and server outages against real servers (issue 8).

One campaign per catalog (SQLite file; a database on a PostgreSQL cluster of our own,
``tests/pg_cluster.OwnPostgres``: ``initdb``/``pg_ctl`` on a free port, never the shared
server), against the Replicate simulator (its own process, seeded with a web history) and
moto's S3 server reached through a TCP proxy this script owns:

1. **kills**: ``--kills`` rounds; each starts the real CLI ``cachelayer backfill`` and, at the
   same time, a small Python child calling ``CacheLayer(...).run(MODEL, input={"n": k})``
   (a new prediction, ``--files-per`` files), then ``kill -9`` each at its own random moment
   (uniform in ``--kill-window`` seconds after launch).
2. **delivery faults** from the first kill to the drain: the simulator process draws for
   each delivery ``GET`` in turn 40 % truncated body, 15 % ``429`` (``Retry-After: 1``), 5 %
   dropped connection, 5 % ``500``, 5 % ``503``, else none, and injects the drawn fault
   (``inject_fault(..., times=1)``) for the next request. Under concurrency a few requests
   pass between draws, so the report gives the faults actually served against the delivery
   ``GET`` count.
3. **outages** (backfills that are not killed): the S3 endpoint goes away mid-upload
   (the proxy closes its listener and resets every open connection, for ``--s3-outage``
   seconds, then listens again on the same port; moto keeps running, so objects already
   stored survive, as they would on a real S3 outage), and on PostgreSQL ``pg_ctl restart -m
   fast`` of our own cluster mid-run.
4. **drain**: one ``cachelayer backfill`` and one ``cachelayer worker --once``, not killed.

Then the checks, each a count that must be 0: retrievable files (every file of every
succeeded prediction the simulator lists) not stored (``lost``); stored with a sha256 other
than the simulator's ``File.sha256()`` or an object whose bytes differ (``truncated``); more
than one row per file or per key (``duplicated``); rows ``stored`` whose object is absent
(``missing objects``); objects under the prefix without a stored row (``orphans``); rows
still leased (``stale leases``); stderr of any process with a traceback, or a CLI failure
that printed more than one line (``tracebacks``). Exit status 1 when any is non-zero.

Usage (results: ``docs/RELIABILITY.md``)::

    python bench/chaos.py                                   # 20 + 20 kills, SQLite and PostgreSQL
    python bench/chaos.py --dialects sqlite --kills 3 --predictions 8
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchutil as bu  # noqa: E402

BENCH = Path(__file__).resolve()
CLI = str(Path(sys.executable).with_name("cachelayer"))
MODEL = "chaos/painter"
FAULT_MIX = {"truncate": 0.40, "429": 0.15, "drop": 0.05, "500": 0.05, "503": 0.05}


def make_file(n: int, j: int, size: int) -> Any:
    """File ``j`` of the prediction whose input is ``{"n": n}``: distinct bytes per (n, j)."""
    from cachelayer.testing.simulator import File

    return File(size=size + 97 * n + j, seed=(7 * n + j) % 32, filename=f"out-{j}.png")


# ---- simulator child ------------------------------------------------------------------


def serve(cfg: dict[str, Any]) -> None:
    """The simulator process: model ``MODEL`` (files from the input's ``n``), ``predictions``
    web predictions, and the ``rate on|off`` / ``faults`` commands."""
    from datetime import datetime, timedelta, timezone

    injected: list[tuple[str, Any]] = []
    rate = {"on": False}

    def seed(sim: Any) -> Any:
        files_per, size = cfg["files_per"], cfg["size"]
        sim.add_model(
            MODEL,
            outputs=lambda inp: [make_file(int(inp["n"]), j, size) for j in range(files_per)],
            duration=0.5,
        )
        now = datetime.now(timezone.utc)
        for n in range(cfg["predictions"]):
            created = now - timedelta(seconds=120 + n)
            sim.seed_prediction(
                MODEL,
                input={"n": n},
                output=[make_file(n, j, size) for j in range(files_per)],
                source="web",
                created_at=created,
                completed_at=created + timedelta(seconds=1),
            )
        return None

    def inject_one(sim: Any, label: str) -> Any:
        kind = label if label in ("truncate", "drop") else "status"
        status = None if kind != "status" else int(label)
        retry_after = 1 if label == "429" else None
        fault = sim.inject_fault(kind, 1, "/delivery/", status, retry_after, method="GET")
        injected.append((label, fault))
        return fault

    def schedule(sim: Any) -> None:
        """While faults are ``on``, draw for each delivery GET in turn one of the
        :data:`FAULT_MIX` kinds with its share, else no fault; a drawn fault is injected
        and waits for the next request (one pending at a time, so the shares hold)."""
        rng = random.Random(cfg["seed"])
        seen = {"index": 0, "gets": 0}
        slot = 0  # delivery GETs decided so far

        def gets() -> int:
            log = sim.request_log
            for r in log[seen["index"] :]:
                seen["gets"] += r.method == "GET" and r.path.startswith("/delivery/")
            seen["index"] = len(log)
            return seen["gets"]

        while True:
            if not rate["on"]:
                time.sleep(0.01)
                continue
            draw, acc, label = rng.random(), 0.0, None
            for name, share in FAULT_MIX.items():
                acc += share
                if draw < acc:
                    label = name
                    break
            if label is None:
                slot += 1
                while rate["on"] and gets() < slot:
                    time.sleep(0.005)
            else:
                fault = inject_one(sim, label)
                while rate["on"] and fault.remaining > 0:
                    time.sleep(0.005)
                slot = max(slot + 1, gets())

    def faults_on(sim: Any, arg: str) -> Any:
        if not rate.get("thread"):
            rate["thread"] = True
            threading.Thread(target=schedule, args=(sim,), daemon=True).start()
        rate["on"] = arg == "on"
        if not rate["on"]:
            sim.clear_faults()
        return rate["on"]

    def faults(sim: Any, arg: str) -> Any:
        out: dict[str, list[int]] = {}
        for label, fault in injected:
            counts = out.setdefault(label, [0, 0])
            counts[0] += 1
            counts[1] += fault.remaining == 0
        delivery = [r for r in sim.request_log if r.method == "GET" and r.path.startswith("/delivery/")]
        return {"kinds": out, "delivery_gets": len(delivery)}

    bu.serve_simulator(seed, {"rate": faults_on, "faults": faults})


# ---- run child ------------------------------------------------------------------------


def child_run(spec: dict[str, Any]) -> int:
    """``CacheLayer(...).run(MODEL, input={"n": spec["n"]})``; a typed error is one line."""
    from cachelayer import CacheLayer
    from cachelayer.errors import CacheLayerError

    print("ready", flush=True)  # imports done: the parent's kill clock starts now
    try:
        with CacheLayer(
            database_url=spec["database_url"],
            storage_url=spec["storage_url"],
            s3_endpoint_url=spec["endpoint"],
            s3_region=spec["region"],
            replicate_api_token=spec["token"],
            replicate_base_url=spec["base_url"],
            allowed_hosts=spec["host_port"],
        ) as layer:
            output = layer.run(MODEL, input={"n": spec["n"]})
    except CacheLayerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"output": output}))
    return 0


# ---- the S3 outage: a TCP proxy in front of moto --------------------------------------


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``. :meth:`stop` closes the listener and resets
    every open connection (clients see refused / reset connections); :meth:`start` listens
    on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        lst.listen(128)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def stop(self) -> None:
        lst, self._listener = self._listener, None
        if lst is not None:
            with suppress(OSError):
                lst.shutdown(socket.SHUT_RDWR)
            lst.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()  # linger 0: RST

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


# ---- the campaign ---------------------------------------------------------------------


@dataclass
class Proc:
    """A finished (or killed) child: what it was, its exit status and output."""

    what: str
    status: int
    killed: bool
    stdout: str
    stderr: str


@dataclass
class Result:
    """One campaign's figures and findings (every finding count must be 0)."""

    dialect: str
    files: int = 0
    predictions: int = 0
    kills: dict[str, int] = field(default_factory=lambda: {"backfill": 0, "run": 0})
    outages: dict[str, int] = field(default_factory=lambda: {"s3": 0, "postgres": 0})
    faults: dict[str, Any] = field(default_factory=dict)
    findings: dict[str, int] = field(default_factory=dict)
    details: dict[str, list[str]] = field(default_factory=dict)
    exits: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(self.findings.values())


class Campaign:
    """The servers of one campaign (see the module docstring). ``moto``: a running
    ``MotoS3Server`` to use (tests), else one of our own; ``pg``: a started ``OwnPostgres``
    for the PostgreSQL campaign."""

    def __init__(
        self,
        *,
        predictions: int,
        files_per: int,
        size: int,
        moto: Any = None,
        seed: int,
        kill_window: tuple[float, float] = (0.5, 4.0),
        s3_outage: float = 2.0,
    ) -> None:
        cfg = json.dumps({"predictions": predictions, "files_per": files_per, "size": size, "seed": seed})
        self.servers = bu.Servers([sys.executable, str(BENCH), "--serve-sim", cfg], moto=moto)
        host, port = self.servers.moto.endpoint_url.rsplit("/", 1)[-1].rsplit(":", 1)
        self.proxy = TcpProxy((host, int(port)))
        self.files_per, self.size, self.rng = files_per, size, random.Random(seed)
        self.kill_window, self.s3_outage = kill_window, s3_outage
        self.next_n = predictions  # inputs of run children continue after the seeded ones
        self.procs: list[Proc] = []

    def close(self) -> None:
        self.proxy.stop()
        self.servers.close()

    # -- processes -----------------------------------------------------------------------

    def env(self, database_url: str, bucket: str, prefix: str) -> dict[str, str]:
        env = self.servers.cli_env(database_url, bucket, prefix)
        env["AWS_ENDPOINT_URL_S3"] = self.proxy.url
        return env

    def launch(self, what: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.what = what  # type: ignore[attr-defined]
        return proc

    def finish(self, proc: subprocess.Popen[bytes], killed: bool = False, timeout: float = 600) -> Proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            err += b"\n[chaos: hung, killed after the timeout]"
        done = Proc(
            proc.what, proc.returncode, killed, out.decode(errors="replace"), err.decode(errors="replace")
        )  # type: ignore[attr-defined]
        self.procs.append(done)
        return done

    def kill_later(self, proc: subprocess.Popen[bytes], after_ready: bool = False) -> threading.Thread:
        """``kill -9`` at a random moment of the kill window after launch (``after_ready``:
        after the child printed its ``ready`` line, so the moment falls in the work itself)."""
        lo, hi = self.kill_window
        delay = self.rng.uniform(0.0, hi - lo) if after_ready else self.rng.uniform(lo, hi)

        def kill() -> None:
            if after_ready:
                assert proc.stdout is not None
                proc.stdout.readline()
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.killed = True  # type: ignore[attr-defined]

        t = threading.Thread(target=kill, daemon=True)
        t.start()
        return t

    def backfill_cmd(self) -> list[str]:
        return [CLI, "backfill", "--json", "--quiet", "--concurrency", "4"]

    def run_child(self, env: dict[str, str], database_url: str, storage_url: str) -> subprocess.Popen[bytes]:
        spec = dict(
            database_url=database_url,
            storage_url=storage_url,
            endpoint=self.proxy.url,
            region=self.servers.moto.region,
            token=self.servers.sim.token,
            base_url=self.servers.sim.base_url,
            host_port=self.servers.sim.delivery_host_port,
            n=self.next_n,
        )
        self.next_n += 1
        return self.launch("run", [sys.executable, str(BENCH), "--child-run", json.dumps(spec)], env)

    def faults(self, on: bool) -> None:
        """Delivery faults at the :data:`FAULT_MIX` rates from now on (``on``), or none."""
        self.servers.sim.ask("rate", "on" if on else "off")

    # -- the campaign ----------------------------------------------------------------------

    def run(self, dialect: str, database_url: str, kills: int, outages: int, pg: Any = None) -> Result:
        """Kills, faults, outages, drain, checks; returns the figures and findings."""
        t0 = time.perf_counter()
        result = Result(dialect)
        with self.servers.bucket(f"chaos-{dialect[:2]}", keep=True) as bucket:
            prefix = "c"
            env = self.env(database_url, bucket, prefix)
            storage_url = f"s3://{bucket}/{prefix}"
            self.finish(self.launch("db upgrade", [CLI, "db", "upgrade"], env))
            self.faults(True)
            for _ in range(kills):  # 1. backfill and run, each killed at its own moment
                b = self.launch("backfill (kill)", self.backfill_cmd(), env)
                r = self.run_child(env, database_url, storage_url)
                tb, tr = self.kill_later(b), self.kill_later(r, after_ready=True)
                tb.join(), tr.join()
                for p, kind in ((b, "backfill"), (r, "run")):
                    killed = getattr(p, "killed", False)
                    result.kills[kind] += killed
                    self.finish(p, killed)
            for _ in range(outages):
                # 3. S3 goes away mid-upload (a run child makes sure there is work in flight)
                b = self.launch("backfill (S3 outage)", self.backfill_cmd(), env)
                r = self.run_child(env, database_url, storage_url)
                self.await_progress(database_url)
                self.proxy.stop()
                time.sleep(self.s3_outage)
                self.proxy.start()
                result.outages["s3"] += 1
                self.finish(b), self.finish(r)
                if pg is not None:  # PostgreSQL restart mid-run
                    b = self.launch("backfill (PostgreSQL restart)", self.backfill_cmd(), env)
                    r = self.run_child(env, database_url, storage_url)
                    self.await_progress(database_url)
                    pg.restart()
                    result.outages["postgres"] += 1
                    self.finish(b), self.finish(r)
            # 4. drain, the delivery incident over
            self.faults(False)
            self.finish(self.launch("backfill (drain)", self.backfill_cmd(), env))
            self.finish(self.launch("worker --once", [CLI, "worker", "--once", "--json", "--quiet"], env))
            result.faults = self.servers.sim.ask("faults")
            self.check(result, database_url, bucket, prefix)
            self.servers.delete_bucket(bucket)
        for p in self.procs:
            result.exits.setdefault(p.what, []).append(-9 if p.killed else p.status)
        result.seconds = time.perf_counter() - t0
        return result

    def await_progress(self, database_url: str, timeout: float = 30.0) -> None:
        """Return once one more file is ``stored`` than at the call (the run is copying), then
        after a random 0-0.5 s more; or after ``timeout`` seconds."""
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url)
        count = text("SELECT count(*) FROM output_files WHERE status = 'stored'")
        try:
            with engine.connect() as conn:
                start = conn.execute(count).scalar_one()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.execute(count).scalar_one() > start:
                        break
                time.sleep(0.05)
        finally:
            engine.dispose()
        time.sleep(self.rng.uniform(0.0, 0.5))

    # -- the checks ------------------------------------------------------------------------

    def expected(self) -> dict[tuple[str, str], str]:
        """(prediction id, output path) -> sha256 of every file of every succeeded
        prediction the simulator lists (read through its API, as a client would)."""
        import requests

        sim = self.servers.sim
        url: str | None = f"{sim.base_url}/v1/predictions"
        out: dict[tuple[str, str], str] = {}
        while url:
            page = requests.get(url, headers={"Authorization": f"Bearer {sim.token}"}, timeout=30).json()
            for p in page["results"]:
                if p["status"] != "succeeded":
                    continue
                full = requests.get(
                    f"{sim.base_url}/v1/predictions/{p['id']}",
                    headers={"Authorization": f"Bearer {sim.token}"},
                    timeout=30,
                ).json()
                n = int(full["input"]["n"])
                for j in range(self.files_per):
                    out[(p["id"], f"/{j}")] = make_file(n, j, self.size).sha256()
            url = page.get("next")
        return out

    def check(self, result: Result, database_url: str, bucket: str, prefix: str) -> None:
        from sqlalchemy import create_engine, text

        expected = self.expected()
        result.files = len(expected)
        result.predictions = len({pid for pid, _ in expected})
        engine = create_engine(database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT prediction_id, output_path, key, status, sha256, lease_owner FROM output_files")
            ).all()
        engine.dispose()
        s3 = self.servers.s3
        objects = self.servers.objects(bucket, prefix)
        stored = [r for r in rows if r.status == "stored"]
        by_file: dict[tuple[str, str], list[Any]] = {}
        for r in rows:
            by_file.setdefault((r.prediction_id, r.output_path), []).append(r)
        keys = [r.key for r in stored]
        d: dict[str, list[str]] = {}
        d["lost"] = [
            f"{k}: {[r.status for r in by_file.get(k, [])] or 'no row'}"
            for k in expected
            if not any(r.status == "stored" for r in by_file.get(k, []))
        ]
        d["duplicated"] = [f"{k}: {len(v)} rows" for k, v in by_file.items() if len(v) > 1]
        d["duplicated"] += [f"key {k}: {keys.count(k)} stored rows" for k in set(keys) if keys.count(k) > 1]
        d["unexpected rows"] = [f"{k}" for k in by_file if k not in expected]
        d["truncated"] = []
        d["missing objects"] = []
        for r in stored:
            rel = r.key[len(prefix) + 1 :]
            want = expected.get((r.prediction_id, r.output_path))
            if rel not in objects:
                d["missing objects"].append(r.key)
                continue
            body = s3.get_object(Bucket=bucket, Key=r.key)["Body"].read()
            actual = hashlib.sha256(body).hexdigest()
            if r.sha256 != want or actual != want:
                d["truncated"].append(
                    f"{r.key}: {len(body)} bytes, row {r.sha256}, object {actual}, want {want}"
                )
        stored_rel = {r.key[len(prefix) + 1 :] for r in stored}
        d["orphans"] = sorted(k for k in objects if k not in stored_rel)
        d["stale leases"] = [
            f"{r.prediction_id}{r.output_path}: {r.lease_owner}" for r in rows if r.lease_owner
        ]
        d["tracebacks"] = []
        for p in self.procs:
            if "Traceback" in p.stderr:
                d["tracebacks"].append(f"{p.what}: {p.stderr.strip()[-1500:]}")
            elif p.what != "run" and not p.killed and p.status != 0:
                lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
                if len(lines) > 1:
                    d["tracebacks"].append(f"{p.what}: {len(lines)} lines: {p.stderr.strip()[-800:]}")
        d["failed processes (not killed)"] = [
            f"{p.what} exit {p.status}: {p.stderr.strip()[-300:]}"
            for p in self.procs
            if not p.killed and p.status != 0
        ]
        result.details = {k: v for k, v in d.items() if v}
        findings = (
            "lost",
            "duplicated",
            "truncated",
            "missing objects",
            "orphans",
            "stale leases",
            "tracebacks",
        )
        result.findings = {k: len(d[k]) for k in (*findings, "unexpected rows")}


@contextmanager
def own_postgres() -> Iterator[Any]:
    """A started ``OwnPostgres`` (``tests/pg_cluster.py``), destroyed afterwards."""
    sys.path.insert(0, str(bu.ROOT / "tests"))
    from pg_cluster import OwnPostgres

    pg = OwnPostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


def campaign(
    dialect: str,
    *,
    kills: int,
    outages: int = 1,
    predictions: int,
    files_per: int,
    size: int,
    seed: int,
    moto: Any = None,
    kill_window: tuple[float, float] = (0.5, 4.0),
    s3_outage: float = 2.0,
) -> Result:
    """One campaign on ``dialect`` (``sqlite`` or ``postgresql``: our own cluster)."""
    c = Campaign(
        predictions=predictions,
        files_per=files_per,
        size=size,
        moto=moto,
        seed=seed,
        kill_window=kill_window,
        s3_outage=s3_outage,
    )
    try:
        if dialect == "sqlite":
            return c.run(dialect, c.servers.sqlite_url(), kills, outages)
        from cachelayer.testing.fixtures import PostgresAdmin

        with own_postgres() as pg:
            url = PostgresAdmin(pg.url).create_database("chaos_")
            return c.run(dialect, url, kills, outages, pg)
    finally:
        c.close()


def report(results: list[Result]) -> str:
    head = ["catalog", "predictions", "files", "delivery GETs", "faults served", "kills backfill+run"]
    head += ["outages S3+PG"]
    head += ["lost", "duplicated", "truncated", "missing objects", "orphans", "stale leases", "tracebacks"]
    rows = []
    for r in results:
        hit = sum(v[1] for v in r.faults["kinds"].values())
        gets = r.faults["delivery_gets"]
        f = r.findings
        rows.append(
            [r.dialect, r.predictions, r.files, gets, f"{hit} ({hit / max(1, gets):.0%})"]
            + [f"{r.kills['backfill']}+{r.kills['run']}"]
            + [f"{r.outages['s3']}+{r.outages['postgres']}"]
            + [
                f[k]
                for k in ("lost", "duplicated", "truncated", "missing objects", "orphans", "stale leases")
            ]
            + [f["tracebacks"]]
        )
    lines = [bu.md_table(head, rows), ""]
    for r in results:
        lines.append(
            f"{r.dialect}: faults [injected, served] {json.dumps(r.faults['kinds'])}; {r.seconds:.0f} s"
        )
        lines.append(f"  exits: {json.dumps(r.exits)}")
        for k, v in r.details.items():
            lines.append(f"  {k} ({len(v)}): " + " | ".join(v[:5]))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dialects", default="sqlite,postgresql")
    ap.add_argument("--kills", type=int, default=20, help="rounds: one backfill and one run killed each")
    ap.add_argument("--outages", type=int, default=3, help="S3 outages (and PostgreSQL restarts)")
    ap.add_argument("--predictions", type=int, default=40, help="seeded web predictions")
    ap.add_argument("--files-per", type=int, default=4)
    ap.add_argument("--size", type=int, default=200_000, help="bytes per file (about)")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--kill-window", default="0.5,5.0", help="seconds after launch: min,max")
    ap.add_argument("--s3-outage", type=float, default=2.0, help="seconds S3 is unreachable")
    ap.add_argument("--serve-sim", help=argparse.SUPPRESS)
    ap.add_argument("--child-run", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_sim:
        serve(json.loads(args.serve_sim))
        return 0
    if args.child_run:
        return child_run(json.loads(args.child_run))
    lo, hi = (float(x) for x in args.kill_window.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up servers and cluster
    print("\n".join(bu.header("bench/chaos.py", argv)), flush=True)
    results = []
    for dialect in args.dialects.split(","):
        r = campaign(
            dialect,
            kills=args.kills,
            outages=args.outages,
            predictions=args.predictions,
            files_per=args.files_per,
            size=args.size,
            seed=args.seed,
            kill_window=(lo, hi),
            s3_outage=args.s3_outage,
        )
        results.append(r)
        print(report([r]), flush=True)
    print("\n" + report(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
