"""``cachelayer delete`` / ``prune`` as a user runs them (issue 18 items 2 and 3): exit
statuses, ``--dry-run``, what the query commands and the gateway answer afterwards, and a
delete killed with SIGKILL in the middle and resumed.

Real processes on the Replicate simulator, the moto S3 server (or a local directory) and
the catalog under test (SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_cli
from serving import ServeProcess, process_env, serve_env

from cachelayer.testing.simulator import File


def _seed(sim: Any, n: int = 2) -> str:
    files = [File(size=500 + i, seed=i, filename=f"img-{i}.png") for i in range(n)]
    return str(sim.seed_prediction("acme/cli-del", input={"prompt": "x"}, output=files))


def test_delete_cli_exit_statuses_dry_run_and_the_queries_afterwards(
    cli_env, make_layer, replicate_simulator, s3_bucket
):
    layer = make_layer(storage_url=f"s3://{s3_bucket}/cli")
    pid, other = _seed(replicate_simulator, 2), _seed(replicate_simulator, 1)
    layer.persist(pid)
    layer.persist(other)
    files = layer.catalog.files.of_prediction(pid)

    dry = run_cli(cli_env, "delete", pid, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and (report["predictions"], report["files"]) == (1, 2)
    assert report["bytes_freed"] == 500 + 501
    assert all(layer.store.head(f.key) is not None for f in files)  # nothing deleted

    unknown = run_cli(cli_env, "delete", pid, "nosuchprediction0000000000", "--reason", "takedown", "--json")
    assert unknown.returncode == 1, unknown.stderr
    assert "1 unknown id(s)" in unknown.stderr and "Traceback" not in unknown.stderr
    report = json.loads(unknown.stdout)
    assert report["unknown"] == ["nosuchprediction0000000000"] and report["predictions"] == 1
    assert all(layer.store.head(f.key) is None for f in files)

    again = run_cli(cli_env, "delete", pid)
    assert again.returncode == 0, again.stderr
    assert "already deleted" in again.stdout

    ls = run_cli(cli_env, "ls", "--status", "deleted", "--format", "jsonl")
    assert ls.returncode == 0, ls.stderr
    rows = [json.loads(line) for line in ls.stdout.splitlines()]
    assert {r["prediction_id"] for r in rows} == {pid} and len(rows) == 2
    assert all(r["durable_url"] is None for r in rows)

    resolved = run_cli(cli_env, "resolve", files[0].source_url, "--format", "json")
    assert resolved.returncode == 1
    assert json.loads(resolved.stdout)[0]["durable_url"] is None

    stats = run_cli(cli_env, "stats", "--by", "status", "--format", "json")
    assert stats.returncode == 0, stats.stderr
    by = {r["status"]: r for r in json.loads(stats.stdout)}
    assert by["deleted"]["deleted"] == 2 and by["stored"]["stored"] == 1

    verify = run_cli(cli_env, "verify", "--format", "json")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    usage = run_cli(cli_env, "prune", "--older-than", "soon")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr

    pruned = run_cli(cli_env, "prune", "--older-than", "1h", "--json")  # nothing that old
    assert pruned.returncode == 0, pruned.stderr
    assert json.loads(pruned.stdout)["predictions"] == 0


def test_gateway_answers_410_for_a_deleted_file_and_metrics_count_deletes(
    make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path: Path
):
    pid = _seed(replicate_simulator, 2)
    env = serve_env(replicate_simulator, s3_server, s3_bucket, catalog_url)
    make_layer().catalog  # noqa: B018 -- migrated before serve starts
    server = ServeProcess(env, tmp_path / "serve.log", "--workers", "0")
    try:
        layer = make_layer(url_mode="gateway", gateway_url=server.url)
        layer.persist(pid)
        rec = layer.catalog.files.of_prediction(pid)[0]
        url = layer.durable_url(rec)
        assert httpx.get(url, follow_redirects=True).status_code == 200
        layer.delete(pid, "test")
        # the gateway caches a stored file's lookup for up to a minute: ask for the other file
        other = layer.catalog.files.of_prediction(pid)[1]
        gone = httpx.get(layer.durable_url(other))
        assert gone.status_code == 410, gone.text
        assert httpx.head(layer.durable_url(other)).status_code == 410
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "cachelayer_deleted_predictions_total 1.0" in metrics
        assert f"cachelayer_deleted_bytes_total {float(500 + 501)}" in metrics
    finally:
        server.stop()
    assert "Traceback" not in server.output()


# ---- kill -9 in the middle of a delete, then resumed ---------------------------------------

_BLOCKING_DELETE = textwrap.dedent(
    """
    import os, pathlib, sys, time
    from cachelayer import CacheLayer
    from cachelayer.storage import open_store

    mode, marker, *ids = sys.argv[1:]
    store = open_store(os.environ["CACHELAYER_STORAGE_URL"])
    real = store.delete

    def delete(keys):
        keys = sorted(keys)
        real(keys[:1] if mode == "mid" else keys)  # some objects, or all of them
        pathlib.Path(marker).write_text("blocked")
        time.sleep(3600)

    store.delete = delete
    CacheLayer(store=store).delete(ids, "kill test")
    """
)


def _check_invariants(layer: Any, pids: list[str]) -> tuple[int, int]:
    """No row says stored for an object that is gone; every object still there has a row
    that says where it is (not ``deleted``). Returns (objects left, rows deleting)."""
    left = deleting = 0
    for pid in pids:
        for f in layer.catalog.files.of_prediction(pid):
            exists = layer.store_for(f.store).head(f.key) is not None
            if f.status == "stored":
                assert exists, f
            if exists:
                left += 1
                assert f.status in ("stored", "deleting"), f
            deleting += f.status == "deleting"
    return left, deleting


@pytest.mark.parametrize(("storage", "mode"), [("s3", "mid"), ("local", "after")])
def test_a_delete_killed_with_sigkill_is_finished_by_running_it_again(
    storage, mode, make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path: Path
):
    storage_url = f"s3://{s3_bucket}/kill" if storage == "s3" else str(tmp_path / "objects")
    layer = make_layer(storage_url=storage_url)
    pids = [_seed(replicate_simulator, 3), _seed(replicate_simulator, 2)]
    for pid in pids:
        layer.persist(pid)
    assert _check_invariants(layer, pids) == (5, 0)
    env = process_env(replicate_simulator, s3_server, storage_url, catalog_url)
    marker = tmp_path / "blocked"
    proc = subprocess.Popen(
        [sys.executable, "-c", _BLOCKING_DELETE, mode, str(marker), *pids],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the delete never reached the store"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    left, deleting = _check_invariants(layer, pids)
    assert deleting == 5 and left == (4 if mode == "mid" else 0)
    tombs = layer.catalog.tombstones.get_many(pids)
    assert set(tombs) == set(pids) and all(t.deleted_at is None for t in tombs.values())
    for pid in pids:  # no runner copies it meanwhile
        assert layer.catalog.predictions.get(pid).input is None

    done = run_cli(env, "delete", *pids, "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["predictions"] == 2 and report["files"] == 5
    assert _check_invariants(layer, pids) == (0, 0)
    tombs = layer.catalog.tombstones.get_many(pids)
    assert all(t.deleted_at is not None and t.reason == "kill test" for t in tombs.values())
