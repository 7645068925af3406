"""``bench/backfill.py`` on 60 files: the machinery works, and the naive loop and the
backfill (unchanged and with the experiments' patches) end with the same objects. Timings
are printed by the bench, never asserted here."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cachelayer.testing.simulator import File

BENCH = Path(__file__).resolve().parent.parent / "bench" / "backfill.py"
PREDICTIONS, FILES_PER, SIZE = 12, 5, 20_000  # 60 files


@pytest.fixture(scope="module")
def backfill_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_backfill", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bench(backfill_bench, s3_server):
    """The bench's own simulator process (seeded with 60 files) and the session's moto."""
    b = backfill_bench.Bench(predictions=PREDICTIONS, files_per=FILES_PER, size=SIZE,
                             moto=s3_server, postgres_url=backfill_bench._postgres_url(None))
    try:
        yield b
    finally:
        b.close()
    assert s3_server.running  # the shared server is left running
    assert b.sim.proc.poll() is not None  # the simulator process is gone


def _body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_naive_and_backfill_store_the_same_objects(bench) -> None:
    history = bench.history
    assert history.files == 60 and len(history.predictions) == PREDICTIONS
    # every generated file differs (distinct size or block), so a mix-up cannot pass
    assert len({(f.seed, f.size) for fs in history.predictions.values() for f in fs}) == 60

    naive, naive_objects = bench.run_naive(keep=True)
    backfill, backfill_objects = bench.run_backfill(16, keep=True)
    patched, patched_objects = bench.run_backfill(16, ["markclaim", "corescan"],
                                                  keep=True)
    buckets = [r.extra["bucket"] for r in (naive, backfill, patched)]
    try:
        assert naive_objects == backfill_objects == patched_objects == bench.expected
        assert len(naive_objects) == 60
        assert naive.files == backfill.files == patched.files == 60
        assert naive.bytes == backfill.bytes == history.bytes
        assert backfill.extra["summary"]["files_stored"] == 60
        assert patched.label == "backfill:markclaim+corescan"

        # The same bytes under the same relative key, read back, match the generated file.
        pid, files = next(iter(history.predictions.items()))
        for i, f in enumerate(files):
            rel = f"{pid}/{i}-{f.filename}"
            want = File(size=f.size, seed=f.seed).sha256()
            for bucket, prefix in zip(buckets, ("naive", "backfill", "backfill")):
                assert hashlib.sha256(_body(bench.s3, bucket, f"{prefix}/{rel}")).hexdigest() == want

        for r in (naive, backfill, patched):
            assert r.seconds > 0 and r.files_per_s > 0
            assert r.cpu["child"] > 0 and r.cpu["machine_capacity"] > 0
        # each backfill downloaded every file once; naive once more
        counts = bench.sim.downloads()
        assert len(counts) == 60 and set(counts.values()) == {3}
    finally:
        for bucket in buckets:
            bench.delete_bucket(bucket)
    listed = {b["Name"] for b in bench.s3.list_buckets()["Buckets"]}
    assert not set(buckets) & listed


def test_catalog_and_scaling_parts_print_their_tables(backfill_bench, bench) -> None:
    plain = bench.run_catalog("sqlite", "sequential", 16)
    patched = bench.run_catalog("sqlite", "concurrent", 16, ["core", "corescan"])
    for r in (plain, patched):
        assert r.files == 60 and r.seconds > 0
    assert plain.extra["scan"]["files"] == 60 and plain.extra["work"]["files"] == 60
    calls = plain.extra["work"]["calls"]
    assert calls["claim_next"][0] >= 60 and calls["mark_stored"][0] == 60
    assert plain.extra["scan"]["calls"]["Pipeline.record"][0] == PREDICTIONS
    text = backfill_bench.catalog_tables([plain, patched])
    assert "| claim_next |" in text and "**catalog total**" in text
    assert "| sqlite c16 +core+corescan |" in text

    if bench.postgres_url:
        run = bench.run_workers(2, 16)  # raises unless every file was stored and downloaded once
        assert run.files == 60 and sum(run.extra["stored_per_worker"]) == 60
        assert "| 2 workers |" in backfill_bench.scaling_table([run])
    listed = [b["Name"] for b in bench.s3.list_buckets()["Buckets"]]
    assert not [b for b in listed if b.startswith("bench-")]


def test_unknown_experiments_are_refused(backfill_bench) -> None:
    with pytest.raises(SystemExit):
        backfill_bench.main(["--experiment", "core+warp9"])
    with pytest.raises(SystemExit):
        backfill_bench.main(["--parts", "teleport"])
