"""Backfill and workers against the simulator's history, moto S3 and both catalogs."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from conftest import CLI

from cachelayer.catalog import Catalog
from cachelayer.catalog.db import make_engine
from cachelayer.testing.simulator import File

NOW = datetime.now(timezone.utc)


def seed_history(sim, n_pred=12, files_per=2, size=3000, start=0, step=60.0):
    """API and web predictions, newest first by index; returns {pid: [File]}."""
    made = {}
    for i in range(start, start + n_pred):
        files = [File(size=size, seed=i * 10 + j, filename=f"out-{j}.png") for j in range(files_per)]
        created = NOW - timedelta(seconds=300 + i * step)
        pid = sim.seed_prediction(
            "acme/painter" if i % 2 else "acme/sketcher",
            input={"i": i},
            output=files,
            source="web" if i % 3 == 0 else "api",
            created_at=created,
            completed_at=created + timedelta(seconds=2),
        )
        made[pid] = files
    return made


def objects(s3_server, bucket, *, manifests=False):
    """The bucket's output copies (``manifests``: its prediction manifests instead)."""
    paginator = s3_server.client().get_paginator("list_objects_v2")
    listed = [o for page in paginator.paginate(Bucket=bucket) for o in page.get("Contents", [])]
    return [o for o in listed if ("/_manifests/" in "/" + o["Key"]) == manifests]


def test_backfill_copies_every_retrievable_file_and_records_the_rest(
    make_layer, replicate_simulator, s3_server, s3_bucket
):
    sim = replicate_simulator
    made = seed_history(sim)
    removed = sim.seed_prediction(
        "acme/painter",
        input={"x": 1},
        output=[File(b"lost")],
        created_at=NOW - timedelta(hours=3),
        data_removed=True,
    )
    failed = sim.seed_prediction(
        "acme/painter",
        input={},
        output=None,
        status="failed",
        error="CUDA out of memory",
        created_at=NOW - timedelta(minutes=40),
    )
    text = sim.seed_prediction(
        "acme/llm", input={}, output=["hello", " world"], created_at=NOW - timedelta(hours=5), source="web"
    )
    layer = make_layer(concurrency=4)
    summary = layer.backfill()
    assert summary.predictions_scanned == len(made) + 3
    assert summary.files_stored == 24 and summary.files_failed == 0
    assert summary.predictions_removed == 1 and summary.exit_code == 0
    assert summary.bytes_stored == 24 * 3000
    assert len(objects(s3_server, s3_bucket)) == 24
    assert len(objects(s3_server, s3_bucket, manifests=True)) == len(made) + 3  # one per prediction
    for pid, files in made.items():
        rows = layer.catalog.files_of(pid)
        assert [r.sha256 for r in rows] == [f.sha256() for f in files]
    assert layer.catalog.get_prediction(removed).data_removed is True
    assert layer.catalog.get_prediction(failed).error == "CUDA out of memory"
    assert layer.catalog.get_prediction(text).output == ["hello", " world"]

    # a second run downloads nothing and stores nothing new
    before = len(sim.requests)
    again = layer.backfill()
    assert again.files_stored == 0 and again.files_skipped == 24
    assert not [r for r in sim.requests[before:] if r[1].startswith("/delivery/")]


def test_filters_and_since_stop_the_scan(make_layer, replicate_simulator):
    sim = replicate_simulator
    sim.page_size = 5
    # backfill --source api still asks the server for source=api, which the real API rejects
    # (only web is supported); opt in until the scan filters api client-side (issue 9, item 7)
    sim.accept_source_api = True
    seed_history(sim, n_pred=20, files_per=1)
    layer = make_layer()
    s = layer.backfill(
        since=NOW - timedelta(minutes=5 + 9, seconds=30), models=["acme/painter"], source="api"
    )
    # indices 0..9 are inside --since; painter = odd; api = not a multiple of 3 -> 1,5,7
    assert s.predictions_scanned == 3 and s.files_stored == 3
    pages = [r for r in sim.requests if r[1] == "/v1/predictions"]
    assert len(pages) <= 3  # stopped at --since instead of reading all 4 pages


def test_dry_run_writes_nothing(make_layer, replicate_simulator, s3_server, s3_bucket):
    seed_history(replicate_simulator, n_pred=4)
    layer = make_layer()
    s = layer.backfill(dry_run=True)
    assert s.dry_run and s.files_to_copy == 8 and s.files_stored == 0
    assert objects(s3_server, s3_bucket) == [] == objects(s3_server, s3_bucket, manifests=True)
    assert layer.catalog.queue.counts() == {}
    assert not [r for r in replicate_simulator.requests if r[1].startswith("/delivery/")]


def test_list_429_is_honoured_and_expired_files_reported(make_layer, replicate_simulator):
    sim = replicate_simulator
    made = seed_history(sim, n_pred=3, files_per=1)
    sim.inject_fault(
        "status", times=2, path_prefix="/v1/predictions", status=429, retry_after=0, method="GET"
    )
    gone = next(iter(made))
    sim.expire_urls(gone)  # URL dead, data not removed: refresh gives the same dead URL
    s = make_layer().backfill()
    assert s.files_stored == 2 and s.files_expired == 1 and s.exit_code == 0


def test_on_expired_rerun_in_backfill(make_layer, replicate_simulator, s3_server):
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=lambda inp: [File(b"again-" + str(inp["i"]).encode())])
    pid = sim.seed_prediction("acme/painter", input={"i": 7}, output=[File(b"orig")])
    layer = make_layer()
    layer.enqueue(sim.prediction(pid))  # input recorded earlier (run/persist/webhook)
    sim.remove_data(pid)
    s = layer.backfill(on_expired="rerun")
    assert s.predictions_rerun == 1
    (new,) = layer.catalog.predictions.reruns_of(pid)
    (row,) = layer.catalog.files_of(new.id)
    assert row.status == "stored" and row.size == len(b"again-7")


def test_cli_backfill_json_summary_and_exit_status(cli_env, replicate_simulator):
    seed_history(replicate_simulator, n_pred=3, files_per=1)
    replicate_simulator.seed_prediction("acme/x", input={}, output=["https://evil.example.com/x.png"])
    out = subprocess.run(
        [CLI, "backfill", "--json", "--concurrency", "4"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = json.loads(out.stdout)
    assert out.returncode == 1
    assert summary["files_stored"] == 3 and summary["files_failed"] == 1
    [(reason, n)] = summary["failures"].items()  # grouped by a human reason (issue 19)
    assert n == 1 and "evil.example.com:443 is not an allowed host" in reason and "://" not in reason
    table = subprocess.run(
        [CLI, "backfill", "--dry-run"], env=cli_env, capture_output=True, text=True, timeout=120
    )
    assert table.returncode == 0 and "dry run" in table.stdout and "files to copy" in table.stdout


def assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made):
    catalog = Catalog(make_engine(catalog_url))
    rows = [r for pid in made for r in catalog.files_of(pid)]
    assert len(rows) == sum(len(f) for f in made.values())  # no duplicate rows
    assert {r.status for r in rows} == {"stored"}
    objs = {o["Key"]: o["Size"] for o in objects(s3_server, s3_bucket)}
    assert len(objs) == len(rows)  # one object per file
    sha = {f.sha256() for files in made.values() for f in files}
    for r in rows:
        assert objs[r.key] == r.size and r.sha256 in sha  # no truncated objects
    catalog.engine.dispose()


def test_kill_9_at_several_points_then_rerun_loses_nothing(
    cli_env, replicate_simulator, s3_server, s3_bucket, catalog_url
):
    made = seed_history(replicate_simulator, n_pred=40, files_per=3, size=150_000, step=1)
    catalog = Catalog(make_engine(catalog_url))
    for kill_after in (0.0, 3, 40):  # during the scan, early copies, mid-way
        proc = subprocess.Popen(
            [CLI, "backfill", "--quiet", "--concurrency", "4"],
            env=cli_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if catalog.queue.counts().get("stored", 0) >= kill_after and (
                kill_after or catalog.queue.counts()
            ):
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    catalog.engine.dispose()
    final = subprocess.run(
        [CLI, "backfill", "--json", "--quiet"], env=cli_env, capture_output=True, text=True, timeout=180
    )
    assert final.returncode == 0, final.stdout + final.stderr
    assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made)


@pytest.mark.parametrize("catalog_url", ["postgresql"], indirect=True)
def test_four_worker_processes_split_the_queue(
    cli_env, replicate_simulator, s3_server, s3_bucket, catalog_url
):
    made = seed_history(replicate_simulator, n_pred=400, files_per=5, size=2000, step=1)
    scan = subprocess.run(
        [CLI, "backfill", "--scan-only", "--json", "--quiet"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert scan.returncode == 0, scan.stderr
    assert json.loads(scan.stdout)["files_queued"] == 2000
    workers = [
        subprocess.Popen(
            [CLI, "worker", "--once", "--json", "--quiet", "--concurrency", "4"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [w.communicate(timeout=600) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, results
    stored = [json.loads(out)["files_stored"] for out, _ in results]
    assert sum(stored) == 2000, results
    assert sum(1 for n in stored if n > 0) >= 2  # the work really was split
    assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made)
    for pid in made:
        for url in replicate_simulator.delivery_urls(pid):
            assert replicate_simulator.download_count(url) == 1


def test_a_worker_beside_a_backfill_shares_its_catalog(
    cli_env, replicate_simulator, s3_server, s3_bucket, catalog_url
):
    """The README's advice for a machine with cores to spare: a `worker` process beside
    `backfill` on the same catalog (SQLite too) takes files off the same queue; every file
    is stored and downloaded once, and both exit 0."""
    made = seed_history(replicate_simulator, n_pred=20, files_per=5, size=2000, step=1)
    # 100 files, 2 at a time, 0.1 s each: the backfill copies for 5 s or more, and the
    # worker (started once the scan has queued the history) joins while it does
    replicate_simulator.latency = 0.1
    run = {"env": cli_env, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    try:
        backfill = subprocess.Popen([CLI, "backfill", "--json", "--quiet", "--concurrency", "2"], **run)
        catalog = Catalog(make_engine(catalog_url))
        deadline = time.monotonic() + 60
        while sum(catalog.queue.counts().values()) < 100 and time.monotonic() < deadline:
            time.sleep(0.05)  # the scan has queued the history (one list page)
        catalog.engine.dispose()
        worker = subprocess.Popen([CLI, "worker", "--once", "--json", "--quiet", "--concurrency", "2"], **run)
        results = [p.communicate(timeout=300) for p in (backfill, worker)]
    finally:
        replicate_simulator.latency = 0.0
    assert [backfill.returncode, worker.returncode] == [0, 0], results
    stored = [json.loads(out)["files_stored"] for out, _ in results]
    assert sum(stored) == 100 and stored[1] > 0, stored  # the worker took a share
    assert_each_file_stored_once(catalog_url, s3_server, s3_bucket, made)
    for pid in made:
        for url in replicate_simulator.delivery_urls(pid):
            assert replicate_simulator.download_count(url) == 1


def test_a_worker_reads_completion_times_ahead_of_its_claims(make_layer, replicate_simulator):
    """Issue 11: a worker draining a queue another process scanned reads its predictions'
    completion times (for each file's source age) in one statement for many predictions,
    not once per prediction; each file still gets its own prediction's time."""
    made = seed_history(replicate_simulator, n_pred=30, files_per=2, size=500, step=60.0)
    layer = make_layer()
    assert layer.backfill(scan_only=True).files_queued == 60
    predictions = layer.catalog.predictions
    reads = {"finished_at": 0, "finished_at_of_queued": 0}
    for name in [n for n in reads if hasattr(predictions, n)]:
        real = getattr(predictions, name)

        def counted(*args, _real=real, _name=name):
            reads[_name] += 1
            return _real(*args)

        setattr(predictions, name, counted)  # the catalog's own method, counted
    assert layer.work(concurrency=4, once=True).files_stored == 60
    assert reads == {"finished_at": 0, "finished_at_of_queued": 1}  # was 30 reads, one each
    for pid in made:
        completed = layer.catalog.get_prediction(pid).completed_at
        for row in layer.catalog.files_of(pid):
            # the age counts from this prediction's completion; the predictions are 60 s apart
            assert 0 <= (row.stored_at - completed).total_seconds() - row.source_age_seconds < 5


def test_the_scan_hands_files_to_the_workers_prediction_by_prediction(make_layer, replicate_simulator):
    """Workers are woken after each recorded prediction, for as many files as it queued,
    not once the whole page (up to 100 predictions) is recorded: at 50 ms to the CDN the
    first download of a 400-file backfill went out 0.13 s after the list call answered,
    and 0.06 s after (docs/BENCHMARKS.md, issue 11, session 5)."""
    from cachelayer.prediction import Prediction
    from cachelayer.scan import Scan, ScanFilter
    from cachelayer.workers import BackfillSummary, Tally

    sim = replicate_simulator
    made = seed_history(sim, n_pred=4, files_per=3)
    stored_before = next(iter(made))  # newest: already copied, so it queues nothing
    layer = make_layer()
    layer.persist(stored_before)
    calls: list[tuple[str, int, int]] = []
    finished: list[tuple[object, object]] = []
    tally = Tally(BackfillSummary(), None)

    def on_queued(p: Prediction, n: int) -> None:
        calls.append((p.id, n, tally.summary.predictions_scanned))
        # the pool keeps p.finished_at for the copier instead of reading it back: the same
        finished.append((p.finished_at, layer.catalog.predictions.finished_at(p.id)))

    scan = Scan(
        layer.api,
        layer.catalog,
        layer.persister,
        ScanFilter.build(),
        tally,
        limit=None,
        dry_run=False,
        on_queued=on_queued,
    )
    scan.run()
    assert tally.summary.predictions_scanned == 4
    # one wake-up per prediction with files to copy, as each is recorded (the 2nd, 3rd, 4th)
    assert calls == [(pid, 3, i) for i, pid in enumerate(list(made)[1:], start=2)]
    assert len(finished) == 3 and all(mine is not None and mine == recorded for mine, recorded in finished)


class SlowBucketCheck:
    """The layer's real store; its bucket check takes ``seconds`` longer, with when it
    started and ended (Unix time, as the simulator's request log has it)."""

    def __init__(self, real, seconds):
        self._real, self._seconds = real, seconds
        self.started = self.ended = 0.0

    def __getattr__(self, name):
        return getattr(self._real, name)

    def check(self):
        self.started = time.time()
        time.sleep(self._seconds)
        self._real.check()
        self.ended = time.time()


def test_the_first_list_call_travels_while_the_bucket_is_checked(make_layer, replicate_simulator):
    """Issue 11 (session 6): the first page of ``GET /v1/predictions`` is asked for as the
    backfill starts, in parallel with building the S3 client, the bucket check and the
    catalog, instead of after them: its round trip no longer adds to the run."""
    sim = replicate_simulator
    sim.page_size = 2
    seed_history(sim, n_pred=5, files_per=1)
    sim.latency = 0.3
    layer = make_layer()
    store = layer.store = SlowBucketCheck(layer.store, seconds=0.6)
    summary = layer.backfill()
    assert summary.files_stored == 5 and summary.predictions_scanned == 5
    lists = [r for r in sim.request_log if r.path == "/v1/predictions"]
    assert len(lists) == 3  # each page once: the early one was used, not asked again
    assert lists[0].time < store.ended  # answered while the bucket was still being checked


def test_an_error_on_the_early_first_page_is_the_scans_error(make_layer, replicate_simulator):
    """The early list call's failure surfaces where the scan's own call would have failed,
    as the same typed error (a 401: the token is refused)."""
    from cachelayer.errors import ReplicateConfigError

    sim = replicate_simulator
    seed_history(sim, n_pred=2, files_per=1)
    sim.inject_fault("status", times=1, path_prefix="/v1/predictions", status=401, method="GET")
    layer = make_layer()
    with pytest.raises(ReplicateConfigError) as info:
        layer.backfill()
    assert "refused the API token (401)" in str(info.value)
    assert layer.catalog.queue.counts() == {}


def test_the_pool_keeps_a_bounded_number_of_finish_times():
    """The finish times the scan hands the pool (so copies need no catalog read) are kept for
    at most 10,000 predictions: a long history's scan runs far ahead of the copies, and
    keeping one per prediction would grow with the history (a million predictions, some
    200 MB). Those let go are read from the catalog when their files are copied."""
    from cachelayer.prediction import Prediction
    from cachelayer.workers import WorkerPool

    pool = WorkerPool(None, None, None, 1, scan_done=None, once=True)  # no thread started
    stamp = "2026-01-01T00:00:00Z"
    for i in range(25_000):
        pool.queued(Prediction.from_json({"id": f"p{i}", "status": "succeeded", "created_at": stamp}), 1)
    assert 0 < len(pool._finished) <= 10_000
    assert "p24999" in pool._finished  # the newest are the ones kept
