"""The queue's batched forms (issue 11): a batch claim, recording a file stored and claiming
the next in one transaction, giving back files claimed ahead; on SQLite and PostgreSQL,
and with several processes claiming from one catalog at once."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, text

from cachelayer.catalog import Catalog, NewFile
from cachelayer.catalog.db import make_engine, upgrade
from cachelayer.catalog.queue import MAX_CLAIM_BATCH
from cachelayer.prediction import Prediction
from cachelayer.testing.simulator import File

CREATED = datetime(2026, 11, 21, tzinfo=timezone.utc)


def _fill(c: Catalog, predictions: int, files: int, *, tag: str = "queuebatch") -> list[int]:
    ids = []
    for p in range(predictions):
        pid = f"pred{p:04d}{tag}xxxx"
        c.predictions.record(
            Prediction.from_json(
                {"id": pid, "model": "acme/q", "status": "succeeded", "created_at": CREATED.isoformat()}
            )
        )
        rows = c.files.ensure(
            pid,
            [
                NewFile(f"/{i}", f"https://replicate.delivery/{pid}/{i}.png", f"k/{pid}/{i}")
                for i in range(files)
            ],
            store="s3://b",
            model="acme/q",
            created_at=CREATED,
        )
        ids += [r.id for r in rows]
    return ids


def _store(c: Catalog, file_id: int, owner: str, *, claim: int = 0):
    return c.queue.mark_stored_and_claim(
        file_id,
        owner,
        size=10,
        sha256="0" * 64,
        content_type="image/png",
        source_age_seconds=1.0,
        lease_seconds=60,
        claim=claim,
    )


def _transactions(c: Catalog) -> list[int]:
    """A counter of COMMITs on ``c``'s engine (the list's length)."""
    commits: list[int] = []
    event.listen(c.engine, "commit", lambda conn: commits.append(1))
    return commits


def test_a_batch_claim_hands_out_the_oldest_files_once(catalog):
    ids = _fill(catalog, 3, 4)
    first = catalog.queue.claim_batch("a", 60, 5)
    second = catalog.queue.claim_batch("b", 60, 5)
    rest = catalog.queue.claim_batch("c", 60, 5)
    got = [r.id for r in first + second + rest]
    assert got == sorted(ids) and len(set(got)) == 12
    assert [len(first), len(second), len(rest)] == [5, 5, 2]
    assert all(r.attempts == 1 for r in first + second + rest)
    assert catalog.queue.claim_batch("d", 60, 5) == []
    assert sorted(catalog.queue.lease_owners()) == ["a", "b", "c"]
    for bad in (0, MAX_CLAIM_BATCH + 1):
        with pytest.raises(ValueError):
            catalog.queue.claim_batch("a", 60, bad)


def test_storing_a_file_claims_the_next_in_the_same_transaction(catalog):
    ids = _fill(catalog, 2, 3)
    commits = _transactions(catalog)
    (row,) = catalog.queue.claim_batch("w", 60, 1)
    seen = [row.id]
    while True:
        stored, claimed = _store(catalog, row.id, "w", claim=1)
        assert stored is not None and stored.status == "stored" and stored.id == row.id
        if not claimed:
            break
        (row,) = claimed
        assert row.attempts == 1
        seen.append(row.id)
    assert seen == sorted(ids)
    if catalog.db.dialect == "sqlite":  # PostgreSQL: one autocommit statement (counted below)
        assert len(commits) == 1 + len(ids)  # one claim, then one transaction per file
    assert catalog.queue.counts() == {"stored": 6}
    assert catalog.queue.lease_owners() == []


def test_a_file_stored_by_another_returns_none_and_still_claims(catalog):
    ids = _fill(catalog, 1, 2)
    catalog.queue.claim(ids[0], "x", 60)
    assert _store(catalog, ids[0], "x")[0] is not None
    stored, claimed = _store(catalog, ids[0], "y", claim=3)
    assert stored is None and [r.id for r in claimed] == [ids[1]]


def test_the_file_being_stored_is_never_claimed_by_the_same_call(catalog):
    """Storing and claiming see one snapshot on PostgreSQL (one statement): the row being
    stored still looks pending there, and claimable once its lease has lapsed. (Without
    the statement's ``id != file_id``, the claim's update of that row wins when its CTE
    runs first, and the file comes back as claimed, not stored: this test then fails.)"""
    ids = _fill(catalog, 1, 3)
    (first,) = catalog.queue.claim_batch("w", -1, 1)  # a lease that has already lapsed
    stored, claimed = _store(catalog, first.id, "w", claim=5)
    assert stored is not None and stored.id == first.id == ids[0]
    assert [r.id for r in claimed] == ids[1:]  # every other file, not the one stored
    assert all(r.attempts == 1 and r.status == "pending" for r in claimed)
    row = catalog.files.get(first.id)
    assert row is not None and row.status == "stored" and row.attempts == 1  # no claim bumped it
    assert stored.attempts == 1 and stored.size == 10 and stored.sha256 == "0" * 64
    owners = {r.id: r for r in catalog.queue.claim_batch("x", 60, 5)}
    assert owners == {}  # the others are leased to "w", the stored one is done
    assert catalog.queue.lease_owners() == ["w"]
    # the same when the lapsed row is the only claimable one: nothing to claim
    only = _fill(catalog, 1, 1, tag="lonefile00")[0]
    (row,) = catalog.queue.claim_batch("v", -1, 1)
    assert row.id == only
    stored, claimed = _store(catalog, only, "v", claim=5)
    assert stored is not None and stored.id == only and claimed == []
    assert catalog.queue.lease_owners() == ["w"]  # "v" let go of the file it stored


def test_storing_without_claiming_and_the_lease_owner(catalog):
    """``claim=0`` claims nothing; storing does not check who holds the lease (a copy that
    finished is recorded), and releases it."""
    ids = _fill(catalog, 1, 3)
    (row,) = catalog.queue.claim_batch("a", 60, 1)
    stored, claimed = _store(catalog, row.id, "b", claim=0)
    assert stored is not None and stored.id == row.id and claimed == []
    assert catalog.queue.lease_owners() == []
    assert catalog.queue.counts() == {"stored": 1, "pending": 2}
    assert (
        catalog.queue.mark_stored(
            ids[1], "c", size=1, sha256="1" * 64, content_type=None, source_age_seconds=None
        ).id
        == ids[1]
    )
    assert (
        catalog.queue.mark_stored(
            ids[1], "c", size=1, sha256="1" * 64, content_type=None, source_age_seconds=None
        )
        is None
    )


def _trace_protocol(engine, path: Path) -> list:
    """Log every PostgreSQL protocol message of ``engine``'s new connections to ``path``
    (libpq's ``PQtrace``); returns the list of their psycopg connections."""
    from psycopg import pq

    conns: list = []
    out = path.open("w")

    @event.listens_for(engine, "connect")
    def trace(dbapi_conn, _record) -> None:
        dbapi_conn.pgconn.trace(out.fileno())
        dbapi_conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        conns.append((dbapi_conn, out))

    return conns


def _messages(path: Path, conns: list) -> list[tuple[str, str]]:
    """``(direction, message type)`` of everything traced so far (``F`` frontend, ``B`` backend)."""
    for dbapi_conn, out in conns:
        dbapi_conn.pgconn.untrace()
        out.flush()
    found = []
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] in ("F", "B"):
            found.append((parts[0], parts[2].split(" ")[0]))
    return found


def _transaction_commands(path: Path) -> list[str]:
    """The ``BEGIN``, ``COMMIT``, ``ROLLBACK`` and ``SET`` commands in a trace."""
    words = ("BEGIN", "COMMIT", "ROLLBACK", "SET")
    return [
        line
        for line in path.read_text().splitlines()
        if line.startswith("F\t") and any(f'"{w}' in line for w in words)
    ]


@pytest.fixture
def one_pg_connection(catalog_url):
    """``(engine, catalog)``: a migrated PostgreSQL catalog on a pool of one connection
    (the tests below trace that connection's protocol). Skips on SQLite."""
    if not catalog_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    engine = make_engine(catalog_url, pool_size=1)
    upgrade(engine)
    try:
        yield engine, Catalog(engine)
    finally:
        engine.dispose()


def test_storing_and_claiming_is_one_round_trip_on_postgresql(one_pg_connection, tmp_path):
    """The worker's steady state on PostgreSQL: one statement, one round trip per file (no
    BEGIN, SET or COMMIT), no warning, and the connection's ``synchronous_commit`` is not
    changed for the transactions that follow it on the same connection."""
    engine, c = one_pg_connection
    ids = _fill(c, 2, 3)
    (row,) = c.queue.claim_batch("w", 60, 1)
    engine.dispose()  # new connections from here on are traced
    trace = tmp_path / "trace.txt"
    conns = _trace_protocol(engine, trace)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    stored_ids = []
    while True:
        stored, claimed = _store(c, row.id, "w", claim=1)
        assert stored is not None
        stored_ids.append(stored.id)
        if not claimed:
            break
        (row,) = claimed
    assert stored_ids == sorted(ids)
    assert len(conns) == 1  # one pooled connection served every call
    messages = _messages(trace, conns)
    n = len(ids)
    sent = [m for d, m in messages if d == "F"]
    # psycopg prepares a statement on its 6th execution: one round trip, once
    prepares = sum(1 for a, b in zip(sent, sent[1:]) if (a, b) == ("Parse", "Sync"))
    assert len(statements) == n and sent.count("Execute") == n  # one statement per file ...
    assert messages.count(("B", "ReadyForQuery")) - prepares == n  # ... one round trip each
    assert prepares <= 1
    assert not _transaction_commands(trace)  # no BEGIN, SET or COMMIT
    assert ("B", "NoticeResponse") not in messages  # e.g. no "SET LOCAL outside a transaction"
    with engine.connect() as conn:  # the same connection, back from the pool
        assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        assert conn.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
        conn.execute(text("SELECT 1"))
        assert conn.in_transaction()  # the pool gave it back out of autocommit
    assert len(conns) == 1
    assert c.queue.counts() == {"stored": n} and c.queue.lease_owners() == []


def test_a_read_is_one_round_trip_on_postgresql(one_pg_connection, tmp_path):
    """Reads run in autocommit on PostgreSQL (no BEGIN/ROLLBACK); writes that follow on the
    same connection still get their transaction."""
    engine, c = one_pg_connection
    ids = _fill(c, 1, 2)
    engine.dispose()
    trace = tmp_path / "trace.txt"
    conns = _trace_protocol(engine, trace)
    assert c.predictions.finished_at("pred0000queuebatchxxxx") == CREATED
    assert c.files.get(ids[0]).id == ids[0]
    assert c.queue.counts() == {"pending": 2}
    messages = _messages(trace, conns)
    assert len(conns) == 1 and messages.count(("B", "ReadyForQuery")) == 3
    assert not _transaction_commands(trace)  # no BEGIN or ROLLBACK
    commits = _transactions(c)
    assert c.queue.claim_batch("w", 60, 1)[0].id == ids[0]  # a write: a transaction
    assert len(commits) == 1


def test_files_claimed_ahead_are_given_back_with_their_attempts(catalog):
    ids = _fill(catalog, 1, 3)
    claimed = catalog.queue.claim_batch("w", 60, 3)
    assert catalog.queue.release([r.id for r in claimed[1:]], "other") == 0  # not its lease
    assert catalog.queue.release([r.id for r in claimed[1:]], "w") == 2
    assert catalog.queue.lease_owners() == ["w"]
    again = catalog.queue.claim_batch("v", 60, 5)
    assert [r.id for r in again] == ids[1:]
    assert [r.attempts for r in again] == [1, 1]  # the give-back undid the first claim


_CLAIMER = """
import sys
from cachelayer.catalog import Catalog
from cachelayer.catalog.db import make_engine
c = Catalog(make_engine(sys.argv[1]))
owner = sys.argv[2]
got = []
batch = c.queue.claim_batch(owner, 60, 3)
while batch:
    row, ahead = batch[0], batch[1:]
    got.append(row.id)
    stored, more = c.queue.mark_stored_and_claim(row.id, owner, size=1, sha256="0" * 64,
        content_type=None, source_age_seconds=None, lease_seconds=60, claim=0 if ahead else 1)
    assert stored is not None and stored.id == row.id, (row.id, stored)
    assert row.id not in [r.id for r in more] and not set(r.id for r in more) & set(got)
    batch = ahead + more
print(" ".join(map(str, got)))
"""


def test_processes_claiming_at_once_store_every_file_exactly_once(catalog, catalog_url):
    ids = _fill(catalog, 20, 5)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, catalog_url, f"p{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(4)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    got = [int(x) for out in outs for x in out.split()]
    assert sorted(got) == sorted(ids)  # each file stored by exactly one process
    assert catalog.queue.counts() == {"stored": 100}
    assert catalog.queue.lease_owners() == []
    assert {r.attempts for i in ids for r in [catalog.files.get(i)]} == {1}  # each claimed once


def _last_analyze(engine):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'output_files'")
        ).scalar()


def test_a_scan_refreshes_postgresql_statistics_once_files_are_queued(
    make_layer, replicate_simulator, catalog_url, monkeypatch
):
    """Issue 11: a fresh queue has no planner statistics, so every claim would sort all
    pending rows until autovacuum analyzes; the scan runs ANALYZE once it has queued
    ANALYZE_AFTER_FILES files (lowered here to 4)."""
    if not catalog_url.startswith("postgresql"):
        pytest.skip("ANALYZE is PostgreSQL's")
    import cachelayer.scan

    monkeypatch.setattr(cachelayer.scan, "ANALYZE_AFTER_FILES", 4)
    sim = replicate_simulator
    for i in range(3):
        sim.seed_prediction("acme/q", {}, [File(f"f{i}-{j}".encode(), filename=f"{j}.png") for j in range(2)])
    layer = make_layer()
    assert _last_analyze(layer.engine) is None
    layer.backfill(scan_only=True)
    assert _last_analyze(layer.engine) is not None


def test_finished_at_reads_completion_else_creation(catalog):
    done = Prediction.from_json(
        {
            "id": "finishedatdonexxxxxxxxxxxx",
            "status": "succeeded",
            "created_at": "2026-11-21T10:00:00Z",
            "completed_at": "2026-11-21T10:00:07Z",
        }
    )
    running = Prediction.from_json(
        {"id": "finishedatrunningxxxxxxxxx", "status": "processing", "created_at": "2026-11-21T11:00:00Z"}
    )
    for p in (done, running):
        catalog.predictions.record(p)
    assert catalog.predictions.finished_at(done.id) == done.completed_at
    assert catalog.predictions.finished_at(running.id) == running.created_at
    assert catalog.predictions.finished_at("finishedatunknownxxxxxxxxx") is None
