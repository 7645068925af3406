"""Opening the catalog database and keeping its schema current (Alembic).

SQLite files are opened in WAL mode with a 30 s busy timeout and foreign keys on, so
several threads and processes can share one catalog; PostgreSQL is used as it is. The
schema is managed by the Alembic revisions shipped in ``cachelayer.migrations``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from cachelayer.errors import CatalogUnavailableError, ConfigError

log = logging.getLogger("cachelayer")

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: The newest migration shipped (kept equal to Alembic's head by a test), so opening an
#: up-to-date catalog costs one SELECT and does not import Alembic at all.
HEAD_REVISION = "0002"


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

    ``postgresql://`` URLs are routed to the psycopg 3 driver. For SQLite the parent
    directory is created. ``pool_size`` is the number of pooled connections (PostgreSQL).
    Raises :class:`ConfigError` for a malformed URL or a missing driver.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"CACHELAYER_DATABASE_URL is not a database URL: {url!r}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if db and db != ":memory:" and not db.startswith("file:"):
            Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"no driver for {parsed.drivername}: install cachelayer[postgres] ({exc})"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
    return engine


def _alembic_config(engine: Engine) -> Any:
    import cachelayer.migrations as migrations
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
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

    Raises :class:`CatalogUnavailableError` if the database cannot be reached.
    """
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise CatalogUnavailableError(
            f"cannot open the catalog at {engine.url.render_as_string(hide_password=True)}: "
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


def ensure_schema(engine: Engine, *, auto_migrate: bool) -> None:
    """Make sure the catalog is at the shipped head revision.

    With ``auto_migrate`` (the default for SQLite) missing migrations are applied;
    otherwise :class:`CatalogUnavailableError` tells the user to run
    ``cachelayer db upgrade``.
    """
    if _fast_revision(engine) == HEAD_REVISION:
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
