"""Storage backends behind one interface (:class:`~cachelayer.storage.base.Store`).

:func:`open_store` turns a storage URL into a store; the backends themselves live in
:mod:`cachelayer.storage.s3` (imported lazily, it pulls in boto3) and
:mod:`cachelayer.storage.local`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from cachelayer.errors import ConfigError
from cachelayer.storage.base import ObjectInfo, Store

__all__ = ["ObjectInfo", "Store", "open_store"]


def open_store(url: str, **s3_options: Any) -> Store:
    """Build the store a storage URL names.

    * ``s3://bucket`` or ``s3://bucket/some/prefix`` -> ``S3Store(bucket, prefix,
      **s3_options)`` (``s3_options`` are :class:`~cachelayer.storage.s3.S3Store` keywords:
      ``endpoint_url``, ``region``, ``addressing_style``, credentials, sizes in bytes,
      ``cache_control``; ``None`` values are dropped so unset settings fall through to
      boto3's own environment handling). The prefix is kept as ``store.prefix`` without
      leading/trailing ``/``; keys passed to the store are full keys.
    * ``file:///abs/path`` (percent-decoded; ``file://localhost/...`` accepted) or a plain
      path (absolute, relative or ``~``) -> :class:`~cachelayer.storage.local.LocalStore`;
      ``s3_options`` are ignored.

    Raises :class:`cachelayer.errors.ConfigError` for any other scheme, an ``s3://`` URL
    without a bucket, a ``file://`` URL with a remote host, or query/fragment parts.
    Nothing is contacted; call :meth:`Store.check` to verify the store.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"unsupported storage URL {url!r}: expected s3://bucket[/prefix] or file:///path")
    url = url.strip()
    if url.startswith("s3://"):
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ConfigError(f"unsupported storage URL {url!r}: no query or fragment allowed")
        bucket = parts.netloc
        if not bucket or "@" in bucket or ":" in bucket:
            raise ConfigError(f"unsupported storage URL {url!r}: expected s3://bucket[/prefix]")
        from cachelayer.storage.s3 import S3Store

        options = {k: v for k, v in s3_options.items() if v is not None}
        return S3Store(bucket, parts.path.strip("/"), **options)
    if url.startswith("file:"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"unsupported storage URL {url!r}: file URLs must be local (file:///path)")
        if parts.query or parts.fragment:
            raise ConfigError(f"unsupported storage URL {url!r}: no query or fragment allowed")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"unsupported storage URL {url!r}: expected file:///absolute/path")
        from cachelayer.storage.local import LocalStore

        return LocalStore(path)
    scheme = urlsplit(url).scheme
    # A plain path: no scheme, or a Windows drive letter ("C:\\...") that urlsplit sees as one.
    if not scheme or (len(scheme) == 1 and url[1:2] == ":"):
        from cachelayer.storage.local import LocalStore

        return LocalStore(Path(url))
    raise ConfigError(
        f"unsupported storage URL {url!r}: expected s3://bucket[/prefix], file:///path or a directory path"
    )
