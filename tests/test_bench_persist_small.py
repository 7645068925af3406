"""``bench/persist.py`` at small sizes: the machinery works, both ways of copying store
byte-identical objects and the catalog records what was stored, at 0 ms and with simulated
latency. Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import hashlib
from types import ModuleType

import pytest
from benches import load_bench

from cachelayer.testing.simulator import File

MiB = 1 << 20


@pytest.fixture(scope="module")
def persist_bench() -> ModuleType:
    return load_bench("persist")


def _sha256(s3, bucket: str, key: str) -> tuple[int, str]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    data = body.read()
    return len(data), hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "size, label, operation",
    [
        (1 * MiB, "persist", "PutObject"),
        (9 * MiB, "persist", "PutObject"),  # past spool_memory_bytes: spooled, one PutObject
        (8 * MiB, "persist:threshold8", "CompleteMultipartUpload"),  # a multipart upload, one part
    ],
    ids=["1MiB", "9MiB-spooled", "8MiB-multipart"],
)
def test_naive_and_persist_store_identical_objects(
    persist_bench, replicate_simulator, s3_server, s3_bucket, size, label, operation
) -> None:
    bench = persist_bench.Bench(sim=replicate_simulator, moto=s3_server, bucket=s3_bucket)
    try:
        naive = bench.measure("naive", size, seed=7, keep=True)
        persist = bench.measure(label, size, seed=7, keep=True)
    finally:
        bench.close()
    assert s3_server.running and replicate_simulator.base_url  # shared ones left running

    want = (size, File(size=size, seed=7).sha256())
    s3 = s3_server.admin_client
    naive_key, persist_key = naive.extra["key"], persist.extra["key"]
    assert naive_key != persist_key
    assert _sha256(s3, s3_bucket, naive_key) == want
    assert _sha256(s3, s3_bucket, persist_key) == want
    # persist recorded what it stored: the catalog's size and SHA-256 match the bytes.
    assert (persist.extra["bytes"], persist.extra["sha256"]) == want

    for m in (naive, persist):
        assert m.size == size and m.seconds > 0 and m.mib_s > 0
        assert m.peak_rss_kib >= m.ready_rss_kib > 0  # the child's own VmHWM / VmRSS
        assert m.cpu_child >= 0
    assert persist.extra["transfer_seconds"] > 0
    assert operation in persist.extra["s3_seconds"]


def test_run_bench_prints_the_tables_at_each_latency(
    persist_bench, replicate_simulator, s3_server, s3_bucket
) -> None:
    bench = persist_bench.Bench(sim=replicate_simulator, moto=s3_server, bucket=s3_bucket)
    lines: list[str] = []
    methods = ["naive", "persist:conc2+threshold16", "persist:byid"]
    try:
        results = persist_bench.run_bench(
            [1], methods, 1, 1, latency=[0.0, 0.02], verify="all", out=lines.append, bench=bench
        )
    finally:
        bench.close()
    assert replicate_simulator.latency == 0  # put back for whoever shares the simulator
    assert set(results) == {(m, MiB, lat) for m in methods for lat in (0.0, 20.0)}
    for ms in results.values():
        assert ms[0].latency_ms in (0.0, 20.0)
    # every persist run recorded exactly one stored file: the prediction, its file and the
    # claim in one transaction (files.ensure_and_claim), then the file stored with the
    # durable output (queue.mark_stored_with_output); with the prediction in hand no
    # predictions.get, by id one
    for (method, _, _), ms in results.items():
        if method.startswith("persist"):
            calls = ms[0].extra["catalog_calls"]
            assert calls == {"ensure_and_claim": 1, "mark_stored_with_output": 1}
            assert set(ms[0].extra["catalog_call_seconds"]) == set(calls)
            assert (ms[0].extra["get_seconds"] > 0) == ("byid" in method)
    text = "\n".join(lines)
    assert "Latency 0 ms" in text and "Latency 20 ms" in text
    assert "| size | latency ms | runs | naive MiB/s (best / median) | persist MiB/s" in text
    assert "| 1 MiB | 20 | 1 |" in text
    assert "persist:conc2+threshold16" in text
    # Every object was checked (verify="all" raises otherwise) and then deleted.
    listed = s3_server.admin_client.list_objects_v2(Bucket=s3_bucket)
    assert listed.get("KeyCount", 0) == 0


def test_unknown_methods_are_refused(persist_bench) -> None:
    """Unknown methods and experiments are refused before anything starts."""
    with pytest.raises(SystemExit):
        persist_bench.main(["--methods", "naive,teleport"])
    with pytest.raises(SystemExit):
        persist_bench.main(["--methods", "persist:warp9"])
    with pytest.raises(SystemExit):
        persist_bench.main(["--latency-ms", "-5"])


def test_naive_and_persist_both_reach_s3_over_https(persist_bench, replicate_simulator) -> None:
    """``--s3-https``: moto over HTTPS (its own CA, trusted by every child through
    ``AWS_CA_BUNDLE``); both methods store the same bytes there."""
    from cachelayer.testing.s3server import MotoS3Server

    with MotoS3Server(tls=True) as moto:
        bucket = moto.create_bucket("bench-tls")
        bench = persist_bench.Bench(sim=replicate_simulator, moto=moto, bucket=bucket)
        try:
            assert bench.env["AWS_CA_BUNDLE"] == moto.ca_file and moto.endpoint_url.startswith("https://")
            measured = [bench.measure(m, MiB, seed=3, keep=True) for m in ("naive", "persist")]
        finally:
            bench.close()
        want = (MiB, File(size=MiB, seed=3).sha256())
        for m in measured:
            assert _sha256(moto.admin_client, bucket, m.extra["key"]) == want
