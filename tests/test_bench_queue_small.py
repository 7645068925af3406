"""``bench/queue_ceiling.py`` on 300 files: 2 worker processes x 2 threads drain a fresh
catalog with batch claims of 1 and 4, on SQLite and (when reachable) PostgreSQL; every file
is stored exactly once, by one thread, with one claim. Timings are printed by the bench,
never asserted here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from benches import load_bench

FILES, PROCESSES, THREADS = 300, 2, 2


@pytest.fixture(scope="module")
def queue_bench() -> ModuleType:
    return load_bench("queue_ceiling")


def _bench(module: ModuleType, postgres_url: str | None) -> Iterator[ModuleType]:
    b = module.Bench(files=FILES, files_per=7, postgres_url=postgres_url, out=lambda s: None)
    try:
        yield b
    finally:
        b.close()
    assert not Path(b.tmp.name).exists() and not b.created  # SQLite files and databases gone


@pytest.fixture
def sqlite_bench(queue_bench) -> Iterator[ModuleType]:
    yield from _bench(queue_bench, None)


@pytest.fixture
def pg_bench(queue_bench, postgres_url) -> Iterator[ModuleType]:
    """Skips without PostgreSQL (fails with CACHELAYER_REQUIRE_POSTGRES=1), as the plugin's
    ``postgres_url`` does; the bench creates its databases on that server."""
    yield from _bench(queue_bench, postgres_url)


def _drain_and_check(module: ModuleType, bench, dialect: str) -> None:
    lines: list[str] = []
    results = module.run_all(
        bench,
        dialects=[dialect],
        processes=[PROCESSES],
        threads=THREADS,
        batches=[1, 4],
        per_file_ms=60,
        threads_per_machine=16,
        out=lines.append,
    )  # each run raises unless every file was stored exactly once
    assert len(bench.ids) == FILES == len(set(bench.ids))
    assert [(r.dialect, r.processes, r.threads, r.batch) for r in results] == [
        (dialect, PROCESSES, THREADS, 1),
        (dialect, PROCESSES, THREADS, 4),
    ]
    for r in results:
        c = r.counts
        assert r.files == FILES and r.seconds > 0
        assert c["store_tx"] == FILES and c["already_stored"] == 0
        assert c["empty_claims"] == PROCESSES * THREADS  # every thread stopped on an empty claim
        assert r.cpu["workers"] > 0 and r.cpu["machine_capacity"] > 0
    one, four = results
    # batch 1 folds the next claim into the store: one transaction per file, plus one
    # claim to start and one empty claim per thread; batch 4 claims once per 4 files
    assert one.counts["folded"] == FILES and one.transactions <= FILES + 2 * PROCESSES * THREADS
    assert four.counts["folded"] == 0
    assert FILES + FILES // 4 <= four.transactions <= FILES + FILES // 4 + 2 * PROCESSES * THREADS
    if dialect == "postgresql":
        for r in results:  # PostgreSQL counted every transaction the workers ran (and more)
            assert r.pg_xact["commit"] >= r.transactions
    text = "\n".join(lines)
    assert f"### {dialect}: {FILES} files" in text
    assert f"| {PROCESSES} x {THREADS} | 1 |" in text and f"| {PROCESSES} x {THREADS} | 4 |" in text
    assert ("Best PostgreSQL rate" in text) == (dialect == "postgresql")


def test_sqlite_queue_is_drained_once(queue_bench, sqlite_bench) -> None:
    _drain_and_check(queue_bench, sqlite_bench, "sqlite")


@pytest.mark.postgres
def test_postgresql_queue_is_drained_once(queue_bench, pg_bench) -> None:
    _drain_and_check(queue_bench, pg_bench, "postgresql")


def test_the_checks_catch_a_file_claimed_twice(sqlite_bench) -> None:
    sqlite_bench.template("sqlite")
    ids = sqlite_bench.ids
    counts = {"already_stored": 0}
    with sqlite_bench.fresh("sqlite") as url:
        with pytest.raises(RuntimeError, match="stored by two threads") as caught:
            sqlite_bench.check(url, [ids, ids[:1]], counts, [])
        assert "statuses at the end" in str(caught.value)  # nothing was drained
        with pytest.raises(RuntimeError, match="threads stored 299 distinct files of 300"):
            sqlite_bench.check(url, [ids[1:]], counts, [])


def test_bad_arguments_are_refused(queue_bench) -> None:
    for argv in (["--dialects", "mysql"], ["--batch", "0"], ["--processes", "two"], ["--batch", "1001"]):
        with pytest.raises(SystemExit):
            queue_bench.main(argv)
