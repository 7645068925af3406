"""``serve``'s webhook inbox: acting on acknowledged deliveries in the background.

``POST /webhooks/replicate`` answers after one write, the delivery's de-duplication row
holding its verified body (:meth:`cachelayer.webhooks.WebhookReceiver.accept`). A
:class:`WebhookInbox` thread then acts on each (records the prediction, queues its files:
:meth:`~cachelayer.webhooks.WebhookReceiver.process`) and takes it out of the inbox:

* deliveries this process acknowledged, at once, in the order received;
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
from collections.abc import Callable
from datetime import timedelta

from cachelayer.catalog.session import utcnow
from cachelayer.errors import CatalogUnavailableError
from cachelayer.webhooks import DELIVERY_MEMORY_SECONDS, WebhookOutcome, WebhookReceiver

__all__ = ["MAX_ATTEMPTS", "WebhookInbox"]

log = logging.getLogger("cachelayer")

#: Failures (other than catalog outages) after which a delivery leaves the inbox unacted.
MAX_ATTEMPTS = 5
#: Seconds between scans of the inbox for deliveries nobody acted on.
SCAN_SECONDS = 10.0
#: Age, seconds, after which a scan takes a delivery another process acknowledged.
STALE_SECONDS = 30.0
#: Seconds between prunes of deliveries older than a day.
PRUNE_SECONDS = 600.0


class WebhookInbox:
    """Acts on the inbox of ``receiver`` in a thread (:meth:`start`, :meth:`stop`);
    ``on_outcome`` is called with each delivery acted on (metrics)."""

    def __init__(
        self,
        receiver: WebhookReceiver,
        on_outcome: Callable[[WebhookOutcome], None] = lambda outcome: None,
        *,
        scan_seconds: float = SCAN_SECONDS,
        stale_seconds: float = STALE_SECONDS,
    ) -> None:
        self.receiver = receiver
        self.on_outcome = on_outcome
        self.scan_seconds = scan_seconds
        self.stale_seconds = stale_seconds
        self._mine: collections.deque[str] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread (no-op when running). Its first round takes every delivery in
        the inbox."""
        with self._lock:
            if self.running:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="cachelayer-webhook-inbox", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread, waiting up to ``timeout`` seconds for the delivery in hand
        (what is left stays in the inbox for the next start). Returns whether it ended."""
        thread = self._thread
        if thread is None:
            return True
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        return not thread.is_alive()

    def notify(self, webhook_id: str) -> None:
        """Act on ``webhook_id`` (just acknowledged into the inbox) as soon as possible."""
        self._mine.append(webhook_id)
        self._wake.set()

    def drain(self, *, received_before_seconds: float | None = None, limit: int = 500) -> int:
        """Act on up to ``limit`` inbox deliveries (only those older than
        ``received_before_seconds``, if given); returns how many were acted on. Blocking."""
        before = (
            None if received_before_seconds is None else utcnow() - timedelta(seconds=received_before_seconds)
        )
        done = 0
        for webhook_id in self.receiver.state.inbox(limit, before):
            if self._stop.is_set():
                break
            done += self._process(webhook_id)
        return done

    def _process(self, webhook_id: str) -> int:
        try:
            outcome = self.receiver.process(webhook_id)
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

    def _run(self) -> None:
        last_scan = last_prune = time.monotonic()
        first = True
        while not self._stop.is_set():
            try:
                if first:
                    self.drain()
                    first = False
                while self._mine and not self._stop.is_set():
                    self._process(self._mine.popleft())
                now = time.monotonic()
                if now - last_scan >= self.scan_seconds:
                    last_scan = now
                    self.drain(received_before_seconds=self.stale_seconds)
                if now - last_prune >= PRUNE_SECONDS:
                    last_prune = now
                    self.receiver.state.prune_deliveries(DELIVERY_MEMORY_SECONDS)
            except Exception as exc:  # the inbox query itself failed (an outage): try again
                log.warning("webhook inbox: %s", exc)
                self._stop.wait(1.0)
                continue
            self._wake.wait(self.scan_seconds)
            self._wake.clear()
