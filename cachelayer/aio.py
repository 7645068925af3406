"""``AsyncCacheLayer``: the library's calls for asyncio/trio apps, without blocking the loop.

One implementation, two faces: every call runs the synchronous
:class:`~cachelayer.layer.CacheLayer` (and so the one Replicate adapter, whichever client is
installed) in a worker thread through ``anyio.to_thread``; nothing about Replicate, waiting
or copying is written twice. So each call returns exactly what the synchronous one returns
and raises the same typed errors, and the event loop only awaits the thread. Waiting for a
prediction holds one worker thread (anyio's default limiter: 40) for up to
``CACHELAYER_WAIT_TIMEOUT``; a cancelled ``await`` lets that thread finish its call::

    from cachelayer.aio import AsyncCacheLayer

    async with AsyncCacheLayer() as layer:
        output = await layer.run("black-forest-labs/flux-schnell", input={"prompt": "a cat"})
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread

from cachelayer.expiry import OnExpired
from cachelayer.layer import CacheLayer
from cachelayer.prediction import Prediction

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Unpack

    from cachelayer.catalog.records import FileRecord
    from cachelayer.config import Settings
    from cachelayer.model_io import CreateParams, FileOutputLike, Input, Output
    from cachelayer.persist import PersistResult
    from cachelayer.prediction import PredictionLike
    from cachelayer.storage import Store
    from cachelayer.webhooks import WebhookOutcome

__all__ = ["AsyncCacheLayer"]

T = TypeVar("T")


class AsyncCacheLayer:
    """The async face of :class:`~cachelayer.layer.CacheLayer` (``run``, ``persist``,
    ``create``, ``handle_webhook``, ``resolve``, ``durable_url``).

    ``layer``: a :class:`CacheLayer` to wrap; otherwise one is built from ``options``
    (the same keywords and environment as :class:`CacheLayer`). ``.sync`` is the wrapped
    layer, for anything else (queries).
    """

    def __init__(
        self,
        layer: CacheLayer | None = None,
        *,
        settings: Settings | None = None,
        client: object = None,
        store: Store | None = None,
        auto_migrate: bool | None = None,
        **options: object,
    ) -> None:
        if layer is None:
            layer = CacheLayer(settings, client=client, store=store, auto_migrate=auto_migrate, **options)
        self.sync = layer

    @property
    def settings(self) -> Settings:
        return self.sync.settings

    async def _thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    # ---- the calls ----------------------------------------------------------------------

    async def run(
        self,
        ref: str,
        input: Input | None = None,
        *,
        on_expired: OnExpired = "raise",
        **params: Unpack[CreateParams],
    ) -> Output:
        """``await`` form of :meth:`CacheLayer.run`: same arguments, same durable output,
        same errors."""
        return await self._thread(self.sync.run, ref, input, on_expired=on_expired, **params)

    async def run_result(
        self,
        ref: str,
        input: Input | None = None,
        *,
        on_expired: OnExpired = "raise",
        **params: Unpack[CreateParams],
    ) -> PersistResult:
        """``await`` form of :meth:`CacheLayer.run_result`."""
        return await self._thread(self.sync.run_result, ref, input, on_expired=on_expired, **params)

    async def persist(self, prediction: str | PredictionLike, *, on_expired: OnExpired = "raise") -> Output:
        """``await`` form of :meth:`CacheLayer.persist`."""
        return await self._thread(self.sync.persist, prediction, on_expired=on_expired)

    async def persist_result(
        self, prediction: str | PredictionLike, *, on_expired: OnExpired = "raise"
    ) -> PersistResult:
        """``await`` form of :meth:`CacheLayer.persist_result`."""
        return await self._thread(self.sync.persist_result, prediction, on_expired=on_expired)

    async def create(
        self, ref: str, input: Input | None = None, **params: Unpack[CreateParams]
    ) -> Prediction:
        """``await`` form of :meth:`CacheLayer.create`: create with the webhook, record,
        return the typed prediction without waiting for it."""
        return await self._thread(self.sync.create, ref, input, **params)

    async def handle_webhook(
        self, headers: Mapping[str, str], body: bytes, *, enqueue: Callable[[str], object] | None = None
    ) -> WebhookOutcome:
        """``await`` form of :meth:`CacheLayer.handle_webhook` (for ASGI apps' own routes;
        ``enqueue`` runs in the worker thread too)."""
        return await self._thread(self.sync.handle_webhook, headers, body, enqueue=enqueue)

    async def enqueue(self, prediction: PredictionLike) -> list[FileRecord]:
        """``await`` form of :meth:`CacheLayer.enqueue`."""
        return await self._thread(self.sync.enqueue, prediction)

    async def resolve(self, url: str | FileOutputLike) -> str | None:
        """``await`` form of :meth:`CacheLayer.resolve`."""
        return await self._thread(self.sync.resolve, url)

    async def durable_url(self, record: FileRecord) -> str:
        """``await`` form of :meth:`CacheLayer.durable_url` (gateway mode may read the catalog)."""
        return await self._thread(self.sync.durable_url, record)

    async def aclose(self) -> None:
        """Close the wrapped layer's parts (connections, pools, the Replicate client's)."""
        await self._thread(self.sync.close)

    async def __aenter__(self) -> AsyncCacheLayer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
