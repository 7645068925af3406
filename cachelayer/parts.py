"""``Parts``: the composition root of :class:`cachelayer.layer.CacheLayer`.

Each part (engine, catalog, store and the stores files were written to, URL policy,
Replicate adapter and API, fetcher, copier, mirror, persister, deleter) is built on first
use from the settings, so the catalog queries need the catalog alone (no Replicate token,
no reachable store) and import nothing copying needs (``tests/test_startup.py``). The
facade's calls live in :mod:`cachelayer.layer`; neither holds policy.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast

from cachelayer.config import Settings
from cachelayer.durable_urls import UrlPolicy
from cachelayer.errors import ConfigError, ReplicateConfigError
from cachelayer.leases import new_owner

if TYPE_CHECKING:
    from typing import Self

    from sqlalchemy import Engine

    from cachelayer.catalog import Catalog
    from cachelayer.copier import Copier
    from cachelayer.delete import Deleter
    from cachelayer.fetch import Fetcher
    from cachelayer.mirror import Mirror
    from cachelayer.persist import Persister
    from cachelayer.replicate_api import ReplicateApi
    from cachelayer.replicate_clients import ReplicateAdapter
    from cachelayer.storage import Store

__all__ = ["Parts"]


class Parts:
    """The parts of a :class:`~cachelayer.layer.CacheLayer`, each built on first use (see
    that class for the arguments and the errors raised); :meth:`close` releases those that
    were built. Parts are built under one lock."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        client: object = None,
        store: Store | None = None,
        auto_migrate: bool | None = None,
        **options: object,
    ) -> None:
        if settings is not None and options:
            raise ConfigError("pass either settings or keyword options, not both")
        self.settings = settings or Settings.from_env(**cast("dict[str, Any]", options))
        self._client = client
        self._store = store
        self._stores: dict[str, Store] = {}  # other stores files live in, by their uri
        self._auto_migrate = auto_migrate
        self._lock = threading.RLock()
        self.owner = new_owner()

    @cached_property
    def engine(self) -> Engine:
        """The catalog's SQLAlchemy engine (migrated on first use when ``auto_migrate``)."""
        from cachelayer.catalog.db import ensure_schema, make_engine

        s = self.settings
        engine = make_engine(
            s.database_url, pool_size=max(5, s.concurrency), retry_seconds=s.db_retry_seconds
        )
        auto = self._auto_migrate
        if auto is None:
            auto = engine.dialect.name == "sqlite"
        ensure_schema(engine, auto_migrate=auto)
        return engine

    @cached_property
    def catalog(self) -> Catalog:
        """The catalog. Raises :class:`~cachelayer.errors.CatalogUnavailableError` when it
        cannot be opened."""
        from cachelayer.catalog import Catalog

        with self._lock:
            return Catalog(self.engine)

    @cached_property
    def store(self) -> Store:
        """The configured storage backend, where new files go; building it sends no request
        (the copier checks it)."""
        return self._store if self._store is not None else self._open_store(self.settings.storage_url)

    def _open_store(self, url: str) -> Store:
        from cachelayer.storage import open_store

        s = self.settings
        return open_store(
            url,
            endpoint_url=s.s3_endpoint_url,
            region=s.s3_region,
            addressing_style=s.s3_addressing_style,
            max_pool_connections=max(10, s.concurrency * 4),
        )

    def store_for(self, uri: str) -> Store:
        """The store a file recorded with ``store = uri`` lives in (``FileRecord.store``):
        :attr:`store` when it is that one, else the store of that identity opened with the
        current settings (endpoint, region, addressing style; credentials from boto3's
        chain), built once per URI. Sends no request. Raises
        :class:`~cachelayer.errors.ConfigError` for a URI ``open_store`` refuses."""
        # the configured store only if already built: comparing with it must not build it
        # (an S3 client) for a file recorded in another store (tests/test_startup.py)
        configured = self._store if self._store is not None else self.__dict__.get("store")
        if configured is not None and uri == configured.uri:
            return configured
        with self._lock:
            opened = self._stores.get(uri)
            if opened is None:
                opened = self._stores[uri] = self._open_store(uri)
            return opened

    @cached_property
    def url_policy(self) -> UrlPolicy:
        """How durable URLs are rendered (:mod:`cachelayer.durable_urls`), from the settings;
        the gateway secret is read from the catalog when a gateway URL is first rendered."""
        s = self.settings

        def secret() -> bytes:
            from cachelayer.catalog.server_state import gateway_secret

            return gateway_secret(self.engine, s.gateway_secret)

        return UrlPolicy.from_settings(s, secret)

    @cached_property
    def adapter(self) -> ReplicateAdapter:
        """Replicate behind one interface, the installed client (1.x or 2.x) underneath
        (token, base URL and CA bundle from the settings). Raises
        :class:`~cachelayer.errors.ReplicateConfigError` without a token."""
        from cachelayer.replicate_clients import open_adapter

        s = self.settings
        if self._client is None and not s.replicate_api_token:
            raise ReplicateConfigError("REPLICATE_API_TOKEN is not set: the Replicate API needs your token")
        token, base_url = s.replicate_api_token, s.replicate_base_url
        return open_adapter(self._client, api_token=token, base_url=base_url, ca_bundle=s.ca_bundle)

    @property
    def client(self) -> object:
        """The ``replicate`` client object (1.x ``replicate.Client``, 2.x
        ``replicate.Replicate``) behind :attr:`adapter`, for the caller's own calls."""
        return self.adapter.client

    @cached_property
    def api(self) -> ReplicateApi:
        """Replicate's API (create with retries, get, bounded wait, list)."""
        from cachelayer.replicate_api import ReplicateApi

        return ReplicateApi(self.adapter, wait_timeout=self.settings.wait_timeout)

    @cached_property
    def fetcher(self) -> Fetcher:
        """The downloader (allow-list checked on the connected address, deadlines)."""
        from cachelayer.fetch import Fetcher

        s = self.settings
        return Fetcher(
            s.allowed_hosts,
            max_bytes=s.max_file_bytes,
            pool_size=max(10, s.concurrency),
            retries=s.download_retries,
            ca_bundle=s.ca_bundle,
            download_timeout=s.download_timeout,
            stall_bytes_per_second=s.stall_bytes_per_second,
            stall_window=s.stall_window,
            api_token=s.replicate_api_token,
            token_hosts=s.token_hosts,
            api_base_url=s.replicate_base_url,
            proxy=s.proxy,
        )

    @cached_property
    def copier(self) -> Copier:
        """The copier of single files; building it checks that the bucket exists and is
        writable. Raises ``BucketNotFoundError`` / ``StorageAuthError`` / ``StorageConfigError``."""
        from cachelayer.copier import Copier

        with self._lock:
            self.store.check()
            copier = Copier(
                self.settings,
                self.catalog,
                self.store,
                self.fetcher,
                lambda pid: self.api.get(pid),
                owner=self.owner,
            )
            copier.on_stored = self.mirror.after_store if self.settings.mirror_urls else None
            return copier

    @cached_property
    def mirror(self) -> Mirror:
        """The mirror stores, each opened by :meth:`store_for` (:mod:`cachelayer.mirror`)."""
        from cachelayer.mirror import Mirror

        return Mirror.build(self.settings, self.catalog, self.store_for, self.store, self.owner)

    @cached_property
    def persister(self) -> Persister:
        """The persist policy (record, copy, fallbacks, rerun at most once). The copier's
        bucket check comes first, before the catalog and SQLAlchemy (docs/BENCHMARKS.md)."""
        from cachelayer.persist import Persister

        with self._lock:
            copier = self.copier
            return Persister(self.settings, self.catalog, self.store, copier, lambda: self.api)

    @cached_property
    def deleter(self) -> Deleter:
        """The :class:`cachelayer.delete.Deleter` (catalog + each file's store)."""
        from cachelayer.delete import Deleter

        r = self.settings.retention
        return Deleter(self.catalog, self.store_for, retention=r, manifest_store=self.store.uri)

    def close(self) -> None:
        """Release connections, pools and background threads (of the parts that were built)."""
        built = self.__dict__
        if "mirror" in built:
            self.mirror.close()
        if "copier" in built:
            self.copier.heartbeat.stop()
        if "fetcher" in built:
            self.fetcher.close()
        if "store" in built:
            self.store.close()
        for other in self._stores.values():
            other.close()
        if "engine" in built:
            self.engine.dispose()
        if "adapter" in built:  # rebuilt on next use, as the engine's pool is
            built.pop("api", None)
            built.pop("adapter").close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
