"""pytest fixtures for cachelayer, registered as a plugin by the ``pytest11`` entry point
``cachelayer = "cachelayer.testing.fixtures"``, so any project with cachelayer installed
(``pip install -e .``) gets them without a conftest.

This module imports only the standard library and pytest; boto3, moto, psycopg and
SQLAlchemy are imported inside the fixtures that need them, so the plugin loads even when
those optional packages are absent.

Fixtures:

``s3_server`` (session)   a :class:`~cachelayer.testing.s3server.MotoS3Server` subprocess.
``s3_bucket`` (function)  name of a fresh, uniquely named bucket on it; emptied and deleted
                          afterwards.
``s3_store`` (function)   an :class:`~cachelayer.storage.s3.S3Store` on ``s3_bucket`` (path
                          addressing, moto's test credentials).
``s3rver_server`` (session) an :class:`~cachelayer.testing.s3server.S3rverServer`: s3rver, a second
                          S3 implementation (Node.js), installed with npm on first use; skips
                          when Node.js/npm are missing or the install fails.
``s3rver_bucket`` (function) name of a fresh bucket on it; emptied and deleted afterwards.
``local_store`` (function) a :class:`~cachelayer.storage.local.LocalStore` under ``tmp_path``.
``postgres_url`` (session) SQLAlchemy URL of a fresh database ``cachelayer_test_<hex>`` on the
                          local PostgreSQL, dropped at session end.
``catalog_url`` (function, parametrized ``[sqlite]`` / ``[postgresql]``) SQLAlchemy URL of an
                          empty catalog database: a SQLite file in ``tmp_path``, or a fresh
                          PostgreSQL database per test (``CREATE DATABASE`` takes about 20 ms on
                          the local server, so no table truncation tricks are needed).

Environment:

``CACHELAYER_TEST_POSTGRES_URL``  admin URL of the PostgreSQL server (default
    ``postgresql+psycopg://root@127.0.0.1:5432/postgres``); the user must be allowed to
    create databases. Test databases get the same URL with another database name.
``CACHELAYER_REQUIRE_POSTGRES=1``  fail instead of skip when PostgreSQL is unreachable.
``CACHELAYER_REQUIRE_S3RVER=1``  fail instead of skip when s3rver cannot be installed or started.
``CACHELAYER_S3RVER_DIR``  where s3rver is installed (default ``~/.cache/cachelayer/s3rver-<version>``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cachelayer.storage.local import LocalStore
    from cachelayer.storage.s3 import S3Store
    from cachelayer.testing.s3server import MotoS3Server, S3rverServer

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "PostgresAdmin",
    "catalog_url",
    "local_store",
    "postgres_url",
    "s3_bucket",
    "s3_server",
    "s3_store",
    "s3rver_bucket",
    "s3rver_server",
]

DEFAULT_POSTGRES_URL = "postgresql+psycopg://root@127.0.0.1:5432/postgres"


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``postgres`` marker (also declared in cachelayer's pyproject)."""
    config.addinivalue_line("markers", "postgres: needs the local PostgreSQL server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use ``postgres_url`` with ``postgres`` so ``-m "not postgres"`` works."""
    for item in items:
        if "postgres_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


# -- S3 --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """A moto S3 server subprocess for the whole session (one per xdist worker).

    Its log is ``<session tmp>/moto/moto-s3.log``. Errors with
    :class:`~cachelayer.testing.s3server.MotoNotInstalledError` ("install cachelayer[dev]")
    if ``moto[server]`` is missing.
    """
    from cachelayer.testing.s3server import MotoS3Server

    log_path = tmp_path_factory.mktemp("moto") / "moto-s3.log"
    server = MotoS3Server(log_path=log_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: MotoS3Server) -> Iterator[str]:
    """Name of a new bucket ``cachelayer-test-<16 hex>`` on ``s3_server``.

    Afterwards its objects and unfinished multipart uploads are deleted and then the bucket
    (keeps moto's memory flat over long sessions); cleanup errors are ignored.
    """
    name = f"cachelayer-test-{secrets.token_hex(8)}"
    s3_server.create_bucket(name)
    try:
        yield name
    finally:
        _delete_bucket(s3_server, name)


def _delete_bucket(server: MotoS3Server | S3rverServer, name: str) -> None:
    client = server.admin_client
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for up in page.get("Uploads", []):
                client.abort_multipart_upload(Bucket=name, Key=up["Key"], UploadId=up["UploadId"])
    with contextlib.suppress(Exception):
        for listing in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys: list[Any] = [{"Key": o["Key"]} for o in listing.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
    with contextlib.suppress(Exception):
        client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_store(s3_server: MotoS3Server, s3_bucket: str) -> Iterator[S3Store]:
    """An :class:`~cachelayer.storage.s3.S3Store` on ``s3_bucket`` (empty prefix, path-style
    addressing, moto's ``testing`` credentials, default part sizes); closed afterwards."""
    from cachelayer.storage.s3 import S3Store

    store = S3Store(
        s3_bucket,
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        addressing_style="path",
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="session")
def s3rver_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3rverServer]:
    """An s3rver subprocess for the whole session (one per xdist worker), data and log under
    ``<session tmp>/s3rver/``. s3rver is installed with npm into
    ``~/.cache/cachelayer/s3rver-<version>`` the first time (once per machine, serialised
    between workers). Skips, with the reason, when Node.js/npm are missing or the install
    fails (``CACHELAYER_REQUIRE_S3RVER=1`` turns that skip into a failure); a server that
    does not start is an error.
    """
    from cachelayer.testing.s3server import S3rverServer, S3rverUnavailableError

    base = tmp_path_factory.mktemp("s3rver")
    try:
        # A server that installs but will not start is an error, not a skip.
        server = S3rverServer(data_dir=base / "data", log_path=base / "s3rver.log")
    except S3rverUnavailableError as exc:
        message = f"s3rver not usable: {' '.join(str(exc).split())[:600]}"
        if os.environ.get("CACHELAYER_REQUIRE_S3RVER", "") not in ("", "0"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3rver_bucket(s3rver_server: S3rverServer) -> Iterator[str]:
    """Name of a new bucket ``cachelayer-test-<16 hex>`` on ``s3rver_server``; its objects and
    then the bucket are deleted afterwards (cleanup errors ignored)."""
    name = f"cachelayer-test-{secrets.token_hex(8)}"
    s3rver_server.create_bucket(name)
    try:
        yield name
    finally:
        _delete_bucket(s3rver_server, name)


# -- local files -----------------------------------------------------------------------


@pytest.fixture
def local_store(tmp_path: Path) -> LocalStore:
    """A :class:`~cachelayer.storage.local.LocalStore` rooted at ``tmp_path / "objects"``
    (the directory is not created until ``check()`` or the first ``put``)."""
    from cachelayer.storage.local import LocalStore

    return LocalStore(tmp_path / "objects")


# -- PostgreSQL ------------------------------------------------------------------------


class PostgresAdmin:
    """Creates and drops throw-away databases on one PostgreSQL server.

    ``url`` is a SQLAlchemy URL (``postgresql+psycopg://user[:pw]@host:port/db``) of a
    database the user can connect to with the ``CREATEDB`` privilege. Each operation opens
    its own short autocommit psycopg connection (about 5 ms locally), so the object is safe
    to share. Raises ``psycopg.Error`` on failure.
    """

    def __init__(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        self.url = make_url(url)

    def _connect(self) -> Any:
        import psycopg

        u = self.url
        params: dict[str, Any] = {"dbname": u.database or "postgres", "connect_timeout": 5}
        if u.host:
            params["host"] = u.host
        if u.port:
            params["port"] = u.port
        if u.username:
            params["user"] = u.username
        if u.password is not None:
            params["password"] = u.password
        for key, value in u.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        return psycopg.connect(autocommit=True, **params)

    def ping(self) -> None:
        """Connect and run ``SELECT 1``."""
        with self._connect() as conn:
            conn.execute("SELECT 1")

    def url_for(self, database: str) -> str:
        """The SQLAlchemy URL (password included) of ``database`` on this server."""
        return self.url.set(database=database).render_as_string(hide_password=False)

    def create_database(self, prefix: str = "cachelayer_test_") -> str:
        """Create ``<prefix><16 hex>`` and return its SQLAlchemy URL."""
        from psycopg import sql

        name = f"{prefix}{secrets.token_hex(8)}"
        with self._connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def drop_database(self, url_or_name: str) -> None:
        """Terminate every connection to the database, then drop it (if it exists)."""
        from psycopg import sql
        from sqlalchemy.engine import make_url

        name = make_url(url_or_name).database if "://" in url_or_name else url_or_name
        if not name:
            raise ValueError(f"no database name in {_redacted(url_or_name)}")
        with self._connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def _redacted(url: str) -> str:
    with contextlib.suppress(Exception):
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    return "<unparsable URL>"


@pytest.fixture(scope="session")
def _cachelayer_postgres_admin() -> PostgresAdmin:
    """The reachable PostgreSQL server, or skip (fail with ``CACHELAYER_REQUIRE_POSTGRES=1``)."""
    url = os.environ.get("CACHELAYER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    required = os.environ.get("CACHELAYER_REQUIRE_POSTGRES", "") not in ("", "0")
    try:
        admin = PostgresAdmin(url)
        admin.ping()
    except Exception as exc:  # ImportError (no psycopg), connection refused, bad auth...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        message = (
            f"PostgreSQL not usable at {_redacted(url)}: {reason} "
            "(set CACHELAYER_TEST_POSTGRES_URL"
            + ("" if required else "; CACHELAYER_REQUIRE_POSTGRES=1 turns this skip into a failure")
            + ")"
        )
        if required:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return admin


@pytest.fixture(scope="session")
def postgres_url(_cachelayer_postgres_admin: PostgresAdmin) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a fresh database
    ``cachelayer_test_<16 hex>`` shared by the session; its connections are terminated and
    it is dropped at session end. Skips (or fails, see module docstring) without PostgreSQL.
    """
    admin = _cachelayer_postgres_admin
    url = admin.create_database()
    try:
        yield url
    finally:
        admin.drop_database(url)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLAlchemy URL of an empty catalog database, once per backend:

    ``[sqlite]``: ``sqlite:///{tmp_path}/catalog.db`` (file not created yet).
    ``[postgresql]``: a fresh database ``cachelayer_test_<16 hex>`` per test, dropped
    afterwards (connections terminated first); skipped like ``postgres_url`` when
    PostgreSQL is unreachable.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/catalog.db"
        return
    admin: PostgresAdmin = request.getfixturevalue("_cachelayer_postgres_admin")
    url = admin.create_database()
    try:
        yield url
    finally:
        admin.drop_database(url)


# simulator fixtures


@pytest.fixture
def replicate_simulator() -> Iterator[Any]:
    """A running :class:`~cachelayer.testing.simulator.ReplicateSimulator` (plain HTTP,
    token ``sim.token``); point a client at it with ``base_url=sim.base_url`` and allow its
    downloads from its delivery origin with ``allowed_hosts=sim.delivery_host_port`` (never
    the API's ``sim.host_port``: the API origin serves no outputs), marked as a file host
    with ``token_hosts=(sim.delivery_host_port,)`` as ``replicate.delivery`` is by default.
    Stopped after the test."""
    from cachelayer.testing.simulator import ReplicateSimulator

    with ReplicateSimulator() as sim:
        yield sim
