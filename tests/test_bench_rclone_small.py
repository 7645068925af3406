"""``bench/rclone.py`` at small sizes: the machinery works, and ``rclone copyurl`` and
``cachelayer persist`` / ``cachelayer backfill`` store intact objects (size and SHA-256 of
the simulator's generated files). Timings are printed by the bench, never asserted here.

Skipped when ``/usr/bin/rclone`` is missing, unless ``CACHELAYER_REQUIRE_RCLONE=1``."""

from __future__ import annotations

import hashlib
import os
import shutil
from types import ModuleType

import pytest
from benches import load_bench

from cachelayer.testing.simulator import File

RCLONE = "/usr/bin/rclone"
KiB = 1 << 10

if not (os.path.exists(RCLONE) and shutil.which("xargs")):
    if os.environ.get("CACHELAYER_REQUIRE_RCLONE") == "1":
        raise RuntimeError(f"CACHELAYER_REQUIRE_RCLONE=1 but {RCLONE} (or xargs) is missing")
    pytest.skip(f"{RCLONE} (Debian's rclone) or xargs is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def rclone_bench() -> ModuleType:
    return load_bench("rclone")


def _sha256(s3, bucket: str, key: str) -> tuple[int, str]:
    data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return len(data), hashlib.sha256(data).hexdigest()


def test_one_file_both_tools_store_the_generated_bytes(rclone_bench, s3_server) -> None:
    one = rclone_bench.OneFile(moto=s3_server)
    size, seed = 64 * KiB, 5
    copies = {}
    try:
        pid, url = one.seed(size, seed)
        for tool in ("rclone", "cachelayer", "library"):
            # raises unless the object matches and the URL was downloaded once
            copies[tool] = one.copy(tool, pid, url, size, seed, keep=True)
        want = (size, File(size=size, seed=seed).sha256())
        for tool, c in copies.items():
            assert c.extra["key"].startswith(f"{tool}/{pid}/")
            assert _sha256(one.s3, c.extra["bucket"], c.extra["key"]) == want
            assert c.size == size and c.seconds > 0 and c.rss_kib > 0 and c.cpu["child"] > 0
        assert copies["rclone"].extra["key"] == f"rclone/{pid}/out.bin"
        assert pid in copies["cachelayer"].extra["stdout"]  # persist --json printed the output
        # the library's time is its persist call alone, inside the process's lifetime
        assert copies["library"].seconds < copies["library"].extra["process_seconds"]
        for tool in ("rclone", "cachelayer"):
            assert one.startup(tool).seconds > 0
        stack = one.stack()  # the libraries alone: a fresh interpreter that exited cleanly
        assert stack.case == "libraries alone" and stack.seconds > 0 and stack.cpu["child"] > 0
    finally:
        for c in copies.values():
            one.delete_bucket(c.extra["bucket"])
        one.close()
    assert s3_server.running  # the shared server is left running


def test_history_both_tools_store_every_file(rclone_bench, s3_server) -> None:
    history = rclone_bench.History(moto=s3_server, predictions=2, files_per=3, size=20_000)
    buckets = []
    try:
        assert history.history.files == 6
        for tool in ("rclone", "cachelayer"):
            # raises unless every file was downloaded once and stored with its size and MD5
            run, objects = history.run_tool(tool, 4, keep=True)
            buckets.append(run.extra["bucket"])
            assert run.files == 6 and run.seconds > 0
            assert objects == history.expected
            for pid, files in history.history.predictions.items():
                for i, (seed, n) in enumerate(files):
                    key = f"{run.extra['prefix']}/{pid}/{i}-out-{i}.png"
                    assert _sha256(history.s3, run.extra["bucket"], key) == (
                        n,
                        File(size=n, seed=seed).sha256(),
                    )
    finally:
        for b in buckets:
            history.delete_bucket(b)
        history.close()


def test_run_all_prints_both_tables(rclone_bench, s3_server) -> None:
    one = rclone_bench.OneFile(moto=s3_server)
    history = rclone_bench.History(moto=s3_server, predictions=2, files_per=3, size=20_000)
    lines: list[str] = []
    try:
        results = rclone_bench.run_all(
            one, history, sizes=[64 * KiB], latency=[0.0], reps=1, concurrency=4, out=lines.append
        )
    finally:
        one.close()
        history.close()
    text = "\n".join(lines)
    assert "| 0.0625 MiB | 0 | 1 |" in text and "| startup | 0 | 1 |" in text
    assert "| persist, already stored | 0 | 1 | - |" in text
    assert "| rclone | 0 | 1 |" in text and "| cachelayer | 0 | 1 |" in text
    assert {c.tool for c in results["files"]} == {"rclone", "cachelayer", "library"}
    assert all(c.extra.get("verified", True) for c in results["files"])
    listed = [b["Name"] for b in s3_server.admin_client.list_buckets()["Buckets"]]
    assert not [b for b in listed if b.startswith("bench-")]


def test_bad_arguments_are_refused(rclone_bench) -> None:
    with pytest.raises(SystemExit):
        rclone_bench.main(["--latency-ms", "fast"])
    with pytest.raises(SystemExit):
        rclone_bench.main(["--sizes", "0"])
    with pytest.raises(SystemExit):
        rclone_bench.main(["--rclone", "/nonexistent/rclone"])
