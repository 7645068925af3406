"""Download slots (issue 11, session 5): a pool of ``concurrency`` keeps that many downloads in
flight, and ``concurrency // 2`` more threads upload and record files whose body has been
read, so a slot does not sit idle while its file goes up to the store."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from cachelayer.testing.simulator import File
from cachelayer.workers import upload_threads


class Gauge:
    """How many files are in each phase now, and the most there ever were."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = {"downloading": 0, "active": 0}
        self.peak = dict(self.now)

    def add(self, phase: str, n: int) -> None:
        with self._lock:
            self.now[phase] += n
            self.peak[phase] = max(self.peak[phase], self.now[phase])


class WatchedDownload:
    """The real download; counted as downloading until its body has been read to the end."""

    def __init__(self, real: Any, gauge: Gauge) -> None:
        self._real, self._gauge, self._open = real, gauge, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def read(self, n: int = -1) -> bytes:
        data = self._real.read(n)
        if not data and self._open:
            self._open = False
            self._gauge.add("downloading", -1)
        return data


class WatchedFetcher:
    """The layer's real Fetcher; each ``open`` is counted as downloading and active."""

    def __init__(self, real: Any, gauge: Gauge) -> None:
        self._real, self._gauge = real, gauge

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def open(self, url: str, **kwargs: Any) -> Any:
        gauge, real = self._gauge, self._real

        class Opened:
            def __enter__(self) -> WatchedDownload:
                gauge.add("downloading", 1)  # from the request on: the wait for its first byte counts
                gauge.add("active", 1)
                self.cm = real.open(url, **kwargs)
                self.dl = WatchedDownload(self.cm.__enter__(), gauge)
                return self.dl

            def __exit__(self, *exc: Any) -> Any:
                if self.dl._open:
                    gauge.add("downloading", -1)
                return self.cm.__exit__(*exc)

        return Opened()


class SlowUploads:
    """The layer's real store; each ``put`` reads its body to the end (as S3Store does for a
    body under its threshold), then takes ``seconds`` before writing it for real."""

    def __init__(self, real: Any, gauge: Gauge, seconds: float) -> None:
        self._real, self._gauge, self._seconds = real, gauge, seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put(self, key: str, body: Any, **kwargs: Any) -> str:
        if "/_manifests/" in key:  # a prediction's manifest (issue 18), not a file's copy
            return str(self._real.put(key, body, **kwargs))
        data = b"".join(iter(lambda: body.read(1 << 16), b""))
        try:
            time.sleep(self._seconds)
            return str(self._real.put(key, io.BytesIO(data), **kwargs))
        finally:
            self._gauge.add("active", -1)


def test_a_pool_keeps_concurrency_downloads_in_flight_while_others_upload(make_layer, replicate_simulator):
    sim = replicate_simulator
    for i in range(6):
        sim.seed_prediction(
            "acme/painter", input={"i": i}, output=[File(size=20_000, seed=i * 2 + j) for j in range(2)]
        )
    sim.latency = 0.15  # every download waits for its first byte, so they overlap
    layer = make_layer()
    gauge = Gauge()
    layer.fetcher = WatchedFetcher(layer.fetcher, gauge)  # replaced before first use
    layer.store = SlowUploads(layer.store, gauge, seconds=0.3)
    summary = layer.backfill(concurrency=2)
    assert summary.files_stored == 12 and summary.files_failed == 0
    assert upload_threads(2) == 1
    # never more than 2 downloads at once: the pool's 3 threads share 2 slots ...
    assert gauge.peak["downloading"] == 2
    # ... and the third thread did copy while the other two downloaded
    assert gauge.peak["active"] == 3


def test_one_at_a_time_means_one_thread(make_layer, replicate_simulator):
    sim = replicate_simulator
    for i in range(3):
        sim.seed_prediction("acme/painter", input={"i": i}, output=[File(size=5_000, seed=i)])
    layer = make_layer()
    gauge = Gauge()
    layer.fetcher = WatchedFetcher(layer.fetcher, gauge)
    layer.store = SlowUploads(layer.store, gauge, seconds=0.05)
    summary = layer.backfill(concurrency=1)
    assert summary.files_stored == 3
    assert upload_threads(1) == 0 and gauge.peak == {"downloading": 1, "active": 1}


def test_s3_store_reads_a_small_body_to_its_end_before_it_sends_put_object(s3_server, s3_bucket):
    """The premise of releasing a slot at the end of the body: under ``spool_memory_bytes``
    the body is read whole (its end seen) before PutObject leaves, so the slot is free
    while the bytes go up."""
    from cachelayer.storage.s3 import S3Store

    store = S3Store(
        s3_bucket,
        prefix="slots",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
    )
    seen: list[str] = []

    class Body:
        def __init__(self, data: bytes) -> None:
            self._io = io.BytesIO(data)

        def read(self, n: int = -1) -> bytes:
            data = self._io.read(n)
            if not data:
                seen.append("end of body")
            return data

    store.client.meta.events.register("before-send.s3.PutObject", lambda **_: seen.append("PutObject sent"))
    store.put("k", Body(b"x" * 300_000), content_type="image/png")  # type: ignore[arg-type]
    assert seen == ["end of body", "PutObject sent"]
    store.close()


def test_idle_threads_leave_the_catalog_alone_while_another_thread_of_the_pool_copies(
    make_layer, replicate_simulator
):
    """Issue 11 (session 6): once the scan is done, threads with nothing to claim used to ask
    the catalog every 0.1 s whether the run was over, while the last files were still being
    copied by their own pool (about 70 queries at the end of a 400-file run, CPU the last
    uploads waited for). Now only a thread with no busy sibling asks; the run still ends
    with every file stored."""
    sim = replicate_simulator
    for i in range(3):
        sim.seed_prediction("acme/painter", input={"i": i}, output=[File(size=5_000, seed=i)])
    layer = make_layer()
    layer.store = SlowUploads(layer.store, Gauge(), seconds=1.0)  # every copy takes a second
    asked: list[float] = []
    queue = layer.catalog.queue
    count = queue.count_unleased_pending

    def counted() -> int:
        asked.append(time.monotonic())
        return count()

    queue.count_unleased_pending = counted  # the real query, each call noted
    summary = layer.backfill(concurrency=8)  # 12 threads for 3 files: 9 of them idle
    assert summary.files_stored == 3 and summary.files_failed == 0
    # the last thread through asks (the others see its answer; a thread whose poll falls in
    # the few ms before that answer may ask too, at most once each); 9 idle threads polling
    # for a second asked about 100 times
    assert 1 <= len(asked) <= 12, len(asked)
