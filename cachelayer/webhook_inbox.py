"""``serve``'s webhook inbox: acting on acknowledged deliveries in the background.

``POST /webhooks/replicate`` answers after one write, the delivery's de-duplication row
holding its verified body (:meth:`cachelayer.webhooks.WebhookReceiver.accept`). A
:class:`WebhookInbox` (``LANES`` threads on PostgreSQL, one on SQLite, whose single writer
gains nothing from more) then acts on each (records the prediction, queues its files:
:meth:`~cachelayer.webhooks.WebhookReceiver.process`) and takes it out of the inbox:

* deliveries this process acknowledged, at once, in the order received (per prediction);
* at start, every delivery still in the inbox (left by a crash or a stop mid-way);
* every ``scan_seconds``, deliveries older than ``stale_seconds`` still in the inbox (left
  by another process, or by a catalog outage here).

Acting is idempotent (the same rows, the same queue entries), so a delivery acted on twice
(two processes, a crash between acting and marking) changes nothing. A delivery that fails
``MAX_ATTEMPTS`` times for a reason other than a catalog outage leaves the inbox with the
reason in ``webhook_deliveries.error``; during an outage deliveries wait, however long.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import zlib
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from cachelayer.catalog.session import utcnow
from cachelayer.errors import CatalogUnavailableError
from cachelayer.webhooks import DELIVERY_MEMORY_SECONDS, WebhookOutcome, WebhookReceiver

if TYPE_CHECKING:
    from cachelayer.prediction import Prediction

__all__ = ["MAX_ATTEMPTS", "WebhookInbox"]

log = logging.getLogger("cachelayer")

#: Failures (other than catalog outages) after which a delivery leaves the inbox unacted.
MAX_ATTEMPTS = 5
#: Threads acting on deliveries on PostgreSQL (a prediction's deliveries always go to the
#: same one). One gave the lowest ack latency with copies running; four brought the time
#: until every file is stored back to what it was before the inbox, at a higher ack p99
#: (docs/BENCHMARKS.md, "Serve: acknowledging from an inbox").
LANES = 1
#: Parsed predictions held per lane for deliveries waiting their turn; beyond, read back.
HELD_PREDICTIONS = 1000
#: Seconds between scans of the inbox for deliveries nobody acted on.
SCAN_SECONDS = 10.0
#: Age, seconds, after which a scan takes a delivery another process acknowledged.
STALE_SECONDS = 30.0
#: Seconds between prunes of deliveries older than a day.
PRUNE_SECONDS = 600.0


class WebhookInbox:
    """Acts on the inbox of ``receiver`` in ``lanes`` threads (:meth:`start`, :meth:`stop`):
    a delivery goes to the lane of its prediction, so one prediction's events are acted on
    in the order received while other predictions proceed; lane 0 also scans the inbox and
    prunes it. ``lanes``: ``None`` for ``LANES`` on PostgreSQL and 1 on SQLite (decided at
    :meth:`start`, which opens the catalog). ``on_outcome`` is called with each delivery
    acted on (metrics)."""

    def __init__(
        self,
        receiver: WebhookReceiver,
        on_outcome: Callable[[WebhookOutcome], None] = lambda outcome: None,
        *,
        lanes: int | None = None,
        scan_seconds: float = SCAN_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        self.receiver = receiver
        self.on_outcome = on_outcome
        self.scan_seconds = scan_seconds
        self.stale_seconds = stale_seconds
        self.lanes = lanes
        self._queues: list[collections.deque[tuple[str, Prediction | None]]] = [collections.deque()]
        self._wakes = [threading.Event()]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        """Start the threads (no-op when running). Lane 0's first round takes every delivery
        in the inbox."""
        with self._lock:
            if self.running:
                return
            if len(self._queues) == 1 and not self._queues[0]:
                lanes = self.lanes or (1 if self.receiver.state.db.dialect == "sqlite" else LANES)
                self._queues = [collections.deque() for _ in range(max(1, lanes))]
                self._wakes = [threading.Event() for _ in self._queues]
            self._stop.clear()
            self._threads = [
                threading.Thread(
                    target=self._run, args=(k,), name=f"cachelayer-webhook-inbox-{k}", daemon=True
                )
                for k in range(len(self._queues))
            ]
            for t in self._threads:
                t.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the threads, waiting up to ``timeout`` seconds in all for the deliveries in
        hand (what is left stays in the inbox for the next start). Returns whether all ended."""
        self._stop.set()
        for wake in self._wakes:
            wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        ended = not self.running
        self._threads = []
        return ended

    def notify(self, outcome: WebhookOutcome) -> None:
        """Act on a delivery just accepted into the inbox as soon as possible (its parsed
        prediction is used unless too many are waiting: then it is read back)."""
        lane = zlib.crc32(outcome.prediction_id.encode("utf-8", "surrogatepass")) % len(self._queues)
        queue = self._queues[lane]
        queue.append((outcome.webhook_id, outcome.prediction if len(queue) < HELD_PREDICTIONS else None))
        self._wakes[lane].set()

    def drain(self, *, received_before_seconds: float | None = None, limit: int = 500) -> int:
        """Act on up to ``limit`` inbox deliveries (only those older than
        ``received_before_seconds``, if given); returns how many were acted on. Blocking."""
        before = None
        if received_before_seconds is not None:
            before = utcnow() - timedelta(seconds=received_before_seconds)
        done = 0
        for webhook_id in self.receiver.state.inbox(limit, before):
            if self._stop.is_set():
                break
            done += self._process(webhook_id, None)
        return done

    def _process(self, webhook_id: str, prediction: Prediction | None) -> int:
        try:
            outcome = self.receiver.process(webhook_id, prediction)
        except CatalogUnavailableError as exc:  # wait for the catalog; nothing is counted
            log.warning("webhook %s stays in the inbox: %s", webhook_id, exc)
            self._stop.wait(1.0)
            return 0
        except Exception as exc:  # a delivery that fails alone must not stop the others
            attempts = self._failures[webhook_id] = self._failures.get(webhook_id, 0) + 1
            if attempts < MAX_ATTEMPTS:
                log.warning("webhook %s not acted on (attempt %d): %s", webhook_id, attempts, exc)
                return 0
            log.error("webhook %s leaves the inbox after %d attempts: %s", webhook_id, attempts, exc)
            self._failures.pop(webhook_id, None)
            try:
                self.receiver.state.mark_processed(webhook_id, error=str(exc)[:1000])
            except Exception as again:
                log.warning("could not mark webhook %s failed: %s", webhook_id, again)
            return 0
        self._failures.pop(webhook_id, None)
        if outcome is None:
            return 0
        self.on_outcome(outcome)
        return 1

    def _run(self, lane: int) -> None:
        queue, wake = self._queues[lane], self._wakes[lane]
        last_scan = last_prune = time.monotonic()
        first = lane == 0
        while not self._stop.is_set():
            try:
                if first:
                    self.drain()
                    first = False
                while queue and not self._stop.is_set():
                    self._process(*queue.popleft())
                now = time.monotonic()
                if lane == 0 and now - last_scan >= self.scan_seconds:
                    last_scan = now
                    self.drain(received_before_seconds=self.stale_seconds)
                if lane == 0 and now - last_prune >= PRUNE_SECONDS:
                    last_prune = now
                    self.receiver.state.prune_deliveries(DELIVERY_MEMORY_SECONDS)
            except Exception as exc:  # the inbox query itself failed (an outage): try again
                log.warning("webhook inbox: %s", exc)
                self._stop.wait(1.0)
                continue
            wake.wait(self.scan_seconds)
            wake.clear()
