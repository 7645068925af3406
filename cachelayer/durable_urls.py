"""Durable URLs: the one place that decides how a stored file's URL is rendered.

A :class:`UrlPolicy` is a value built from the settings (:meth:`UrlPolicy.from_settings`):
the URL mode (:data:`cachelayer.config.URL_MODES`, the one list of them), the public base
URL, the presign TTL and the gateway's base URL, secret and proxy switch. Stores only
expose capabilities (:meth:`~cachelayer.storage.base.Store.object_uri`,
:meth:`~cachelayer.storage.base.Store.presign`, ``can_presign``); this module turns them
into URLs, so no caller checks a store's class.

Every URL is rendered from the store the file was written to (``output_files.store``,
opened by that identity), never from the store configured now:

==============  ===============================================================================
``public``      ``{public base}/{key}`` (the key path-quoted, ``/`` kept)
``presigned``   a GET URL signed for ``presign_ttl`` seconds by the file's store; a store that
                cannot sign (a local directory) gives its ``file://`` URI
``s3``          the object's URI: ``s3://bucket/key`` or ``file:///root/key``
                (``store || '/' || key``, docs/SCHEMA.md)
``gateway``     ``{gateway base}/files/{hmac}/{key}`` (:mod:`cachelayer.gateway_urls`), served
                by ``cachelayer serve``: a redirect to a presigned URL (:meth:`UrlPolicy.redirect`)
                or the bytes
==============  ===============================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import quote

from cachelayer import gateway_urls
from cachelayer.config import MAX_PRESIGN_TTL, URL_MODES, UrlMode
from cachelayer.errors import ConfigError

if TYPE_CHECKING:
    from cachelayer.config import Settings
    from cachelayer.storage.base import Store

__all__ = ["UrlPolicy", "public_url"]


def public_url(base_url: str, key: str) -> str:
    """``{base_url}/{key}``: the key path-quoted (``/`` kept), a trailing ``/`` of the base
    ignored."""
    return f"{base_url.rstrip('/')}/{quote(key)}"


@dataclass(frozen=True)
class UrlPolicy:
    """How durable URLs are rendered (see the module's table).

    ``mode``: one of :data:`~cachelayer.config.URL_MODES`; ``public_base_url`` (needed by
    ``public``); ``presign_ttl``: seconds, 1..604800 (the SigV4 limit); ``gateway_url``:
    where clients reach ``cachelayer serve`` (needed by ``gateway``); ``gateway_secret``:
    called for the HMAC key when a gateway URL is first rendered (it may read the catalog);
    ``gateway_proxy``: the gateway streams bytes instead of redirecting.

    Raises :class:`~cachelayer.errors.ConfigError` for an unknown mode, a TTL out of range,
    or a mode without what it needs.
    """

    mode: UrlMode
    public_base_url: str | None = None
    presign_ttl: int = 3600
    gateway_url: str | None = None
    gateway_secret: Callable[[], bytes] | None = None
    gateway_proxy: bool = False

    def __post_init__(self) -> None:
        if self.mode not in URL_MODES:
            raise ConfigError(f"URL mode must be one of {', '.join(URL_MODES)}, got {self.mode!r}")
        if not 1 <= self.presign_ttl <= MAX_PRESIGN_TTL:
            raise ConfigError(
                f"presign TTL must be 1..{MAX_PRESIGN_TTL} seconds (SigV4 limit), got {self.presign_ttl}"
            )
        if self.mode == "public" and not self.public_base_url:
            raise ConfigError("public URLs need a public base URL (CACHELAYER_PUBLIC_BASE_URL)")
        if self.mode == "gateway" and not (self.gateway_url and self.gateway_secret):
            raise ConfigError("gateway URLs need CACHELAYER_GATEWAY_URL and a gateway secret")

    @classmethod
    def from_settings(
        cls, settings: Settings, gateway_secret: Callable[[], bytes] | None = None
    ) -> UrlPolicy:
        """The policy of ``settings`` (already validated); ``gateway_secret`` as the field."""
        return cls(
            mode=cast(UrlMode, settings.url_mode),
            public_base_url=settings.public_base_url,
            presign_ttl=settings.presign_ttl,
            gateway_url=settings.gateway_url,
            gateway_secret=gateway_secret,
            gateway_proxy=settings.gateway_proxy,
        )

    def render(self, key: str, store: Callable[[], Store], store_uri: str | None = None) -> str:
        """The durable URL of object ``key``; ``store`` returns the store it lives in and is
        called only by the modes that need it (not ``public`` nor ``gateway``, nor ``s3``
        for an ``s3://`` ``store_uri``: ``store || '/' || key``, so the catalog queries
        render it without building an S3 client). Raises
        :class:`~cachelayer.errors.StorageConfigError` when presigning fails (no credentials)."""
        if self.mode == "s3" and store_uri is not None and store_uri.startswith("s3://"):
            return f"{store_uri}/{key}"
        if self.mode == "public":
            assert self.public_base_url is not None  # __post_init__
            return public_url(self.public_base_url, key)
        if self.mode == "gateway":
            assert self.gateway_url is not None and self.gateway_secret is not None
            return gateway_urls.gateway_url(self.gateway_url, self.gateway_secret(), key)
        where = store()
        if self.mode == "presigned":
            signed = where.presign(key, self.presign_ttl)
            if signed is not None:
                return signed
        return where.object_uri(key)

    def redirects(self, store: Store) -> bool:
        """Whether the gateway answers a ``GET`` of a file in ``store`` with a redirect to a
        presigned URL (``False``: it streams the bytes: proxy mode, or a store that cannot
        sign)."""
        return not self.gateway_proxy and store.can_presign

    def redirect(self, store: Store, key: str) -> str | None:
        """The presigned URL the gateway redirects a ``GET`` of ``key`` to, or ``None`` when
        it streams the bytes instead (:meth:`redirects`)."""
        return store.presign(key, self.presign_ttl) if self.redirects(store) else None
