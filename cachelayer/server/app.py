"""The ASGI application of ``cachelayer serve`` (Starlette).

Routes:

==================================  =========================================================
``POST /webhooks/replicate``         Replicate's webhook: headers checked before the body is read,
                                     the body verified as it streams (Standard Webhooks), answered
                                     after one write (the de-duplication row holding the body);
                                     recorded and queued from that inbox by a background thread
                                     (see :mod:`cachelayer.webhooks`, :mod:`cachelayer.webhook_inbox`).
``GET|HEAD /files/{sig}/{key}``      the gateway (see :mod:`cachelayer.server.gateway`).
``GET /healthz``                     ``200 {"status": "ok"}`` when the catalog answers, else 503.
``GET /metrics``                     Prometheus text (see :mod:`cachelayer.server.metrics`).
==================================  =========================================================

The app builds only what a route needs: the gateway needs the catalog and the store object
(no Replicate token); webhooks need the catalog and, unless ``CACHELAYER_WEBHOOK_SECRET`` is
set, the token to read the signing secret once. When the app runs as the top-level ASGI app
its lifespan starts ``workers`` copy threads (``CacheLayer.work``) that drain the queue
webhooks fill, and on shutdown (uvicorn turns SIGTERM/SIGINT into it) stops them, waits up to
``grace`` seconds for files in flight, and releases the leases of any still in flight, so
another worker (or the next start) takes them over at once: nothing is lost. The lifespan
also starts the sweep thread (every ``CACHELAYER_SWEEP_INTERVAL`` seconds, see
:mod:`cachelayer.sweep`), which queues what missed webhooks left behind; ``/healthz`` shows
the age of its last complete pass (``"sweep": {"last_ok_age_seconds": s}``, ``null`` before
the first one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cachelayer.catalog.retry import retry_deadline, run_with_retries
from cachelayer.errors import CacheLayerError, WebhookVerificationError
from cachelayer.server.gateway import Gateway
from cachelayer.server.metrics import CONTENT_TYPE, ServerMetrics
from cachelayer.server.outage import (
    EXCEPTION_HANDLERS,
    PROBE_RETRY_SECONDS,
    RouteDeadline,
    describe,
    retry_after,
    route_deadline,
)
from cachelayer.webhooks import (
    MAX_UNVERIFIED_BODIES,
    UNVERIFIED_WAIT_SECONDS,
    SignatureCheck,
    parse_signed_headers,
    read_signed_body,
)

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer
    from cachelayer.sweep import SweepSummary
    from cachelayer.webhook_inbox import WebhookInbox
    from cachelayer.webhooks import WebhookOutcome, WebhookReceiver

log = logging.getLogger("cachelayer.server")

__all__ = ["RELEASE_SECONDS", "Service", "create_app"]

#: Seconds shutdown gives the release of this process's leases at least, when the grace
#: was spent waiting for files in flight.
RELEASE_SECONDS = 1.0


class Service:
    """What one app serves from: the :class:`~cachelayer.CacheLayer`, its metrics, the
    gateway and the copy workers. Reachable as ``app.state.cachelayer``; an app mounted inside
    another (whose lifespan Starlette does not run) can call :meth:`start_workers` /
    :meth:`stop_workers` (and :meth:`start_sweeper` / :meth:`stop_sweeper`) from the host
    app's own lifespan.

    ``workers``: copy threads (``0``: none; run ``cachelayer worker`` elsewhere).
    ``grace``: seconds :meth:`stop_workers` waits for files in flight.
    ``sweep_interval``: seconds between sweep passes (default the ``sweep_interval``
    setting, ``CACHELAYER_SWEEP_INTERVAL``; ``0``: none); :meth:`start_sweeper` /
    :meth:`stop_sweeper` as for the workers.
    """

    def __init__(
        self, layer: CacheLayer, *, workers: int, grace: float, sweep_interval: float | None = None
    ) -> None:
        self.layer = layer
        self.workers = workers
        self.grace = grace
        self.metrics = ServerMetrics(
            lambda: layer.catalog.reports.file_totals(),
            lambda: layer.catalog.queue.count_unleased_pending(),
            deleted=lambda: layer.catalog.tombstones.totals(),
        )
        self.gateway = Gateway(layer, self.metrics)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.worker_error: BaseException | None = None
        self.sweep_interval = layer.settings.sweep_interval if sweep_interval is None else sweep_interval
        self._sweep_stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.sweep_ok_at: float | None = None  # time.monotonic() of the last completed pass
        # webhooks: bodies read before their signature is known, and the inbox thread
        self._unverified = asyncio.Semaphore(MAX_UNVERIFIED_BODIES)
        self._inbox: WebhookInbox | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def warm(self) -> None:
        """Open the catalog and, with workers, check the store (blocking; raises the typed
        errors of :class:`~cachelayer.CacheLayer`). Idempotent."""
        self.layer.catalog  # noqa: B018 -- opens the catalog (migrates SQLite)
        self.gateway._prepare_sync()
        if self.workers:
            self.layer.copier  # noqa: B018 -- checks the bucket once

    def start_workers(self) -> None:
        """Start the copy threads (no-op with ``workers=0`` or when running)."""
        if not self.workers or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="cachelayer-serve-workers", daemon=True)
        self._thread.start()
        log.info("started %d copy worker(s)", self.workers)

    def _work(self) -> None:
        try:
            self.layer.work(
                concurrency=self.workers, once=False, stop=self._stop, progress=self.metrics.worker_progress
            )
        except BaseException as exc:  # keep serving the gateway; /healthz shows it
            self.worker_error = exc
            log.error("copy workers stopped: %s", exc)

    def stop_workers(self) -> int:
        """Stop the copy threads: wait up to ``grace`` seconds for files in flight, then
        release this process's leases (files still in flight go back to ``pending`` for any
        worker). Returns how many leases were released. Blocking; ends within ``grace``
        seconds (at least :data:`RELEASE_SECONDS` for the release) plus one catalog attempt
        whatever is down: when the catalog does not answer in time the leases are left to
        lapse after ``CACHELAYER_LEASE_SECONDS``, and any worker then takes the files over."""
        thread = self._thread
        if thread is None:
            return 0
        ends = time.monotonic() + self.grace
        self._stop.set()
        thread.join(self.grace)
        released = 0
        if "copier" in self.layer.__dict__:
            try:
                with retry_deadline(max(RELEASE_SECONDS, ends - time.monotonic())):
                    released = self.layer.catalog.queue.release_leases([self.layer.owner])
            except CacheLayerError as exc:
                log.warning(
                    "shutdown: leases not released (%s); they lapse within %g s and the files go "
                    "to the next worker",
                    describe(exc),
                    self.layer.settings.lease_seconds,
                )
        if thread.is_alive() or released:
            log.warning("shutdown: released %d file(s) in flight back to the queue", released)
        self._thread = None
        return released

    @property
    def workers_state(self) -> str:
        """``off`` (none configured), ``running``, ``failed`` or ``stopped``."""
        if not self.workers:
            return "off"
        if self.worker_error is not None:
            return "failed"
        return "running" if self._thread is not None and self._thread.is_alive() else "stopped"

    # ---- the sweep (issue 17.1): catch-up of missed webhooks -------------------------------

    def start_sweeper(self) -> None:
        """Start the sweep thread: one pass of :meth:`CacheLayer.sweep` (record and queue
        only; the copy workers, or ``cachelayer worker`` processes, copy) every
        ``sweep_interval`` seconds, the first one interval after the start. No-op when the
        interval is ``0`` or the thread runs."""
        if not self.sweep_interval or (self._sweeper is not None and self._sweeper.is_alive()):
            return
        self._sweep_stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="cachelayer-serve-sweep", daemon=True)
        self._sweeper.start()
        log.info("sweep every %g s", self.sweep_interval)

    def _sweep_loop(self) -> None:
        while not self._sweep_stop.wait(self.sweep_interval):
            self.sweep_once()

    def sweep_once(self) -> SweepSummary | None:
        """One pass, counted in the metrics; a failure is logged and counted, never raised
        (the next pass tries again from the same checkpoint). Returns the summary, or
        ``None`` when the pass failed."""
        try:
            summary = self.layer.sweep(copy=False, stop=self._sweep_stop)
        except Exception as exc:
            self.metrics.sweep_runs.labels("failed").inc()
            log.error("sweep failed: %s", " ".join(str(exc).split())[:500])
            return None
        if summary.stopped:
            return summary
        self.metrics.sweep_runs.labels("ok").inc()
        self.metrics.sweep_recovered_files.inc(summary.files_queued)
        self.sweep_ok_at = time.monotonic()
        if summary.files_queued or summary.predictions_lost:
            log.warning(
                "sweep: %d file(s) recovered, %d prediction(s) lost (webhooks that never arrived)",
                summary.files_queued,
                summary.predictions_lost,
            )
        for line in summary.errors + [f"{k}: {n}" for k, n in summary.failures.items()]:
            log.warning("sweep: %s", line)
        return summary

    def stop_sweeper(self) -> None:
        """Stop the sweep thread: a pass in progress ends at its next page or re-read,
        waited for at most 1 s (or ``grace``, if shorter), as the inbox is, so shutdown as a
        whole stays within ``grace`` plus a constant: a pass cut short leaves its checkpoint
        where it was (the next start lists the same window again). Blocking."""
        thread = self._sweeper
        if thread is None:
            return
        self._sweep_stop.set()
        thread.join(min(self.grace, 1.0))
        if thread.is_alive():
            log.warning("shutdown: the sweep is still in a call to Replicate; its pass is dropped")
        self._sweeper = None

    @property
    def sweep_health(self) -> dict[str, float] | None:
        """``{"last_ok_age_seconds": s}`` since the last pass that completed, or ``None``
        (none yet, or the sweep is off)."""
        at = self.sweep_ok_at
        return None if at is None else {"last_ok_age_seconds": round(time.monotonic() - at, 3)}

    # ---- the webhook inbox ----------------------------------------------------------------

    def start_inbox(self) -> None:
        """Start the thread acting on acknowledged webhook deliveries (recording, queueing);
        it runs whatever ``workers`` is, takes over what a crash left in the inbox at once,
        and is also started by the first delivery (an app mounted in another). Idempotent."""
        self._inbox_of(self.layer.webhooks)

    def stop_inbox(self) -> None:
        """Stop the inbox threads, waiting at most 1 s (or ``grace``, if shorter) for the
        deliveries in hand: whatever is not finished stays in the inbox (a recording cut
        short is rolled back) and is acted on at the next start. Blocking."""
        if self._inbox is not None and not self._inbox.stop(min(self.grace, 1.0)):
            log.warning("shutdown: the webhook inbox thread is still acting on a delivery")

    def _inbox_of(self, receiver: WebhookReceiver) -> WebhookInbox:
        if self._inbox is None:
            from cachelayer.webhook_inbox import WebhookInbox

            self._inbox = WebhookInbox(receiver, self._count_outcome)
        self._inbox.start()
        return self._inbox

    def _count_outcome(self, outcome: WebhookOutcome) -> None:
        self.metrics.webhook_deliveries.labels("queued" if outcome.files else "recorded").inc()

    # ---- routes ---------------------------------------------------------------------------

    async def webhook(self, request: Request) -> Response:
        """``POST /webhooks/replicate``: the signature headers are checked before any of the
        body is read; the body is verified as it streams into a bounded spool (at most
        ``MAX_UNVERIFIED_BODIES`` at once, else ``503`` with ``Retry-After``); a verified
        delivery is answered after one write into the inbox, which :meth:`start_inbox`'s
        thread then acts on. ``400``/``401``/``413`` refusals, ``503`` when the secret or the
        catalog cannot be reached."""
        receiver = self.layer.webhooks
        spool = None
        try:
            signed = parse_signed_headers(request.headers)
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > receiver.max_body_bytes:
                raise WebhookVerificationError("too_large", "webhook body too large", 413)
            key = receiver.cached_key()
            if key is None:
                key = await run_in_threadpool(receiver.key)  # read from Replicate once
            check = SignatureCheck(key, signed)
            try:
                await asyncio.wait_for(self._unverified.acquire(), UNVERIFIED_WAIT_SECONDS)
            except asyncio.TimeoutError:
                return self._unavailable("busy", "too many webhook bodies in flight")
            try:
                spool = await read_signed_body(request.stream(), check, receiver.max_body_bytes)
            finally:
                self._unverified.release()
            outcome = await run_in_threadpool(receiver.accept, check, spool)
        except WebhookVerificationError as exc:
            return self._reject(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        except (CacheLayerError, OSError) as exc:  # secret unreadable, catalog down, spool disk full
            return self._unavailable("unavailable", str(exc))
        finally:
            if spool is not None:
                spool.close()
        if outcome.duplicate:
            self.metrics.webhook_deliveries.labels("duplicate").inc()
        else:
            self._inbox_of(receiver).notify(outcome)
        return JSONResponse(outcome.to_dict(), 200)

    def _unavailable(self, reason: str, detail: str) -> Response:
        log.error("webhook not handled: %s", detail)
        self.metrics.webhook_rejections.labels(reason).inc()
        body = {"error": "unavailable", "detail": " ".join(detail.split())[:300]}
        return JSONResponse(body, 503, headers={"retry-after": "5"})

    def _reject(self, exc: WebhookVerificationError) -> Response:
        log.warning("webhook refused (%s): %s", exc.reason, exc)
        self.metrics.webhook_rejections.labels(exc.reason).inc()
        return JSONResponse({"error": exc.reason, "detail": str(exc)}, exc.status)

    def _ping(self) -> None:
        """``SELECT 1`` on the catalog, retried for up to ``PROBE_RETRY_SECONDS``."""
        with route_deadline(PROBE_RETRY_SECONDS):
            run_with_retries(lambda: self.layer.catalog.ping(), self.layer.settings.db_retry_seconds)

    async def healthz(self, request: Request) -> Response:
        try:
            await run_in_threadpool(self._ping)
        except Exception as exc:  # whatever the catalog raised: report it, never a 500
            body = {
                "status": "unavailable",
                "catalog": describe(exc),
                "workers": self.workers_state,
                "sweep": self.sweep_health,
            }
            return JSONResponse(body, 503, headers=retry_after())
        body = {"status": "ok", "catalog": "ok", "workers": self.workers_state, "sweep": self.sweep_health}
        return JSONResponse(body)

    def _render_metrics(self) -> bytes:
        with route_deadline(PROBE_RETRY_SECONDS):  # cachelayer_catalog_up 0 past it
            return self.metrics.render()

    async def metrics_route(self, request: Request) -> Response:
        body = await run_in_threadpool(self._render_metrics)
        return Response(body, 200, media_type=CONTENT_TYPE)


def create_app(
    layer: CacheLayer | None = None, *, workers: int | None = 0, grace: float = 10.0, **options: Any
) -> Starlette:
    """The ASGI app of ``cachelayer serve`` for ``layer`` (default: ``CacheLayer(**options)``
    from the environment), e.g. to mount in your own app::

        app.mount("/cachelayer", create_app(layer))   # then CACHELAYER_GATEWAY_URL=.../cachelayer

    ``workers``: copy threads started by the app's lifespan (``None``: the ``concurrency``
    setting; the default ``0`` starts none, so a mounted app only receives and serves while
    ``cachelayer worker`` copies). A mounted app's lifespan does not run: start them from
    yours with ``app.state.cachelayer.start_workers()`` / ``stop_workers()``.
    ``grace``: seconds shutdown waits for files in flight before releasing them to the queue.

    Nothing is opened here; the catalog and store are opened at startup (or first request).
    Raises :class:`~cachelayer.errors.ConfigError` for bad settings.
    """
    if layer is None:
        from cachelayer.layer import CacheLayer

        layer = CacheLayer(**options)
    elif options:
        raise TypeError("pass either a layer or settings keywords, not both")
    service = Service(layer, workers=layer.settings.concurrency if workers is None else workers, grace=grace)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(service.warm)
        service.start_workers()
        service.start_inbox()
        service.start_sweeper()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop_sweeper)
            await run_in_threadpool(service.stop_inbox)
            await run_in_threadpool(service.stop_workers)

    app = Starlette(
        routes=[
            Route("/webhooks/replicate", service.webhook, methods=["POST"]),
            Route("/files/{sig}/{key:path}", service.gateway.handle, methods=["GET", "HEAD"]),
            Route("/healthz", service.healthz, methods=["GET"]),
            Route("/metrics", service.metrics_route, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[Middleware(RouteDeadline)],
    )
    app.state.cachelayer = service
    return app
