"""``AsyncCacheLayer``: the library's calls for asyncio/trio apps, without blocking the loop.

Talking to Replicate uses the ``replicate`` client's own async API (``async_create`` and
``GET /v1/predictions/{id}`` through its ``httpx.AsyncClient``, polling every
``client.poll_interval`` seconds with ``anyio.sleep``); everything that blocks (catalog
queries, downloads, uploads) runs in a worker thread through ``anyio.to_thread``, reusing the
synchronous :class:`~cachelayer.layer.CacheLayer` underneath, so each call returns exactly
what the synchronous one returns and raises the same typed errors::

    from cachelayer.aio import AsyncCacheLayer

    async with AsyncCacheLayer() as layer:
        output = await layer.run("black-forest-labs/flux-schnell", input={"prompt": "a cat"})
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from cachelayer import replicate_api
from cachelayer.errors import PredictionNotFoundError, WaitTimeoutError
from cachelayer.expiry import OnExpired
from cachelayer.layer import CacheLayer
from cachelayer.prediction import Prediction

if TYPE_CHECKING:
    from replicate.client import Client as ReplicateClient

    from cachelayer.catalog.records import FileRecord
    from cachelayer.persist import PersistResult

__all__ = ["AsyncCacheLayer"]

T = TypeVar("T")


class AsyncCacheLayer:
    """The async face of :class:`~cachelayer.layer.CacheLayer` (``run``, ``persist``,
    ``create``, ``handle_webhook``, ``resolve``, ``durable_url``).

    ``layer``: a :class:`CacheLayer` to wrap; otherwise one is built from ``options``
    (the same keywords and environment as :class:`CacheLayer`). ``.sync`` is the wrapped
    layer, for anything else (queries). The async Replicate client is the layer's
    (its ``httpx.AsyncClient`` side), or with ``CACHELAYER_CA_BUNDLE`` one with an async
    transport trusting that bundle.
    """

    def __init__(self, layer: CacheLayer | None = None, **options: Any) -> None:
        self.sync = layer if layer is not None else CacheLayer(**options)
        self._aclient: ReplicateClient | None = None

    @property
    def settings(self) -> Any:
        return self.sync.settings

    @property
    def aclient(self) -> ReplicateClient:
        """The ``ReplicateClient`` used for its async calls."""
        if self._aclient is None:
            s = self.sync.settings
            if s.ca_bundle:  # the layer's client carries a sync transport for the bundle
                import httpx
                from replicate.client import Client

                transport = httpx.AsyncHTTPTransport(verify=ssl.create_default_context(cafile=s.ca_bundle))
                self._aclient = Client(
                    api_token=s.replicate_api_token, base_url=s.replicate_base_url, transport=transport
                )
            else:
                self._aclient = self.sync.client
        return self._aclient

    async def _thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    # ---- Replicate, asynchronously ------------------------------------------------------

    async def _create(self, ref: str, input: dict[str, Any], **params: Any) -> Prediction:
        """Create through :meth:`cachelayer.replicate_api.ReplicateApi.create` (raw JSON,
        429/503 retried) in a worker thread: encoding file inputs may upload them."""
        return await self._thread(self.sync.api.create, ref, input, **params)

    async def _get(self, prediction_id: str) -> Prediction:
        what = f"cannot read prediction {prediction_id}"
        with replicate_api._errors(what, not_found=PredictionNotFoundError):
            resp = await self.aclient._async_request("GET", f"/v1/predictions/{prediction_id}")
        return Prediction.from_json(dict(resp.json()))

    async def _wait(self, prediction_id: str, deadline: float | None = None) -> Prediction:
        """Poll with async requests until the prediction is terminal, at most
        ``CACHELAYER_WAIT_TIMEOUT`` seconds (as :meth:`ReplicateApi.wait`), or until
        ``deadline`` (``anyio.current_time()``) when given."""
        limit = self.sync.settings.wait_timeout
        if deadline is None and limit > 0:
            deadline = anyio.current_time() + limit
        while True:
            prediction = await self._get(prediction_id)
            if prediction.terminal:
                return prediction
            if deadline is not None and anyio.current_time() >= deadline:
                raise WaitTimeoutError(prediction_id, prediction.status.value, limit)
            await anyio.sleep(self.aclient.poll_interval)

    # ---- the calls ----------------------------------------------------------------------

    async def run(
        self, ref: str, input: dict[str, Any] | None = None, *, on_expired: OnExpired = "raise", **params: Any
    ) -> Any:
        """``await`` form of :meth:`CacheLayer.run`: same arguments, same durable output,
        same errors."""
        result = await self.run_result(ref, input, on_expired=on_expired, **params)
        return await self._thread(self.sync.output_of, result, on_expired)

    async def run_result(
        self, ref: str, input: dict[str, Any] | None = None, *, on_expired: OnExpired = "raise", **params: Any
    ) -> PersistResult:
        """``await`` form of :meth:`CacheLayer.run_result`."""
        await self._thread(getattr, self.sync, "persister")  # check the store before paying
        limit = self.sync.settings.wait_timeout
        deadline = anyio.current_time() + limit if limit > 0 else None
        params["wait"] = replicate_api.prefer_wait(params.get("wait", True), limit if limit > 0 else None)
        created = await self._create(ref, input or {}, **params)
        final = created if created.terminal else await self._wait(created.id, deadline)
        if not final.succeeded:
            await self._thread(self.sync.catalog.predictions.record, final)
            replicate_api.check_succeeded(final)
        return await self._thread(self.sync.persister.persist, final, on_expired)

    async def persist(self, prediction: Any, *, on_expired: OnExpired = "raise") -> Any:
        """``await`` form of :meth:`CacheLayer.persist` (a running prediction is waited for
        with async polls, then copied in a thread)."""
        result = await self.persist_result(prediction, on_expired=on_expired)
        return await self._thread(self.sync.output_of, result, on_expired)

    async def persist_result(self, prediction: Any, *, on_expired: OnExpired = "raise") -> PersistResult:
        """``await`` form of :meth:`CacheLayer.persist_result`."""
        await self._thread(getattr, self.sync, "persister")
        pid = prediction if isinstance(prediction, str) else Prediction.of(prediction).id
        await self._wait(pid)  # the wait happens here, off the loop; the sync call re-reads once
        return await self._thread(self.sync.persist_result, prediction, on_expired=on_expired)

    async def create(self, ref: str, input: dict[str, Any] | None = None, **params: Any) -> Prediction:
        """``await`` form of :meth:`CacheLayer.create`: create with the webhook, record,
        return the typed prediction without waiting for it."""
        from cachelayer.webhooks import create_params, record_created

        params = create_params(self.sync.settings.webhook_url, params)
        prediction = await self._create(ref, input or {}, **params)
        await self._thread(lambda: record_created(self.sync.catalog)(prediction))
        return prediction

    async def handle_webhook(self, headers: Any, body: bytes) -> Any:
        """``await`` form of :meth:`CacheLayer.handle_webhook` (for ASGI apps' own routes)."""
        return await self._thread(self.sync.handle_webhook, headers, body)

    async def enqueue(self, prediction: Any) -> list[FileRecord]:
        """``await`` form of :meth:`CacheLayer.enqueue`."""
        return await self._thread(self.sync.enqueue, prediction)

    async def resolve(self, url: str) -> str | None:
        """``await`` form of :meth:`CacheLayer.resolve`."""
        return await self._thread(self.sync.resolve, url)

    async def durable_url(self, record: FileRecord) -> str:
        """``await`` form of :meth:`CacheLayer.durable_url` (gateway mode may read the catalog)."""
        return await self._thread(self.sync.durable_url, record)

    async def aclose(self) -> None:
        """Close the async HTTP client and the wrapped layer's parts."""
        client = self._aclient
        if client is not None:
            async_client = client.__dict__.get("_Client__async_client")
            if async_client is not None:
                await async_client.aclose()
        await self._thread(self.sync.close)

    async def __aenter__(self) -> AsyncCacheLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
