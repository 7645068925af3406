"""Opening the catalog: migrations on SQLite and PostgreSQL, WAL mode, typed errors."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from cachelayer.catalog.db import (
    current_revision,
    ensure_schema,
    head_revision,
    make_engine,
    upgrade,
)
from cachelayer.errors import CatalogUnavailableError, ConfigError


def test_upgrade_creates_the_documented_schema(catalog_url):
    engine = make_engine(catalog_url)
    before, after = upgrade(engine)
    assert before is None and after == head_revision(engine)
    assert upgrade(engine) == (after, after)               # idempotent
    insp = inspect(engine)
    assert {"predictions", "output_files", "source_urls", "checkpoints"} <= set(insp.get_table_names())
    uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("output_files")}
    assert ("prediction_id", "output_path") in uniques
    indexed = {tuple(i["column_names"]) for i in insp.get_indexes("output_files")}
    assert ("source_url",) in indexed and ("model", "created_at", "id") in indexed
    assert any(cols[0] == "status" for cols in indexed)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/catalog.db")
    ensure_schema(engine, auto_migrate=True)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_behind_schema_without_auto_migrate_says_run_db_upgrade(catalog_url):
    engine = make_engine(catalog_url)
    with pytest.raises(CatalogUnavailableError, match="cachelayer db upgrade"):
        ensure_schema(engine, auto_migrate=False)
    assert current_revision(engine) is None
    engine.dispose()


def test_bad_urls_are_typed_errors():
    with pytest.raises(ConfigError):
        make_engine("not a url")
    with pytest.raises(CatalogUnavailableError, match="cannot open the catalog"):
        current_revision(make_engine("postgresql://nobody@127.0.0.1:1/none"))


def test_shipped_head_constant_matches_alembic(tmp_path):
    from cachelayer.catalog.db import HEAD_REVISION

    assert head_revision(make_engine(f"sqlite:///{tmp_path}/c.db")) == HEAD_REVISION
