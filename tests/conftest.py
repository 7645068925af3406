"""Shared test wiring: a CacheLayer on the simulator, the moto S3 server and a catalog.

The fixtures ``replicate_simulator``, ``s3_server``, ``s3_bucket``, ``catalog_url`` and
friends come from cachelayer's own pytest plugin (``cachelayer.testing.fixtures``).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from serving import layer_options, process_env

from cachelayer import CacheLayer

if TYPE_CHECKING:
    from pg_cluster import OwnPostgres

    from cachelayer.catalog import Catalog


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A :class:`Catalog` on the catalog under test (SQLite and PostgreSQL), migrated."""
    from cachelayer.catalog import Catalog
    from cachelayer.catalog.db import make_engine, upgrade

    engine = make_engine(catalog_url)
    upgrade(engine)
    yield Catalog(engine)
    engine.dispose()


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """A started PostgreSQL cluster of the test's own (``tests/pg_cluster.OwnPostgres``), to
    stop and restart under the code; destroyed afterwards. Skips when none can be made."""
    from pg_cluster import OwnPostgres, OwnPostgresUnavailable

    try:
        pg = OwnPostgres()
    except OwnPostgresUnavailable as exc:
        pytest.skip(f"no throw-away PostgreSQL cluster: {exc}")
    try:
        pg.start()
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def make_layer(
    replicate_simulator, s3_server, s3_bucket, catalog_url, monkeypatch
) -> Iterator[Callable[..., CacheLayer]]:
    """Build CacheLayers wired to the simulator, the S3 bucket and the catalog under test.

    Credentials reach boto3 the way they reach it in production: its own variables."""
    made: list[CacheLayer] = []
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_access_key)
    monkeypatch.setenv("AWS_REGION", s3_server.region)

    def make(**overrides: Any) -> CacheLayer:
        sim = overrides.pop("simulator", replicate_simulator)
        options = layer_options(sim, s3_server, s3_bucket, catalog_url)
        options.update(overrides)
        auto = options.pop("auto_migrate")
        layer = CacheLayer(auto_migrate=auto, **options)
        made.append(layer)
        return layer

    yield make
    for layer in made:
        layer.close()


@pytest.fixture
def layer(make_layer) -> CacheLayer:
    return make_layer()


CLI = str(Path(sys.executable).with_name("cachelayer"))


def run_cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the installed `cachelayer` console script as a user would."""
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, input=stdin, timeout=timeout)


@pytest.fixture
def cli_env(replicate_simulator, s3_server, s3_bucket, catalog_url) -> dict[str, str]:
    """Environment for `cachelayer` subprocesses: simulator, S3 bucket (prefix `cli`),
    catalog upgraded with `cachelayer db upgrade`, short leases."""
    env = process_env(
        replicate_simulator, s3_server, f"s3://{s3_bucket}/cli", catalog_url, CACHELAYER_LEASE_SECONDS="5"
    )
    done = run_cli(env, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture
def http_webhooks(replicate_simulator):
    """`cachelayer serve` listens on plain HTTP on loopback in tests; Replicate itself only
    sends webhooks to HTTPS URLs (in production serve sits behind a TLS proxy)."""
    replicate_simulator.allow_http_webhooks = True
    return replicate_simulator


@pytest.fixture
def served(make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path):
    """Start ``cachelayer serve`` processes (``served(*args, **env)``) on the test's
    simulator, bucket and catalog (migrated first: PostgreSQL is not auto-migrated); each
    is stopped afterwards and must not have printed a traceback."""
    from serving import ServeProcess, serve_env

    make_layer().catalog  # noqa: B018 -- migrate first
    procs: list[ServeProcess] = []

    def start(*args: str, **env: str) -> ServeProcess:
        full = serve_env(replicate_simulator, s3_server, s3_bucket, catalog_url, **env)
        proc = ServeProcess(full, tmp_path / f"serve-{len(procs)}.log", *args)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        p.stop()
        assert "Traceback" not in p.output(), p.output()
