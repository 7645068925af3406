"""Webhooks: signed POSTs of the prediction to its ``webhook`` URL (Standard Webhooks
scheme, as Replicate sends them), retried on failure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from cachelayer.testing.simulator.lifecycle import TERMINAL_STATUSES, Prediction, next_change
from cachelayer.testing.simulator.predictions import Predictions
from cachelayer.testing.simulator.state import SimState, new_token

__all__ = [
    "DEFAULT_WEBHOOK_EVENTS",
    "THROTTLE",
    "WEBHOOK_EVENTS",
    "WebhookDelivery",
    "WebhookSender",
    "sign_webhook",
]

#: The events ``webhook_events_filter`` may name.
WEBHOOK_EVENTS = ("start", "output", "logs", "completed")

#: The events sent when a create names none: "By default, we will send requests to your
#: webhook URL whenever there are new outputs or the prediction has finished" (OpenAPI).
DEFAULT_WEBHOOK_EVENTS = ("output", "completed")

#: Seconds (simulator clock) between two ``output`` or two ``logs`` events of a prediction:
#: "Requests for event types output and logs will be sent at most once every 500ms".
THROTTLE = 0.5


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook POST attempt: prediction id, event, target URL, attempt number (1-based),
    ``webhook-id`` header, HTTP status (``None`` when the request failed) and error text."""

    prediction_id: str
    event: str
    url: str
    attempt: int
    webhook_id: str
    status: int | None
    error: str | None


def sign_webhook(
    secret: str, body: str | bytes, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) signing ``body``
    with ``secret`` (``whsec_<base64>``): HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` keyed
    with the base64-decoded secret (Standard Webhooks, as Replicate documents).
    ``timestamp`` is Unix seconds (default: the real now)."""
    raw = body.encode() if isinstance(body, str) else body
    wid = webhook_id or f"msg_{new_token(27)}"
    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{wid}.{ts}.".encode() + raw, hashlib.sha256).digest()
    return {
        "webhook-id": wid,
        "webhook-timestamp": ts,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }


@dataclass
class _Tracked:
    """A prediction whose events are being sent, and what was last sent for it."""

    prediction: Prediction
    start_sent: bool = False
    output: Any = None
    output_at: float | None = None
    logs: str = ""
    logs_at: float | None = None


class WebhookSender:
    """A background thread that watches predictions created with a ``webhook`` and POSTs
    their events, as the API reference describes them:

    * ``start`` once, when the prediction is created;
    * ``output`` each time the output changes (an iterator model's output grows while it
      runs, so this comes more than once), at most every :data:`THROTTLE` seconds;
    * ``logs`` each time the logs change, at most every :data:`THROTTLE` seconds;
    * ``completed`` once, at any terminal status; the last ``output``/``logs`` changes are
      sent before it without waiting for the throttle.

    Only the events in the prediction's ``webhook_events_filter`` are sent (by default
    ``output`` and ``completed``: "whenever there are new outputs or the prediction has
    finished"). :attr:`deliveries` records every attempt.
    """

    def __init__(self, state: SimState, predictions: Predictions) -> None:
        self._state = state
        self._predictions = predictions
        self._pending: list[_Tracked] = []
        self._deliveries: list[WebhookDelivery] = []
        self._thread: threading.Thread | None = None

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every POST attempt so far, in order."""
        with self._state.lock:
            return list(self._deliveries)

    def track(self, p: Prediction) -> None:
        """Send ``p``'s events from now on (``p.webhook`` must be set)."""
        with self._state.cond:
            self._pending.append(_Tracked(p))
            self._state.cond.notify_all()

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._thread = None

    def _due_events(self) -> tuple[list[tuple[Prediction, str, str]], float]:
        """Events to send now, and how many seconds to wait before looking again (lock held)."""
        jobs: list[tuple[Prediction, str, str]] = []
        now = self._state.clock.time()
        wait = 0.25
        for tracked in list(self._pending):
            p = tracked.prediction
            events = p.webhook_events
            obj = self._predictions.render(p)
            body = json.dumps(obj)
            terminal = obj["status"] in TERMINAL_STATUSES
            if not tracked.start_sent:
                tracked.start_sent = True
                if "start" in events:
                    jobs.append((p, "start", body))
            output, logs = obj["output"], obj["logs"]
            if "output" in events and output is not None and output != tracked.output:
                if terminal or tracked.output_at is None or now - tracked.output_at >= THROTTLE:
                    tracked.output, tracked.output_at = output, now
                    jobs.append((p, "output", body))
                else:
                    wait = min(wait, tracked.output_at + THROTTLE - now)
            if "logs" in events and logs and logs != tracked.logs:
                if terminal or tracked.logs_at is None or now - tracked.logs_at >= THROTTLE:
                    tracked.logs, tracked.logs_at = logs, now
                    jobs.append((p, "logs", body))
                else:
                    wait = min(wait, tracked.logs_at + THROTTLE - now)
            if terminal:
                if "completed" in events:
                    jobs.append((p, "completed", body))
                self._pending.remove(tracked)
                continue
            due = next_change(p, now)
            if due is not None:
                wait = min(wait, due - now)
            if p.iterator and obj["status"] == "processing":
                wait = min(wait, 0.05)  # its output grows continuously
        return jobs, max(0.001, wait)

    def _loop(self) -> None:
        settings = self._state.settings
        verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=settings.webhook_verify)
            if isinstance(settings.webhook_verify, str)
            else settings.webhook_verify
        )
        client = httpx.Client(verify=verify, timeout=10.0, follow_redirects=False)
        try:
            while not self._state.stopping.is_set():
                with self._state.cond:
                    jobs, wait = self._due_events()
                    if not jobs:
                        self._state.cond.wait(wait)
                        continue
                for p, event, body in jobs:
                    if self._state.stopping.is_set():
                        break
                    self._send(client, p, event, body)
        finally:
            client.close()

    def _send(self, client: httpx.Client, p: Prediction, event: str, body: str) -> None:
        assert p.webhook is not None
        settings = self._state.settings
        wid = f"msg_{new_token(27)}"
        for attempt in range(1, settings.webhook_max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "Replicate-Simulator"}
            headers.update(sign_webhook(settings.webhook_secret, body, webhook_id=wid))
            status: int | None = None
            error: str | None = None
            try:
                resp = client.post(p.webhook, content=body.encode(), headers=headers)
                status = resp.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._state.lock:
                self._deliveries.append(WebhookDelivery(p.id, event, p.webhook, attempt, wid, status, error))
            if status is not None and 200 <= status < 300:
                return
            if self._state.stopping.wait(0.1 * 2 ** (attempt - 1)):
                return
