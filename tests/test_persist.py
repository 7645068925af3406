"""The main job end to end: real replicate client -> simulator, real S3 server, real catalog."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime, timedelta, timezone

import pytest
from native_client import native_create, native_run

from cachelayer import (
    BucketNotFoundError,
    CatalogUnavailableError,
    DisallowedUrlError,
    DownloadTooLargeError,
    ExpiredDownloadUrlError,
    ModelNotFoundError,
    PredictionFailedError,
    TruncatedDownloadError,
)
from cachelayer.testing.simulator import DataURI, File


def s3_bytes(s3_server, uri: str) -> bytes:
    assert uri.startswith("s3://"), uri
    bucket, key = uri[5:].split("/", 1)
    return s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def painter(sim, n: int = 3, size: int = 2000, name: str = "acme/painter"):
    files = [File(size=size, seed=i, filename=f"out-{i}.png") for i in range(n)]
    sim.add_model(name, outputs=lambda inp: files[: int(inp.get("num_outputs", n))])
    return files


def test_run_stores_every_file_and_returns_durable_urls(layer, replicate_simulator, s3_server):
    files = painter(replicate_simulator)
    out = layer.run("acme/painter", input={"prompt": "a cat", "num_outputs": 3})
    assert isinstance(out, list) and len(out) == 3
    for f, uri in zip(files, out):
        assert uri.startswith("s3://") and uri.endswith(f.filename)
        assert hashlib.sha256(s3_bytes(s3_server, uri)).hexdigest() == f.sha256()
    pid = layer.catalog.resolve(
        replicate_simulator.delivery_urls(replicate_simulator.prediction_ids[0])[0]
    ).prediction_id
    rows = layer.catalog.files_of(pid)
    assert [r.status for r in rows] == ["stored"] * 3
    assert [r.sha256 for r in rows] == [f.sha256() for f in files]
    assert [r.size for r in rows] == [2000] * 3
    assert all(r.source_age_seconds is not None and r.source_age_seconds >= 0 for r in rows)
    rec = layer.catalog.get_prediction(pid)
    assert rec.input == {"prompt": "a cat", "num_outputs": 3}
    assert rec.durable_output == out


def test_every_shape_and_non_files_untouched(layer, replicate_simulator, s3_server):
    img, vid, webp = (
        File(b"png-bytes"),
        File(b"mp4" * 1000, filename="output.mp4", content_type="video/mp4"),
        b"RIFFwebp",
    )
    replicate_simulator.add_model(
        "acme/mixed",
        outputs={
            "images": [img, {"nested": [vid]}],
            "caption": "a cat",
            "seed": 42,
            "none": None,
            "ok": True,
            "inline": DataURI(webp, "image/webp"),
            "url_text": "not a url at all",
        },
    )
    out = layer.run("acme/mixed", input={})
    assert out["caption"] == "a cat" and out["seed"] == 42 and out["none"] is None
    assert out["ok"] is True and out["url_text"] == "not a url at all"
    assert s3_bytes(s3_server, out["images"][0]) == b"png-bytes"
    assert s3_bytes(s3_server, out["images"][1]["nested"][0]) == b"mp4" * 1000
    assert s3_bytes(s3_server, out["inline"]) == webp
    assert out["images"][1]["nested"][0].endswith("/images.1.nested.0-output.mp4")


def test_bare_string_and_iterator_outputs(layer, replicate_simulator, s3_server):
    replicate_simulator.add_model("acme/one", outputs=File(b"single", filename="out.png"))
    replicate_simulator.add_model(
        "acme/llm",
        outputs=["Hello", " world", File(b"chart", filename="chart.png")],
        output_schema={"type": "array", "items": {"type": "string"}, "x-cog-array-type": "iterator"},
    )
    single = layer.run("acme/one")
    assert s3_bytes(s3_server, single) == b"single" and single.endswith("output-out.png")
    chunks = layer.run("acme/llm")
    assert chunks[:2] == ["Hello", " world"] and s3_bytes(s3_server, chunks[2]) == b"chart"


def test_persist_is_idempotent(layer, replicate_simulator):
    painter(replicate_simulator)
    pred = native_create(replicate_simulator, "acme/painter")
    first = layer.persist(pred)  # a replicate Prediction object
    second = layer.persist(pred.id)  # and an id
    assert first == second
    for url in replicate_simulator.delivery_urls(pred.id):
        assert replicate_simulator.download_count(url) == 1
    assert len(layer.catalog.files_of(pred.id)) == 3


def test_https_simulator_and_file_output_objects(make_layer, s3_server):
    from cachelayer.testing.simulator import ReplicateSimulator

    with ReplicateSimulator(https=True) as sim:
        f = File(size=5000, seed=7)
        sim.add_model("acme/tls", outputs=[f])
        out = native_run(sim, "acme/tls")
        assert type(out[0]).__name__ == "FileOutput"  # what production users hold
        layer = make_layer(simulator=sim)
        durable = layer.run("acme/tls")
        assert hashlib.sha256(s3_bytes(s3_server, durable[0])).hexdigest() == f.sha256()
        assert layer.resolve(out[0].url) is None  # a different prediction's URL


def test_expired_url_is_refreshed_through_predictions_get(layer, replicate_simulator, s3_server):
    files = painter(replicate_simulator, n=2)
    pred = native_create(replicate_simulator, "acme/painter", {})
    old = replicate_simulator.delivery_urls(pred.id)
    replicate_simulator.rotate_urls(pred.id)  # old URLs now 404; get gives new ones
    layer.enqueue(pred)  # as if seen earlier with the old URLs
    out = layer.persist(pred.id)
    assert [hashlib.sha256(s3_bytes(s3_server, u)).hexdigest() for u in out] == [f.sha256() for f in files]
    # both the original and the rotated URL resolve to the same durable URL
    assert [layer.resolve(u) for u in old] == out
    assert [layer.resolve(u) for u in replicate_simulator.delivery_urls(pred.id)] == out


def test_expired_url_refresh_on_404_mid_persist(layer, replicate_simulator, s3_server):
    painter(replicate_simulator, n=1)
    pred = native_create(replicate_simulator, "acme/painter", {})
    replicate_simulator.inject_fault("status", times=1, path_prefix="/delivery/", status=404)
    out = layer.persist(pred.id)
    assert s3_bytes(s3_server, out[0])
    gets = [r for r in replicate_simulator.requests if r[1] == f"/v1/predictions/{pred.id}"]
    assert len(gets) >= 2  # the first read and the refresh after the 404


def test_data_removed_raises_expired_and_records_it(layer, replicate_simulator):
    painter(replicate_simulator, n=2)
    pred = native_create(replicate_simulator, "acme/painter", {"prompt": "x"})
    layer.enqueue(pred)
    replicate_simulator.remove_data(pred.id)
    with pytest.raises(ExpiredDownloadUrlError) as err:
        layer.persist(pred.id)
    assert "The output URL has expired and can no longer be used to download the result" in str(err.value)
    assert pred.id in str(err.value) and err.value.prediction_id == pred.id
    assert err.value.output_path in ("/0", "/1")
    assert [r.status for r in layer.catalog.files_of(pred.id)] == ["expired", "expired"]
    assert layer.catalog.get_prediction(pred.id).data_removed is True


def test_expired_at_download_time_is_detected_after_refresh(layer, replicate_simulator):
    painter(replicate_simulator, n=1)
    pred = native_create(replicate_simulator, "acme/painter", {})
    replicate_simulator.expire_urls(pred.id)  # URL dead, prediction still has it
    with pytest.raises(ExpiredDownloadUrlError, match="still failing"):
        layer.persist(pred.id)
    assert layer.catalog.files_of(pred.id)[0].status == "expired"


def test_on_expired_rerun_links_the_new_prediction(layer, replicate_simulator, s3_server):
    files = painter(replicate_simulator, n=2)
    pred = native_create(replicate_simulator, "acme/painter", {"num_outputs": 1})
    layer.enqueue(pred)
    replicate_simulator.remove_data(pred.id)
    out = layer.persist(pred.id, on_expired="rerun")
    assert len(out) == 1 and hashlib.sha256(s3_bytes(s3_server, out[0])).hexdigest() == files[0].sha256()
    reruns = layer.catalog.predictions.reruns_of(pred.id)
    assert len(reruns) == 1 and reruns[0].input == {"num_outputs": 1}
    assert reruns[0].id != pred.id


def test_disallowed_urls_are_refused_recorded_and_never_requested(layer, replicate_simulator):
    evil = [
        f"{replicate_simulator.delivery_url.replace('127.0.0.1', 'localhost')}/delivery/x/a.png",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "ftp://h/x.bin",
    ]
    replicate_simulator.add_model("acme/evil", outputs=evil)
    with pytest.raises(DisallowedUrlError, match="CACHELAYER_ALLOWED_HOSTS"):
        layer.run("acme/evil")
    pid = replicate_simulator.prediction_ids[0]
    rows = layer.catalog.files_of(pid)
    assert [r.status for r in rows] == ["failed"] * 4
    assert all("allowed host" in r.last_error for r in rows)
    assert not [r for r in replicate_simulator.requests if r[1].startswith("/delivery/")]


def test_truncated_downloads_are_retried_never_stored(make_layer, replicate_simulator, s3_server, s3_bucket):
    files = painter(replicate_simulator, n=1, size=300_000)
    replicate_simulator.inject_fault("truncate", times=2, path_prefix="/delivery/")
    layer = make_layer()
    out = layer.run("acme/painter")
    assert hashlib.sha256(s3_bytes(s3_server, out[0])).hexdigest() == files[0].sha256()

    replicate_simulator.inject_fault("truncate", times=10, path_prefix="/delivery/")
    with pytest.raises(TruncatedDownloadError):
        make_layer(download_retries=2, max_attempts=1).run("acme/painter")
    pid = replicate_simulator.prediction_ids[0]
    row = layer.catalog.files_of(pid)[0]
    assert row.status == "failed" and row.attempts == 1
    assert layer.store.head(row.key) is None


def test_dropped_connection_is_retried(layer, replicate_simulator, s3_server):
    files = painter(replicate_simulator, n=1, size=100_000)
    replicate_simulator.inject_fault("drop", times=1, path_prefix="/delivery/")
    out = layer.run("acme/painter")
    assert hashlib.sha256(s3_bytes(s3_server, out[0])).hexdigest() == files[0].sha256()


def test_size_cap(make_layer, replicate_simulator):
    painter(replicate_simulator, n=1, size=50_000)
    layer = make_layer(max_file_bytes=10_000)
    with pytest.raises(DownloadTooLargeError):
        layer.run("acme/painter")
    row = layer.catalog.files_of(replicate_simulator.prediction_ids[0])[0]
    assert row.status == "failed" and layer.store.head(row.key) is None


def test_multipart_file_round_trip(layer, replicate_simulator, s3_server):
    files = painter(replicate_simulator, n=1, size=20 * 1024 * 1024 + 123)
    out = layer.run("acme/painter")
    data = s3_bytes(s3_server, out[0])
    assert len(data) == files[0].size and hashlib.sha256(data).hexdigest() == files[0].sha256()


def test_429_on_the_api_is_retried(layer, replicate_simulator):
    painter(replicate_simulator, n=1)
    pred = native_create(replicate_simulator, "acme/painter", {})
    replicate_simulator.inject_fault(
        "status", times=2, path_prefix=f"/v1/predictions/{pred.id}", status=429, retry_after=0
    )
    assert len(layer.persist(pred.id)) == 1


def test_late_persist_logs_a_warning(layer, replicate_simulator, caplog):
    replicate_simulator.add_model("acme/painter", outputs=[File(b"x")])
    done = datetime.now(timezone.utc) - timedelta(minutes=55)
    pid = replicate_simulator.seed_prediction(
        "acme/painter",
        input={},
        output=[File(b"late")],
        created_at=done - timedelta(seconds=5),
        completed_at=done,
    )
    with caplog.at_level(logging.WARNING, logger="cachelayer"):
        layer.persist(pid)
    assert any("Replicate removes API prediction files" in r.message for r in caplog.records)
    assert layer.catalog.files_of(pid)[0].source_age_seconds >= 55 * 60


def test_typed_errors_for_bad_setup(make_layer, replicate_simulator, s3_server, tmp_path):
    # Parts are built on first use: the bucket is checked before the first copy, the
    # catalog when it is first needed.
    painter(replicate_simulator)
    created = len(replicate_simulator.prediction_ids)
    with pytest.raises(BucketNotFoundError):
        make_layer(storage_url="s3://no-such-bucket-here").run("acme/painter", input={})
    assert len(replicate_simulator.prediction_ids) == created  # checked before paying for a run
    with pytest.raises(CatalogUnavailableError):
        make_layer(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none").catalog.show("x")
    layer = make_layer()
    with pytest.raises(ModelNotFoundError):
        layer.run("acme/does-not-exist")
    with pytest.raises(ModelNotFoundError):
        layer.run("not a model ref")
    replicate_simulator.add_model("acme/broken", outputs=lambda inp: 1 / 0)
    with pytest.raises(PredictionFailedError, match="failed"):
        layer.run("acme/broken")


def test_replicate_prediction_ids_are_recorded_as_json(layer, replicate_simulator):
    painter(replicate_simulator, n=1)
    layer.run("acme/painter", input={"prompt": "ünïcode", "nested": {"a": [1, 2]}})
    pid = replicate_simulator.prediction_ids[0]
    rec = layer.catalog.get_prediction(pid)
    assert rec.input == {"prompt": "ünïcode", "nested": {"a": [1, 2]}}
    assert json.loads(json.dumps(rec.to_dict()))["id"] == pid
    assert rec.model == "acme/painter" and rec.source == "api" and rec.status == "succeeded"


def _api_gets(sim, pid: str) -> int:
    return sum(1 for m, path, _ in sim.requests if m == "GET" and path == f"/v1/predictions/{pid}")


def test_a_succeeded_prediction_in_hand_is_not_read_again(layer, replicate_simulator):
    """Issue 11: what ``run`` or a webhook just delivered is used as it is (no
    ``predictions.get``), like the naive loop that holds the URL."""
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/held", {}, [File(b"held-bytes", filename="h.png")])
    held = sim.prediction(pid)
    out = layer.persist(held)
    assert _api_gets(sim, pid) == 0
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "stored" and out == [layer.durable_url(row)]


def test_a_dead_url_in_a_held_prediction_is_refreshed(layer, replicate_simulator):
    """The held copy's URL stopped answering: the copier re-reads the prediction once and
    stores the file from its current URL."""
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/held", {}, [File(b"rotated-bytes", filename="r.png")])
    held = sim.prediction(pid)
    sim.expire_urls(pid)
    sim.rotate_urls(pid)
    layer.persist(held)
    assert _api_gets(sim, pid) == 1
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "stored" and row.sha256 == hashlib.sha256(b"rotated-bytes").hexdigest()
    # the held (dead) URL still resolves to the stored file
    assert layer.resolve(held["output"][0]) == layer.durable_url(row)


def test_a_held_prediction_still_running_is_waited_for(layer, replicate_simulator):
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/held", {}, [File(b"late", filename="l.png")])
    held = dict(sim.prediction(pid), status="processing", output=None)
    layer.persist(held)
    assert _api_gets(sim, pid) >= 1
    assert [r.status for r in layer.catalog.files_of(pid)] == ["stored"]


def test_files_waiting_for_a_copy_thread_keep_their_leases(make_layer, replicate_simulator):
    """persist claims all of a prediction's files in its first transaction; those waiting
    for a copy thread are on the heartbeat, so a worker elsewhere never takes them over
    (each file is downloaded exactly once)."""
    sim = replicate_simulator
    pid = sim.seed_prediction(
        "acme/slow", {}, [File(f"slow {i}".encode(), filename=f"{i}.png") for i in range(3)]
    )
    held = sim.prediction(pid)
    layer = make_layer(concurrency=1, lease_seconds=1)
    other = make_layer(lease_seconds=1)
    sim.latency = 0.8  # each download waits 0.8 s: the last file waits ~1.6 s for its turn
    stop = threading.Event()

    def steal() -> None:
        while not stop.is_set():
            other.work(once=True, concurrency=2)
            stop.wait(0.1)

    thief = threading.Thread(target=steal)
    try:
        thief.start()
        layer.persist(held)
    finally:
        stop.set()
        thief.join(30)
        sim.latency = 0
    assert [r.status for r in layer.catalog.files_of(pid)] == ["stored"] * 3
    assert [sim.download_count(u) for u in sim.delivery_urls(pid)] == [1, 1, 1]


class _Checkouts:
    """Counts connections taken from the catalog's pool (SQLAlchemy's ``checkout`` pool
    event): one per catalog transaction, or per statement run in autocommit."""

    def __init__(self, engine) -> None:
        from sqlalchemy import event

        self.count = 0
        self.wrote: list[bool] = []  # per checkout (in order): whether it wrote (one thread)
        self._engine, self._event = engine, event
        event.listen(engine, "checkout", self._seen)
        event.listen(engine, "before_cursor_execute", self._statement)

    def _seen(self, *_args) -> None:
        self.count += 1
        self.wrote.append(False)

    def _statement(self, _conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE", "WITH"):
            self.wrote[-1] = True

    @property
    def writes(self) -> int:
        return sum(self.wrote)

    def close(self) -> None:
        self._event.remove(self._engine, "checkout", self._seen)
        self._event.remove(self._engine, "before_cursor_execute", self._statement)


def test_a_one_file_persist_writes_the_catalog_twice(layer, replicate_simulator):
    """Issue 11: the durable output is recorded in the transaction that records the last
    file stored (it took a third transaction of its own)."""
    sim = replicate_simulator
    pid = sim.seed_prediction("acme/one", {}, [File(b"one-file", filename="one.png")])
    held = sim.prediction(pid)
    checkouts = _Checkouts(layer.catalog.engine)
    try:
        out = layer.persist(held)
    finally:
        checkouts.close()
    (row,) = layer.catalog.files_of(pid)
    assert row.status == "stored"
    # recorded and claimed; stored with the durable output; then the prediction read back
    # once for its manifest (issue 18), which writes nothing to the catalog
    assert checkouts.writes == 2 and checkouts.wrote == [True, True, False]
    assert out == [layer.durable_url(row)]
    assert layer.catalog.get_prediction(pid).durable_output == [layer.store.object_uri(row.key)]


def test_the_durable_output_holds_null_for_a_file_not_stored(layer, replicate_simulator):
    """With a file left unstored no transaction of the copy records the durable output:
    it is recorded afterwards, stored files as object URIs, the other one as null (never
    its dead source URL: issue 19)."""
    sim = replicate_simulator
    good = File(b"good-bytes", filename="good.png")
    pid = sim.seed_prediction("acme/half", {}, [good, File(b"gone", filename="gone.png")])
    held = sim.prediction(pid)
    gone_url = held["output"][1]
    sim.inject_fault("status", status=403, path_prefix=gone_url.split(sim.delivery_url, 1)[1], times=100)
    with pytest.raises(ExpiredDownloadUrlError):
        layer.persist(held)
    stored, gone = layer.catalog.files_of(pid)
    assert (stored.status, gone.status) == ("stored", "expired")
    durable = layer.catalog.get_prediction(pid).durable_output
    assert durable == [layer.store.object_uri(stored.key), None]
    assert gone_url not in str(durable)


def test_concurrent_files_record_the_durable_output_once_all_are_stored(make_layer, replicate_simulator):
    files = painter(replicate_simulator, n=4, size=50_000)
    layer = make_layer(concurrency=4)
    out = layer.run("acme/painter", input={"num_outputs": 4})
    pid = replicate_simulator.prediction_ids[0]
    rows = layer.catalog.files_of(pid)
    assert [r.status for r in rows] == ["stored"] * 4
    assert [r.sha256 for r in rows] == [f.sha256() for f in files]
    uris = [layer.store.object_uri(r.key) for r in rows]
    assert layer.catalog.get_prediction(pid).durable_output == uris
    assert out == [layer.durable_url(r) for r in rows]
