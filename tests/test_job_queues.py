"""The app's job queue runs the copies (issue 19 item 2, issue 20 item 4): the public units
of work (``persist``, ``copy_file``, ``sweep``) through real Celery workers (Redis and
RabbitMQ brokers) and real RQ workers, on a moto S3 server and a catalog shared between
processes (a SQLite file, PostgreSQL); a worker SIGKILLed mid-copy has its task delivered
again and every file ends stored once (one object, one row, the bytes of the source)."""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from brokers import REDIS_URL, celery_worker, require, rq_worker
from serving import process_env

from cachelayer.catalog.records import FileStatus
from cachelayer.errors import ExpiredDownloadUrlError, FileNotRecordedError, is_transient
from cachelayer.testing.simulator import File

TIMEOUT = 120.0


@pytest.fixture
def queue_name() -> str:
    """A queue (and Redis key prefix) of this test alone, so tests run in parallel."""
    return f"cltest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def app_layer(make_layer, s3_bucket):
    """The app's own layer (the test's view of the catalog), configured as the workers are."""
    return make_layer(storage_url=f"s3://{s3_bucket}/jq")


@pytest.fixture
def worker_env(replicate_simulator, s3_server, s3_bucket, catalog_url, app_layer) -> dict[str, str]:
    """Environment of a worker process: the simulator, the bucket (prefix ``jq``), the
    catalog under test (migrated first), short leases."""
    app_layer.catalog  # noqa: B018 -- migrate first (PostgreSQL is not auto-migrated)
    return process_env(
        replicate_simulator, s3_server, f"s3://{s3_bucket}/jq", catalog_url, CACHELAYER_LEASE_SECONDS="5"
    )


def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT, *logs: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(w.output() for w in logs))
        time.sleep(0.2)


def all_stored(layer, pid: str) -> bool:
    rows = layer.catalog.files.of_prediction(pid)
    return bool(rows) and all(r.status == FileStatus.STORED for r in rows)


def assert_stored_once(layer, s3_server, bucket: str, files: dict[str, File], pids: list[str]) -> None:
    """Every file of ``pids``: one row, stored, its object the source's bytes; and the
    bucket holds exactly those objects (nothing stored twice under another key)."""
    rows = [r for pid in pids for r in layer.catalog.files.of_prediction(pid)]
    assert len(rows) == len(files), rows
    assert len({(r.prediction_id, r.output_path) for r in rows}) == len(rows)
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=bucket)
    every = [o["Key"] for o in listed.get("Contents", [])]
    keys = sorted(k for k in every if "/_manifests/" not in k)
    assert keys == sorted(r.key for r in rows)
    manifests = {k.rsplit("/", 1)[-1] for k in every if "/_manifests/" in k}
    assert manifests == {f"{pid}.json" for pid in pids}  # each prediction describes itself once
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []
    for r in rows:
        assert r.status == FileStatus.STORED, r
        name = r.source_url.rsplit("/", 1)[-1]
        expected = files[name].read()
        body = client.get_object(Bucket=bucket, Key=r.key)["Body"].read()
        assert body == expected
        assert r.sha256 == hashlib.sha256(expected).hexdigest() and r.size == len(expected)


def seeded(sim, name: str, *files: File) -> str:
    """A finished prediction of ``acme/<name>`` with ``files`` as its output list."""
    return sim.seed_prediction(f"acme/{name}", {"prompt": name}, list(files))


# ---- the units of work in process ---------------------------------------------------------


def test_copy_file_is_idempotent_and_safe_at_once(make_layer, replicate_simulator, s3_server, s3_bucket):
    sim = replicate_simulator
    slow = File(size=96 * 1024, seed=3, filename="slow.bin", bytes_per_second=192 * 1024)
    pid = seeded(sim, "one", slow)
    first, second = make_layer(), make_layer()
    [row] = first.enqueue(sim.prediction(pid))
    assert row.status == FileStatus.PENDING
    results: list[Any] = []

    def copy(layer) -> None:
        results.append(layer.copy_file(row.id))

    threads = [threading.Thread(target=copy, args=(layer,)) for layer in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 2 and all(r.status == FileStatus.STORED for r in results)
    assert results[0].sha256 == results[1].sha256 == slow.sha256()
    assert sim.download_count(row.source_url) == 1  # the second waited on the first's lease
    again = first.copy_file(row.id)  # stored already: returned as it is, nothing downloaded
    assert again.stored_at == results[0].stored_at and sim.download_count(row.source_url) == 1
    # the last file's transaction recorded the durable output
    assert first.catalog.predictions.get(pid).durable_output is not None
    with pytest.raises(FileNotRecordedError):
        first.copy_file(row.id + 1000)


def test_copy_file_of_an_expired_file_raises_it(layer, replicate_simulator):
    sim = replicate_simulator
    pid = seeded(sim, "gone", File(b"gone", filename="gone.txt"))
    [row] = layer.enqueue(sim.prediction(pid))
    sim.remove_data(pid)
    with pytest.raises(ExpiredDownloadUrlError) as caught:
        layer.copy_file(row.id)
    assert not is_transient(caught.value)
    assert layer.catalog.files.get(row.id).status == FileStatus.EXPIRED
    with pytest.raises(ExpiredDownloadUrlError):  # recorded expired: final, no download
        layer.copy_file(row.id)


def test_handle_webhook_hands_the_persist_to_the_apps_queue(layer, replicate_simulator):
    sim = replicate_simulator
    pid = seeded(sim, "hooked", File(b"hooked", filename="h.txt"))
    body = __import__("json").dumps(sim.prediction(pid)).encode()
    handed: list[str] = []

    def refuse(prediction_id: str) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        layer.handle_webhook(sim.sign_webhook(body, webhook_id="msg_1"), body, enqueue=refuse)
    # the delivery was not remembered: Replicate's retry of it is acted on
    outcome = layer.handle_webhook(sim.sign_webhook(body, webhook_id="msg_1"), body, enqueue=handed.append)
    assert handed == [pid] and not outcome.duplicate and outcome.queued == 1
    again = layer.handle_webhook(sim.sign_webhook(body, webhook_id="msg_1"), body, enqueue=handed.append)
    assert again.duplicate and handed == [pid]


def test_import_cachelayer_imports_no_integration():
    code = (
        "import sys, cachelayer; from cachelayer import CacheLayer; "
        "bad = [m for m in ('cachelayer.integrations', 'celery', 'rq', 'kombu', 'redis') if m in sys.modules]; "
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ---- Celery -------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "amqp"])
def broker(request) -> str:
    return require(request.param)


@pytest.fixture
def celery_app(broker, queue_name):
    """The app's Celery app, sending to this test's queue; the queue is deleted afterwards."""
    from celery_test_app import make_app

    app = make_app(broker, queue_name)
    yield app
    with contextlib.suppress(Exception), app.connection_for_write() as conn:
        conn.default_channel.queue_delete(queue_name)


def test_celery_tasks_persist_copy_and_sweep(
    broker, celery_app, queue_name, worker_env, app_layer, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    sim = replicate_simulator
    files = {f"p{i}.bin": File(size=20_000 + i, seed=i, filename=f"p{i}.bin") for i in range(4)}
    by_persist = seeded(sim, "persisted", files["p0.bin"], files["p1.bin"])
    by_copy = seeded(sim, "copied", files["p2.bin"])
    by_sweep = seeded(sim, "swept", files["p3.bin"])
    layer = app_layer
    [row] = layer.enqueue(sim.prediction(by_copy))
    app = celery_app
    worker = celery_worker(broker, queue_name, worker_env, tmp_path / "worker.log")
    try:
        app.send_task("cachelayer.persist", args=[by_persist])
        app.send_task("cachelayer.copy_file", args=[row.id])
        app.send_task("cachelayer.copy_file", args=[row.id])  # twice: the second is a no-op
        app.send_task("cachelayer.sweep")
        for pid in (by_persist, by_copy, by_sweep):
            wait_until(lambda pid=pid: all_stored(layer, pid), f"{pid} stored", TIMEOUT, worker)
        wait_until(lambda: worker.output().count("succeeded in") >= 4, "4 tasks done", TIMEOUT, worker)
    finally:
        worker.stop()
    assert_stored_once(layer, s3_server, s3_bucket, files, [by_persist, by_copy, by_sweep])
    assert sim.download_count(row.source_url) == 1
    assert "Traceback" not in worker.output(), worker.output()


def test_celery_worker_killed_mid_copy_task_redelivered(
    broker, celery_app, queue_name, worker_env, app_layer, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    sim = replicate_simulator
    slow = File(size=256 * 1024, seed=7, filename="slow.bin", bytes_per_second=64 * 1024)
    quick = File(size=10_000, seed=8, filename="quick.bin")
    pid = seeded(sim, "killed", quick, slow)
    layer = app_layer
    visibility = {"CL_TEST_VISIBILITY": "3"}  # Redis: unacked for 3 s -> handed out again
    app = celery_app
    first = celery_worker(broker, queue_name, worker_env, tmp_path / "first.log", **visibility)
    try:
        app.send_task("cachelayer.persist", args=[pid])
        wait_until(lambda: slow.bytes_served > 0, "the slow download to start", TIMEOUT, first)
        first.kill()  # SIGKILL mid-copy: no ack, no outcome recorded
    finally:
        first.stop()
    [mid] = [r for r in layer.catalog.files.of_prediction(pid) if r.output_path.endswith("1")]
    assert mid.status == FileStatus.PENDING  # killed before it was stored
    slow.bytes_per_second = None
    second = celery_worker(broker, queue_name, worker_env, tmp_path / "second.log", **visibility)
    try:
        wait_until(lambda: all_stored(layer, pid), "the redelivered task", TIMEOUT, second)
        # the one task sent was received again by the second worker
        wait_until(lambda: "Task cachelayer.persist[" in second.output(), "redelivery", 30, second)
    finally:
        second.stop()
    assert_stored_once(layer, s3_server, s3_bucket, {"slow.bin": slow, "quick.bin": quick}, [pid])
    assert layer.catalog.predictions.get(pid).durable_output is not None


def test_celery_task_retried_after_a_transient_failure(
    queue_name, worker_env, app_layer, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    from celery_test_app import make_app

    broker = require("redis")
    sim = replicate_simulator
    cut = File(size=40_000, seed=11, filename="cut.bin")
    pid = seeded(sim, "cut", cut)
    sim.inject_fault("truncate", times=1, path_prefix="/delivery/")  # the first download breaks
    env = dict(worker_env, CACHELAYER_DOWNLOAD_RETRIES="1")  # ... and that attempt gives up
    worker = celery_worker(broker, queue_name, env, tmp_path / "worker.log")
    try:
        make_app(broker, queue_name).send_task("cachelayer.persist", args=[pid])
        wait_until(lambda: all_stored(app_layer, pid), "the retried task", TIMEOUT, worker)
        wait_until(lambda: "succeeded in" in worker.output(), "the task's success", 30, worker)
    finally:
        worker.stop()
    assert "TruncatedDownloadError" in worker.output() and "Retry in" in worker.output(), worker.output()
    assert_stored_once(app_layer, s3_server, s3_bucket, {"cut.bin": cut}, [pid])


# ---- RQ -----------------------------------------------------------------------------------


@pytest.fixture
def rq_queue(queue_name):
    require("redis")
    from redis import Redis
    from rq import Queue

    conn = Redis.from_url(REDIS_URL)
    queue = Queue(queue_name, connection=conn)
    yield queue
    queue.delete(delete_jobs=True)
    conn.close()


def test_rq_jobs_persist_copy_and_sweep(
    rq_queue, worker_env, app_layer, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    from rq import Retry

    from cachelayer.integrations.rq import enqueuer

    sim = replicate_simulator
    files = {f"r{i}.bin": File(size=30_000 + i, seed=20 + i, filename=f"r{i}.bin") for i in range(4)}
    by_webhook = seeded(sim, "hooked", files["r0.bin"], files["r1.bin"])
    by_copy = seeded(sim, "copied", files["r2.bin"])
    by_sweep = seeded(sim, "swept", files["r3.bin"])
    layer = app_layer
    body = __import__("json").dumps(sim.prediction(by_webhook)).encode()
    layer.handle_webhook(sim.sign_webhook(body), body, enqueue=enqueuer(rq_queue, retry=Retry(max=2)))
    [row] = layer.enqueue(sim.prediction(by_copy))
    rq_queue.enqueue("cachelayer.integrations.rq.copy_file", row.id)
    rq_queue.enqueue("cachelayer.integrations.rq.copy_file", row.id)
    rq_queue.enqueue("cachelayer.integrations.rq.sweep")
    assert rq_queue.count == 4
    worker = rq_worker(rq_queue.name, worker_env, tmp_path / "rq.log", burst=True)
    try:
        worker.proc.wait(TIMEOUT)
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.output()
    for pid in (by_webhook, by_copy, by_sweep):
        assert all_stored(layer, pid), worker.output()
    assert_stored_once(layer, s3_server, s3_bucket, files, [by_webhook, by_copy, by_sweep])
    assert rq_queue.failed_job_registry.count == 0, worker.output()


def test_rq_worker_killed_mid_copy_job_requeued(
    rq_queue, worker_env, app_layer, replicate_simulator, s3_server, s3_bucket, tmp_path
):
    from rq import Retry
    from rq.registry import StartedJobRegistry

    sim = replicate_simulator
    slow = File(size=256 * 1024, seed=9, filename="slow.bin", bytes_per_second=64 * 1024)
    quick = File(size=12_000, seed=10, filename="quick.bin")
    pid = seeded(sim, "killed", slow, quick)
    layer = app_layer
    job = rq_queue.enqueue("cachelayer.integrations.rq.persist", pid, retry=Retry(max=2), job_timeout=120)
    first = rq_worker(rq_queue.name, worker_env, tmp_path / "first.log")
    try:
        wait_until(lambda: slow.bytes_served > 0, "the slow download to start", TIMEOUT, first)
        first.kill()  # the worker and its work horse, mid-copy
    finally:
        first.stop()
    assert not all_stored(layer, pid)
    # RQ finds the job abandoned once its heartbeat lapses (job_monitoring_interval + 60 s)
    # at a worker's registry cleanup; the test runs that cleanup as of a time past it
    started = StartedJobRegistry(queue=rq_queue)
    assert job.id in started.get_job_ids(cleanup=False)
    started.cleanup(timestamp=time.time() + 3600)
    job.refresh()
    assert job.get_status() == "queued" and job.retries_left == 1  # re-enqueued by its Retry
    slow.bytes_per_second = None
    second = rq_worker(rq_queue.name, worker_env, tmp_path / "second.log", burst=True)
    try:
        second.proc.wait(TIMEOUT)
    finally:
        second.stop()
    job.refresh()
    assert job.get_status() == "finished", second.output()
    assert_stored_once(layer, s3_server, s3_bucket, {"slow.bin": slow, "quick.bin": quick}, [pid])
