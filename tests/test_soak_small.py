"""``bench/soak.py`` for 30 seconds: ``cachelayer serve`` under webhooks, gateway GETs and
hostile requests, through a PostgreSQL restart (our own cluster), a store outage and a
SIGKILL with missed webhooks; every file must end stored once and byte-exact, with no 500
and no traceback. The 10-minute figures: ``docs/RELIABILITY.md``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from benches import load_bench


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_thirty_second_soak_loses_nothing(s3_server, dialect) -> None:
    if dialect == "postgresql":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pg_cluster import OwnPostgresUnavailable, _bindir

        try:
            _bindir()
        except OwnPostgresUnavailable as exc:
            pytest.skip(str(exc))
    bench = load_bench("soak")
    result = bench.soak(
        [
            "--duration",
            "30",
            "--dialect",
            dialect,
            "--rate",
            "1",
            "--files-per",
            "2",
            "--size",
            "8192",
            "--workers",
            "2",
            "--sweep-interval",
            "2",
            "--store-outage",
            "3",
            "--down",
            "3",
            "--drain",
            "120",
            "--hostile-body-mib",
            "4",
            "--warmup",
            "5",
            "--rss-slack",
            "200",
        ],
        moto=s3_server,
    )
    print(bench.report_md(result))
    assert s3_server.running  # the session's moto is left running
    assert result["predictions"] >= 10
    assert result["requests"]["hostile"]["statuses"], "no hostile request was answered"
    assert result["requests"]["gateway"]["statuses"].get("200", 0) > 0
    assert result["findings"] == dict.fromkeys(result["findings"], 0), result["examples"]
    assert result["ok"], result
