"""The catalog as a work queue, without transfers (issue 11): how many claims and stores per
second one catalog sustains with batch claims, on PostgreSQL and on SQLite.

Each run starts from a fresh catalog holding ``--files`` pending files (``--files-per``
files per prediction, recorded with ``files.ensure(prediction=...)``, then
``QueueRepository.analyze()``). The catalog is filled once per dialect as a template and
copied for every run (``CREATE DATABASE .. TEMPLATE`` on PostgreSQL, a file copy of the
checkpointed SQLite file), so every run sees the same rows and fresh planner statistics.

A run drains it with P worker processes (``--processes``) of T threads (``--threads``)
each, every process one lease owner with one engine (``make_engine(pool_size=T)``), as a
``cachelayer worker`` process is. Every thread loops, without any transfer:

* ``claim_batch(owner, lease, B)`` when it holds no claimed file (``--batch``);
* ``mark_stored_and_claim(file, owner, ..., claim=n)`` for each file it holds, with
  ``claim=1`` for B=1 when it holds nothing else (store + claim the next in one
  transaction, as ``WorkerPool`` does: one transaction per file) and ``claim=0``
  otherwise, so B>1 costs 1 + 1/B transactions per file;
* until a claim hands out nothing.

Timed: from the moment every process has imported, opened its T connections and is
waiting, to the last process reporting it is done (process start-up is not in the wall
time). Reported per run: files/s (= stores/s), catalog transactions/s and claim statements/s
(both counted by the workers), PostgreSQL's own ``xact_commit`` / ``xact_rollback`` deltas
from ``pg_stat_database`` (read after the backends exited, so they are flushed), CPU ms per
file of the worker processes (their own ``getrusage`` over the drain, start-up excluded), of
the run's PostgreSQL backends (``/proc/<pid>/stat`` of the backends connected to the run's
database) and of PostgreSQL's auxiliary processes (WAL writer, checkpointer, background
writer, autovacuum: these also serve any other database on the server), and how busy the
whole machine was.

Checked after every run (the run fails otherwise): every file is ``stored``, no lease is
left, every row was claimed exactly once (``attempts`` = 1), the ids the threads stored are
disjoint and together are every file, and no ``mark_stored_and_claim`` found its file
already stored.

At the end it derives, from the best PostgreSQL rate and from PostgreSQL's CPU per file,
how many worker threads (and machines of ``--threads-per-machine``) one catalog can feed
when every file takes ``--per-file-ms`` of transfer time per thread.

Usage::

    python bench/queue_ceiling.py                                   # 10,000 files, both dialects
    python bench/queue_ceiling.py --files 5000 --processes 1,2 --batch 1,16 --dialects postgresql
    python bench/queue_ceiling.py --postgres-url postgresql+psycopg://root@127.0.0.1:5432/postgres

The databases it creates (``cachelayer_bench_q<hex>``) are dropped at the end; the SQLite
files live in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchutil as bu  # noqa: E402

BENCH = Path(__file__).resolve()
DIALECTS = ("postgresql", "sqlite")
CREATED = datetime(2026, 11, 21, tzinfo=timezone.utc)
LEASE_SECONDS = 600.0  # longer than any run: no lease lapses, so nothing is taken over


def _ints(text: str, what: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} needs comma-separated integers >= 1, got {text!r}")
    return values


# ---- child side: one worker process ----------------------------------------------------


def worker(spec: dict[str, Any]) -> None:
    """One worker process: open the catalog, warm the pool (T connections), say ``ready``,
    wait for ``go`` on stdin, drain with T threads, print the result as JSON, then wait for
    stdin to close before closing the connections (so the parent can read the backends'
    CPU first)."""
    from cachelayer.catalog import Catalog
    from cachelayer.catalog.db import make_engine

    threads, batch, owner = int(spec["threads"]), int(spec["batch"]), str(spec["owner"])
    engine = make_engine(spec["url"], pool_size=threads)
    catalog = Catalog(engine)
    queue = catalog.queue
    conns = [engine.connect() for _ in range(threads)]  # T connections open at once
    for conn in conns:
        conn.exec_driver_sql("SELECT 1")
    for conn in conns:
        conn.close()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return

    errors: list[str] = []
    per_thread: list[dict[str, Any]] = []

    def drain() -> None:
        ids: list[int] = []
        n = {"claim_tx": 0, "empty_claims": 0, "store_tx": 0, "folded": 0, "already_stored": 0}
        ahead: list[Any] = []
        try:
            while True:
                if not ahead:
                    ahead = queue.claim_batch(owner, LEASE_SECONDS, batch)
                    n["claim_tx"] += 1
                    if not ahead:
                        n["empty_claims"] += 1
                        break
                row = ahead.pop(0)
                fold = 1 if batch == 1 and not ahead else 0
                stored, more = queue.mark_stored_and_claim(
                    row.id,
                    owner,
                    size=100_000,
                    sha256="0" * 64,
                    content_type="image/png",
                    source_age_seconds=1.0,
                    lease_seconds=LEASE_SECONDS,
                    claim=fold,
                )
                n["store_tx"] += 1
                n["folded"] += fold
                if stored is None:
                    n["already_stored"] += 1
                ids.append(row.id)
                ahead.extend(more)
        except BaseException as exc:  # reported, and the parent fails the run
            errors.append(f"{type(exc).__name__}: {exc}")
        per_thread.append({"ids": ids, **n})

    cpu0, t0 = bu.self_cpu(), time.perf_counter()
    workers = [threading.Thread(target=drain) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    result = {"seconds": time.perf_counter() - t0, "cpu": bu.self_cpu() - cpu0, "errors": errors}
    print(json.dumps({**result, "threads": per_thread}), flush=True)
    sys.stdin.read()  # until the parent closes it
    engine.dispose()


# ---- parent side -------------------------------------------------------------------------


def _pg_connect(url: str) -> Any:
    """An autocommit psycopg connection to the database of a SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(plain, autocommit=True, connect_timeout=10)


def _db_name(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).database)


#: Command-line titles of PostgreSQL's own processes (``postgres: 15/main: walwriter``).
PG_AUX = ("checkpointer", "background writer", "walwriter", "autovacuum", "logical replication", "stats")


def postgres_processes() -> dict[int, str]:
    """pid -> command line of every ``postgres`` process on this machine."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "comm").read_text().strip() != "postgres":
                continue
            found[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
    return found


def pg_cpu(database: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far of PostgreSQL's processes: ``ours`` (backends connected to
    ``database``), ``aux`` (its own processes, shared by every database) and ``other``."""
    out: dict[str, dict[int, float]] = {"ours": {}, "aux": {}, "other": {}}
    for pid, cmd in postgres_processes().items():
        title = cmd.split(":", 2)[-1]
        kind = "ours" if f" {database} " in title else "aux" if any(a in title for a in PG_AUX) else "other"
        out[kind][pid] = bu.cpu_of_pid(pid)
    return out


def pg_cpu_delta(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds spent between two :func:`pg_cpu` readings, per kind (processes that
    started meanwhile count from 0; ones that ended are lost)."""
    return {kind: sum(cpu - before[kind].get(pid, 0.0) for pid, cpu in after[kind].items()) for kind in after}


@dataclass
class Result:
    dialect: str
    processes: int
    threads: int
    batch: int
    files: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    pg_xact: dict[str, int] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds

    @property
    def transactions(self) -> int:
        return self.counts["claim_tx"] + self.counts["store_tx"]

    @property
    def claim_statements(self) -> int:
        return self.counts["claim_tx"] + self.counts["folded"]

    def ms_per_file(self, what: str) -> float:
        return 1000 * self.cpu.get(what, 0.0) / self.files


class Bench:
    """Template catalogs (one per dialect, filled once) and the runs on copies of them."""

    def __init__(self, *, files: int, files_per: int, postgres_url: str | None, out: Callable[[str], None]):
        self.files = files
        self.files_per = files_per
        self.postgres_url = postgres_url
        self.out = out
        self.tmp = tempfile.TemporaryDirectory(prefix="cachelayer-bench-queue-")
        self.templates: dict[str, str] = {}
        self.created: list[str] = []  # PostgreSQL databases to drop
        self.ids: list[int] = []

    def close(self) -> None:
        if self.postgres_url is not None:
            with _pg_connect(self.postgres_url) as conn:
                for url in self.created:
                    name = _db_name(url)
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
                    )
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.created.clear()
        self.tmp.cleanup()

    # ---- catalogs ------------------------------------------------------------------------

    def _new_database(self, template: str | None = None) -> str:
        """A new, empty PostgreSQL database (or a copy of ``template``); its URL."""
        from sqlalchemy.engine import make_url

        assert self.postgres_url is not None
        name = f"cachelayer_bench_q{secrets.token_hex(6)}"
        with _pg_connect(self.postgres_url) as conn:
            conn.execute(
                f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{_db_name(template)}"' if template else "")
            )
        url = make_url(self.postgres_url).set(database=name).render_as_string(hide_password=False)
        self.created.append(url)
        return url

    def template(self, dialect: str) -> str:
        """The filled template catalog of ``dialect`` (filled on first use)."""
        if dialect not in self.templates:
            url = (
                self._new_database() if dialect == "postgresql" else f"sqlite:///{self.tmp.name}/template.db"
            )
            t0 = time.perf_counter()
            ids = fill(url, self.files, self.files_per)
            self.out(
                f"# {dialect}: filled the template with {len(ids)} files in {time.perf_counter() - t0:.1f} s"
            )
            assert not self.ids or sorted(ids) == sorted(self.ids)
            self.ids = ids
            self.templates[dialect] = url
        return self.templates[dialect]

    @contextmanager
    def fresh(self, dialect: str) -> Iterator[str]:
        """A fresh copy of the template, analyzed; dropped (deleted) afterwards."""
        from cachelayer.catalog import Catalog
        from cachelayer.catalog.db import make_engine

        template = self.template(dialect)
        if dialect == "postgresql":
            url = self._new_database(template)
        else:
            path = Path(self.tmp.name) / f"run-{secrets.token_hex(4)}.db"
            shutil.copyfile(template.removeprefix("sqlite:///"), path)
            url = f"sqlite:///{path}"
        engine = make_engine(url)
        Catalog(engine).queue.analyze()
        engine.dispose()
        try:
            yield url
        finally:
            if dialect == "postgresql":
                self._drop(url)
            else:
                for suffix in ("", "-wal", "-shm"):
                    Path(url.removeprefix("sqlite:///") + suffix).unlink(missing_ok=True)

    def _drop(self, url: str) -> None:
        name = _db_name(url)
        assert self.postgres_url is not None
        with _pg_connect(self.postgres_url) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        self.created.remove(url)

    # ---- one run ------------------------------------------------------------------------

    def run(self, dialect: str, processes: int, threads: int, batch: int) -> Result:
        """Drain a fresh catalog with ``processes`` x ``threads`` claiming ``batch`` at a
        time; checked (raises ``RuntimeError`` unless every file was stored exactly once)."""
        with self.fresh(dialect) as url:
            return self._run(dialect, url, processes, threads, batch)

    def _run(self, dialect: str, url: str, processes: int, threads: int, batch: int) -> Result:
        pg = dialect == "postgresql"
        name = _db_name(url) if pg else ""
        procs = []
        for i in range(processes):
            spec = {"url": url, "threads": threads, "batch": batch, "owner": f"bench-q{i}"}
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(BENCH), "--child", json.dumps(spec)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
            )
        try:
            for p in procs:
                assert p.stdout is not None
                line = p.stdout.readline()
                if not line:
                    err = p.stderr.read().decode() if p.stderr is not None else ""
                    raise RuntimeError(f"a worker exited before it was ready:\n{err[-3000:]}")
            xact0 = self._xact(name) if pg else {}
            pg0 = pg_cpu(name) if pg else None
            busy0, cap0 = bu.machine_cpu()
            t0 = time.perf_counter()
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
                p.stdin.flush()
            done = [bu.json_out(p.stdout.readline().decode()) for p in procs]  # type: ignore[union-attr]
            seconds = time.perf_counter() - t0
            busy1, cap1 = bu.machine_cpu()
            pg_spent = pg_cpu_delta(pg0, pg_cpu(name)) if pg0 is not None else {}
        finally:
            for p in procs:
                if p.stdin is not None and not p.stdin.closed:
                    p.stdin.close()
            ended = [bu.communicate_wait4(p) for p in procs]
        for _, err, status, _ in ended:
            if status != 0:
                raise RuntimeError(f"a worker failed ({status}):\n{err[-3000:]}")
        xact = {}
        if pg:
            self._wait_for_backends(name)
            xact1 = self._xact(name)
            xact = {k: xact1[k] - xact0[k] for k in xact1}
        threads_out = [t for d in done for t in d["threads"]]
        counts = {
            k: sum(t[k] for t in threads_out)
            for k in ("claim_tx", "empty_claims", "store_tx", "folded", "already_stored")
        }
        errors = [e for d in done for e in d["errors"]]
        self.check(url, [t["ids"] for t in threads_out], counts, errors)
        cpu = {
            "workers": sum(d["cpu"] for d in done),
            "machine": busy1 - busy0,
            "machine_capacity": cap1 - cap0,
            **{f"pg_{k}": v for k, v in pg_spent.items()},
        }
        return Result(dialect, processes, threads, batch, len(self.ids), seconds, counts, cpu, xact)

    def _xact(self, database: str) -> dict[str, int]:
        with _pg_connect(self.postgres_url or "") as conn:
            row = conn.execute(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s", (database,)
            ).fetchone()
        return {"commit": int(row[0]), "rollback": int(row[1])}

    def _wait_for_backends(self, database: str, timeout: float = 30.0) -> None:
        """Until no backend is connected to ``database`` (they flush their statistics as
        they exit)."""
        deadline = time.monotonic() + timeout
        with _pg_connect(self.postgres_url or "") as conn:
            while time.monotonic() < deadline:
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
                ).fetchone()[0]
                if not n:
                    return
                time.sleep(0.05)

    def check(self, url: str, per_thread: list[list[int]], counts: dict[str, int], errors: list[str]) -> None:
        """Raise ``RuntimeError`` unless every file was stored exactly once."""
        from sqlalchemy import text

        from cachelayer.catalog import Catalog
        from cachelayer.catalog.db import make_engine

        problems = list(errors)
        stored = [i for ids in per_thread for i in ids]
        if len(stored) != len(set(stored)):
            problems.append(f"{len(stored) - len(set(stored))} files stored by two threads")
        if sorted(set(stored)) != sorted(self.ids):
            problems.append(f"threads stored {len(set(stored))} distinct files of {len(self.ids)}")
        if counts["already_stored"]:
            problems.append(f"{counts['already_stored']} stores found the file already stored")
        engine = make_engine(url)
        try:
            catalog = Catalog(engine)
            if catalog.queue.counts() != {"stored": len(self.ids)}:
                problems.append(f"statuses at the end: {catalog.queue.counts()}")
            if catalog.queue.lease_owners():
                problems.append(f"leases left: {catalog.queue.lease_owners()}")
            with engine.connect() as conn:
                attempts: dict[int, int] = dict(
                    conn.execute(text("SELECT attempts, count(*) FROM output_files GROUP BY attempts")).all()
                )
            if attempts != {1: len(self.ids)}:
                problems.append(f"claims per file (attempts: files): {attempts}")
        finally:
            engine.dispose()
        if problems:
            raise RuntimeError("queue run failed its checks: " + "; ".join(problems))


def fill(url: str, files: int, files_per: int) -> list[int]:
    """A new catalog at ``url`` with ``files`` pending files, ``files_per`` per prediction
    (prediction and files recorded in one transaction each); their ids."""
    from cachelayer.catalog import Catalog, NewFile
    from cachelayer.catalog.db import make_engine, upgrade
    from cachelayer.prediction import Prediction

    engine = make_engine(url)
    upgrade(engine)
    catalog = Catalog(engine)
    ids: list[int] = []
    p = 0
    while len(ids) < files:
        pid = f"q{p:08d}benchqueuexxxxx"
        n = min(files_per, files - len(ids))
        prediction = Prediction.from_json(
            {"id": pid, "model": "acme/queue", "status": "succeeded", "created_at": CREATED.isoformat()}
        )
        rows = catalog.files.ensure(
            pid,
            [
                NewFile(f"/{i}", f"https://replicate.delivery/{pid}/{i}.png", f"acme/{pid}/{i}.png")
                for i in range(n)
            ],
            store="s3://bench",
            model="acme/queue",
            created_at=CREATED,
            prediction=prediction,
        )
        ids += [r.id for r in rows]
        p += 1
    catalog.queue.analyze()
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return ids


# ---- report ------------------------------------------------------------------------------

HEAD = [
    "P x T",
    "batch",
    "wall s",
    "files/s (stores/s)",
    "tx/s",
    "tx/file",
    "claim stmts/s",
    "PG commits (rollbacks)",
    "CPU ms/file: workers",
    "PG backends",
    "PG aux",
    "rest of machine",
    "machine busy",
]


def row(r: Result) -> list[str]:
    c, n = r.cpu, r.files
    pg = r.dialect == "postgresql"
    rest = c["machine"] - c["workers"] - sum(v for k, v in c.items() if k in ("pg_ours", "pg_aux"))
    busy = c["machine"] / c["machine_capacity"] if c.get("machine_capacity") else 0.0
    return [
        f"{r.processes} x {r.threads}",
        str(r.batch),
        f"{r.seconds:.2f}",
        f"{r.files_per_s:,.0f}",
        f"{r.transactions / r.seconds:,.0f}",
        f"{r.transactions / n:.3f}",
        f"{r.claim_statements / r.seconds:,.0f}",
        f"{r.pg_xact['commit']:,} ({r.pg_xact['rollback']:,})" if pg else "-",
        f"{r.ms_per_file('workers'):.2f}",
        f"{r.ms_per_file('pg_ours'):.2f}" if pg else "-",
        f"{r.ms_per_file('pg_aux'):.2f}" if pg else "-",
        f"{1000 * rest / n:.2f}",
        f"{busy:.0%}",
    ]


def estimate(results: Sequence[Result], per_file_ms: float, threads_per_machine: int) -> list[str]:
    """What the best PostgreSQL rate means for N worker threads on N machines."""
    pg = [r for r in results if r.dialect == "postgresql"]
    if not pg:
        return []
    best = max(pg, key=lambda r: r.files_per_s)
    x = per_file_ms / 1000
    threads = best.files_per_s * x
    backends, aux = best.ms_per_file("pg_ours"), best.ms_per_file("pg_aux")
    pg_ms = backends + aux
    per_core = 1000 / pg_ms if pg_ms else float("inf")
    lines = [
        f"* Best PostgreSQL rate here: {best.files_per_s:,.0f} files/s ({best.processes} x {best.threads}, "
        f"batch {best.batch}), with the workers and PostgreSQL sharing {os.cpu_count()} cores.",
        f"* With {per_file_ms:g} ms of transfer per file and thread, a thread asks for at most "
        f"{1 / x:,.1f} files/s, so this catalog feeds about {threads:,.0f} worker threads "
        f"(~{threads / threads_per_machine:,.1f} machines of {threads_per_machine} threads) before the "
        "queue is the limit.",
        f"* PostgreSQL's own CPU in that run: {pg_ms:.2f} ms per file (backends {backends:.2f}, "
        f"auxiliary {aux:.2f}), so one dedicated PostgreSQL core would "
        f"sustain ~{per_core:,.0f} files/s (~{per_core * x:,.0f} threads, "
        f"~{per_core * x / threads_per_machine:,.1f} machines) if CPU stays its limit.",
    ]
    return lines


def run_all(
    bench: Bench,
    *,
    dialects: Sequence[str],
    processes: Sequence[int],
    threads: int,
    batches: Sequence[int],
    per_file_ms: float,
    threads_per_machine: int,
    out: Callable[[str], None],
) -> list[Result]:
    results: list[Result] = []
    for dialect in dialects:
        runs = []
        bench.template(dialect)
        for p in processes:
            for b in batches:
                r = bench.run(dialect, p, threads, b)
                out(f"# {dialect} {p} x {threads} batch {b}: {r.files_per_s:,.0f} files/s, {r.seconds:.2f} s")
                runs.append(r)
        out("")
        out(f"### {dialect}: {bench.files:,} files, {threads} threads per process")
        out("")
        out(bu.md_table(HEAD, [row(r) for r in runs]))
        out("")
        out("# load average after {}: {:.2f} {:.2f} {:.2f}".format(dialect, *os.getloadavg()))
        results += runs
    lines = estimate(results, per_file_ms, threads_per_machine)
    if lines:
        out("")
        out("\n".join(lines))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--files", type=int, default=10_000, help="pending files per run")
    ap.add_argument("--files-per", type=int, default=5, help="files per prediction")
    ap.add_argument("--processes", default="1,2,4", help="worker process counts, comma-separated")
    ap.add_argument("--threads", type=int, default=8, help="threads per worker process")
    ap.add_argument("--batch", default="1,4,16", help="claim batch sizes, comma-separated")
    ap.add_argument(
        "--dialects", default=",".join(DIALECTS), help="comma-separated, from " + ",".join(DIALECTS)
    )
    ap.add_argument(
        "--per-file-ms", type=float, default=60.0, help="transfer time per file and thread (estimate)"
    )
    ap.add_argument(
        "--threads-per-machine", type=int, default=16, help="worker threads per machine (estimate)"
    )
    ap.add_argument("--postgres-url", help="PostgreSQL admin URL [CACHELAYER_TEST_POSTGRES_URL, local]")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        worker(json.loads(args.child))
        return 0
    try:
        processes = _ints(args.processes, "--processes")
        batches = _ints(args.batch, "--batch")
        dialects = [d.strip() for d in args.dialects.split(",") if d.strip()]
        if not dialects or set(dialects) - set(DIALECTS):
            raise ValueError(f"--dialects takes {','.join(DIALECTS)}, got {args.dialects!r}")
        if max(batches) > 1000 or args.files < 1 or args.threads < 1 or args.files_per < 1:
            raise ValueError("--batch at most 1000; --files, --files-per and --threads at least 1")
    except ValueError as exc:
        ap.error(str(exc))
    url = bu.postgres_url(args.postgres_url) if "postgresql" in dialects else None
    if url is None:
        dialects = [d for d in dialects if d != "postgresql"]
    for line in bu.header("bench/queue_ceiling.py", sys.argv[1:] if argv is None else list(argv)):
        print(line, flush=True)
    bench = Bench(
        files=args.files, files_per=args.files_per, postgres_url=url, out=lambda s: print(s, flush=True)
    )
    try:
        run_all(
            bench,
            dialects=dialects,
            processes=processes,
            threads=args.threads,
            batches=batches,
            per_file_ms=args.per_file_ms,
            threads_per_machine=args.threads_per_machine,
            out=lambda s: print(s, flush=True),
        )
    finally:
        bench.close()
    print("# load average at the end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"# own CPU (parent): {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s user")
    return 0


if __name__ == "__main__":
    sys.exit(main())
