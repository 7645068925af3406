"""A second CacheLayer in a process must not drop the SQLite locks the first one holds.

POSIX advisory locks belong to the process: closing *any* descriptor of a file releases all
of the process's locks on it (SQLite's "How To Corrupt An SQLite Database File", 2.2.1). A
settings check that opened the catalog file to read its header did exactly that, so another
process closing its last connection believed it was alone, checkpointed and deleted the WAL
under our open connections: later statements failed with "disk I/O error" or "database disk
image is malformed" (seen in CI as a flaky SIGTERM test of ``cachelayer serve``).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import text

from cachelayer import CacheLayer
from cachelayer.errors import ConfigError


def _layer(tmp_path, db) -> CacheLayer:
    return CacheLayer(
        database_url=f"sqlite:///{db}",
        storage_url=f"file://{tmp_path}/store",
        replicate_api_token="unused",
        db_retry_seconds=0,
    )


def _write(layer: CacheLayer, name: str) -> None:
    with layer.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO checkpoints(name, state, updated_at) VALUES (:n, '{}', CURRENT_TIMESTAMP)"),
            {"n": name},
        )


def test_a_second_layer_keeps_the_first_ones_locks(tmp_path):
    db = tmp_path / "catalog.db"
    first = _layer(tmp_path, db)
    _write(first, "before")  # an open connection, a WAL with frames, our locks held
    wal = db.with_name("catalog.db-wal")
    assert wal.exists()

    second = _layer(tmp_path, db)  # builds Settings: must not open/close the file itself

    # Another process opens and closes a connection. Were our locks gone, it would think
    # itself the last user, checkpoint and delete the WAL under our connections.
    probe = (
        f"import sqlite3; c = sqlite3.connect({str(db)!r}); c.execute('SELECT 1 FROM predictions'); c.close()"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)
    assert wal.exists(), "another process deleted the WAL while this one had the catalog open"

    for i in range(3):
        _write(first, f"first-{i}")
        _write(second, f"second-{i}")
    fresh = sqlite3.connect(db)
    try:
        assert fresh.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert fresh.execute("SELECT count(*) FROM checkpoints").fetchone() == (7,)
    finally:
        fresh.close()
    first.close()
    second.close()


def test_a_file_that_is_not_sqlite_is_a_config_error(tmp_path):
    notdb = tmp_path / "notes.txt"
    notdb.write_bytes(b"this is not a database, just some notes\n" * 100)
    layer = _layer(tmp_path, notdb)
    with pytest.raises(ConfigError, match="not a SQLite database"):
        layer.catalog  # noqa: B018
    assert notdb.read_bytes() == b"this is not a database, just some notes\n" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
