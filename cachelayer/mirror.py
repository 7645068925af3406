"""The mirror: every object also written to each store of ``CACHELAYER_MIRROR_URLS``.

The primary copy is written first, by the copier, and the durable URL is handed back as
soon as it is stored; the mirror copies follow. Storing a primary copy queues one
``file_copies`` row per mirror store (:meth:`Mirror.after_store`, called by the copier;
``pending``) and wakes this layer's background mirror thread. Workers (the background
thread, ``CacheLayer.work``: ``cachelayer worker`` and serve's workers) claim pending
copies with a lease, read the **primary object** from its store (never Replicate) and
write it to the mirror, then check the sha256 the mirror computed against the recorded
one before recording the copy ``stored``. A failure (the mirror is down, the primary
object is missing) goes back to ``pending`` with an exponential backoff capped at
:data:`MAX_BACKOFF` seconds, so a mirror that comes back gets every copy; a sha256 that
differs is ``failed`` (``verify`` tells which copy is wrong). After a crash nothing is
lost: a pending copy's lease lapses, and a stored file whose mirror rows were never queued
(the process died between the two) is queued when the next worker run starts
(:meth:`Mirror.queue_unqueued`).

A mirror copy's key is the primary key with the primary store's prefix replaced by the
mirror's (``s3://backup/mirror``: ``mirror/...``), recorded per copy.

Repairs come from a good copy, never from Replicate: :func:`copy_object` is what
``verify --repair`` uses to restore a missing or corrupt copy (primary or mirror) from
another one. The gateway serves a mirror copy when the primary object is missing
(:meth:`Mirror` is not involved there: ``server/gateway.py`` reads the copies).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

from cachelayer.catalog.copies import MirrorTask
from cachelayer.catalog.records import FileRecord

if TYPE_CHECKING:
    from cachelayer.catalog import Catalog
    from cachelayer.config import Settings
    from cachelayer.storage.base import Store

__all__ = ["MAX_BACKOFF", "Mirror", "MirrorSummary", "copy_object", "mirror_key"]

log = logging.getLogger("cachelayer")

T = TypeVar("T")

#: Longest wait (seconds) between two attempts at one mirror copy.
MAX_BACKOFF = 300.0
#: Seconds a claim on a mirror copy lasts (at least; ``lease_seconds`` if longer): no
#: heartbeat renews it, so it covers the longest copy expected.
MIN_LEASE = 900.0
#: Seconds an idle worker that runs until stopped waits before looking at the queue again.
POLL = 1.0


def mirror_key(key: str, primary_prefix: str, mirror_prefix: str) -> str:
    """The key of ``key``'s copy in a mirror: ``primary_prefix`` (when ``key`` starts with
    it) replaced by ``mirror_prefix`` (``"a/x.png"``, ``"a"``, ``"m"`` -> ``"m/x.png"``)."""
    rest = key[len(primary_prefix) + 1 :] if primary_prefix and key.startswith(primary_prefix + "/") else key
    return f"{mirror_prefix}/{rest}" if mirror_prefix else rest


class _Counting:
    """``read(n)`` of ``raw`` counting the bytes (``nbytes``)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.nbytes = raw, 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.nbytes += len(data)
        return data


def copy_object(
    source: Store,
    source_key: str,
    target: Store,
    target_key: str,
    file: FileRecord,
    *,
    cache_control: str | None,
) -> tuple[str, int]:
    """Stream ``source_key`` of ``source`` into ``target_key`` of ``target`` (content type
    from ``file``, the copier's metadata ``prediction-id``/``output-path``) and return the
    ``(sha256, size)`` of the bytes written. Raises ``FileNotFoundError`` when the source
    object is missing, :class:`~cachelayer.errors.StorageError` when either store fails,
    ``ValueError`` naming both when the bytes differ from ``file``'s recorded sha256 or
    size (the target then holds them: the caller records the copy as not good)."""
    body = source.open(source_key)
    try:
        counted = _Counting(body)
        sha = target.put(
            target_key,
            cast(BinaryIO, counted),
            content_type=file.content_type,
            metadata={"prediction-id": file.prediction_id, "output-path": file.output_path},
            cache_control=cache_control,
            size=file.size,
        )
    finally:
        body.close()
    if file.sha256 and sha.lower() != file.sha256.lower():
        raise ValueError(f"sha256 {sha} of {source.object_uri(source_key)} != recorded {file.sha256}")
    if file.size is not None and counted.nbytes != file.size:
        raise ValueError(f"{counted.nbytes} bytes at {source.object_uri(source_key)}, recorded {file.size}")
    return sha, counted.nbytes


@dataclass
class MirrorSummary:
    """What a worker run did to the mirror queue: copies ``stored``, ``retrying`` (back in
    the queue with a backoff), ``failed`` (sha256 or size differ), ``queued`` (rows added
    for stored files that had none)."""

    stored: int = 0
    retrying: int = 0
    failed: int = 0
    queued: int = 0


class Mirror:
    """Copies every stored file of ``catalog`` into ``mirrors`` (stores, in order) from its
    primary copy. ``store_for(uri)`` opens the store a copy was recorded in (the layer's
    per-store factory); ``primary_prefix``: the configured store's key prefix; ``owner``:
    this process's lease owner id. Thread-safe."""

    def __init__(
        self,
        catalog: Catalog,
        store_for: Callable[[str], Store],
        mirrors: Sequence[Store],
        *,
        primary_prefix: str,
        owner: str,
        settings: Settings,
    ) -> None:
        self.catalog = catalog
        self.store_for = store_for
        self.mirrors = list(mirrors)
        self.stores = [m.uri for m in self.mirrors]
        self.primary_prefix = primary_prefix
        self.owner = owner
        self.cache_control = settings.cache_control
        self.lease_seconds = max(MIN_LEASE, settings.lease_seconds)
        self.threads = max(1, settings.concurrency // 2)
        self._by_uri = {m.uri: m for m in self.mirrors}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._kicked = False
        self._closing = threading.Event()

    @classmethod
    def build(
        cls,
        settings: Settings,
        catalog: Catalog,
        store_for: Callable[[str], Store],
        primary: Store,
        owner: str,
    ) -> Mirror:
        """The mirror of ``settings.mirror_urls``, each store opened by ``store_for`` (no
        request is sent: a mirror that is down fails its copies, never the caller)."""
        mirrors = [store_for(url) for url in settings.mirror_urls]
        return cls(catalog, store_for, mirrors, primary_prefix=primary.prefix, owner=owner, settings=settings)

    def _store(self, uri: str) -> Store:
        return self._by_uri.get(uri) or self.store_for(uri)

    # ---- queueing --------------------------------------------------------------------------

    def after_store(self, file: FileRecord) -> None:
        """``file``'s primary copy was just stored: queue its mirror copies and wake the
        background mirror thread. Never raises (a catalog outage here is caught up by
        :meth:`queue_unqueued`)."""
        try:
            self.catalog.copies.enqueue(self._rows(file))
        except Exception as exc:  # noqa: BLE001 - the primary copy stands; the next run queues it
            log.warning("could not queue the mirror copies of %s: %s", file.key, exc)
            return
        self.kick()

    def _rows(self, file: FileRecord) -> list[tuple[int, str, str]]:
        return [(file.id, m.uri, mirror_key(file.key, self.primary_prefix, m.prefix)) for m in self.mirrors]

    def queue_unqueued(self) -> int:
        """Queue the mirror copies of every stored file that has none recorded for a mirror
        store (left by a crash, or stored before the mirror was configured). Returns how
        many rows were added."""
        added = 0
        for m in self.mirrors:
            after = 0
            while files := self.catalog.copies.unqueued(m.uri, after_id=after):
                added += self.catalog.copies.enqueue(
                    [(f.id, m.uri, mirror_key(f.key, self.primary_prefix, m.prefix)) for f in files]
                )
                after = files[-1].id
        return added

    # ---- copying -------------------------------------------------------------------------

    def copy(self, task: MirrorTask, summary: MirrorSummary) -> None:
        """Make one claimed mirror copy from the file's primary object and record the
        outcome. Never raises an ``Exception``: every failure is the copy's own."""
        c, f = task.copy, task.file
        try:
            sha, size = copy_object(
                self.store_for(f.store),
                f.key,
                self._store(c.store),
                c.key,
                f,
                cache_control=self.cache_control,
            )
        except ValueError as exc:
            log.warning("mirror copy of %s into %s differs: %s", f.key, c.store, exc)
            bad = str(exc)
            self._record(lambda: self.catalog.copies.mark_unstored(c.id, error=bad, retry_after=None))
            self._count(summary, "failed")
            return
        except Exception as exc:  # noqa: BLE001 - a down mirror, a missing primary object, a bug
            reason = (
                f"primary copy {f.store}/{f.key} missing" if isinstance(exc, FileNotFoundError) else str(exc)
            )
            delay = min(MAX_BACKOFF, 2.0 ** max(0, c.attempts)) * (0.5 + random.random())
            log.info("mirror copy of %s into %s failed (%s); retry in %.0f s", f.key, c.store, reason, delay)
            self._record(lambda: self.catalog.copies.mark_unstored(c.id, error=reason, retry_after=delay))
            self._count(summary, "retrying")
            return
        self._record(lambda: self.catalog.copies.mark_stored(c.id, sha256=sha, size=size))
        self._count(summary, "stored")

    def _count(self, summary: MirrorSummary, outcome: str) -> None:
        with self._lock:
            setattr(summary, outcome, getattr(summary, outcome) + 1)

    def _record(self, write: Callable[[], None]) -> None:
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - the catalog is down: the lease lapses, retried
            log.warning("could not record a mirror copy: %s", exc)

    def drain(
        self,
        *,
        stop: threading.Event | None = None,
        once: bool = True,
        retry_failed: bool = False,
        catch_up: bool = True,
    ) -> MirrorSummary:
        """Copy pending mirror copies until none is ready (``once``; copies this process's
        other threads hold are waited for; those in backoff, or leased by other processes,
        are left to them) or ``stop`` is set, ``threads`` at once.
        With ``catch_up``, first queues what is missing (:meth:`queue_unqueued`: one pass
        over the stored files; the background thread, woken by :meth:`after_store` for
        files it just queued, skips it); ``retry_failed`` first puts
        failed copies and those in backoff back in the queue. Catalog outages of a run that
        ends propagate; a run until stopped waits and tries again."""
        stop = stop or threading.Event()
        summary = MirrorSummary()
        if not self.mirrors:
            return summary
        if retry_failed:
            self.catalog.copies.retry_failed(self.stores)
        summary.queued = self.queue_unqueued() if catch_up else 0
        with ThreadPoolExecutor(self.threads, thread_name_prefix="cachelayer-mirror") as pool:
            while not (stop.is_set() or self._closing.is_set()):
                try:
                    tasks = self.catalog.copies.claim(
                        self.stores, self.owner, self.lease_seconds, self.threads
                    )
                except Exception as exc:
                    if once:
                        raise
                    log.warning("could not claim a mirror copy (%s)", exc)
                    stop.wait(POLL * 10)
                    continue
                if tasks:
                    list(pool.map(lambda t: self.copy(t, summary), tasks))
                    continue
                if once and not self.catalog.copies.leased(self.stores, self.owner):
                    break
                stop.wait(POLL)
        if summary.stored or summary.retrying or summary.failed:
            log.info(
                "mirror: %d copies stored, %d retrying, %d failed",
                summary.stored,
                summary.retrying,
                summary.failed,
            )
        return summary

    # ---- the background thread -----------------------------------------------------------

    def kick(self) -> None:
        """Make sure this layer's background thread is draining the mirror queue (started if
        idle; one that is finishing looks again)."""
        with self._lock:
            self._kicked = True
            if self._closing.is_set() or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._background, name="cachelayer-mirror", daemon=True)
            self._thread.start()

    def _background(self) -> None:
        while True:
            with self._lock:
                self._kicked = False
            try:
                self.drain(once=True, catch_up=False)
            except Exception as exc:  # noqa: BLE001 - workers catch up what this thread left
                log.warning("mirror thread stopped: %s", exc)
            with self._lock:
                if not self._kicked or self._closing.is_set():
                    self._thread = None
                    return

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the background thread to finish what it was given (tests, shutdown).
        Returns ``False`` when it is still running after ``timeout`` seconds."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop the background thread (the copy in flight finishes; pending ones stay queued
        for the next worker run), waiting at most ``timeout`` seconds."""
        self._closing.set()
        self.wait_idle(timeout)

    def beside(
        self, run: Callable[[], T], *, once: bool, stop: threading.Event | None, retry_failed: bool
    ) -> T:
        """``run()`` (a worker run of the file queue) with the mirror queue drained beside
        it: after it (``once``), or in a thread until ``stop`` is set."""
        if once:
            result = run()
            self.drain(once=True, retry_failed=retry_failed)
            return result
        stop = stop or threading.Event()
        thread = threading.Thread(
            target=self._forever, args=(stop, retry_failed), name="cachelayer-mirror-worker", daemon=True
        )
        thread.start()
        try:
            return run()
        finally:
            stop.set()
            thread.join()

    def _forever(self, stop: threading.Event, retry_failed: bool) -> None:
        try:
            self.drain(stop=stop, once=False, retry_failed=retry_failed)
        except Exception as exc:  # noqa: BLE001 - logged; the file queue's workers go on
            log.error("mirror workers stopped: %s", exc)
