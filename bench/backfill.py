"""Backfill: 2,000 files of 200 KB, cachelayer against the naive loop (issue 3, item 6).

Three measurements, in one run, against the same Replicate simulator and the same moto S3
server (each a process of its own, so neither shares a GIL with the code being timed):

1. **throughput**: the naive sequential loop (the seed's "fixed" code in a ``for`` loop
   over ``predictions.list`` pages: ``requests.get(url).content`` then
   ``s3.put_object(...)``) against ``layer.backfill(concurrency=16)`` (what ``cachelayer
   backfill --concurrency 16`` calls) on a fresh SQLite catalog. Each runs in a fresh child
   process that builds its clients before the clock starts and times only the copy.
2. **catalog**: catalog time per file. The backfill runs with the transfer replaced by a
   no-op (``Pipeline._fetch_and_put`` returns a size and digest at once: nothing is
   downloaded or uploaded; the list calls still go to the simulator) and every ``Catalog``
   method timed. Sequentially (``backfill(scan_only=True)`` then ``work(concurrency=1)``)
   the summed call times divided by the files are the catalog's cost per file; the same
   no-op backfill at concurrency 16 gives the files/s the catalog alone would allow. Both
   on SQLite and PostgreSQL.
3. **scaling**: ``cachelayer backfill --scan-only`` queues the files in a fresh PostgreSQL
   database, then 1, 2 and 4 ``cachelayer worker --once --concurrency 16`` processes drain
   them together (fresh database and bucket each time); wall time from launch to the last
   exit, and the CPU per file of the workers, the simulator, moto and the rest of the machine
   (PostgreSQL and anything else) to show what saturates.

Every run ends in its own bucket; each object's size and ETag (the MD5 of a single-part
upload) are checked against the generated files, and the naive and backfill runs must hold
the same keys with the same bytes. Buckets and databases are deleted afterwards.

Usage::

    python bench/backfill.py                              # all three parts (~5.5 min on 2 cores)
    python bench/backfill.py --experiment claimbatch+corescan+noping+asynccommit+analyze
    python bench/backfill.py --parts throughput --latency-ms 20 --predictions 200 --reps 2
    python bench/backfill.py --parts catalog --experiment core --experiment core+corescan
    python bench/backfill.py --parts throughput --reps 1 --profile /tmp/prof   # py-spy

``--experiment A+B`` (repeatable, one variant each) also runs every part with those
changes to cachelayer applied as monkeypatches in the children (the backfill, the no-op
catalog runs, and worker children standing in for ``cachelayer worker``); nothing under
``cachelayer/`` is edited. See ``EXPERIMENTS`` for the list. ``--latency-ms N`` makes every
HTTP request through urllib3 in both copiers (downloads and S3 calls) wait N ms first, a
model of a network's round trip. ``--profile DIR`` records every child, the simulator and
moto with py-spy (GIL-holding samples) and prints where the time went; profiled runs are
slower, so their timings are not the bench's numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve()
CLI = str(Path(sys.executable).with_name("cachelayer"))
MODEL = "bench/backfill"
KB = 1000
CLAIM_BATCH = 4  # files per claiming transaction in the ``claimbatch`` experiment
SEEDS = 32  # distinct 1 MiB blocks the simulator keeps cached (its lru_cache holds 32)

#: ``--experiment`` names: changes to cachelayer tried in the backfill children, as
#: monkeypatches (nothing under ``cachelayer/`` is edited). Each models one proposed change.
EXPERIMENTS: dict[str, str] = {
    "smallput": "S3Store.put: a body whose Content-Length is under multipart_threshold goes up "
                "with one put_object call instead of upload_fileobj (no TransferManager and "
                "thread pool per file); in cachelayer since df459b9, kept for older commits",
    "nocrc": "AWS_REQUEST_CHECKSUM_CALCULATION=when_required (no CRC32 on uploads)",
    "returning": "Catalog.mark_stored as UPDATE ... RETURNING, and the pipeline uses that row "
                 "instead of re-reading it with get_file (one transaction per stored file "
                 "less); in cachelayer since df459b9, kept for older commits",
    "core": "the queue statements (claim_next, mark_stored with RETURNING) built once as "
            "SQLAlchemy Core statements with bind parameters and run on a Connection, rows "
            "turned into FileRecords directly (no ORM Session, no per-call statement "
            "construction and cache-key generation); implies returning",
    "markclaim": "implies core; the worker loop records a copied file in the same transaction "
                 "as its next claim (Catalog.finish_and_claim): one transaction per file "
                 "instead of two",
    "claimbatch": f"implies markclaim; each claiming transaction leases up to {CLAIM_BATCH} files "
                  f"(UPDATE ... WHERE id IN (SELECT ... LIMIT {CLAIM_BATCH} FOR UPDATE SKIP "
                  "LOCKED)) that the worker thread then copies one after the other; the "
                  "transaction also carries the previous ones' mark_stored: one transaction "
                  f"per {CLAIM_BATCH} files",
    "corescan": "Pipeline.record (the scan's per-prediction write) as one Core transaction of "
                "statements built once: upsert the prediction, insert its files, read them "
                "back, insert the source URLs (executemany)",
    "noping": "PostgreSQL: pool_pre_ping off (make_engine checks every pooled connection with "
              "a SELECT 1 round trip before each transaction; pool_recycle would bound "
              "stale connections instead)",
    "analyze": "PostgreSQL: ANALYZE output_files after each page the scan queues (with "
               "Catalog.save_checkpoint); a fresh queue has no statistics, and the claim "
               "query then sorts every pending row instead of reading the queue index in order",
    "asynccommit": "PostgreSQL: SET synchronous_commit = off on catalog connections (a commit "
                   "lost in a server crash only means a claim or copy is redone, which is "
                   "idempotent)",
}

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import communicate_wait4  # noqa: E402

# ---- the history ----------------------------------------------------------------------


@dataclass(frozen=True)
class FileSpec:
    """One output file of the seeded history: its output path, delivery URL and content."""

    path: str
    url: str
    seed: int
    size: int

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass
class History:
    """What the simulator holds: prediction id -> its files, newest first."""

    predictions: dict[str, list[FileSpec]]

    @property
    def files(self) -> int:
        return sum(len(f) for f in self.predictions.values())

    @property
    def bytes(self) -> int:
        return sum(f.size for fs in self.predictions.values() for f in fs)

    def expected(self) -> dict[str, tuple[int, str]]:
        """Relative key (``pid/0-out-0.png``, the layout of ``cachelayer.keys``) ->
        ``(size, md5 hex)`` of the generated content."""
        from cachelayer.testing.simulator import File

        out = {}
        for pid, files in self.predictions.items():
            for i, f in enumerate(files):
                body = File(size=f.size, seed=f.seed).read()
                out[f"{pid}/{i}-{f.filename}"] = (f.size, hashlib.md5(body).hexdigest())
        return out

    def to_json(self) -> dict[str, Any]:
        return {pid: [[f.path, f.url, f.seed, f.size] for f in fs]
                for pid, fs in self.predictions.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> History:
        return cls({pid: [FileSpec(*f) for f in fs] for pid, fs in data.items()})


def seed_history(sim: Any, predictions: int, files_per: int, size: int) -> History:
    """Seed ``predictions`` web predictions of ``files_per`` files (web ones are never
    removed), newest first. File ``n`` is ``size + n // SEEDS`` bytes of block ``n %
    SEEDS``: every file differs, and the simulator serves them from its cached blocks."""
    from datetime import datetime, timedelta, timezone

    from cachelayer.testing.simulator import File

    now = datetime.now(timezone.utc)
    made: dict[str, list[FileSpec]] = {}
    for p in range(predictions):
        specs = [((p * files_per + j) % SEEDS, size + (p * files_per + j) // SEEDS)
                 for j in range(files_per)]
        created = now - timedelta(seconds=60 + p)
        pid = sim.seed_prediction(
            MODEL, input={"n": p},
            output=[File(size=n, seed=s, filename=f"out-{j}.png") for j, (s, n) in enumerate(specs)],
            source="web", created_at=created, completed_at=created + timedelta(seconds=1))
        urls = sim.delivery_urls(pid)
        made[pid] = [FileSpec(f"/{j}", urls[j], s, n) for j, (s, n) in enumerate(specs)]
    return History(made)


# ---- the simulator in its own process -------------------------------------------------


def serve_simulator(spec: dict[str, Any]) -> None:
    """``--serve-sim``: seed the history, print one JSON line (base URL, token, history),
    then answer ``downloads`` on stdin (JSON: delivery path -> successful GETs) until EOF."""
    from cachelayer.testing.simulator import ReplicateSimulator

    sim = ReplicateSimulator().start()
    try:
        sim.add_model(MODEL)
        history = seed_history(sim, spec["predictions"], spec["files_per"], spec["size"])
        print(json.dumps({"base_url": sim.base_url, "host_port": sim.host_port,
                          "token": sim.token, "history": history.to_json()}), flush=True)
        for line in sys.stdin:
            if line.strip() == "downloads":
                print(json.dumps(_download_counts(sim)), flush=True)
    finally:
        sim.stop()


def _download_counts(sim: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in sim.request_log:
        if r.method == "GET" and r.path.startswith("/delivery/") and r.status in (200, 206):
            counts[r.path] = counts.get(r.path, 0) + 1
    return counts


class SimProcess:
    """The simulator, seeded and serving in a child process (``--serve-sim``)."""

    def __init__(self, predictions: int, files_per: int, size: int) -> None:
        spec = dict(predictions=predictions, files_per=files_per, size=size)
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH), "--serve-sim", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"simulator process exited with {self.proc.returncode}")
        info = json.loads(line)
        self.pid = self.proc.pid
        self.base_url: str = info["base_url"]
        self.host_port: str = info["host_port"]
        self.token: str = info["token"]
        self.history = History.from_json(info["history"])
        self._lock = threading.Lock()

    def downloads(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write("downloads\n")
            self.proc.stdin.flush()
            return dict(json.loads(self.proc.stdout.readline()))

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class SimInProcess:
    """A running ``ReplicateSimulator`` of this process (tests pass their fixture)."""

    def __init__(self, sim: Any, predictions: int, files_per: int, size: int) -> None:
        self.sim = sim
        self.pid = os.getpid()
        self.base_url, self.host_port, self.token = sim.base_url, sim.host_port, sim.token
        sim.add_model(MODEL)
        self.history = seed_history(sim, predictions, files_per, size)

    def downloads(self) -> dict[str, int]:
        return _download_counts(self.sim)

    def stop(self) -> None:
        pass


# ---- child side -----------------------------------------------------------------------


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _apply_experiments(experiments: Sequence[str], latency: float = 0.0) -> None:
    """Process-wide changes, before any client or CacheLayer is built."""
    if latency:
        _patch_latency(latency)
    if "nocrc" in experiments:
        os.environ["AWS_REQUEST_CHECKSUM_CALCULATION"] = "when_required"
    if "smallput" in experiments:
        _patch_small_put()
    if {"core", "markclaim", "claimbatch"} & set(experiments):
        _patch_core_queue(mark_with_next_claim=bool({"markclaim", "claimbatch"}
                                                    & set(experiments)),
                          batch=CLAIM_BATCH if "claimbatch" in experiments else 1)
    elif "returning" in experiments:
        _patch_mark_stored_returning()
    if "corescan" in experiments:
        _patch_core_record()
    if "analyze" in experiments:
        _patch_analyze_after_page()
    if "asynccommit" in experiments or "noping" in experiments:
        _patch_make_engine(async_commit="asynccommit" in experiments,
                           pre_ping="noping" not in experiments)


def _patch_latency(seconds: float) -> None:
    """``--latency-ms``: every HTTP request made through urllib3 (``requests`` downloads
    and boto3's S3 calls, in both copiers) waits ``seconds`` before it is sent, as a
    network round trip would. The thread sleeps without the GIL, like one waiting on a
    socket."""
    from urllib3 import connectionpool

    urlopen = connectionpool.HTTPConnectionPool.urlopen

    def delayed(self: Any, *args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return urlopen(self, *args, **kwargs)

    connectionpool.HTTPConnectionPool.urlopen = delayed  # type: ignore[method-assign]


def _patch_small_put() -> None:
    """``smallput``: what ``S3Store.put`` would do with a small body of known length."""
    from cachelayer.storage import s3 as s3mod

    managed = s3mod.S3Store.put

    def put(self: Any, key: str, body: Any, *, content_type: str | None = None,
            metadata: dict[str, str] | None = None, cache_control: str | None = None) -> None:
        length = getattr(body, "content_length", None)
        if length is None or length >= self.multipart_threshold:
            return managed(self, key, body, content_type=content_type, metadata=metadata,
                           cache_control=cache_control)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            extra["Metadata"] = dict(metadata)
        cc = cache_control if cache_control is not None else self.cache_control
        if cc:
            extra["CacheControl"] = cc
        data = s3mod._FullReader(body).read()  # bounded: under multipart_threshold
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except Exception as exc:
            self._fail("upload to", key, exc)
        return None

    s3mod.S3Store.put = put  # type: ignore[method-assign]


def _stored_records() -> tuple[Callable[[int, Any], Any], Callable[[Any, int], Any]]:
    """What a patched ``mark_stored`` should return, and a ``get_file`` to install.

    Newer catalogs' ``mark_stored`` returns the stored record (``None`` if another process
    stored it first) and the pipeline uses it; older ones return a bool and the pipeline
    re-reads the row with ``get_file``, which then answers once from the record kept here.
    """
    import inspect

    from cachelayer.catalog import queries as q

    returns_record = "FileRecord" in str(inspect.signature(q.Catalog.mark_stored)
                                         .return_annotation)
    stored: dict[int, Any] = {}
    get_file = q.Catalog.get_file

    def result(file_id: int, record: Any) -> Any:
        if returns_record:
            return record
        if record is not None:
            stored[file_id] = record
        return record is not None

    def get_file_cached(self: Any, file_id: int) -> Any:
        rec = stored.pop(file_id, None)
        return rec if rec is not None else get_file(self, file_id)

    return result, get_file_cached


def _patch_mark_stored_returning() -> None:
    """``returning``: ``mark_stored`` keeps the row its UPDATE returned."""
    from sqlalchemy import update

    from cachelayer.catalog import queries as q
    from cachelayer.catalog.models import OutputFile
    from cachelayer.catalog.records import FileRecord

    result, get_file = _stored_records()

    def mark_stored(self: Any, file_id: int, owner: str, *, size: int, sha256: str,
                    content_type: str | None, source_age_seconds: float | None) -> Any:
        with self.sessions.begin() as s:
            row = s.scalars(
                update(OutputFile)
                .where(OutputFile.id == file_id, OutputFile.status != "stored")
                .values(status="stored", size=size, sha256=sha256, content_type=content_type,
                        source_age_seconds=source_age_seconds, stored_at=q.utcnow(),
                        last_error=None, lease_owner=None, lease_expires_at=None)
                .returning(OutputFile)
                .execution_options(synchronize_session=False)
            ).first()
            return result(file_id, FileRecord.of(row) if row is not None else None)

    q.Catalog.mark_stored = mark_stored  # type: ignore[method-assign]
    q.Catalog.get_file = get_file  # type: ignore[method-assign]


def _patch_core_queue(*, mark_with_next_claim: bool = False, batch: int = 1) -> None:
    """``core``: ``claim_next`` and ``mark_stored`` (with RETURNING) as Core statements
    built once, executed on a Connection. ``markclaim`` (``mark_with_next_claim``): a worker
    thread's ``mark_stored`` of the file it claimed is sent with its next claiming
    transaction (what a ``Catalog.finish_and_claim`` would do). ``claimbatch`` (``batch`` >
    1): a claiming transaction leases up to ``batch`` files, which the thread then takes one
    by one."""
    import dataclasses
    from datetime import timedelta

    from sqlalchemy import bindparam, or_, select, update

    from cachelayer.catalog import queries as q
    from cachelayer.catalog.models import OutputFile
    from cachelayer.catalog.records import FileRecord

    t = OutputFile.__table__
    cols = [t.c[name] for name in FileRecord.__dataclass_fields__]
    when = t.c.lease_expires_at.type
    now = bindparam("now", type_=when)
    candidate = (select(t.c.id)
                 .where(t.c.status == "pending",
                        or_(t.c.available_at.is_(None), t.c.available_at <= now),
                        or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < now))
                 .order_by(t.c.available_at, t.c.id).limit(1))
    if batch > 1:
        candidate = candidate.limit(batch)

    def locked(dialect: str) -> Any:
        return candidate.with_for_update(skip_locked=True) if dialect == "postgresql" else candidate

    claim = {
        dialect: update(t).where(t.c.id.in_(locked(dialect)) if batch > 1
                                 else t.c.id == locked(dialect).scalar_subquery())
        .values(lease_owner=bindparam("owner"),
                lease_expires_at=bindparam("until", type_=when), attempts=t.c.attempts + 1)
        .returning(*cols)
        for dialect in ("sqlite", "postgresql")
    }
    mark_values = dict(status="stored", size=bindparam("size"), sha256=bindparam("sha256"),
                       content_type=bindparam("content_type"),
                       source_age_seconds=bindparam("age"),
                       stored_at=bindparam("now", type_=when), last_error=None,
                       lease_owner=None, lease_expires_at=None)
    mark_where = (t.c.id == bindparam("file_id"), t.c.status != "stored")
    mark = update(t).where(*mark_where).values(**mark_values).returning(*cols)
    mark_many = update(t).where(*mark_where).values(**mark_values)  # executemany
    result, get_file = _stored_records()
    local = threading.local()

    def claim_next(self: Any, owner: str, lease_seconds: float) -> Any:
        buffered = getattr(local, "buffer", None)
        if buffered:
            local.claimed = buffered.pop(0)
            return local.claimed
        at = q.utcnow()
        pending, local.pending = getattr(local, "pending", None), []
        with self.engine.begin() as conn:
            if pending:
                conn.execute(mark_many, pending)
            rows = conn.execute(claim[self.dialect], {
                "now": at, "owner": owner,
                "until": at + timedelta(seconds=lease_seconds)}).all()
        records = sorted((FileRecord(**r._mapping) for r in rows), key=lambda r: r.id)
        local.buffer = records[1:]
        local.claimed = records[0] if records else None
        return local.claimed

    def mark_stored(self: Any, file_id: int, owner: str, *, size: int, sha256: str,
                    content_type: str | None, source_age_seconds: float | None) -> Any:
        claimed = getattr(local, "claimed", None)
        if mark_with_next_claim and claimed is not None and claimed.id == file_id:
            at = q.utcnow()
            local.pending.append({"file_id": file_id, "size": size, "sha256": sha256,
                                  "content_type": content_type, "age": source_age_seconds,
                                  "now": at})
            local.claimed = None
            return result(file_id, dataclasses.replace(
                claimed, status="stored", size=size, sha256=sha256, content_type=content_type,
                source_age_seconds=source_age_seconds, stored_at=at, last_error=None))
        with self.engine.begin() as conn:
            row = conn.execute(mark, {"file_id": file_id, "size": size, "sha256": sha256,
                                      "content_type": content_type, "age": source_age_seconds,
                                      "now": q.utcnow()}).first()
        return result(file_id, FileRecord(**row._mapping) if row is not None else None)

    q.Catalog.claim_next = claim_next  # type: ignore[method-assign]
    q.Catalog.mark_stored = mark_stored  # type: ignore[method-assign]
    q.Catalog.get_file = get_file  # type: ignore[method-assign]


def _patch_core_record() -> None:
    """``corescan``: ``Pipeline.record`` as one Core transaction of statements built once
    (the prediction upsert, the files' insert and the source URLs' insert run as
    executemany), instead of three ORM transactions built per call."""
    from sqlalchemy import bindparam, or_, select, update
    from sqlalchemy.dialects import postgresql, sqlite

    from cachelayer import pipeline as pmod
    from cachelayer.catalog import queries as q
    from cachelayer.catalog.models import OutputFile, Prediction, SourceUrl
    from cachelayer.catalog.records import FileRecord
    from cachelayer.keys import object_key
    from cachelayer.outputs import find_files

    files_t, urls_t, preds_t = OutputFile.__table__, SourceUrl.__table__, Prediction.__table__
    cols = [files_t.c[name] for name in FileRecord.__dataclass_fields__]

    def params(table: Any, names: Sequence[str]) -> dict[str, Any]:
        return {n: bindparam(n, type_=table.c[n].type) for n in names}

    pred_cols = ["id", "model", "version", "status", "source", "input", "output", "error",
                 "created_at", "started_at", "completed_at", "data_removed", "rerun_of",
                 "recorded_at", "updated_at"]
    file_cols = ["prediction_id", "output_path", "source_url", "store", "key", "status",
                 "attempts", "model", "created_at", "available_at"]
    statements: dict[str, dict[str, Any]] = {}
    for dialect, mod in (("sqlite", sqlite), ("postgresql", postgresql)):
        upsert = mod.insert(preds_t).values(params(preds_t, pred_cols))
        ex = upsert.excluded
        statements[dialect] = {
            "prediction": upsert.on_conflict_do_update(index_elements=["id"], set_={
                "model": ex.model, "version": ex.version, "status": ex.status,
                "source": ex.source, "error": ex.error, "created_at": ex.created_at,
                "started_at": ex.started_at, "completed_at": ex.completed_at,
                "data_removed": or_(preds_t.c.data_removed, ex.data_removed),
                "input": q._coalesce(ex.input, preds_t.c.input),
                "output": q._coalesce(ex.output, preds_t.c.output),
                "rerun_of": q._coalesce(preds_t.c.rerun_of, ex.rerun_of),
                "updated_at": ex.updated_at}),
            "files": mod.insert(files_t).values(params(files_t, file_cols))
            .on_conflict_do_nothing(index_elements=["prediction_id", "output_path"]),
            "urls": mod.insert(urls_t).values(params(urls_t, ["output_file_id", "url",
                                                              "seen_at"]))
            .on_conflict_do_nothing(index_elements=["output_file_id", "url"]),
        }
    rows_of = (select(*cols).where(files_t.c.prediction_id == bindparam("pid"))
               .order_by(files_t.c.output_path))
    set_url = (update(files_t).where(files_t.c.id == bindparam("file_id"))
               .values(source_url=bindparam("new_url")))

    def record(self: Any, prediction: dict[str, Any], *, rerun_of: str | None = None) -> Any:
        cat = self.catalog
        st = statements[cat.dialect]
        now = q.utcnow()
        pid = prediction["id"]
        created = q.parse_time(prediction.get("created_at"))
        pred = {
            "id": pid, "model": prediction.get("model"), "version": prediction.get("version"),
            "status": prediction.get("status") or "unknown", "source": prediction.get("source"),
            "input": prediction.get("input") or None, "output": prediction.get("output"),
            "error": None if prediction.get("error") is None else str(prediction["error"]),
            "created_at": created, "started_at": q.parse_time(prediction.get("started_at")),
            "completed_at": q.parse_time(prediction.get("completed_at")),
            "data_removed": bool(prediction.get("data_removed")), "rerun_of": rerun_of,
            "recorded_at": now, "updated_at": now}
        found = [(f.path, q.catalog_url(f.url), object_key(self.prefix, pid, f.path, f.url))
                 for f in find_files(prediction.get("output"))]
        with cat.engine.begin() as conn:
            conn.execute(st["prediction"], pred)
            if found:
                conn.execute(st["files"], [
                    {"prediction_id": pid, "output_path": path, "source_url": url,
                     "store": self.store.uri, "key": key, "status": "pending", "attempts": 0,
                     "model": prediction.get("model"), "created_at": created,
                     "available_at": now} for path, url, key in found])
            rows = conn.execute(rows_of, {"pid": pid}).all()
            by_path = {r.output_path: r for r in rows}
            rotated = [{"file_id": by_path[path].id, "new_url": url} for path, url, _ in found
                       if by_path[path].source_url != url and by_path[path].status != "stored"]
            if rotated:
                conn.execute(set_url, rotated)
            if found:
                conn.execute(st["urls"], [
                    {"output_file_id": by_path[path].id, "url": url, "seen_at": now}
                    for path, url, _ in found])
            if rotated:
                rows = conn.execute(rows_of, {"pid": pid}).all()
        return [FileRecord(**r._mapping) for r in rows]

    pmod.Pipeline.record = record  # type: ignore[method-assign]


def _patch_analyze_after_page() -> None:
    """``analyze``: refresh PostgreSQL's statistics of the queue after each scanned page."""
    from cachelayer.catalog import queries as q

    save = q.Catalog.save_checkpoint

    def save_checkpoint(self: Any, name: str, cursor: str | None, state: dict[str, Any]) -> None:
        save(self, name, cursor, state)
        if self.dialect == "postgresql":
            with self.engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE output_files")

    q.Catalog.save_checkpoint = save_checkpoint  # type: ignore[method-assign]


def _patch_make_engine(*, async_commit: bool, pre_ping: bool) -> None:
    """``asynccommit``: every PostgreSQL catalog connection runs with
    ``synchronous_commit = off`` (commits return before the WAL reaches the disk);
    ``noping``: no ``pool_pre_ping`` on PostgreSQL engines."""
    from sqlalchemy import event

    from cachelayer import layer as layer_mod

    make_engine = layer_mod.make_engine

    def make(url: str, **kwargs: Any) -> Any:
        engine = make_engine(url, **kwargs)
        if engine.dialect.name != "postgresql":
            return engine
        if not pre_ping:
            engine.pool._pre_ping = False
        if async_commit:
            @event.listens_for(engine, "connect")
            def _async(dbapi_conn: Any, _record: Any) -> None:
                with dbapi_conn.cursor() as cur:
                    cur.execute("SET synchronous_commit = off")
                dbapi_conn.commit()
        return engine

    layer_mod.make_engine = make  # type: ignore[assignment]


class CallTimer:
    """Wraps public methods of objects; sums wall seconds and counts per method. Time spent
    in an outermost timed call (not inside another one) is also summed as ``top``, so
    totals count nested calls (``Pipeline.record`` -> ``Catalog.ensure_files``) once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.top: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap_all(self, target: Any, prefix: str = "") -> None:
        for name in dir(type(target)):
            attr = getattr(target, name)
            if not name.startswith("_") and callable(attr):
                self.wrap(target, name, prefix + name)

    def wrap(self, target: Any, name: str, label: str) -> None:
        fn = getattr(target, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                self._local.depth = depth
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + dt
                    self.calls[label] = self.calls.get(label, 0) + 1
                    if depth == 0:
                        self.top[label] = self.top.get(label, 0.0) + dt

        setattr(target, name, timed)

    def take(self) -> dict[str, list[float]]:
        """``{method: [calls, seconds, outermost seconds]}`` since the last take; resets."""
        with self._lock:
            out = {k: [self.calls[k], self.seconds[k], self.top.get(k, 0.0)]
                   for k in self.seconds}
            self.seconds, self.calls, self.top = {}, {}, {}
        return out


def _layer(spec: dict[str, Any], concurrency: int) -> Any:
    from cachelayer import CacheLayer

    return CacheLayer(
        database_url=spec["database_url"], storage_url=f"s3://{spec['bucket']}/{spec['prefix']}",
        s3_endpoint_url=spec["endpoint"], s3_region=spec["region"],
        replicate_api_token=spec["token"], replicate_base_url=spec["base_url"],
        allowed_hosts=spec["host_port"], concurrency=concurrency, auto_migrate=True,
    )


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """The seed's fixed code in a for loop over the history (one file at a time)."""
    _apply_experiments([], spec.get("latency", 0.0))
    import boto3
    import replicate
    import requests

    client = replicate.Client(api_token=spec["token"], base_url=spec["base_url"])
    s3 = boto3.client("s3", endpoint_url=spec["endpoint"], region_name=spec["region"])
    s3.head_bucket(Bucket=spec["bucket"])
    bucket, prefix = spec["bucket"], spec["prefix"]
    cpu0, t0 = _self_cpu(), time.perf_counter()
    files = size = 0
    for page in replicate.paginate(client.predictions.list):
        for prediction in page:
            for i, output_url in enumerate(prediction.output or []):
                content = requests.get(output_url).content
                key = f"{prefix}/{prediction.id}/{i}-{output_url.rsplit('/', 1)[-1]}"
                s3.put_object(Bucket=bucket, Key=key, Body=content)
                files += 1
                size += len(content)
    return {"seconds": time.perf_counter() - t0, "cpu_seconds": _self_cpu() - cpu0,
            "files": files, "bytes": size}


def child_backfill(spec: dict[str, Any]) -> dict[str, Any]:
    """``layer.backfill(concurrency=N)``, as ``cachelayer backfill --concurrency N`` runs it."""
    _apply_experiments(spec["experiments"], spec.get("latency", 0.0))
    concurrency = spec["concurrency"]
    layer = _layer(spec, concurrency)
    cpu0, t0 = _self_cpu(), time.perf_counter()
    summary = layer.backfill(concurrency=concurrency)
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "cpu_seconds": _self_cpu() - cpu0,
              "files": summary.files_stored, "bytes": summary.bytes_stored,
              "summary": summary.to_dict()}
    layer.close()
    return result


def child_catalog(spec: dict[str, Any]) -> dict[str, Any]:
    """The backfill with a no-op transfer and every Catalog method timed.

    ``mode`` ``sequential``: ``backfill(scan_only=True)`` then ``work(concurrency=1)``, each
    call's time summed per method; ``concurrent``: one ``backfill(concurrency=N)``."""
    _apply_experiments(spec["experiments"])
    concurrency = 1 if spec["mode"] == "sequential" else spec["concurrency"]
    layer = _layer(spec, concurrency)
    digest = "0" * 64
    size = spec["size"]

    def no_transfer(row: Any, url: str) -> tuple[int, str, str]:
        return size, digest, "image/png"

    layer.pipeline._fetch_and_put = no_transfer
    timer = CallTimer()
    timer.wrap_all(layer.catalog)
    timer.wrap(layer.pipeline, "record", "Pipeline.record")
    result: dict[str, Any] = {"mode": spec["mode"], "dialect": layer.engine.dialect.name}
    cpu0, t0 = _self_cpu(), time.perf_counter()
    if spec["mode"] == "sequential":
        scan = layer.backfill(scan_only=True)
        t1 = time.perf_counter()
        result["scan"] = {"seconds": t1 - t0, "calls": timer.take(),
                          "predictions": scan.predictions_scanned, "files": scan.files_queued}
        work = layer.work(concurrency=1, once=True)
        t2 = time.perf_counter()
        result["work"] = {"seconds": t2 - t1, "calls": timer.take(), "files": work.files_stored}
        files = work.files_stored
    else:
        summary = layer.backfill(concurrency=concurrency)
        files = summary.files_stored
        result["all"] = {"seconds": time.perf_counter() - t0, "calls": timer.take(),
                         "files": files}
    result.update(seconds=time.perf_counter() - t0, cpu_seconds=_self_cpu() - cpu0, files=files)
    layer.close()
    return result


def child_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """``cachelayer worker --once --concurrency N`` (settings from the environment, as the
    CLI reads them) with the experiments applied; returns the summary as ``--json`` does."""
    _apply_experiments(spec["experiments"])
    from cachelayer import CacheLayer

    with CacheLayer(concurrency=spec["concurrency"]) as layer:
        summary = layer.work(concurrency=spec["concurrency"], once=True)
    return summary.to_dict()


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "naive": child_naive, "backfill": child_backfill, "catalog": child_catalog,
    "worker": child_worker}


# ---- parent side ----------------------------------------------------------------------


def _cpu_of_pid(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (total - idle) / hz, total / hz


@dataclass
class Run:
    """One measured run: wall seconds, files and bytes copied, CPU seconds per process."""

    label: str
    seconds: float
    files: int
    bytes: int
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else 0.0


class CpuMeter:
    """CPU seconds of the simulator, moto and the whole machine over a ``with`` block."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.cpu: dict[str, float] = {}

    def _sample(self) -> tuple[float, float, float, float, float]:
        busy, total = _machine_cpu()
        return (_cpu_of_pid(self.bench.sim.pid), _cpu_of_pid(self.bench.moto_pid), busy, total,
                time.perf_counter())

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._sample()
        d = [b - a for a, b in zip(self._start, end)]
        self.cpu = {"simulator": d[0], "moto": d[1], "machine": d[2],
                    "machine_capacity": d[3], "wall": d[4]}


class Profiler:
    """``--profile DIR``: py-spy (``record --format raw --nolineno --nonblocking``) on every
    child and, while a child runs, attached to the simulator and moto. Each profile is a
    collapsed-stack file ``DIR/<n>-<label>-<process>.txt``; :func:`profile_summary` prints
    where the samples (on-CPU time: py-spy skips idle threads) went. Profiled runs are
    slower (py-spy takes CPU too): their timings are not the bench's numbers."""

    def __init__(self, directory: str, rate: int = 200) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.exe = str(Path(sys.executable).with_name("py-spy"))
        self.n = 0
        self.files: list[Path] = []

    def _args(self, out: Path) -> list[str]:
        self.files.append(out)
        return [self.exe, "record", "--format", "raw", "--nolineno", "--nonblocking", "--gil",
                "--rate", str(self.rate), "--output", str(out)]

    def next_label(self, label: str) -> str:
        self.n += 1
        return f"{self.n:02d}-{label}"

    def wrap(self, cmd: list[str], name: str) -> list[str]:
        return [*self._args(self.dir / f"{name}.txt"), "--subprocesses", "--", *cmd]

    @contextlib.contextmanager
    def attach(self, name: str, pids: dict[str, int]) -> Iterator[None]:
        import signal

        procs = [subprocess.Popen([*self._args(self.dir / f"{name}-{what}.txt"), "--pid", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for what, pid in pids.items()]
        time.sleep(0.3)  # let py-spy attach
        try:
            yield
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


#: How :func:`profile_summary` buckets a sample: the first rule whose marker appears in
#: the stack (frames joined by ``;``) names it.
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up (imports, building clients)", ("importlib", "_layer (", "CacheLayer.__init__")),
    ("catalog (SQLAlchemy, sqlite3/psycopg)", ("cachelayer/catalog/", "sqlalchemy/",
                                               "Pipeline.record (")),
    ("S3 upload (boto3, s3transfer)", ("s3transfer/", "botocore/", "S3Store.put")),
    ("download (requests, urllib3, sha256)", ("Fetcher.open", "Download.", "requests/",
                                              "urllib3/")),
    ("list predictions (httpx, replicate)", ("httpx/", "replicate/", "list_predictions")),
    ("cachelayer other", ("cachelayer/",)),
    ("threads, locks, futures", ("threading.py", "concurrent/futures")),
]


def profile_buckets(path: Path) -> tuple[int, dict[str, int]]:
    """``(samples, {bucket: samples})`` of a py-spy raw profile (see PROFILE_BUCKETS)."""
    out: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        name = next((b for b, marks in PROFILE_BUCKETS if any(m in stack for m in marks)),
                    "other")
        out[name] = out.get(name, 0) + int(count)
    return total, out


def profile_summary(path: Path, top: int = 20) -> str:
    """Where the samples of a py-spy raw profile went: by bucket (PROFILE_BUCKETS), then
    the functions with the most samples, inclusive (anywhere on the stack) and self (the
    leaf), as percentages of all samples."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  by bucket:"]
    _, buckets = profile_buckets(path)
    for b, n in sorted(buckets.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {100 * n / total:5.1f}%  {b}")
    lines.append("  inclusive:")
    for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {f}")
    lines.append("  self:")
    for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {100 * n / total:5.1f}%  {f}")
    return "\n".join(lines)


class Bench:
    """The simulator (its own process by default), the moto server and helpers.

    ``sim``: a running ``ReplicateSimulator`` to seed into instead (tests); ``moto``: a
    running ``MotoS3Server`` (tests); both are left running by :meth:`close`.
    """

    def __init__(self, *, predictions: int, files_per: int, size: int, latency: float = 0.0,
                 sim: Any = None, moto: Any = None, postgres_url: str | None = None,
                 profile: str | None = None, out: Callable[[str], None] = print) -> None:
        from cachelayer.testing.s3server import MotoS3Server

        self.out = out
        self._own_moto = moto is None
        self.moto = moto if moto is not None else MotoS3Server()
        self.moto_pid = getattr(self.moto, "_proc").pid  # noqa: B009 - private on purpose
        self.sim: SimProcess | SimInProcess = (
            SimInProcess(sim, predictions, files_per, size) if sim is not None
            else SimProcess(predictions, files_per, size))
        self.latency = latency
        self.history = self.sim.history
        self.size = size
        self.expected = self.history.expected()
        self.s3 = self.moto.client()
        self.tmp = tempfile.TemporaryDirectory(prefix="cachelayer-bench-backfill-")
        self.postgres_url = postgres_url
        self.profiler = Profiler(profile) if profile else None
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("CACHELAYER_", "REPLICATE_"))}
        self.env.update(AWS_ACCESS_KEY_ID=self.moto.access_key_id,
                        AWS_SECRET_ACCESS_KEY=self.moto.secret_access_key,
                        AWS_REGION=self.moto.region)

    def close(self) -> None:
        self.sim.stop()
        self.s3.close()
        if self._own_moto:
            self.moto.stop()
        self.tmp.cleanup()

    # -- buckets and verification ----------------------------------------------------

    @contextlib.contextmanager
    def bucket(self, label: str, *, keep: bool = False) -> Iterator[str]:
        name = f"bench-{label}-{secrets.token_hex(4)}"
        self.s3.create_bucket(Bucket=name)
        try:
            yield name
        finally:
            if not keep:
                self.delete_bucket(name)

    def delete_bucket(self, name: str) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        self.s3.delete_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
        """Relative key -> ``(size, ETag without quotes)`` of every object under ``prefix/``."""
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                found[o["Key"][len(prefix) + 1:]] = (o["Size"], o["ETag"].strip('"'))
        return found

    def verify(self, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
        """Every generated file, and nothing else, is under ``prefix/`` with its size and
        MD5 (single-part ETag). Raises ``RuntimeError`` otherwise; returns the listing."""
        found = self.objects(bucket, prefix)
        if found != self.expected:
            missing = sorted(set(self.expected) - set(found))
            extra = sorted(set(found) - set(self.expected))
            wrong = sorted(k for k in set(found) & set(self.expected)
                           if found[k] != self.expected[k])
            raise RuntimeError(f"{bucket}/{prefix}: {len(missing)} missing (e.g. {missing[:2]}), "
                               f"{len(extra)} unexpected (e.g. {extra[:2]}), {len(wrong)} with "
                               f"wrong size or MD5 (e.g. {wrong[:2]})")
        return found

    # -- children --------------------------------------------------------------------

    def spec(self, bucket: str, prefix: str, database_url: str, **more: Any) -> dict[str, Any]:
        more.setdefault("experiments", [])
        return dict(bucket=bucket, prefix=prefix, database_url=database_url,
                    endpoint=self.moto.endpoint_url, region=self.moto.region,
                    token=self.sim.token, base_url=self.sim.base_url,
                    host_port=self.sim.host_port, size=self.size, latency=self.latency, **more)

    def child(self, kind: str, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """Run ``--child kind`` and return its JSON result and the CPU seconds measured
        around it (``child`` is the child's own, from its rusage)."""
        spec_path = Path(self.tmp.name) / f"spec-{secrets.token_hex(4)}.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(BENCH), "--child", kind, "--spec", str(spec_path)]
        with self.profiled(f"{kind}-{spec.get('mode', '')}{'+'.join(spec['experiments'])}",
                           cmd) as (cmd,), CpuMeter(self) as meter:
            proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"child {kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        data = _json_out(proc.stdout)
        return data, {**meter.cpu, "child": data["cpu_seconds"]}

    @contextlib.contextmanager
    def profiled(self, label: str, *cmds: list[str]) -> Iterator[list[list[str]]]:
        """``cmds`` wrapped in py-spy, with the simulator and moto profiled meanwhile
        (``--profile``); ``cmds`` themselves otherwise."""
        if self.profiler is None:
            yield list(cmds)
            return
        name = self.profiler.next_label(label.strip("-"))
        with self.profiler.attach(name, {"simulator": self.sim.pid, "moto": self.moto_pid}):
            yield [self.profiler.wrap(c, f"{name}-copier{i}") for i, c in enumerate(cmds)]

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.tmp.name}/catalog-{secrets.token_hex(4)}.db"

    @contextlib.contextmanager
    def database(self, dialect: str) -> Iterator[str]:
        """A fresh catalog database URL (SQLite file, or a new PostgreSQL database that is
        dropped afterwards)."""
        if dialect == "sqlite":
            yield self.sqlite_url()
            return
        from cachelayer.testing.fixtures import PostgresAdmin

        assert self.postgres_url is not None
        admin = PostgresAdmin(self.postgres_url)
        url = admin.create_database("cachelayer_bench_")
        try:
            yield url
        finally:
            admin.drop_database(url)

    # -- the three parts ---------------------------------------------------------------

    def run_naive(self, *, keep: bool = False) -> tuple[Run, dict[str, tuple[int, str]]]:
        with self.bucket("naive", keep=keep) as bucket:
            data, cpu = self.child("naive", self.spec(bucket, "naive", ""))
            objects = self.verify(bucket, "naive")
            run = Run("naive", data["seconds"], data["files"], data["bytes"], cpu)
            run.extra["bucket"] = bucket
        return run, objects

    def run_backfill(self, concurrency: int, experiments: Sequence[str] = (), *,
                     keep: bool = False) -> tuple[Run, dict[str, tuple[int, str]]]:
        label = "backfill" + (":" + "+".join(experiments) if experiments else "")
        with self.bucket("backfill", keep=keep) as bucket:
            spec = self.spec(bucket, "backfill", self.sqlite_url(), concurrency=concurrency,
                             experiments=list(experiments))
            data, cpu = self.child("backfill", spec)
            objects = self.verify(bucket, "backfill")
            s = data["summary"]
            if s["files_stored"] != self.history.files or s["exit_code"] != 0:
                raise RuntimeError(f"{label}: summary {s}")
            run = Run(label, data["seconds"], data["files"], data["bytes"], cpu,
                      {"summary": s, "bucket": bucket})
        return run, objects

    def run_catalog(self, dialect: str, mode: str, concurrency: int,
                    experiments: Sequence[str] = ()) -> Run:
        with self.bucket("catalog") as bucket, self.database(dialect) as url:
            spec = self.spec(bucket, "catalog", url, concurrency=concurrency, mode=mode,
                             experiments=list(experiments))
            data, cpu = self.child("catalog", spec)
        if data["files"] != self.history.files:
            raise RuntimeError(f"catalog {dialect} {mode}: stored {data['files']} rows")
        label = f"{dialect}" + (f" c{concurrency}" if mode != "sequential" else "") + (
            f" +{'+'.join(experiments)}" if experiments else "")
        return Run(label, data["seconds"], data["files"], 0, cpu,
                   {**data, "concurrency": concurrency})

    def cli_env(self, database_url: str, bucket: str, prefix: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(CACHELAYER_DATABASE_URL=database_url,
                   CACHELAYER_STORAGE_URL=f"s3://{bucket}/{prefix}",
                   CACHELAYER_ALLOWED_HOSTS=self.sim.host_port,
                   AWS_ENDPOINT_URL_S3=self.moto.endpoint_url,
                   REPLICATE_API_TOKEN=self.sim.token, REPLICATE_BASE_URL=self.sim.base_url)
        return env

    def run_workers(self, n: int, concurrency: int, experiments: Sequence[str] = ()) -> Run:
        """Queue every file with ``backfill --scan-only`` in a fresh PostgreSQL database,
        then time ``n`` ``worker --once`` processes draining it. With ``experiments`` the
        workers are ``--child worker`` processes (what ``cachelayer worker --once`` runs,
        with the patches applied) instead of the CLI."""
        with self.bucket(f"workers{n}") as bucket, self.database("postgresql") as url:
            env = self.cli_env(url, bucket, "workers")
            _upgrade(url)
            t0 = time.perf_counter()
            scan = subprocess.run([CLI, "backfill", "--scan-only", "--json", "--quiet"], env=env,
                                  capture_output=True, text=True, timeout=600)
            scan_seconds = time.perf_counter() - t0
            if scan.returncode != 0:
                raise RuntimeError(f"scan-only failed:\n{scan.stderr[-4000:]}")
            queued = json.loads(scan.stdout)["files_queued"]
            if "analyze" in experiments:  # the CLI scan ran unpatched: analyze once now
                _analyze(url)
            before = self.sim.downloads()
            worker = [CLI, "worker", "--once", "--json", "--quiet", "--concurrency",
                      str(concurrency)]
            if experiments:
                spec_path = Path(self.tmp.name) / f"worker-{secrets.token_hex(4)}.json"
                spec_path.write_text(json.dumps({"concurrency": concurrency,
                                                 "experiments": list(experiments)}))
                worker = [sys.executable, str(BENCH), "--child", "worker", "--spec",
                          str(spec_path)]
            with self.profiled(f"workers{n}", *[worker] * n) as cmds, CpuMeter(self) as meter:
                procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE) for c in cmds]
                results = [communicate_wait4(p) for p in procs]
            after = self.sim.downloads()
            for out, err, status, _ in results:
                if status != 0:
                    raise RuntimeError(f"worker failed ({status}):\n{err[-4000:]}\n{out}")
            summaries = [_json_out(out) for out, _, _, _ in results]
            stored = [s["files_stored"] for s in summaries]
            self.verify(bucket, "workers")
            twice = [p for p, c in after.items() if c - before.get(p, 0) > 1]
            if sum(stored) != self.history.files or queued != self.history.files or twice:
                raise RuntimeError(f"{n} workers: queued {queued}, stored {stored}, "
                                   f"{len(twice)} files downloaded more than once")
            cpu = {**meter.cpu,
                   "child": sum(u.ru_utime + u.ru_stime for _, _, _, u in results)}
            label = f"{n} worker{'s' if n > 1 else ''}" + (
                f" +{'+'.join(experiments)}" if experiments else "")
            run = Run(label, meter.cpu["wall"], sum(stored),
                      sum(s["bytes_stored"] for s in summaries), cpu,
                      {"scan_seconds": scan_seconds, "stored_per_worker": stored,
                       "variant": "+".join(experiments),
                       "drain_seconds": max(s["elapsed_seconds"] for s in summaries)})
        return run


def _json_out(out: str) -> dict[str, Any]:
    """The JSON object a child printed: all of stdout (the CLI's indented ``--json``) or
    its last line starting with ``{`` (bench children, after any py-spy chatter)."""
    try:
        return dict(json.loads(out))
    except json.JSONDecodeError:
        return dict(json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1]))


def _analyze(database_url: str) -> None:
    from cachelayer.catalog.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE output_files")
    finally:
        engine.dispose()


def _upgrade(database_url: str) -> None:
    """``cachelayer db upgrade``, in this process (saves starting an interpreter)."""
    from cachelayer.catalog.db import make_engine, upgrade

    engine = make_engine(database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


# ---- report ---------------------------------------------------------------------------


CPU_HEAD = ("CPU ms/file: copier | simulator | moto | rest (PostgreSQL, others) "
            "| machine busy")


def _cpu_per_file(r: Run) -> dict[str, float]:
    c, n = r.cpu, max(1, r.files)
    rest = c["machine"] - c["child"] - c["simulator"] - c["moto"]
    return {"copier": 1000 * c["child"] / n, "simulator": 1000 * c["simulator"] / n,
            "moto": 1000 * c["moto"] / n, "rest": 1000 * rest / n,
            "busy": c["machine"] / c["machine_capacity"] if c.get("machine_capacity") else 0.0}


def _cpu_cells(r: Run) -> str:
    c = _cpu_per_file(r)
    return (f"{c['copier']:.2f} | {c['simulator']:.2f} | {c['moto']:.2f} | {c['rest']:.2f} "
            f"| {c['busy']:.0%}")


def ceilings(r: Run, cpus: int) -> tuple[float, str, float]:
    """CPU-bound ceilings of files/s from the CPU each process used per file:
    ``(this copier, what bounds it, a copier using no CPU)``. The copier, the simulator and
    moto are one Python process each, so each gets one core at most (their Python code
    holds the GIL); together they share ``cpus`` cores."""
    c = _cpu_per_file(r)
    bounds = {"the copier process (1 core)": c["copier"], "the simulator (1 core)":
              c["simulator"], "moto (1 core)": c["moto"]}
    limits = {name: 1000 / ms for name, ms in bounds.items() if ms > 0}
    servers = c["simulator"] + c["moto"]
    limits[f"{cpus} cores"] = 1000 * cpus / max(1e-9, servers + c["copier"])
    bound = min(limits, key=lambda k: limits[k])
    free = min([v for k, v in limits.items() if "copier" not in k and "cores" not in k]
               + [1000 * cpus / max(1e-9, servers)])
    return limits[bound], bound, free


def throughput_table(groups: dict[str, list[Run]]) -> str:
    """One row per method (``naive`` first): the best run's time, files/s and MB/s, the
    median files/s over runs, the ratios to naive (best to best, median to median) and the
    best run's CPU per file; then the CPU-bound ceilings of each backfill variant."""
    naive = groups["naive"]
    nbest = max(r.files_per_s for r in naive)
    nmed = statistics.median(r.files_per_s for r in naive)
    lines = ["| method | runs | wall s (best) | files/s best / median | MB/s (best) "
             f"| ratio to naive best / median | {CPU_HEAD} |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, runs in groups.items():
        best = max(runs, key=lambda r: r.files_per_s)
        med = statistics.median(r.files_per_s for r in runs)
        lines.append(f"| {label} | {len(runs)} | {best.seconds:.2f} | {best.files_per_s:.0f} / "
                     f"{med:.0f} | {best.mb_per_s:.1f} | **{best.files_per_s / nbest:.2f}x** / "
                     f"{med / nmed:.2f}x | {_cpu_cells(best)} |")
    cpus = os.cpu_count() or 1
    lines.append("")
    for label, runs in groups.items():
        if label == "naive":
            continue
        this, bound, free = ceilings(max(runs, key=lambda r: r.files_per_s), cpus)
        lines.append(f"- {label}: CPU-bound ceiling {this:.0f} files/s ({this / nbest:.1f}x "
                     f"naive), set by {bound}; with a copier that used no CPU at all "
                     f"{free:.0f} files/s ({free / nbest:.1f}x naive)")
    return "\n".join(lines)


def _calls(r: Run) -> dict[str, list[float]]:
    """Per method ``[calls, seconds, outermost seconds]`` over all parts of a run."""
    out: dict[str, list[float]] = {}
    for part in ("scan", "work", "all"):
        for m, v in r.extra.get(part, {}).get("calls", {}).items():
            acc = out.setdefault(m, [0, 0.0, 0.0])
            for i in range(3):
                acc[i] += v[i]
    return out


def catalog_tables(runs: Sequence[Run]) -> str:
    """Per-file catalog cost of the sequential runs (by method) and the no-op rates."""
    lines = []
    seq = [r for r in runs if r.extra["mode"] == "sequential"]
    if seq:
        lines += ["Sequential (`backfill(scan_only=True)`, then `work(concurrency=1)`), no-op "
                  "transfer: wall time inside each catalog call, ms per file "
                  "(`Pipeline.record` includes the Catalog calls it makes).", ""]
        calls = [_calls(r) for r in seq]
        methods = sorted({m for c in calls for m in c}, key=lambda m: (m != "Pipeline.record", m))
        lines += ["| call | " + " | ".join(f"{r.label}: calls, ms/file" for r in seq) + " |",
                  "|---|" + "---|" * len(seq)]
        for m in methods:
            cells = [f"{int(c[m][0])}, {c[m][1] * 1000 / r.files:.3f}" if m in c else "-"
                     for r, c in zip(seq, calls)]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        totals = [sum(v[2] for v in c.values()) * 1000 / r.files for r, c in zip(seq, calls)]
        lines.append("| **catalog total** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
        lines.append("| whole run (scan + work), ms/file | " + " | ".join(
            f"{r.seconds * 1000 / r.files:.2f}" for r in seq) + " |")
        lines.append("")
    conc = [r for r in runs if r.extra["mode"] != "sequential"]
    if conc:
        lines += ["No-op transfer, whole backfill at concurrency "
                  f"{conc[0].extra.get('concurrency', '')} (scan and workers overlapping): "
                  "the rate the catalog and the scan alone allow.", "",
                  f"| run | wall s | files/s | ms/file | {CPU_HEAD} |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in conc:
            lines.append(f"| {r.label} | {r.seconds:.2f} | {r.files_per_s:.0f} "
                         f"| {r.seconds * 1000 / r.files:.2f} | {_cpu_cells(r)} |")
    return "\n".join(lines)


def scaling_table(runs: Sequence[Run]) -> str:
    """One row per run; speedups against the first run of the same variant (1 worker) and
    against the first run of all (the unchanged CLI with 1 worker)."""
    first: dict[str, Run] = {}
    for r in runs:
        first.setdefault(r.extra.get("variant", ""), r)
    lines = [f"| workers | wall s | drain s (slowest worker's own) | files/s | speedup vs 1 "
             f"| vs unchanged 1 | files per worker | {CPU_HEAD} |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        base = first[r.extra.get("variant", "")].seconds
        lines.append(f"| {r.label} | {r.seconds:.2f} | {r.extra['drain_seconds']:.2f} "
                     f"| {r.files_per_s:.0f} | **{base / r.seconds:.2f}x** "
                     f"| {runs[0].seconds / r.seconds:.2f}x "
                     f"| {'/'.join(map(str, r.extra['stored_per_worker']))} | {_cpu_cells(r)} |")
    scans = ", ".join(f"{r.extra['scan_seconds']:.1f}" for r in runs)
    lines += ["", f"(`backfill --scan-only` before each, not included: {scans} s; "
              "\"copier\" = all worker processes together)"]
    return "\n".join(lines)


def machine_facts() -> str:
    import boto3
    import moto
    import requests
    import sqlalchemy

    return (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, moto {moto.__version__}, "
            f"boto3 {boto3.__version__}, requests {requests.__version__}, "
            f"SQLAlchemy {sqlalchemy.__version__}, {platform.system()} {platform.release()}")


def run_all(bench: Bench, *, parts: Sequence[str], concurrency: int,
            workers: Sequence[int], experiments: Sequence[Sequence[str]], reps: int,
            out: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the requested parts; print progress and the tables through ``out``; return the
    runs by part (``throughput``: ``naive`` and ``backfill`` lists; ``catalog``;
    ``scaling``). ``experiments``: variants (lists of experiment names) run besides the
    unchanged backfill in the throughput and catalog parts."""
    h = bench.history
    out(f"# history: {len(h.predictions)} predictions, {h.files} files, "
        f"{h.bytes / 1e6:.1f} MB" + (f"; latency {bench.latency * 1000:g} ms per HTTP request"
                                     if bench.latency else ""))
    variants: list[list[str]] = [[], *(list(v) for v in experiments)]
    results: dict[str, Any] = {}
    if "throughput" in parts:
        naive_runs: list[Run] = []
        bf_runs: list[Run] = []
        first: dict[str, tuple[int, str]] | None = None
        methods: list[list[str] | None] = [None, *variants]  # None: the naive loop
        for rep in range(reps):
            for exp in (methods if rep % 2 == 0 else methods[::-1]):
                if exp is None:
                    r, objects = bench.run_naive()
                    naive_runs.append(r)
                else:
                    r, objects = bench.run_backfill(concurrency, exp)
                    bf_runs.append(r)
                first = objects if first is None else first
                if objects != first:  # verify() already matched each to the generated files
                    raise RuntimeError(f"{r.label} stored other objects than the first run")
                out(f"  {r.label} rep {rep + 1}: {r.seconds:.2f} s {r.files_per_s:.0f} files/s")
        results["throughput"] = {"naive": naive_runs, "backfill": bf_runs}
        groups: dict[str, list[Run]] = {"naive": naive_runs}
        for b in bf_runs:
            groups.setdefault(b.label, []).append(b)
        out("")
        out(f"Throughput ({reps} runs of each, interleaved; backfill at concurrency "
            f"{concurrency}):")
        out("")
        out(throughput_table(groups))
        out("")
    if "catalog" in parts:
        runs = []
        dialects = ["sqlite"] + (["postgresql"] if bench.postgres_url else [])
        for dialect in dialects:
            for exp in variants:
                for mode in ("sequential", "concurrent"):
                    r = bench.run_catalog(dialect, mode, concurrency, exp)
                    runs.append(r)
                    out(f"  {r.label}: {r.seconds:.2f} s, "
                        f"{r.seconds * 1000 / r.files:.2f} ms/file")
        results["catalog"] = runs
        out("")
        out(catalog_tables(runs))
        out("")
    if "scaling" in parts and bench.postgres_url:
        runs = []
        for exp in variants:
            for n in workers:
                r = bench.run_workers(n, concurrency, exp)
                runs.append(r)
                out(f"  {r.label}: {r.seconds:.2f} s ({r.files_per_s:.0f} files/s)")
        results["scaling"] = runs
        out("")
        out(f"Scaling on PostgreSQL (`cachelayer worker --once --concurrency {concurrency}`, "
            "N processes at once):")
        out("")
        out(scaling_table(runs))
        out("")
    return results


def code_state() -> str:
    """The commit measured and whether ``cachelayer/`` had uncommitted changes."""
    root = BENCH.parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "cachelayer"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head}" + (f" + uncommitted changes to {', '.join(changed)}" if changed
                               else " (cachelayer/ clean)")


def _postgres_url(given: str | None) -> str | None:
    from cachelayer.testing.fixtures import DEFAULT_POSTGRES_URL, PostgresAdmin

    url = given or os.environ.get("CACHELAYER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        PostgresAdmin(url).ping()
    except Exception as exc:
        print(f"# PostgreSQL not usable at {url}: {exc}; skipping its runs", file=sys.stderr)
        return None
    return url


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="throughput,catalog,scaling",
                    help="comma-separated: throughput, catalog, scaling")
    ap.add_argument("--predictions", type=int, default=400)
    ap.add_argument("--files-per", type=int, default=5, help="files per prediction")
    ap.add_argument("--size", type=int, default=200 * KB, help="bytes per file (about)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", default="1,2,4", help="worker process counts for scaling")
    ap.add_argument("--reps", type=int, default=3,
                    help="throughput runs of each method, interleaved (best and median shown)")
    ap.add_argument("--experiment", action="append", default=[], metavar="NAME[+NAME...]",
                    help="also run the backfill with these changes combined (repeatable: one "
                         "variant each): " + "; ".join(f"{k}: {v}" for k, v in EXPERIMENTS.items()))
    ap.add_argument("--latency-ms", type=float, default=0.0,
                    help="delay every delivery response of the simulator by this much")
    ap.add_argument("--profile", metavar="DIR",
                    help="record every child, the simulator and moto with py-spy into DIR and "
                         "print where the CPU went (timings are then not representative)")
    ap.add_argument("--postgres-url", help="admin URL of the PostgreSQL server "
                    "[env CACHELAYER_TEST_POSTGRES_URL, default the local one]")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--serve-sim", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.serve_sim:
        serve_simulator(json.loads(args.serve_sim))
        return 0
    if args.child:
        result = CHILDREN[args.child](json.loads(Path(args.spec).read_text()))
        print(json.dumps(result))
        return 0

    variants = [[e for e in v.split("+") if e] for v in args.experiment]
    unknown = sorted({e for v in variants for e in v} - set(EXPERIMENTS))
    if unknown:
        ap.error(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in ("throughput", "catalog", "scaling")]
    if bad:
        ap.error(f"unknown parts {bad}")
    print(f"# bench/backfill.py {time.strftime('%Y-%m-%d %H:%M %Z')}: {machine_facts()}")
    print(f"# code: {code_state()}")
    print(f"# command: python bench/backfill.py {' '.join(argv or sys.argv[1:])}".rstrip())
    print("# load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    started = time.monotonic()
    pg = _postgres_url(args.postgres_url) if {"catalog", "scaling"} & set(parts) else None
    bench = Bench(predictions=args.predictions, files_per=args.files_per, size=args.size,
                  latency=args.latency_ms / 1000, postgres_url=pg, profile=args.profile)
    try:
        run_all(bench, parts=parts, concurrency=args.concurrency,
                workers=[int(n) for n in args.workers.split(",") if n.strip()],
                experiments=variants, reps=args.reps)
    finally:
        bench.close()
    if bench.profiler is not None:
        for path in bench.profiler.files:
            if path.exists():
                print(profile_summary(path))
    print(f"# total {time.monotonic() - started:.0f} s; load average after: "
          "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
