"""Database hiccups (issue 8.8): a PostgreSQL restart mid-run, a SQLite write lock held
longer than the busy timeout, a real deadlock and many worker threads are survived, every
write lands; past the retry budget one typed, one-line error."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import text

from cachelayer.catalog import Catalog, NewFile
from cachelayer.catalog.db import make_engine, upgrade
from cachelayer.config import Settings
from cachelayer.errors import CatalogOutageError, ConfigError
from cachelayer.prediction import Prediction, PredictionStatus

CREATED = datetime(2026, 11, 1, tzinfo=timezone.utc)


class Hiccups(logging.Handler):
    """Collects the catalog's retry messages straight from the ``cachelayer`` logger (other
    tests may have turned its propagation off)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Hiccups:
        logger = logging.getLogger("cachelayer")
        self.saved = logger.level
        logger.addHandler(self)
        logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        logger = logging.getLogger("cachelayer")
        logger.removeHandler(self)
        logger.setLevel(self.saved)


def _write(catalog: Catalog, i: int) -> None:
    """One unit of catalog work as the pipeline does it: record, queue, claim, store."""
    pid = f"w{i:05d}"
    catalog.predictions.record(
        Prediction(pid, PredictionStatus.SUCCEEDED, model="acme/w", created_at=CREATED)
    )
    (row,) = catalog.files.ensure(
        pid,
        [NewFile("", f"https://replicate.delivery/{pid}.png", f"k/{pid}.png")],
        store="s",
        model="acme/w",
        created_at=CREATED,
    )
    assert catalog.queue.claim(row.id, "writer", 60)
    stored = catalog.queue.mark_stored(
        row.id, "writer", size=1, sha256="0" * 64, content_type="image/png", source_age_seconds=0.0
    )
    # None only if a retried transaction had committed before its connection dropped
    assert stored is not None or catalog.files.get(row.id).status == "stored"


class Writer(threading.Thread):
    """Writes units until stopped; any exception ends it and is kept in ``error``."""

    def __init__(self, catalog: Catalog, first: int = 0) -> None:
        super().__init__(daemon=True)
        self.catalog, self.done, self.next = catalog, 0, first
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.progress = threading.Condition()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                _write(self.catalog, self.next)
                with self.progress:
                    self.next += 1
                    self.done += 1
                    self.progress.notify_all()
        except BaseException as exc:  # kept for the test to assert on
            self.error = exc
            with self.progress:
                self.progress.notify_all()

    def wait_for(self, n: int, timeout: float = 120) -> None:
        with self.progress:
            ok = self.progress.wait_for(lambda: self.done >= n or self.error is not None, timeout)
        assert ok and self.error is None, self.error


def _stored(catalog: Catalog) -> int:
    with catalog.engine.connect() as conn:
        return int(conn.execute(text("SELECT COUNT(*) FROM output_files WHERE status = 'stored'")).scalar())


def test_postgresql_restart_mid_run_loses_nothing(own_postgres):
    engine = make_engine(own_postgres.url, pool_size=4, retry_seconds=60)
    upgrade(engine)
    with engine.begin() as conn:  # the module's other tests may have written before
        conn.execute(text("TRUNCATE predictions, output_files, source_urls, file_copies"))
    catalog = Catalog(engine)
    writers = [Writer(catalog, first=k * 100_000) for k in range(3)]
    for w in writers:
        w.start()

    def more(n: int) -> None:
        before = [w.done for w in writers]
        for w, done in zip(writers, before):
            w.wait_for(done + n)

    try:
        more(10)
        own_postgres.restart()  # clients are disconnected; the server is down ~1 s
        more(10)
        with Hiccups() as hiccups:  # a longer outage, held until a writer has seen it
            own_postgres.stop()
            for _ in range(600):
                if any("catalog hiccup" in m for m in hiccups.messages):
                    break
                time.sleep(0.05)
            own_postgres.start()
            more(10)
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(120)
    assert all(w.error is None for w in writers), [w.error for w in writers]
    assert any("catalog hiccup" in m for m in hiccups.messages)  # the retry path ran
    assert _stored(catalog) == sum(w.done for w in writers)  # every write landed, none twice
    engine.dispose()


def test_past_the_budget_one_typed_line(own_postgres):
    engine = make_engine(own_postgres.url, retry_seconds=1)
    upgrade(engine)
    catalog = Catalog(engine)
    _write(catalog, 900_000)
    own_postgres.stop()
    try:
        with pytest.raises(CatalogOutageError) as err:
            _write(catalog, 900_001)
        message = str(err.value)
        assert "\n" not in message and "CACHELAYER_DB_RETRY_SECONDS" in message
        assert err.value.exit_code == 1
    finally:
        own_postgres.start()
    _write(catalog, 900_002)  # the dead pooled connection failed "invalidated"; retried on a new one
    engine.dispose()


def test_sqlite_lock_held_past_the_busy_timeout(tmp_path):
    path = tmp_path / "catalog.db"
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout=0.1, retry_seconds=60)
    upgrade(engine)
    catalog = Catalog(engine)
    _write(catalog, 0)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
    holder.execute("UPDATE output_files SET attempts = attempts")
    released = threading.Timer(1.5, lambda: holder.execute("COMMIT"))  # ... for 15 busy timeouts
    released.start()
    with Hiccups() as hiccups:
        for i in range(1, 6):
            _write(catalog, i)
    released.join()
    holder.close()
    assert any("database is locked" in m for m in hiccups.messages)
    assert _stored(catalog) == 6
    engine.dispose()


def test_a_deadlock_is_retried(postgres_url):
    """Two transactions lock two rows in opposite orders: PostgreSQL aborts one (40P01) and
    the catalog runs it again."""
    engine = make_engine(postgres_url, pool_size=2)
    upgrade(engine)
    catalog = Catalog(engine)
    for i in (1, 2):
        _write(catalog, 800_000 + i)
    ids = sorted(f.id for i in (1, 2) for f in catalog.files_of(f"w{800_000 + i:05d}"))
    barrier = threading.Barrier(2, timeout=30)
    attempts: list[int] = []

    def cross(first: int, second: int) -> None:
        def work(s):
            attempts.append(first)
            s.execute(text("UPDATE output_files SET attempts = attempts + 1 WHERE id = :i"), {"i": first})
            if attempts.count(first) == 1:
                barrier.wait()  # both hold their first row now
            s.execute(text("UPDATE output_files SET attempts = attempts + 1 WHERE id = :i"), {"i": second})

        catalog.db.write(work)

    threads = [threading.Thread(target=cross, args=pair) for pair in ((ids[0], ids[1]), (ids[1], ids[0]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(attempts) == 3  # one of the two ran again after the deadlock
    assert [f.attempts for f in (catalog.files.get(ids[0]), catalog.files.get(ids[1]))] == [3, 3]
    engine.dispose()


def test_pool_fits_the_workers(catalog_url):
    workers = 16
    engine = make_engine(catalog_url, pool_size=workers)
    assert engine.pool.size() + engine.pool._max_overflow >= workers + 5  # type: ignore[attr-defined]
    upgrade(engine)
    catalog = Catalog(engine)
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(k: int) -> None:
        try:
            start.wait(30)
            for i in range(5):
                _write(catalog, k * 1000 + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == [] and _stored(catalog) == workers * 5
    engine.dispose()


def test_retry_setting_is_validated():
    assert Settings.from_env({}, database_url="sqlite://", storage_url="file:///x").db_retry_seconds == 60.0
    assert (
        Settings.from_env({"CACHELAYER_DB_RETRY_SECONDS": "2.5"}, storage_url="file:///x").db_retry_seconds
        == 2.5
    )
    for bad in ("nan", "-1", "soon", "inf"):
        with pytest.raises(ConfigError, match="CACHELAYER_DB_RETRY_SECONDS"):
            Settings.from_env({"CACHELAYER_DB_RETRY_SECONDS": bad}, storage_url="file:///x")
    with pytest.raises(ConfigError):
        make_engine("sqlite://", retry_seconds=float("nan"))


def test_rerun_claims_and_requeue_ride_out_a_sqlite_lock(tmp_path):
    """The rerun claim and re-queueing failed files go through the catalog's one Database:
    a write lock held past SQLite's busy timeout is retried, not raised as SQLAlchemy's."""
    path = tmp_path / "catalog.db"
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout=0.1, retry_seconds=60)
    upgrade(engine)
    catalog = Catalog(engine)
    _write(catalog, 0)
    reruns = catalog.reruns
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock...
    holder.execute("UPDATE output_files SET attempts = attempts")
    released = threading.Timer(1.5, lambda: holder.execute("COMMIT"))  # ... for 15 busy timeouts
    released.start()
    with Hiccups() as hiccups:
        claim = reruns.claim("w00000", "me", stale_after=60)
        requeued = catalog.queue.requeue_failed()
    released.join()
    holder.close()
    assert any("database is locked" in m for m in hiccups.messages)
    assert claim.mine and reruns.get("w00000").owner == "me" and requeued == 0
    engine.dispose()


def test_rerun_claim_past_the_budget_is_a_typed_error(tmp_path):
    path = tmp_path / "catalog.db"
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout=0.05, retry_seconds=0.2)
    upgrade(engine)
    catalog = Catalog(engine)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogOutageError):
            catalog.reruns.claim("p", "me", stale_after=60)
        with pytest.raises(CatalogOutageError):
            catalog.queue.requeue_failed()
    finally:
        holder.execute("COMMIT")
        holder.close()
    engine.dispose()
