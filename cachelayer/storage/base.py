"""The one small interface every storage backend implements.

A *store* holds *objects* named by *keys* (``/``-separated, no leading slash). Two
backends exist: :class:`cachelayer.storage.s3.S3Store` (any S3-compatible service through
boto3) and :class:`cachelayer.storage.local.LocalStore` (a directory on disk). Policy
(which key, when a file is stale, how its URL is rendered: :mod:`cachelayer.durable_urls`)
lives elsewhere; a store moves bytes and says what it can do (``can_presign``).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar, cast
from urllib.parse import quote, unquote_to_bytes

#: Bytes all user metadata of one object may take: names plus values, UTF-8 (AWS S3
#: "Working with object metadata": "the user-defined metadata is limited to 2 KB in size").
MAX_METADATA_BYTES = 2048
_METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


def encode_metadata(metadata: Mapping[str, str], *, reserve: int = 0) -> dict[str, str]:
    """User metadata as it travels in ``x-amz-meta-*`` headers: names lower-cased, every
    value **percent-encoded** (the UTF-8 bytes of the value, each byte outside
    ``[A-Za-z0-9_.~/-]`` as ``%XX``; a lone surrogate, which UTF-8 cannot carry, as the
    three bytes Python's ``surrogatepass`` gives it, e.g. ``\ud800`` -> ``%ED%A0%80``).

    Why: S3 user metadata values must be US-ASCII, and non-ASCII ones must be encoded
    ("when using REST ... non-ASCII characters ... must be encoded", e.g. RFC 2047; AWS S3
    "Working with object metadata", ``UsingMetadata.html#UserMetadata``); HTTP headers
    cannot carry CR, LF or NUL either. Percent-encoding is lossless and self-contained
    (:func:`decode_metadata` reverses it for every value); it is also the encoding
    cachelayer always gave ``output-path``, so older objects read back the same. Every
    value is encoded, ASCII or not, so a ``%`` in a value is never ambiguous (values in
    ``[A-Za-z0-9_.~/-]``, such as a Replicate prediction id or a hex ``sha256``, are
    unchanged).

    All names and encoded values together are kept within :data:`MAX_METADATA_BYTES`
    minus ``reserve`` (bytes the caller adds later, e.g. ``sha256``): the longest values
    are cut (whole characters, at their end) until they fit. Metadata describes an object;
    the catalog keeps the full values. Raises ``ValueError`` for a name that is not
    ``[a-z0-9][a-z0-9-]*`` (after lower-casing) or names that alone do not fit.
    """
    out = {}
    for name, value in metadata.items():
        key = str(name).lower()
        if not _METADATA_NAME.fullmatch(key):
            raise ValueError(f"bad user metadata name {name!r}: use [a-z0-9-]")
        out[key] = _encode_value(str(value))
    budget = MAX_METADATA_BYTES - reserve
    names = sum(len(k) for k in out)
    if names > budget:
        raise ValueError(f"user metadata names take {names} bytes, more than the {budget} left")
    originals = {str(k).lower(): str(v) for k, v in metadata.items()}
    while names + sum(len(v) for v in out.values()) > budget:
        longest = max(out, key=lambda k: len(out[k]))
        room = len(out[longest]) - (names + sum(len(v) for v in out.values()) - budget)
        out[longest] = _encode_value(_fitting_prefix(originals[longest], room))
    return out


def _encode_value(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="/~")


def _fitting_prefix(value: str, room: int) -> str:
    """The longest prefix of ``value`` whose encoding takes at most ``room`` bytes."""
    lo, hi = 0, len(value)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_encode_value(value[:mid])) <= room:
            lo = mid
        else:
            hi = mid - 1
    return value[:lo]


def decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The values :func:`encode_metadata` wrote, decoded (names lower-cased): ``%XX``
    escapes back to bytes, bytes back to text as UTF-8 (lone surrogates as written; bytes
    that are not UTF-8, from other tools, as U+FFFD)."""
    out = {}
    for name, value in metadata.items():
        raw = unquote_to_bytes(str(value))
        try:
            text = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", "replace")
        out[str(name).lower()] = text
    return out


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows of one object without reading it.

    ``size`` is in bytes; ``metadata`` is the user metadata written with the object
    (stores write ``sha256`` there, cachelayer's copier ``prediction-id`` and
    ``output-path``); ``content_type`` as stored (with its parameters, e.g. ``charset``);
    ``sha256``: the SHA-256 (hex) of the object's bytes as the store recorded it when they
    were written (metadata ``sha256``, or a full-object checksum of the service), ``None``
    when it holds none (objects written by other tools or older releases): compare it to
    know the bytes without reading them.
    ``etag`` is the backend's entity tag (S3's ``ETag``, quotes included; ``None`` for the
    local store); ``cache_control`` the ``Cache-Control`` stored with the object.
    """

    key: str
    size: int
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str | None = None
    sha256: str | None = None
    cache_control: str | None = None


class _Limited:
    """At most ``remaining`` bytes of ``raw`` (closing it closes ``raw``)."""

    def __init__(self, raw: BinaryIO, remaining: int | None) -> None:
        self.raw = raw
        self.remaining = remaining

    def read(self, size: int = -1) -> bytes:
        if self.remaining is not None:
            size = self.remaining if size is None or size < 0 else min(size, self.remaining)
            if size <= 0:
                return b""
        data = self.raw.read(size)
        if self.remaining is not None:
            self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> _Limited:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(abc.ABC):
    """A place objects go.

    Implementations must make :meth:`put` atomic: after it returns the object is complete;
    if it raises (including because ``body.read`` raised), no object or a previous complete
    object remains under the key, never a partial one.
    """

    #: Identifies the store in the catalog (``output_files.store``), e.g. ``s3://bucket`` or
    #: ``file:///srv/objects``; ``open_store(uri)`` opens it again.
    uri: str
    #: Where new keys go inside the store (``s3://bucket/prefix``'s ``prefix``, no leading or
    #: trailing ``/``; ``""`` for none). Callers build full keys with it; the store itself never
    #: adds it, every method takes the full key.
    prefix: str = ""
    #: Whether :meth:`presign` hands out signed URLs (``False``: it returns ``None``).
    can_presign: ClassVar[bool] = False

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
        size: int | None = None,
    ) -> str:
        """Stream ``body`` (read until ``b""``; it need not be seekable) into ``key``; returns
        the SHA-256 (hex) of the bytes written, so callers need not hash them again.

        The SHA-256 of the bytes written is stored with the object (user metadata ``sha256``,
        hex; a ``sha256`` in ``metadata`` is replaced) and reported by :meth:`head`.
        Memory use is bounded by the backend's part size, not by the object size. ``size``
        (bytes, when known, e.g. the source's ``Content-Length``) is only a hint for choosing
        how to upload; the bytes read decide what is written.
        Raises :class:`cachelayer.errors.StorageError` on backend failure; an exception
        raised by ``body.read`` propagates unchanged after the partial upload is discarded.
        """

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or ``None`` if no object has that key."""

    @abc.abstractmethod
    def open(self, key: str) -> BinaryIO:
        """Open the object for streaming reads. Raises ``FileNotFoundError`` if absent."""

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """Open bytes ``start`` to ``end`` (inclusive, as in an HTTP ``Range``; ``None``: to
        the end) of the object for streaming reads; close it when done. The caller keeps
        ``start``/``end`` inside the object (``ValueError`` for negative or reversed ones).
        Raises ``FileNotFoundError`` if absent, :class:`~cachelayer.errors.StorageError` on
        backend failure. This default opens the whole object and skips ``start`` bytes;
        backends override it with a ranged read."""
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"bad byte range {start}-{end}")
        raw = self.open(key)
        skip = start
        while skip > 0:
            chunk = raw.read(min(skip, 1 << 20))
            if not chunk:
                break
            skip -= len(chunk)
        return cast(BinaryIO, _Limited(raw, None if end is None else end - start + 1))

    @abc.abstractmethod
    def object_uri(self, key: str) -> str:
        """The canonical URI of an object: ``s3://bucket/key`` or ``file:///abs/path``."""

    def presign(self, key: str, ttl: int) -> str | None:
        """A URL that ``GET``s the object for ``ttl`` seconds without credentials, or ``None``
        when this store cannot sign (:attr:`can_presign` is ``False``; this default). Signing
        is local: no request is made, and the object need not exist."""
        return None

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Remove the objects ``keys`` (and whatever the store keeps beside them). Idempotent:
        a key with no object is not an error. Returns nothing: S3's ``DeleteObjects`` does not
        say whether a key existed, and the sizes freed are the catalog's to count.
        Raises :class:`cachelayer.errors.StorageError` when an object could not be removed
        (after trying every other key), ``ValueError`` for an invalid key (before removing
        any)."""

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix`` (a plain string prefix: ``a/b/`` lists the
        objects "under" ``a/b``), in no promised order, as the store lists them (S3:
        ``ListObjectsV2``, 1,000 keys a page, every page followed; local: a directory walk,
        sidecars and temporary files left out). Raises :class:`cachelayer.errors.StorageError`
        when the store cannot be listed; this default (a store that cannot list) raises
        :class:`cachelayer.errors.StorageConfigError`."""
        from cachelayer.errors import StorageConfigError

        raise StorageConfigError(f"{type(self).__name__} cannot list its keys")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release pools and clients. Default: nothing to release."""
