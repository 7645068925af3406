"""The gateway route: ``GET``/``HEAD /files/{signature}/{key}``.

A gateway URL (:mod:`cachelayer.gateway_urls`) never expires. Each ``GET`` is answered with

Each file is served from the store it was written to (``output_files.store``), whatever
store is configured now. A file with mirror copies (``file_copies``, :mod:`cachelayer.mirror`)
is served from its first copy present, primary first: a lookup of such a file asks the
primary store for the object (one ``HEAD``, cached with the lookup) and falls through to the
next stored copy when it answers not-found; a streamed read that finds the object gone
looks again the same way. The URL policy (:mod:`cachelayer.durable_urls`) decides between

* **redirect** (stores that presign, e.g. S3; the default): ``302 Found`` to a URL presigned for
  ``CACHELAYER_PRESIGN_TTL`` seconds. A presigned URL is reused for a quarter of the TTL and
  the redirect may be cached (``Cache-Control: public, max-age=<TTL/4>``), so a client or
  CDN following a cached redirect still holds a URL valid for at least half the TTL. Rails
  Active Storage's ``RedirectController`` does the same with a 5-minute URL.
* **proxy** (``CACHELAYER_GATEWAY_PROXY=1``, and always for a store that cannot presign,
  such as a local directory): the bytes themselves with ``Content-Type``, ``Content-Length``, ``ETag`` (the
  file's sha256), the configured ``Cache-Control``, ``Accept-Ranges: bytes``, single
  ``Range`` requests (``206``/``416``, RFC 9110 section 14), ``If-None-Match`` (``304``) and
  ``If-Range``.

``HEAD`` answers ``200`` with the object's headers in both modes, from the catalog, without
touching the store: a presigned URL is bound to its HTTP method (SigV4 signs it), so a
redirected ``HEAD`` would be refused by S3.

A signature that does not match its key answers ``403``; a well-signed key with no stored
file ``404``, or ``410 Gone`` when its prediction was deleted (``cachelayer delete``; a
stored file looked up in the last ``meta_ttl`` seconds may still be served until then);
none reaches the store. Lookups by key are cached in memory for
``meta_ttl`` seconds (a stored object is immutable).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from cachelayer import gateway_urls
from cachelayer.catalog.records import FileStatus
from cachelayer.catalog.retry import RAW_DATABASE_ERROR
from cachelayer.errors import CacheLayerError
from cachelayer.server.outage import describe, retry_after

if TYPE_CHECKING:
    from cachelayer.layer import CacheLayer
    from cachelayer.server.metrics import ServerMetrics

log = logging.getLogger("cachelayer.server")

__all__ = ["MAX_RANGE_HEADER", "Gateway", "parse_range"]

#: Bytes read from the store per chunk when proxying.
CHUNK = 256 * 1024
_SECURITY = {"x-content-type-options": "nosniff"}


#: Longest ``Range`` header read, in characters. Real clients send a few dozen; a longer
#: one is refused with ``416`` before any parsing (RFC 9110 section 14.2 lets a server
#: refuse or ignore a range set it finds unreasonable).
MAX_RANGE_HEADER = 1024
_OWS = " \t"  # RFC 9110 section 5.6.3: optional whitespace is SP / HTAB


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The byte range ``(first, last)`` (inclusive) a ``Range`` header asks of a
    ``size``-byte object; ``None`` to send the whole object (no header, a malformed one, or
    several ranges, which RFC 9110 section 14.2 lets a server ignore); ``"unsatisfiable"``
    when the range starts past the end or the header is longer than
    :data:`MAX_RANGE_HEADER` characters (answer ``416``).

    Plain string operations in time linear in the header (no regular expression: a
    backtracking one took 49 s of the event loop on 128 kB of spaces, issue 17)."""
    if not header:
        return None
    if len(header) > MAX_RANGE_HEADER:
        return "unsatisfiable"
    unit, eq, spec = header.partition("=")
    if not eq or unit.strip(_OWS).lower() != "bytes":
        return None
    first, dash, last = spec.partition("-")
    first, last = first.strip(_OWS), last.strip(_OWS)
    if not dash or not (first or last) or not all(_digits(t) for t in (first, last) if t):
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return (max(0, size - n), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return (start, min(end, size - 1))


@dataclass(frozen=True)
class _Meta:
    key: str
    size: int
    content_type: str
    etag: str | None
    store: str  # the uri of the store the served copy lives in
    object_key: str  # the served copy's key in that store (a mirror's may differ from ``key``)
    redirect: bool  # a GET is redirected to a presigned URL (else the bytes are streamed)
    gone: bool = False  # its prediction was deleted: 410


def _gone(key: str) -> _Meta:
    return _Meta(key, 0, "", None, "", key, False, gone=True)


class Gateway:
    """Answers gateway requests for one :class:`~cachelayer.CacheLayer` (its settings, store
    and catalog). Build it cheaply; :meth:`prepare` (called at startup or on the first
    request) reads the secret and builds the store off the event loop."""

    def __init__(
        self,
        layer: CacheLayer,
        metrics: ServerMetrics,
        *,
        meta_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        max_entries: int = 100_000,
    ) -> None:
        self.layer = layer
        self.metrics = metrics
        self.meta_ttl = meta_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        s = layer.settings
        self.reuse = s.presign_ttl // 4
        self.cache_control = s.cache_control or "public, max-age=31536000, immutable"
        self._secret: bytes | None = None
        self._meta: dict[str, tuple[float, _Meta | None]] = {}
        self._signed: dict[str, tuple[float, str]] = {}

    # ---- parts ----------------------------------------------------------------------------

    def _prepare_sync(self) -> None:
        """Build the configured store and read the secret (retried as every catalog call;
        raises :class:`~cachelayer.errors.CatalogOutageError` past the budget)."""
        from cachelayer.catalog.retry import run_with_retries
        from cachelayer.catalog.server_state import gateway_secret

        layer = self.layer
        layer.store  # noqa: B018 -- built here, off the event loop
        configured = layer.settings.gateway_secret
        self._secret = run_with_retries(
            lambda: gateway_secret(layer.engine, configured), layer.settings.db_retry_seconds
        )

    async def prepare(self) -> None:
        """Read the gateway secret (generating it on first use) and build the store."""
        if self._secret is None:
            await run_in_threadpool(self._prepare_sync)

    # ---- lookups ---------------------------------------------------------------------------

    def _lookup_sync(self, key: str) -> _Meta | None:
        files = self.layer.catalog.files
        rec = files.stored_by_key(key)
        if rec is None:
            return _gone(key) if files.deleted_by_key(key) else None
        where, okey = rec.store, key
        store = self.layer.store_for(where)
        size, ctype = rec.size, rec.content_type
        mirrors = [
            c
            for c in self.layer.catalog.copies.of_files([rec.id]).get(rec.id, [])
            if c.status == FileStatus.STORED
        ]
        if size is None or mirrors:
            info = store.head(key)
            for copy in mirrors if info is None else ():  # the primary object is missing
                store = self.layer.store_for(copy.store)
                if (info := store.head(copy.key)) is not None:
                    where, okey = copy.store, copy.key
                    break
            if info is None:
                return None
            size, ctype = size if size is not None else info.size, ctype or info.content_type
        etag = f'"{rec.sha256}"' if rec.sha256 else None
        redirect = self.layer.url_policy.redirects(store)
        return _Meta(key, int(size), ctype or "application/octet-stream", etag, where, okey, redirect)

    def _lookup_and_sign(self, key: str, sign: bool) -> tuple[_Meta | None, str | None]:
        """One trip off the event loop on a cache miss: the file and, if ``sign`` and its
        store redirects, its URL (catalog retries end by the request's
        :class:`~cachelayer.server.outage.RouteDeadline`)."""
        meta = self._lookup_sync(key)
        sign = sign and meta is not None and meta.redirect and not meta.gone
        return meta, self._presign_sync(meta) if meta is not None and sign else None

    async def _lookup(self, key: str, *, sign: bool) -> tuple[_Meta | None, str | None]:
        """The stored file of ``key`` (cached) and, when ``sign`` and both caches missed, a
        freshly presigned URL fetched in the same thread hop."""
        now = time.monotonic()
        hit = self._meta.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], None
        sign = sign and self._cached_url(key) is None
        meta, url = await run_in_threadpool(self._lookup_and_sign, key, sign)
        if len(self._meta) >= self.max_entries:
            self._meta.clear()
        self._meta[key] = (now + (self.meta_ttl if meta else self.negative_ttl), meta)
        if url is not None:
            self._remember_url(key, url, now)
        return meta, url

    def _presign_sync(self, meta: _Meta) -> str:
        url = self.layer.url_policy.redirect(self.layer.store_for(meta.store), meta.object_key)
        assert url is not None  # meta.redirect: the store presigns
        return url

    def _cached_url(self, key: str) -> str | None:
        hit = self._signed.get(key)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def _remember_url(self, key: str, url: str, signed_at: float) -> None:
        if self.reuse >= 1:
            if len(self._signed) >= self.max_entries:
                self._signed.clear()
            self._signed[key] = (signed_at + self.reuse, url)

    async def _presigned(self, meta: _Meta) -> str:
        url = self._cached_url(meta.key)
        if url is None:
            now = time.monotonic()
            url = await run_in_threadpool(self._presign_sync, meta)
            self._remember_url(meta.key, url, now)
        return url

    # ---- the route ---------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """The route's endpoint: answer one ``GET``/``HEAD`` (never raises; storage or
        catalog failures answer ``503`` with ``Retry-After``)."""
        started = time.perf_counter()
        try:
            response = await self._answer(request)
        except (CacheLayerError, RAW_DATABASE_ERROR) as exc:  # the store or catalog failed
            log.warning("gateway: 503 (%s)", describe(exc))
            headers = {**retry_after(), **_SECURITY}
            response = Response("storage unavailable\n", 503, media_type="text/plain", headers=headers)
        self.metrics.gateway(response.status_code, time.perf_counter() - started)
        return response

    async def _answer(self, request: Request) -> Response:
        await self.prepare()
        assert self._secret is not None
        sig = request.path_params.get("sig", "")
        key = request.path_params.get("key", "")
        if not key:
            return Response("not found\n", 404, media_type="text/plain", headers=_SECURITY)
        if not gateway_urls.verify(self._secret, key, sig):
            return Response("forbidden: bad signature\n", 403, media_type="text/plain", headers=_SECURITY)
        meta, fresh = await self._lookup(key, sign=request.method == "GET")
        if meta is None:
            return Response("not found\n", 404, media_type="text/plain", headers=_SECURITY)
        if meta.gone:
            return Response("gone: deleted\n", 410, media_type="text/plain", headers=_SECURITY)
        if request.method == "HEAD":
            headers = self._object_headers(meta)
            if meta.redirect:
                headers["cache-control"] = "no-store"
            return Response(b"", 200, headers=headers)
        if meta.redirect:
            url = fresh or await self._presigned(meta)
            cache = f"public, max-age={self.reuse}" if self.reuse >= 1 else "no-store"
            return Response(b"", 302, headers={"location": url, "cache-control": cache, **_SECURITY})
        return await self._stream(request, meta)

    def _object_headers(self, meta: _Meta) -> dict[str, str]:
        headers = {
            "content-type": meta.content_type,
            "content-length": str(meta.size),
            "accept-ranges": "bytes",
            "cache-control": self.cache_control,
            **_SECURITY,
        }
        if meta.etag:
            headers["etag"] = meta.etag
        return headers

    async def _stream(self, request: Request, meta: _Meta) -> Response:
        headers = self._object_headers(meta)
        inm = request.headers.get("if-none-match")
        if meta.etag and inm and (inm.strip() == "*" or meta.etag in [t.strip() for t in inm.split(",")]):
            del headers["content-length"]
            return Response(b"", 304, headers=headers)
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        if wanted and if_range and if_range.strip() != meta.etag:
            wanted = None  # the client's copy is another version: send it all
        rng = parse_range(wanted, meta.size)
        if rng == "unsatisfiable":
            return Response(
                b"",
                416,
                headers={"content-range": f"bytes */{meta.size}", "accept-ranges": "bytes", **_SECURITY},
            )
        status, start, end = 200, 0, meta.size - 1
        if isinstance(rng, tuple):
            status, (start, end) = 206, rng
            headers["content-range"] = f"bytes {start}-{end}/{meta.size}"
        headers["content-length"] = str(max(0, end - start + 1))
        if meta.size == 0:
            return Response(b"", 200, headers=headers)
        try:
            stream = await run_in_threadpool(self._open, meta, start, end)
        except FileNotFoundError:
            self._meta.pop(meta.key, None)
            return Response("not found\n", 404, media_type="text/plain", headers=_SECURITY)
        return StreamingResponse(_chunks(stream), status, headers=headers)

    def _open(self, meta: _Meta, start: int, end: int) -> BinaryIO:
        """Bytes ``start``-``end`` of the served copy; when it is gone, of the next copy
        present (looked up again: a mirror's when the primary object was deleted)."""
        try:
            return self.layer.store_for(meta.store).open_range(meta.object_key, start, end)
        except FileNotFoundError:
            again = self._lookup_sync(meta.key)
            if again is None or (again.store, again.object_key) == (meta.store, meta.object_key):
                raise
            self._meta[meta.key] = (time.monotonic() + self.meta_ttl, again)
            return self.layer.store_for(again.store).open_range(again.object_key, start, end)


async def _chunks(stream: BinaryIO) -> AsyncIterator[bytes]:
    """The stream's bytes, read off the event loop; always closed (also on disconnect)."""
    try:
        while True:
            chunk = await run_in_threadpool(stream.read, CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        stream.close()
