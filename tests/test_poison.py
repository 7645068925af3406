"""No poison pill (issue 17, item 2): one file that cannot be copied never stops the rest.

* A prediction whose id is not ASCII (``café-pred``) through a signed webhook into
  ``cachelayer serve``: stored (its metadata encoded), the workers keep running and a
  later prediction is stored too.
* ``cachelayer worker --once`` on a catalog holding such a file: every file stored, exit
  0, no traceback.
* An unexpected exception from the store (a store that raises ``RuntimeError`` for one
  key): that file fails alone with ``RuntimeError: ...`` as its reason after its
  attempts; the others are stored; nothing escapes ``work``.
* Attempts count when the process dies: a worker SIGKILLed while its download runs, again
  and again, leaves the file ``failed`` after ``CACHELAYER_MAX_ATTEMPTS`` claims instead
  of ``pending`` forever.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import BinaryIO

import httpx
import pytest
from conftest import CLI, run_cli
from serving import files_stored, post_webhook, wait_for

from cachelayer.storage.local import LocalStore
from cachelayer.testing.simulator import File


@pytest.mark.usefixtures("http_webhooks")
def test_a_non_ascii_prediction_id_from_a_webhook_is_stored_and_the_workers_go_on(
    make_layer, served, replicate_simulator
):
    sim = replicate_simulator
    out = File(b"cafe au lait", content_type="text/plain", filename="caf\u00e9 cr\u00e8me.txt")
    pid = sim.seed_prediction("acme/barista", {"n": 1}, {"t\u00e4sse": out}, prediction_id="caf\u00e9-pred")
    server = served("--workers", "1", CACHELAYER_WEBHOOK_SECRET=sim.webhook_secret)
    layer = make_layer()

    body = json.dumps(sim.prediction(pid)).encode()
    assert post_webhook(server, body, sim.sign_webhook(body)).status_code == 200

    (stored,) = wait_for(lambda: files_stored(layer, pid, 1), timeout=60, what="café-pred stored")
    assert stored.sha256 == out.sha256() and stored.output_path == "/t\u00e4sse"
    info = layer.store.head(stored.key)
    assert info is not None and info.sha256 == out.sha256()
    assert info.metadata["prediction-id"] == "caf\u00e9-pred"
    assert info.metadata["output-path"] == "/t\u00e4sse"
    assert httpx.get(f"{server.url}/healthz", timeout=10).json()["workers"] == "running"

    later_out = File(b"later", content_type="text/plain", filename="later.txt")
    later = sim.seed_prediction("acme/barista", {"n": 2}, later_out)
    body = json.dumps(sim.prediction(later)).encode()
    assert post_webhook(server, body, sim.sign_webhook(body)).status_code == 200
    wait_for(lambda: files_stored(layer, later, 1), timeout=60, what="the later prediction stored")
    assert httpx.get(f"{server.url}/healthz", timeout=10).json()["workers"] == "running"
    assert "copy workers stopped" not in server.output()


def test_worker_once_stores_a_non_ascii_id_beside_the_others_without_a_traceback(
    make_layer, replicate_simulator, cli_env
):
    sim = replicate_simulator
    layer = make_layer()
    poison = sim.seed_prediction(
        "acme/barista", {}, File(b"poison?", filename="p.txt"), prediction_id="caf\u00e9-pred"
    )
    plain = [
        sim.seed_prediction("acme/barista", {"i": i}, File(f"ok {i}".encode(), filename="o.txt"))
        for i in range(3)
    ]
    for pid in [poison, *plain]:
        layer.enqueue(sim.prediction(pid))

    done = run_cli(cli_env, "worker", "--once", "--quiet", "--json")

    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files_stored"] == 4
    for pid in [poison, *plain]:
        assert files_stored(layer, pid, 1), layer.catalog.files_of(pid)


class _GremlinStore(LocalStore):
    """A real local store whose disk fails in a way nobody typed, for one key only."""

    def put(self, key: str, body: BinaryIO, **kwargs) -> str:  # type: ignore[override]
        if "gremlin" in key:
            raise RuntimeError("disk gremlin " + "x" * 5000)
        return super().put(key, body, **kwargs)


def test_an_unexpected_exception_fails_that_file_alone_after_its_attempts(
    make_layer, replicate_simulator, tmp_path
):
    sim = replicate_simulator
    layer = make_layer(store=_GremlinStore(tmp_path / "objects"), max_attempts=2)
    bad = sim.seed_prediction("acme/m", {}, File(b"bad", filename="gremlin.txt"))
    good = [
        sim.seed_prediction("acme/m", {"i": i}, File(f"good {i}".encode(), filename="g.txt"))
        for i in range(3)
    ]
    for pid in [bad, *good]:
        layer.enqueue(sim.prediction(pid))

    summary = layer.work(once=True, concurrency=2)

    (row,) = layer.catalog.files_of(bad)
    assert row.status == "failed" and row.attempts == 2
    assert row.last_error.startswith("RuntimeError: disk gremlin")
    assert len(row.last_error) < 1000  # truncated: a reason, not a dump
    for pid in good:
        assert files_stored(layer, pid, 1)
    assert summary.files_stored == 3 and summary.files_failed == 1 and summary.exit_code == 1
    # failures are grouped by a human reason (errors.failure_reason), not by class
    ((reason, count),) = summary.failures.items()
    assert count == 1 and reason.startswith("RuntimeError: disk gremlin"), summary.failures


def test_a_pool_that_runs_until_stopped_outlives_an_unexpected_exception(
    make_layer, replicate_simulator, tmp_path
):
    """As serve's workers run: the gremlin file fails, the threads go on copying."""
    sim = replicate_simulator
    layer = make_layer(store=_GremlinStore(tmp_path / "objects"), max_attempts=1)
    bad = sim.seed_prediction("acme/m", {}, File(b"bad", filename="gremlin.txt"))
    layer.enqueue(sim.prediction(bad))
    stop = threading.Event()
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.append(layer.work(once=False, concurrency=1, stop=stop)))
    runner.start()
    try:
        wait_for(lambda: layer.catalog.files_of(bad)[0].status == "failed", what="the gremlin file failed")
        later = sim.seed_prediction("acme/m", {}, File(b"later", filename="later.txt"))
        layer.enqueue(sim.prediction(later))
        wait_for(lambda: files_stored(layer, later, 1), what="a later file stored by the same pool")
        assert runner.is_alive()
    finally:
        stop.set()
        runner.join(60)
    assert len(results) == 1  # work() returned its summary: no exception escaped
    assert layer.catalog.files_of(bad)[0].last_error.startswith("RuntimeError: disk gremlin")


def _kill_while_downloading(env: dict[str, str], layer, pid: str, claims: int, log: Path) -> None:
    """Start ``cachelayer worker --once``, wait until it holds ``pid``'s file with
    ``claims`` attempts counted, then SIGKILL it."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLI, "worker", "--once", "--quiet"], env=env, stdout=out, stderr=out)
        try:
            wait_for(
                lambda: [f for f in layer.catalog.files_of(pid) if f.attempts == claims],
                timeout=60,
                what=f"claim {claims}",
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)


def test_a_file_whose_copy_kills_the_process_fails_after_max_attempts(
    make_layer, replicate_simulator, cli_env, tmp_path
):
    sim = replicate_simulator
    layer = make_layer()
    pid = sim.seed_prediction("acme/slow", {}, File(b"never arrives", filename="slow.bin"))
    layer.enqueue(sim.prediction(pid))
    env = {**cli_env, "CACHELAYER_MAX_ATTEMPTS": "2"}
    sim.latency = 120.0  # every download waits: the worker is always mid-copy when killed

    for claim in (1, 2):
        _kill_while_downloading(env, layer, pid, claim, tmp_path / "killed.log")
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "pending" and row.attempts == 2

    done = run_cli(env, "worker", "--once", "--quiet", "--json", timeout=60)

    (row,) = layer.catalog.files_of(pid)
    assert row.status == "failed", row
    assert "2 attempts" in row.last_error
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert json.loads(done.stdout)["files_failed"] == 1
