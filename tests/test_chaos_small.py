"""``bench/chaos.py`` in small: ``kill -9`` of ``cachelayer backfill`` and of a ``CacheLayer.run``
child, delivery faults (truncated, 429, dropped, 5xx), an S3 outage mid-upload (a TCP proxy in
front of the session's moto closes and reopens) and, on PostgreSQL, a restart of a cluster of
our own; then every file must be stored once, intact, with no orphan, stale lease or traceback.
The full campaign and its figures: ``docs/RELIABILITY.md``."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
from benches import load_bench


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    return load_bench("chaos")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_small_campaign_loses_nothing(chaos, s3_server, dialect) -> None:
    if dialect == "postgresql":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pg_cluster import OwnPostgresUnavailable, _bindir

        try:
            _bindir()
        except OwnPostgresUnavailable as exc:
            pytest.skip(str(exc))
    result = chaos.campaign(
        dialect,
        kills=2,
        predictions=4,
        files_per=3,
        size=30_000,
        seed=3,
        moto=s3_server,
        kill_window=(0.3, 2.0),
        s3_outage=1.0,
    )
    print(chaos.report([result]))
    assert s3_server.running  # the session's moto is left running
    assert result.files >= 12  # the 4 seeded predictions at least, plus completed runs
    assert sum(v[1] for v in result.faults["kinds"].values()) > 0  # faults were served
    assert result.outages["s3"] == 1
    assert result.outages["postgres"] == (1 if dialect == "postgresql" else 0)
    assert result.findings == dict.fromkeys(result.findings, 0), result.details
