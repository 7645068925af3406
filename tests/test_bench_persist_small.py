"""``bench/persist.py`` at small sizes: the machinery works and both ways of copying store
byte-identical objects. Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cachelayer.testing.simulator import File

MiB = 1 << 20
BENCH = Path(__file__).resolve().parent.parent / "bench" / "persist.py"


@pytest.fixture(scope="module")
def persist_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_persist", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _sha256(s3, bucket: str, key: str) -> tuple[int, str]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    data = body.read()
    return len(data), hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("size", [1 * MiB, 8 * MiB], ids=["1MiB", "8MiB-multipart"])
def test_naive_and_pipeline_store_identical_objects(persist_bench, replicate_simulator,
                                                     s3_server, s3_bucket, size) -> None:
    bench = persist_bench.Bench(sim=replicate_simulator, moto=s3_server, bucket=s3_bucket)
    try:
        naive = bench.measure("naive", size, seed=7, keep=True)
        pipeline = bench.measure("pipeline", size, seed=7, keep=True)
    finally:
        bench.close()
    assert s3_server.running and replicate_simulator.base_url  # shared ones left running

    want = (size, File(size=size, seed=7).sha256())
    s3 = s3_server.admin_client
    naive_key, pipeline_key = naive.extra["key"], pipeline.extra["key"]
    assert naive_key != pipeline_key
    assert _sha256(s3, s3_bucket, naive_key) == want
    assert _sha256(s3, s3_bucket, pipeline_key) == want
    # The pipeline recorded what it stored: the catalog's size and SHA-256 match the bytes.
    assert (pipeline.extra["bytes"], pipeline.extra["sha256"]) == want

    for m in (naive, pipeline):
        assert m.size == size and m.seconds > 0 and m.mib_s > 0
        assert m.peak_rss_kib >= m.ready_rss_kib > 0  # the child's own VmHWM / VmRSS
        assert m.cpu_child >= 0
    assert pipeline.extra["transfer_seconds"] > 0
    if size >= 8 * MiB:  # at the multipart threshold: a multipart upload with one part
        assert "CompleteMultipartUpload" in pipeline.extra["s3_seconds"]
    else:
        assert "PutObject" in pipeline.extra["s3_seconds"]


def test_run_bench_prints_the_table(persist_bench, replicate_simulator, s3_server,
                                    s3_bucket) -> None:
    bench = persist_bench.Bench(sim=replicate_simulator, moto=s3_server, bucket=s3_bucket)
    lines: list[str] = []
    try:
        results = persist_bench.run_bench([1], ["naive", "pipeline", "pipeline:smallput"], 1, 1,
                                          verify="all", out=lines.append, bench=bench)
    finally:
        bench.close()
    assert set(results) == {("naive", MiB), ("pipeline", MiB), ("pipeline:smallput", MiB)}
    text = "\n".join(lines)
    assert "| size | runs | naive MiB/s (best / median) | pipeline MiB/s" in text
    assert "| 1 MiB | 1 |" in text
    assert "pipeline:smallput" in text
    # Every object was checked and then deleted; nothing is left behind.
    listed = s3_server.admin_client.list_objects_v2(Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0


def test_unknown_methods_are_refused(persist_bench) -> None:
    """Unknown methods and experiments are refused before anything starts."""
    with pytest.raises(SystemExit):
        persist_bench.main(["--methods", "naive,teleport"])
    with pytest.raises(SystemExit):
        persist_bench.main(["--methods", "pipeline:warp9"])
