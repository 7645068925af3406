"""``bench/backfill.py`` on 60 files: the machinery works; the naive loop, ``layer.backfill``
and the ``cachelayer backfill`` command end with the same objects, each file downloaded once
per run, at 0 ms and with simulated latency; the catalog part records every file once.
Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import hashlib
from types import ModuleType

import pytest
from benches import load_bench

from cachelayer.testing.simulator import File

PREDICTIONS, FILES_PER, SIZE = 12, 5, 20_000  # 60 files


@pytest.fixture(scope="module")
def backfill_bench() -> ModuleType:
    return load_bench("backfill")


@pytest.fixture
def bench(backfill_bench, s3_server):
    """The bench's own simulator process (seeded with 60 files) and the session's moto."""
    b = backfill_bench.Bench(
        predictions=PREDICTIONS,
        files_per=FILES_PER,
        size=SIZE,
        moto=s3_server,
        postgres_url=backfill_bench.bu.postgres_url(None),
    )
    try:
        yield b
    finally:
        b.close()
    assert s3_server.running  # the shared server is left running
    assert b.sim.proc.poll() is not None  # the simulator process is gone


def _body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_every_method_stores_the_same_objects(bench) -> None:
    history = bench.history
    assert history.files == 60 and len(history.predictions) == PREDICTIONS
    # every generated file differs (distinct size or block), so a mix-up cannot pass
    assert len({f for fs in history.predictions.values() for f in fs}) == 60

    runs, buckets = {}, []
    try:
        for latency, methods in ((0.0, ("naive", "download", "backfill", "cli")), (0.02, ("backfill",))):
            bench.set_latency(latency)
            for method in methods:
                # raises unless every file was downloaded exactly once in this run
                run, objects = bench.run_method(method, 8, keep=True)
                runs[method, latency] = run, objects
                buckets.append(run.extra["bucket"])
        for (method, latency), (run, objects) in runs.items():
            assert run.files == 60 and run.bytes == history.bytes
            assert run.extra["latency_ms"] == latency * 1000
            assert run.seconds > 0 and run.cpu["child"] > 0 and run.cpu["machine_capacity"] > 0
            assert objects == ({} if method == "download" else bench.expected)
            if method in ("backfill", "cli"):
                summary = run.extra["summary"]
                assert summary["files_stored"] == 60 and summary["exit_code"] == 0

        # The same bytes under the same relative key, read back, match the generated file.
        pid, files = next(iter(history.predictions.items()))
        for method in ("naive", "backfill", "cli"):
            bucket = runs[method, 0.0][0].extra["bucket"]
            for i, (seed, size) in enumerate(files):
                body = _body(bench.s3, bucket, f"{method}/{pid}/{i}-out-{i}.png")
                assert hashlib.sha256(body).hexdigest() == File(size=size, seed=seed).sha256()
        counts = bench.sim.downloads()
        assert len(counts) == 60 and set(counts.values()) == {5}  # one download per file and run
    finally:
        for b in buckets:
            bench.delete_bucket(b)
    listed = {b["Name"] for b in bench.s3.list_buckets()["Buckets"]}
    assert not set(buckets) & listed


def test_catalog_and_scaling_parts_print_their_tables(backfill_bench, bench) -> None:
    lines: list[str] = []
    parts = ["catalog", "scaling"] if bench.postgres_url else ["catalog"]
    results = backfill_bench.run_all(
        bench, parts=parts, latency=[0.0], concurrency=8, workers=[2], out=lines.append
    )
    runs = results["catalog", 0.0]
    for r in runs:
        assert r.files == 60 and r.seconds > 0
    plain = runs[0]
    assert plain.extra["mode"] == "sequential" and plain.extra["dialect"] == "sqlite"
    assert plain.extra["scan"]["files"] == 60 and plain.extra["work"]["files"] == 60
    calls = plain.extra["work"]["calls"]
    # the no-op transfer still claims and records every file once; recording a file
    # stored claims the next one in the same transaction (issue 11), so a sequential
    # worker runs claim_next only to start and to find the queue empty
    assert calls["mark_stored_and_claim"][0] == 60 and calls["claim_next"][0] <= 3
    assert plain.extra["scan"]["calls"]["Persister.record"][0] == PREDICTIONS
    text = "\n".join(lines)
    assert "| mark_stored_and_claim |" in text and "**catalog total**" in text
    assert "| sqlite c8 |" in text
    if bench.postgres_url:
        assert any(r.extra["dialect"] == "postgresql" for r in runs)
        (workers,) = results["scaling", 0.0]  # raises unless every file was stored once
        assert workers.files == 60 and sum(workers.extra["stored_per_worker"]) == 60
        assert "| 2 workers |" in text
    listed = [b["Name"] for b in bench.s3.list_buckets()["Buckets"]]
    assert not [b for b in listed if b.startswith("bench-")]


def test_the_baselines_as_whole_scripts_get_a_table_of_their_own(backfill_bench, bench) -> None:
    """``naive-script`` and ``download-script`` run ``bench/baselines.py`` as a whole program
    (timed launch to exit, like the command); they store the same objects as the in-process
    naive loop would, and the command is compared with them in a second table."""
    lines: list[str] = []
    methods = ("naive-script", "download-script", "cli")
    results = backfill_bench.run_all(
        bench, parts=["throughput"], methods=methods, latency=[0.0], concurrency=8, reps=1, out=lines.append
    )
    groups = results["throughput", 0.0]
    for method in methods:
        (run,) = groups[method]  # raises above unless every file was downloaded once
        assert run.files == 60 and run.bytes == bench.history.bytes and run.seconds > 0
    assert groups["naive-script"][0].cpu["child"] > 0  # the script's own process was measured
    text = "\n".join(lines)
    assert "Launch to exit on every side at 0 ms" in text
    assert "vs naive-script best / median" in text and "time / download-script" in text
    row = next(line for line in text.splitlines() if line.startswith("| cli |") and "x**" in line)
    assert row.count("x") >= 2  # both ratios filled in
    counts = bench.sim.downloads()
    assert len(counts) == 60 and set(counts.values()) == {3}


def test_unknown_parts_and_latencies_are_refused(backfill_bench) -> None:
    with pytest.raises(SystemExit):
        backfill_bench.main(["--parts", "teleport"])
    with pytest.raises(SystemExit):
        backfill_bench.main(["--methods", "naive,warp9"])
    with pytest.raises(SystemExit):
        backfill_bench.main(["--latency-ms", "fast"])


def test_cli_other_runs_the_command_of_another_checkout(backfill_bench, s3_server, tmp_path) -> None:
    """``--other-code DIR``: the method ``cli-other`` runs ``python -P -m cachelayer.cli``
    from DIR. A copy of this checkout's ``cachelayer/`` whose CLI leaves a file behind when
    it starts stands in for another commit: the file shows the copy ran, not this checkout."""
    import shutil
    from pathlib import Path

    import cachelayer

    other = tmp_path / "other"
    shutil.copytree(Path(cachelayer.__file__).parent, other / "cachelayer")
    main_py = other / "cachelayer" / "cli" / "__main__.py"
    main_py.write_text(
        "import pathlib\npathlib.Path(__file__).with_name('ran').touch()\n" + main_py.read_text()
    )
    b = backfill_bench.Bench(
        predictions=2, files_per=2, size=SIZE, moto=s3_server, postgres_url=None, other_code=str(other)
    )
    try:
        r, objects = b.run_method("cli-other", 2)
        assert r.files == 4 and objects == b.expected
    finally:
        b.close()
    assert (other / "cachelayer" / "cli" / "ran").exists()
    with pytest.raises(SystemExit):  # the method and the option go together
        backfill_bench.main(["--methods", "cli-other"])
