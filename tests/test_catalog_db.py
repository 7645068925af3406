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
    assert upgrade(engine) == (after, after)  # idempotent
    insp = inspect(engine)
    assert {"predictions", "output_files", "source_urls", "checkpoints"} <= set(insp.get_table_names())
    indexes = insp.get_indexes("output_files")
    if engine.dialect.name == "postgresql":  # B-tree entries are bounded: md5() of the long column
        uniques = {tuple(i["expressions"]) for i in indexes if i["unique"] and "expressions" in i}
        assert ("prediction_id", "md5(output_path)") in uniques
        using = {i["name"]: i["dialect_options"].get("postgresql_using") for i in indexes}
        assert using["ix_output_files_source_url"] == "hash"
    else:
        uniques = {tuple(u["column_names"]) for u in insp.get_unique_constraints("output_files")}
        assert ("prediction_id", "output_path") in uniques
    indexed = {tuple(i["column_names"]) for i in indexes}
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


def test_revision_0003_keeps_old_rows_readable_and_redacts_data_uris(catalog_url):
    """Rows written by cachelayer at revision 0002 (before the text rule and the redacted
    data: form) read back unchanged after ``db upgrade``; data: payloads leave the catalog
    and a stored data: file resolves by its new form."""
    import base64
    import hashlib
    from datetime import datetime, timezone

    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from cachelayer.catalog import Catalog

    engine = make_engine(catalog_url)
    upgrade(engine, "0002")
    json_t = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    preds = sa.table(
        "predictions",
        *(sa.column(c) for c in ("id", "status", "data_removed", "recorded_at", "updated_at", "error")),
        sa.column("input", json_t),
        sa.column("output", json_t),
    )
    files = sa.table(
        "output_files",
        *(
            sa.column(c)
            for c in (
                "id",
                "prediction_id",
                "output_path",
                "source_url",
                "store",
                "key",
                "status",
                "attempts",
                "sha256",
                "size",
            )
        ),
    )
    aliases = sa.table("source_urls", *(sa.column(c) for c in ("output_file_id", "url", "seen_at")))
    payload = b"old png bytes"
    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    legacy = f"data:image/png;sha256,{hashlib.sha256(uri.encode()).hexdigest()}"
    now = datetime(2026, 11, 1, tzinfo=timezone.utc)
    with engine.begin() as conn:
        conn.execute(
            preds.insert().values(
                id="old",
                status="succeeded",
                data_removed=False,
                recorded_at=now,
                updated_at=now,
                error="literal \\u0041 text",
                input={"prompt": "say \\u00e9"},
                output=[uri],
            )
        )
        conn.execute(
            files.insert().values(
                id=1,
                prediction_id="old",
                output_path="/0",
                source_url=legacy,
                store="s3://b",
                key="k/0.png",
                status="stored",
                attempts=1,
                sha256=hashlib.sha256(payload).hexdigest(),
                size=len(payload),
            )
        )
        conn.execute(aliases.insert().values(output_file_id=1, url=legacy, seen_at=now))
    assert upgrade(engine) == ("0002", head_revision(engine))
    catalog = Catalog(engine)
    rec = catalog.get_prediction("old")
    redacted = f"data:image/png;sha256={hashlib.sha256(payload).hexdigest()},"
    assert rec.error == "literal \\u0041 text" and rec.input == {"prompt": "say \\u00e9"}
    assert rec.output == [redacted]
    assert catalog.resolve(uri).id == 1 and catalog.files_of("old")[0].source_url == redacted
    engine.dispose()


def _schema(engine) -> dict[str, object]:
    """Everything reflection sees of the catalog's tables: columns (type, nullability,
    default), primary and foreign keys, unique constraints and indexes (names, columns or
    expressions, uniqueness, method), and the revision. SQLite column types are compared by
    their affinity ("Datatypes In SQLite", 3.1): migration 0003 widened VARCHAR(n) to TEXT
    with no DDL there, which changes nothing SQLite stores or checks."""

    def coltype(t: object) -> str:
        name = str(t).upper()
        if engine.dialect.name != "sqlite":
            return name
        if any(k in name for k in ("CHAR", "CLOB", "TEXT")):
            return "TEXT-affinity"
        return name

    insp = inspect(engine)
    out: dict[str, object] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = {
            "columns": [
                (c["name"], coltype(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(table)
            ],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in insp.get_foreign_keys(table)
            ),
            "uniques": sorted(
                (u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(table)
            ),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(str(c) for c in i["column_names"]),
                    tuple(i.get("expressions", ())),
                    bool(i["unique"]),
                    str(i.get("dialect_options", {}).get("postgresql_using", "")),
                )
                for i in insp.get_indexes(table)
            ),
        }
    with engine.connect() as conn:
        out["revision"] = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return out


def test_fresh_catalog_is_created_at_once_with_the_migrated_schema(catalog_url, request):
    """Issue 11: an empty catalog gets its schema from the models in one transaction (no
    Alembic import, no migration run: the CLI's first run on a new SQLite file) and it is
    the schema the migrations build, on SQLite and PostgreSQL, so later migrations apply to
    both alike. A catalog that has tables is left to the migrations."""
    from cachelayer.catalog.db import HEAD_REVISION, create_fresh

    if catalog_url.startswith("sqlite"):
        migrated_url = catalog_url.replace("catalog.db", "migrated.db")
        drop = None
    else:
        admin = request.getfixturevalue("_cachelayer_postgres_admin")
        migrated_url = admin.create_database()
        drop = admin.drop_database
    try:
        migrated, fresh = make_engine(migrated_url), make_engine(catalog_url)
        upgrade(migrated)
        ensure_schema(fresh, auto_migrate=True)
        assert _fast_revision_of(fresh) == HEAD_REVISION
        assert _schema(fresh) == _schema(migrated)
        assert create_fresh(fresh) is False and create_fresh(migrated) is False  # not empty: untouched
        assert _schema(fresh) == _schema(migrated)
        migrated.dispose()
        fresh.dispose()
    finally:
        if drop is not None:
            drop(migrated_url)


def _fast_revision_of(engine) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def test_concurrent_first_opens_of_one_sqlite_catalog_all_succeed(tmp_path):
    """Four processes open the same new SQLite file at once: one creates the schema, the
    others wait for its lock (BEGIN IMMEDIATE) and find it there; none fails."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path}/race.db"
    code = (
        "import sys; from cachelayer.catalog.db import make_engine, ensure_schema; "
        "e = make_engine(sys.argv[1]); ensure_schema(e, auto_migrate=True); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    done = [p.communicate(timeout=120) for p in procs]
    outs = [out.strip() for out, _ in done]
    assert outs == ["ok"] * 4 and [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in done]
    engine = make_engine(url)
    assert current_revision(engine) == head_revision(engine)
    engine.dispose()


def test_migrations_are_found_from_the_root_of_a_source_checkout(tmp_path):
    """``python -c`` (or ``python -m cachelayer``) in the repository's root imports the
    checkout's ``cachelayer/``, which has no ``migrations`` subpackage: that is only made by
    installing (pyproject's ``package-dir``). CI installs non-editable and one racing
    first-opener failed there with ``No module named 'cachelayer.migrations'``. The editable
    install's finder is removed here so the test sees what CI saw."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
        "import cachelayer; assert cachelayer.__file__.startswith(sys.argv[2]), cachelayer.__file__; "
        "from cachelayer.catalog.db import make_engine, head_revision, upgrade; "
        "e = make_engine(sys.argv[1]); print(upgrade(e)[1], head_revision(e))"
    )
    url = f"sqlite:///{tmp_path}/checkout.db"
    done = subprocess.run(
        [sys.executable, "-c", code, url, str(root)], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-800:]
    engine = make_engine(url)
    assert done.stdout.split() == [head_revision(engine)] * 2 == [current_revision(engine)] * 2
    engine.dispose()


def test_revision_0006_moves_rerun_claims_out_of_checkpoints(catalog_url):
    """A catalog written at revision 0004, whose rerun claims were ``checkpoints`` rows
    ``rerun:<id>`` (one fulfilled, one still waiting for Replicate), keeps both claims after
    ``db upgrade``, now in ``rerun_claims``; other checkpoints stay where they were."""
    from datetime import datetime, timezone

    from cachelayer.catalog import Catalog

    engine = make_engine(catalog_url)
    upgrade(engine, "0004")
    catalog = Catalog(engine)
    at = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    # what the landed RerunClaims wrote: the claim, then the rerun's id once created
    catalog.checkpoints.save(
        "rerun:done", None, {"owner": "host:1:aa", "claimed_at": at.isoformat(), "rerun_id": "newone"}
    )
    catalog.checkpoints.save("rerun:waiting", None, {"owner": "host:2:bb", "claimed_at": at.isoformat()})
    catalog.checkpoints.save("backfill:0123", "cursor-7", {"complete": False})
    assert upgrade(engine) == ("0004", head_revision(engine))
    done, waiting = catalog.reruns.get("done"), catalog.reruns.get("waiting")
    assert (done.owner, done.claimed_at, done.rerun_id) == ("host:1:aa", at, "newone")
    assert (waiting.owner, waiting.claimed_at, waiting.rerun_id) == ("host:2:bb", at, None)
    assert (
        catalog.checkpoints.load("rerun:done") is None and catalog.checkpoints.load("rerun:waiting") is None
    )
    kept = catalog.checkpoints.load("backfill:0123")
    assert kept is not None and (kept.cursor, kept.state) == ("cursor-7", {"complete": False})
    # the waiting claim is still held: another process cannot take it before it is stale
    again = catalog.reruns.claim("waiting", "host:3:cc", stale_after=10**9)
    assert not again.mine
    assert catalog.reruns.claim("waiting", "host:3:cc", stale_after=0).mine  # stale: taken over
    assert not catalog.reruns.claim("done", "host:3:cc", stale_after=0).mine  # fulfilled: never
    from alembic import command

    from cachelayer.catalog.db import _alembic_config

    cfg = _alembic_config(engine)
    with engine.begin() as conn:  # and back: the claims return to checkpoints
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    back = catalog.checkpoints.load("rerun:done")
    assert back is not None and back.state["rerun_id"] == "newone" and back.state["owner"] == "host:1:aa"
    engine.dispose()
