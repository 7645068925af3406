"""``bench/serve.py`` at a tiny size: the machinery works (servers start, the load generator
gets the answers it should, every webhook's file is copied). Timings are printed by the
bench, never asserted here."""

from __future__ import annotations

from pathlib import Path

from benches import load_bench


def test_bench_serve_small(s3_server):
    bench = load_bench("serve")

    results = bench.run(
        modes=("baseline", "redirect", "proxy"),
        files=20,
        connections=4,
        duration=1,
        loadgen="python",
        webhooks=20,
        webhook_file_kb=64,
        webhook_concurrency=(4,),
        workers=2,
        moto=s3_server,
    )

    gateway = results["gateway"]
    assert gateway["files"] == 20
    for mode, status in (("baseline", "302"), ("redirect", "302"), ("proxy", "200")):
        stats = gateway[mode]
        assert stats["errors"] == 0 and stats["requests"] > 0
        assert stats["statuses"] == {status: stats["requests"]}, (mode, stats["statuses"])
    (hooks,) = results["webhooks"]
    assert hooks["statuses"] == {"200": 20} and hooks["errors"] == 0
    assert hooks["all_stored_seconds"] > 0


def test_bench_serve_small_against_other_code(s3_server, postgres_url):
    """``--other-code`` / ``--rounds`` / ``--ack-only`` on PostgreSQL (the issue 17 acks
    comparison): runs alternate between this code and the other checkout (here the same
    one), each labelled, and the comparison pairs them."""
    bench = load_bench("serve")
    checkout = str(Path(bench.__file__).resolve().parents[1])

    results = bench.run(
        parts=("webhooks",),
        webhooks=20,
        webhook_file_kb=16,
        webhook_concurrency=(4,),
        workers=2,
        catalog="postgresql",
        moto=s3_server,
        other_code=checkout,
        rounds=2,
        ack_only=True,
    )

    runs = results["webhooks"]
    assert [r["code"] for r in runs] == ["this", "other", "other", "this"]
    for r in runs:
        assert r["statuses"] == {"200": 20} and r["errors"] == 0
    (row,) = results["comparison"]
    assert row["rounds"] == 2 and len(row["p99_ratios"]) == 2
