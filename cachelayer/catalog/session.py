"""Connection and dialect plumbing shared by the catalog's repositories.

:class:`Database` wraps one engine: every repository method runs its statements (Core
statements: the catalog has no ORM, so no command imports ``sqlalchemy.orm``) through
:meth:`Database.write` (one transaction) or :meth:`Database.read`, which retry transient
errors within the engine's budget (:mod:`cachelayer.catalog.retry`) and turn anything else
into a typed error, so no SQLAlchemy exception leaves the catalog.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row, Table, select
from sqlalchemy import exc as sa_exc

from cachelayer.catalog.retry import DEFAULT_RETRY_SECONDS, first_line, run_with_retries
from cachelayer.errors import CatalogError, CatalogWriteError

__all__ = ["RETRY_OPTION", "Database", "by_key", "chunked", "dialect_insert", "utcnow"]

T = TypeVar("T")


def dialect_insert(dialect: str, table: Any) -> Any:
    """``INSERT`` into ``table`` (a model or a table) with PostgreSQL's or SQLite's
    ``on_conflict_do_*``. The dialect's module is imported on first use, so a SQLite
    catalog never loads PostgreSQL's (50 ms of start-up; docs/BENCHMARKS.md, issue 11,
    session 6)."""
    name = "postgresql" if dialect == "postgresql" else "sqlite"
    return importlib.import_module(f"sqlalchemy.dialects.{name}").insert(table)


#: Execution option of an engine made by :func:`cachelayer.catalog.db.make_engine` that
#: carries its retry budget in seconds.
RETRY_OPTION = "cachelayer_retry_seconds"
#: Rows per multi-row INSERT: 1,000 rows of at most 10 columns stay far below SQLite's
#: 32,766 and PostgreSQL's 65,535 bind parameters per statement.
INSERT_CHUNK = 1000


def by_key(conn: Connection, table: Table, key: Any) -> Row[Any] | None:
    """The row of ``table`` whose (one-column) primary key is ``key``, or ``None``: what an
    ORM ``Session.get`` answered, as a Core statement (a :class:`~sqlalchemy.Row`, whose
    columns read as attributes)."""
    (column,) = table.primary_key.columns
    return conn.execute(select(table).where(column == key)).first()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def chunked(items: Sequence[T], size: int = INSERT_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Database:
    """One catalog database: its engine, its dialect and the retry budget (seconds;
    default: the engine's ``cachelayer_retry_seconds`` option, else 60). Thread-safe;
    holds no connection between calls."""

    def __init__(self, engine: Engine, *, retry_seconds: float | None = None) -> None:
        self.engine = engine
        # the same pool; a connection checked out through it is in autocommit mode until
        # it is returned (psycopg and sqlite3 switch on the client, no round trip)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # PostgreSQL reads need no transaction: in READ COMMITTED (the default) each
        # statement takes its own snapshot anyway, so BEGIN and ROLLBACK are 2 round trips
        # for nothing. SQLite's reads keep theirs (there it does give one snapshot).
        self._reads = self._autocommit if engine.dialect.name == "postgresql" else engine
        if retry_seconds is None:
            retry_seconds = float(engine.get_execution_options().get(RETRY_OPTION, DEFAULT_RETRY_SECONDS))
        self.retry_seconds = retry_seconds

    def within(self, seconds: float) -> Database:
        """This database with a retry budget of at most ``seconds`` (a route that must
        answer soon: the webhook acknowledgement)."""
        return Database(self.engine, retry_seconds=min(self.retry_seconds, seconds))

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def insert(self, model: Any) -> Any:
        """The dialect's ``INSERT`` (with ``on_conflict_do_*``) for ``model``."""
        return dialect_insert(self.dialect, model)

    def write(self, work: Callable[[Connection], T], *, prediction_id: str | None = None) -> T:
        """``work(connection)`` in one transaction, committed when it returns; re-run from the
        start after a transient error (see :mod:`~cachelayer.catalog.retry`).

        Raises :class:`~cachelayer.errors.CatalogOutageError` past the retry budget and
        :class:`~cachelayer.errors.CatalogWriteError` (naming ``prediction_id``) when the
        database refuses the statement; nothing of the transaction is then written.
        """

        def attempt() -> T:
            with self.engine.begin() as conn:
                return work(conn)

        return self._write_retried(attempt, prediction_id)

    def write_core(self, work: Callable[[Connection], T], *, prediction_id: str | None = None) -> T:
        """:meth:`write` (the name kept from when :meth:`write` ran an ORM ``Session``: the
        catalog's statements are all Core statements now)."""
        return self.write(work, prediction_id=prediction_id)

    def _write_retried(self, attempt: Callable[[], T], prediction_id: str | None) -> T:
        try:
            return run_with_retries(attempt, self.retry_seconds)
        except (sa_exc.SQLAlchemyError, RecursionError) as exc:  # transient ones became outages
            raise CatalogWriteError(first_line(exc), prediction_id=prediction_id) from exc

    def write_statement(self, work: Callable[[Connection], T], *, prediction_id: str | None = None) -> T:
        """``work(connection)`` on a connection in autocommit mode: every statement it runs
        is its own transaction, committed by the database as it completes, with no
        ``BEGIN``/``COMMIT`` round trips. For work that is one statement (atomic on its
        own); retried and reported like :meth:`write` (a statement that failed transiently
        changed nothing, one whose answer was lost is run again, so it must be harmless to
        repeat). Raises :class:`~cachelayer.errors.CatalogOutageError` or
        :class:`~cachelayer.errors.CatalogWriteError`."""

        def attempt() -> T:
            with self._autocommit.connect() as conn:
                return work(conn)

        return self._write_retried(attempt, prediction_id)

    def read(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in a read-only transaction (rolled back at the end; on PostgreSQL
        in autocommit, no ``BEGIN``/``ROLLBACK`` round trips: each statement reads its own
        snapshot, as it does in a READ COMMITTED transaction), retried like :meth:`write`.
        Raises :class:`~cachelayer.errors.CatalogOutageError` or
        :class:`~cachelayer.errors.CatalogError`."""

        def attempt() -> T:
            with self._reads.connect() as conn:
                return work(conn)

        try:
            return run_with_retries(attempt, self.retry_seconds)
        except sa_exc.SQLAlchemyError as exc:
            raise CatalogError(f"catalog query failed: {first_line(exc)}") from exc
