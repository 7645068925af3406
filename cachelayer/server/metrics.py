"""Prometheus metrics of ``cachelayer serve`` (``GET /metrics``, ``prometheus-client``).

Each app has its own registry (several apps in one process do not collide). Three sources:

* counters this process keeps: webhook deliveries by outcome and rejections by reason,
  gateway requests by HTTP status, the copies its worker threads made (files, bytes,
  failures by reason: the exception class, as in ``cachelayer worker``'s summary), and its
  sweep passes by outcome and the files they recovered;
* gauges read from the catalog at scrape time, at most every ``catalog_ttl`` seconds
  (one ``GROUP BY status`` over ``output_files``): files and bytes per status, and the
  queue depth (``pending`` files no live lease holds); and the catalog's counters of
  deletes by any process (``tombstones``, which only grow):
  ``cachelayer_deleted_predictions_total`` and ``cachelayer_deleted_bytes_total``.

Every name starts with ``cachelayer_``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cachelayer.backfill import BackfillSummary

__all__ = ["CONTENT_TYPE", "ServerMetrics"]

#: ``Content-Type`` of the Prometheus text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _CatalogCollector(Collector):
    """Gauges from the catalog, cached for ``ttl`` seconds; silent when it cannot be read."""

    def __init__(
        self,
        totals: Callable[[], dict[str, tuple[int, int]]],
        queue: Callable[[], int],
        ttl: float,
        deleted: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.totals, self.queue, self.ttl = totals, queue, ttl
        self.deleted = deleted or (lambda: (0, 0))
        self._cached: tuple[float, dict[str, tuple[int, int]], int, tuple[int, int]] | None = None
        self._lock = threading.Lock()

    def _read(self) -> tuple[dict[str, tuple[int, int]], int, tuple[int, int]] | None:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self.ttl:
                try:
                    self._cached = (now, self.totals(), self.queue(), self.deleted())
                except Exception:  # the catalog is down: /healthz says so; keep /metrics up
                    return None
            return self._cached[1], self._cached[2], self._cached[3]

    def collect(self) -> Iterator[Metric]:
        read = self._read()
        up = GaugeMetricFamily("cachelayer_catalog_up", "1 when the catalog answered the last scrape")
        up.add_metric([], 0 if read is None else 1)
        yield up
        if read is None:
            return
        totals, queue, (deleted, freed) = read
        files = GaugeMetricFamily(
            "cachelayer_files", "Output files in the catalog by status", labels=["status"]
        )
        sizes = GaugeMetricFamily(
            "cachelayer_file_bytes", "Recorded bytes of output files by status", labels=["status"]
        )
        for status in sorted(set(totals) | {"pending", "stored", "expired", "failed", "deleted"}):
            n, size = totals.get(status, (0, 0))
            files.add_metric([status], n)
            sizes.add_metric([status], size)
        yield files
        yield sizes
        stored = GaugeMetricFamily("cachelayer_files_stored", "Output files stored (catalog)")
        stored.add_metric([], totals.get("stored", (0, 0))[0])
        yield stored
        stored_bytes = GaugeMetricFamily("cachelayer_stored_bytes", "Bytes of stored output files (catalog)")
        stored_bytes.add_metric([], totals.get("stored", (0, 0))[1])
        yield stored_bytes
        depth = GaugeMetricFamily("cachelayer_queue_depth", "Pending files no live lease holds (catalog)")
        depth.add_metric([], queue)
        yield depth
        gone = CounterMetricFamily(
            "cachelayer_deleted_predictions", "Predictions deleted (catalog tombstones)"
        )
        gone.add_metric([], deleted)
        yield gone
        freed_bytes = CounterMetricFamily(
            "cachelayer_deleted_bytes", "Bytes freed by deletes (catalog tombstones)"
        )
        freed_bytes.add_metric([], freed)
        yield freed_bytes


class _WorkerCollector(Collector):
    """Counters of this process's worker threads, from their running summary."""

    def __init__(self) -> None:
        self.summary: BackfillSummary | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.summary
        values = {
            "copied_files": ("Files this server's workers copied", s.files_stored if s else 0),
            "copied_bytes": ("Bytes this server's workers copied", s.bytes_stored if s else 0),
            "copies_expired": ("Files this server's workers found expired", s.files_expired if s else 0),
        }
        for name, (doc, value) in values.items():
            c = CounterMetricFamily(f"cachelayer_{name}", doc)
            c.add_metric([], value)
            yield c
        failures = CounterMetricFamily(
            "cachelayer_copy_failures",
            "Files this server's workers failed to copy for good, by reason (error class)",
            labels=["reason"],
        )
        for reason, n in sorted((dict(s.failures) if s else {}).items()):
            failures.add_metric([reason], n)
        yield failures


class ServerMetrics:
    """The registry and instruments of one app.

    ``catalog_totals() -> {status: (files, bytes)}``, ``queue_depth() -> int`` and
    ``deleted() -> (predictions, bytes freed)`` are called at scrape time (from a thread)
    at most every ``catalog_ttl`` seconds.
    """

    def __init__(
        self,
        catalog_totals: Callable[[], dict[str, tuple[int, int]]],
        queue_depth: Callable[[], int],
        *,
        catalog_ttl: float = 10.0,
        deleted: Callable[[], tuple[int, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.webhook_deliveries = Counter(
            "cachelayer_webhook_deliveries",
            "Webhook deliveries accepted, by outcome (queued, recorded, duplicate)",
            ["outcome"],
            registry=r,
        )
        self.webhook_rejections = Counter(
            "cachelayer_webhook_rejections",
            "Webhook deliveries refused, by reason (missing_headers, stale, bad_signature, malformed, "
            "too_large, unavailable)",
            ["reason"],
            registry=r,
        )
        self.gateway_requests = Counter(
            "cachelayer_gateway_requests", "Gateway requests by HTTP status", ["status"], registry=r
        )
        self.gateway_seconds = Histogram(
            "cachelayer_gateway_request_seconds",
            "Time to answer a gateway request (to the first byte), seconds",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.sweep_runs = Counter(
            "cachelayer_sweep_runs",
            "Sweep passes of this server (catch-up of missed webhooks), by outcome (ok, failed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "failed"):
            self.sweep_runs.labels(outcome)
        self.sweep_recovered_files = Counter(
            "cachelayer_sweep_recovered_files",
            "Files the sweep found not stored and queued (their webhook never arrived)",
            registry=r,
        )
        self.workers = _WorkerCollector()
        r.register(self.workers)
        r.register(_CatalogCollector(catalog_totals, queue_depth, catalog_ttl, deleted))

    def worker_progress(self, summary: BackfillSummary) -> None:
        """The ``progress`` callback of the server's workers (keeps the running summary)."""
        self.workers.summary = summary

    def render(self) -> bytes:
        """The Prometheus text exposition (reads the catalog; call it off the event loop)."""
        return bytes(generate_latest(self.registry))

    def gateway(self, status: int, seconds: float) -> None:
        """Count one gateway answer."""
        self.gateway_requests.labels(str(status)).inc()
        self.gateway_seconds.observe(seconds)
