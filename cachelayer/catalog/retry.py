"""Which database errors are transient, and the bounded retry around each transaction.

Transient (retried as :data:`cachelayer.retry_policy.CATALOG` says: exponential backoff and
jitter, 50 ms doubling up to 2 s between attempts, for at most
``CACHELAYER_DB_RETRY_SECONDS``, default 60 s):

* a lost or refused connection (a server restart, a network drop; SQLAlchemy marks the
  connection invalidated; psycopg ``OperationalError`` without an SQLSTATE);
* PostgreSQL SQLSTATEs ``40001`` serialization failure, ``40P01`` deadlock, class ``08``
  connection exception, class ``53`` insufficient resources (disk full, too many
  connections), ``57P01``/``57P02``/``57P03`` shutdown and start-up, ``55P03`` lock not
  available, class ``58`` system error (I/O);
* SQLite ``SQLITE_BUSY``/``SQLITE_LOCKED`` ("database is locked": another process held the
  write lock longer than the busy timeout), ``SQLITE_FULL`` and ``SQLITE_IOERR``;
* SQLAlchemy's pool timeout (every pooled connection busy for ``pool_timeout``).

Anything else (a constraint the data breaks, a value the database refuses, a bug) is not
retried. A transaction that fails is rolled back whole, so a retry re-runs it from the
start: every catalog transaction is written to be idempotent or harmless to repeat (an
upsert, an insert that ignores conflicts, an update guarded by the row's current state).
Past the budget :class:`~cachelayer.errors.CatalogOutageError` is raised (one line).

:func:`retry_deadline` shortens the budget of every retry inside a block to a point in time
(nested blocks keep the earlier one): an HTTP route answers ``503`` after a few seconds
rather than holding its client for the full budget, and shutdown releases what it can
within its grace rather than retrying against a catalog that is down.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TypeVar

from sqlalchemy import exc as sa_exc
from tenacity import RetryCallState

from cachelayer.config import DEFAULT_DB_RETRY_SECONDS
from cachelayer.errors import CatalogOutageError
from cachelayer.retry_policy import CATALOG

__all__ = [
    "DEFAULT_RETRY_SECONDS",
    "RAW_DATABASE_ERROR",
    "first_line",
    "is_transient",
    "retry_deadline",
    "run_with_retries",
]

log = logging.getLogger("cachelayer")

#: The base class of the database errors the catalog turns into typed ones: what a server
#: maps to ``503`` should one escape (code outside the catalog's ``Database``).
RAW_DATABASE_ERROR: type[Exception] = sa_exc.SQLAlchemyError

#: Default of ``CACHELAYER_DB_RETRY_SECONDS`` (60 s, see :mod:`cachelayer.config`).
DEFAULT_RETRY_SECONDS = DEFAULT_DB_RETRY_SECONDS

_PG_STATES = {"40001", "40P01", "55P03", "57P01", "57P02", "57P03"}
_PG_CLASSES = {"08", "53", "58"}
_SQLITE_NAMES = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_PROTOCOL")
_SQLITE_TEXTS = (
    "database is locked",
    "database table is locked",
    "disk i/o error",
    "database or disk is full",
)

T = TypeVar("T")

#: ``time.monotonic()`` past which no retry of this context starts another attempt.
_deadline: ContextVar[float | None] = ContextVar("cachelayer_retry_deadline", default=None)


@contextlib.contextmanager
def retry_deadline(seconds: float) -> Iterator[None]:
    """Within the block (this thread or task, and what it copies its context to), every
    :func:`run_with_retries` gives up at most ``seconds`` from now (or at the deadline of an
    enclosing block, if earlier), raising :class:`~cachelayer.errors.CatalogOutageError`
    as it does past its own budget. An attempt under way is not interrupted: the last one
    may start just before the deadline and end one connect timeout or 2 s of backoff after it."""
    deadline = time.monotonic() + max(0.0, seconds)
    outer = _deadline.get()
    token = _deadline.set(deadline if outer is None else min(outer, deadline))
    try:
        yield
    finally:
        _deadline.reset(token)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (raised by SQLAlchemy) is worth retrying; see the module docstring."""
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if state:
        return state in _PG_STATES or state[:2] in _PG_CLASSES
    if isinstance(orig, sqlite3.Error):
        name = getattr(orig, "sqlite_errorname", "") or ""
        if name:
            return name.startswith(_SQLITE_NAMES)
        text = str(orig).lower()
        return any(t in text for t in _SQLITE_TEXTS)
    # psycopg reports a refused or dropped connection as OperationalError with no SQLSTATE
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy appends SQL and a link)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    level = logging.WARNING if state.attempt_number == 1 else logging.DEBUG
    log.log(
        level,
        "catalog hiccup (%s); retrying (attempt %d, %.1f s so far)",
        first_line(exc) if exc else "?",
        state.attempt_number,
        state.seconds_since_start or 0.0,
    )


def run_with_retries(fn: Callable[[], T], budget: float) -> T:
    """``fn()``, retried while it raises a transient error, for at most ``budget`` seconds
    (a last attempt may start just before the budget ends; a :func:`retry_deadline` around
    the call may end it sooner). Raises :class:`~cachelayer.errors.CatalogOutageError` past
    the budget and re-raises any other exception unchanged."""
    deadline = _deadline.get()
    if deadline is not None:
        budget = min(budget, max(0.0, deadline - time.monotonic()))
    budget = max(0.0, budget)
    retrying = CATALOG.with_deadline(budget).retrying(is_transient, before_sleep=_log_retry)
    try:
        return retrying(fn)
    except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
        if not is_transient(exc):
            raise
        raise CatalogOutageError(
            f"the catalog did not answer for {round(budget, 1):g} s "
            f"(CACHELAYER_DB_RETRY_SECONDS): {first_line(exc)}"
        ) from exc
