"""Opening the catalog database and keeping its schema current (Alembic).

SQLite files are opened in WAL mode with a 30 s busy timeout and foreign keys on, so
several threads and processes can share one catalog; PostgreSQL is used as it is. The
schema is managed by the Alembic revisions shipped in ``cachelayer.migrations``.

Opening a catalog (reading its revision, migrating) fails fast with
:class:`~cachelayer.errors.CatalogUnavailableError`, so a mistyped URL is reported at once;
work on an open catalog retries transient errors (:mod:`cachelayer.catalog.retry`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError, SQLAlchemyError

from cachelayer.catalog.retry import DEFAULT_RETRY_SECONDS
from cachelayer.catalog.session import RETRY_OPTION
from cachelayer.errors import CatalogUnavailableError, ConfigError
from cachelayer.masking import mask_secrets

log = logging.getLogger("cachelayer")

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The newest migration shipped (kept equal to Alembic's head by a test), so opening an
#: up-to-date catalog costs one SELECT and does not import Alembic at all.
HEAD_REVISION = "0009"
#: Pooled connections beyond the caller's concurrency (heartbeat, scan and main threads).
POOL_SPARE = 5
#: Seconds after which a pooled PostgreSQL connection is replaced instead of reused (before
#: idle timeouts of servers, proxies and NATs can cut it).
PG_POOL_RECYCLE = 300
#: Seconds a new PostgreSQL connection may take (libpq ``connect_timeout``) unless the URL
#: sets one; without it an unreachable host would hang a connect for minutes.
PG_CONNECT_TIMEOUT = 10


def _sqlite_on_connect(busy_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return on_connect


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
    sqlite_busy_timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000,
) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    ``postgresql://`` URLs are routed to the psycopg 3 driver. For SQLite the parent
    directory is created.

    ``pool_size``: how many threads of this process use the catalog at once (pass the
    worker count); the pool keeps that many connections and opens up to
    ``max(pool_size, 5)`` more under load, so ``pool_size + max_overflow >= pool_size + 5``
    and workers never wait for a connection. PostgreSQL connections are not pinged when
    taken from the pool (one round trip less per transaction): one a server restart killed
    fails as "invalidated" and the transaction is retried on a new connection; they are
    replaced after ``PG_POOL_RECYCLE`` (300) seconds, and connect with a 10 s timeout
    unless the URL sets ``connect_timeout``.

    ``retry_seconds`` (``CACHELAYER_DB_RETRY_SECONDS``): how long a catalog transaction is
    retried after transient errors (:mod:`cachelayer.catalog.retry`); carried by the engine
    to every :class:`~cachelayer.catalog.Catalog` built on it. ``sqlite_busy_timeout``:
    seconds SQLite itself waits for another connection's write lock before reporting
    "database is locked" (which is then retried).

    Raises :class:`ConfigError` for a malformed URL, a missing driver or a bad number, and
    :class:`CatalogUnavailableError` when a SQLite file's directory cannot be created.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"CACHELAYER_DATABASE_URL is not a database URL: {url!r}") from exc
    if pool_size < 1:
        raise ConfigError(f"pool_size must be at least 1, got {pool_size}")
    if not retry_seconds >= 0 or retry_seconds == float("inf"):
        raise ConfigError(f"CACHELAYER_DB_RETRY_SECONDS must be a finite number >= 0, got {retry_seconds!r}")
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {"execution_options": {RETRY_OPTION: float(retry_seconds)}}
    pool = {"pool_size": pool_size, "max_overflow": max(pool_size, POOL_SPARE)}
    busy_ms = int(sqlite_busy_timeout * 1000)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            folder = Path(db).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # /proc/nope, a read-only mount, no permission
                raise CatalogUnavailableError(
                    f"cannot create the catalog's directory {str(folder)!r}: {exc.strerror or exc}"
                ) from None
        if db and db != ":memory:" and "mode=memory" not in str(parsed):
            kwargs.update(pool)  # a file: QueuePool (in-memory databases use one connection)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": sqlite_busy_timeout}
    else:
        # No pre-ping: it costs a round trip per transaction, and a connection a server
        # restart killed fails its first statement as "invalidated", which every catalog
        # transaction retries (cachelayer.catalog.retry) on a fresh connection.
        kwargs.update(pool, pool_pre_ping=False, pool_recycle=PG_POOL_RECYCLE)
        if "connect_timeout" not in parsed.query:
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"no driver for {parsed.drivername}: install cachelayer[postgres] ({exc})") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect(busy_ms))
    return engine


def migrations_dir() -> Path:
    """The folder of the shipped Alembic migrations (``env.py``, ``versions/``).

    Installed, it is the package ``cachelayer.migrations`` (the repository's top-level
    ``migrations/``, mapped by ``package-dir`` in pyproject.toml). A source checkout imported
    from its root (``python -m cachelayer`` or ``python -c`` there put the checkout's
    ``cachelayer/`` first on ``sys.path``) has no such subpackage: its ``migrations/`` folder
    beside the package is used. Raises :class:`ModuleNotFoundError` if neither exists.
    """
    try:
        import cachelayer.migrations as migrations
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parents[2] / "migrations"  # beside cachelayer/
        if (checkout / "env.py").is_file():
            return checkout
        raise
    return Path(migrations.__file__).parent


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision(engine: Engine) -> str:
    """The newest revision shipped with this version of cachelayer."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or ``None`` for an empty database.

    Raises :class:`CatalogUnavailableError` if the database cannot be reached and
    :class:`ConfigError` if a SQLite URL names a file that is not a SQLite database (SQLite
    itself decides: reading the file from Python would drop this process's POSIX locks on it).
    """
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except DatabaseError as exc:
        if getattr(exc.orig, "sqlite_errorname", "") == "SQLITE_NOTADB":
            raise ConfigError(
                f"CACHELAYER_DATABASE_URL names {engine.url.database!r}, which is not a SQLite database"
            ) from None
        if not isinstance(exc, OperationalError):
            raise
        raise CatalogUnavailableError(
            f"cannot open the catalog at {mask_secrets(engine.url.render_as_string(hide_password=True))}: "
            f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from exc


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Apply migrations up to ``revision``; returns ``(before, after)`` revisions.

    Safe to call concurrently from several processes: a loser of the race that finds the
    schema already at head returns normally. Raises :class:`CatalogUnavailableError`.
    """
    from alembic import command

    before = current_revision(engine)
    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:
        if current_revision(engine) == head_revision(engine):
            log.debug("another process upgraded the catalog first: %s", exc)
        else:
            raise CatalogUnavailableError(f"catalog migration failed: {exc}") from exc
    return before, current_revision(engine) or ""


def _fast_revision(engine: Engine) -> str | None:
    """``alembic_version.version_num`` read directly; ``None`` if unreadable."""
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


#: An arbitrary key for ``pg_advisory_xact_lock``: creators of a fresh catalog take turns.
_CREATE_LOCK = 0x6361636865  # "cache"


def create_fresh(engine: Engine) -> bool:
    """Give an empty database the catalog's schema in one transaction: the tables and
    indexes of :mod:`cachelayer.catalog.models` (``create_all``) and ``alembic_version`` at
    :data:`HEAD_REVISION`, without importing Alembic or running every migration (as Rails'
    ``db:schema:load`` does for a new database). A test keeps the result identical to the
    migrated schema on SQLite and PostgreSQL (tests/test_catalog_db.py).

    Returns ``False``, changing nothing, when the database already has tables (another
    process may have just created them: creators take turns, SQLite's ``BEGIN IMMEDIATE``
    or a PostgreSQL advisory lock) or when creation fails; the migrations then decide.
    """
    from cachelayer.catalog.models import METADATA

    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            if sqlite:  # pysqlite runs DDL outside any transaction unless one is begun
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
            if inspect(conn).get_table_names():
                conn.rollback()
                return False
            METADATA.create_all(conn)
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD_REVISION})
            conn.commit()
    except SQLAlchemyError as exc:
        log.debug("creating a fresh catalog failed, migrating instead: %s", exc)
        return False
    log.info("created a fresh catalog at revision %s", HEAD_REVISION)
    return True


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Make sure the catalog is at the shipped head revision.

    With ``auto_migrate`` (the default for SQLite) an empty database gets the schema at
    once (:func:`create_fresh`) and an older one its missing migrations;
    otherwise :class:`CatalogUnavailableError` tells the user to run
    ``cachelayer db upgrade``.
    """
    if _fast_revision(engine) == HEAD_REVISION:
        return
    if auto_migrate and create_fresh(engine):
        return
    current = current_revision(engine)
    head = head_revision(engine)
    if current == head:
        return
    if auto_migrate:
        upgrade(engine)
        return
    if current is None and inspect(engine).has_table("predictions"):
        current = "unknown"
    raise CatalogUnavailableError(
        f"the catalog schema is at revision {current or 'none'}, this cachelayer needs {head}: "
        "run `cachelayer db upgrade`"
    )
