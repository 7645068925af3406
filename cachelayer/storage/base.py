"""The one small interface every storage backend implements.

A *store* holds *objects* named by *keys* (``/``-separated, no leading slash). Two
backends exist: :class:`cachelayer.storage.s3.S3Store` (any S3-compatible service through
boto3) and :class:`cachelayer.storage.local.LocalStore` (a directory on disk). Policy
(which key, when a file is stale) lives elsewhere; a store only moves bytes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

UrlMode = Literal["public", "presigned", "s3"]


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one object without reading it.

    ``size`` is in bytes; ``metadata`` is the user metadata written with the object
    (cachelayer writes ``sha256`` and ``source-url`` there); ``content_type`` as stored.
    """

    key: str
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Store(abc.ABC):
    """A place objects go.

    Implementations must make :meth:`put` atomic: after it returns the object is complete;
    if it raises (including because ``body.read`` raised), no object or a previous complete
    object remains under the key, never a partial one.
    """

    #: Identifies the store in the catalog, e.g. ``s3://bucket`` or ``file:///srv/objects``.
    uri: str

    @abc.abstractmethod
    def check(self) -> None:
        """Verify the store can be used (bucket exists, credentials work, directory writable).

        Raises :class:`cachelayer.errors.BucketNotFoundError`,
        :class:`cachelayer.errors.StorageAuthError` or
        :class:`cachelayer.errors.StorageConfigError`.
        """

    @abc.abstractmethod
    def put(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        cache_control: str | None = None,
    ) -> None:
        """Stream ``body`` (read until ``b""``; it need not be seekable) into ``key``.

        Memory use is bounded by the backend's part size, not by the object size.
        Raises :class:`cachelayer.errors.StorageError` on backend failure; an exception
        raised by ``body.read`` propagates unchanged after the partial upload is discarded.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or ``None`` if no object has that key."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for streaming reads. Raises ``FileNotFoundError`` if absent."""

    @abc.abstractmethod
    def object_uri(self, key: str) -> str:
        """The canonical URI of an object: ``s3://bucket/key`` or ``file:///abs/path``."""

    @abc.abstractmethod
    def url(
        self,
        key: str,
        mode: UrlMode,
        *,
        public_base_url: str | None = None,
        presign_ttl: int = 3600,
    ) -> str:
        """The durable URL handed to callers.

        ``public``: ``{public_base_url}/{key}`` (key path-quoted); ``presigned``: a GET URL
        signed for ``presign_ttl`` seconds (S3 only; the local store returns its ``file://``
        URI); ``s3``: :meth:`object_uri`. Raises :class:`cachelayer.errors.ConfigError` if
        ``public`` is asked without a base URL.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pools and clients. Default: nothing to release."""
