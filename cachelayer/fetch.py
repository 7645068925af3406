"""Streaming downloads of source URLs: allow-list, redirects, retries, length and size checks.

A :class:`Download` is a read-only binary stream over one source URL (or ``data:`` URI)
that computes the SHA-256 and byte count as it goes, so a store can upload it while it
downloads. A body shorter than its ``Content-Length`` or a dropped connection raises
:class:`~cachelayer.errors.TruncatedDownloadError` from ``read`` (the caller retries and
the store discards the partial object); 404/403/410 raise
:class:`~cachelayer.errors.SourceGoneError` (the caller refreshes the prediction).
Transient statuses (429, 500, 502, 503, 504) and connection errors are retried by urllib3's
``Retry`` with exponential backoff, jitter and ``Retry-After``.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import ipaddress
import logging
import time
from datetime import datetime, timezone
from email.message import Message
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cachelayer.errors import (
    DisallowedUrlError,
    DownloadError,
    DownloadTooLargeError,
    SourceGoneError,
    TruncatedDownloadError,
)

log = logging.getLogger("cachelayer")

#: Statuses that mean "this URL no longer serves the file" (Replicate answers 404 once data
#: is removed; signed CDN URLs answer 403 when expired; 410 Gone is the HTTP word for it).
GONE_STATUSES = frozenset({403, 404, 410})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5


def host_allowed(url: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Whether ``url`` is ``http(s)`` and its host (or ``host:port``) matches a pattern.

    Patterns are ``host``, ``host:port`` or ``*.domain`` (``fnmatch`` style, case-insensitive).
    Link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata endpoints) are refused
    whatever the patterns say.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname.lower()
    try:
        if ipaddress.ip_address(host).is_link_local:
            return False
    except ValueError:
        pass
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host_port = f"{host}:{port}"
    for pattern in patterns:
        pattern = pattern.lower()
        target = host_port if ":" in pattern.removeprefix("[").split("]")[-1] else host
        if fnmatch.fnmatchcase(target, pattern):
            return True
    return False


def signed_url_expired(url: str, now: float | None = None) -> bool:
    """Whether ``url`` carries a signature expiry that has passed.

    Understands SigV4 query signing (``X-Amz-Date`` + ``X-Amz-Expires``, AWS docs
    "Authenticating Requests: Using Query Parameters") and the ``Expires=<unix seconds>``
    form used by SigV2 and CloudFront/GCS signed URLs.
    """
    now = time.time() if now is None else now
    q = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items() if v}
    try:
        if "x-amz-date" in q and "x-amz-expires" in q:
            start = datetime.strptime(q["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            return start.timestamp() + int(q["x-amz-expires"]) < now
        if "expires" in q and q["expires"].isdigit():
            return int(q["expires"]) < now
    except ValueError:
        return False
    return False


def filename_of(url: str) -> str:
    """The last path segment of ``url`` (``out-0.png``), or ``""`` for ``data:`` URIs."""
    if url.startswith("data:"):
        return ""
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


class Download:
    """A readable stream over one source; ``read(n)`` as in ``io.RawIOBase``.

    After the stream is exhausted, ``size`` (bytes) and ``sha256`` (hex) describe exactly
    the bytes handed out. ``content_type`` and ``content_length`` come from the response
    headers (``None`` when absent). Close it (or use ``with``) to release the connection.
    """

    def __init__(
        self,
        url: str,
        *,
        response: requests.Response | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int,
    ) -> None:
        self.url = url
        self._response = response
        self._data = data
        self._offset = 0
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes
        self.content_type = content_type
        self.content_length: int | None = None
        if response is not None:
            self.content_type = response.headers.get("Content-Type") or content_type
            length = response.headers.get("Content-Length")
            self.content_length = int(length) if length and length.isdigit() else None
            if response.headers.get("Content-Encoding", "identity") not in ("identity", ""):
                # decoded size differs from the header; rely on urllib3's own checks then
                self.content_length = None
        elif data is not None:
            self.content_length = len(data)
        if self.content_length is not None and self.content_length > max_bytes:
            self.close()
            raise DownloadTooLargeError(
                f"{url}: Content-Length {self.content_length} exceeds the cap of {max_bytes} bytes",
                url=url,
            )

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the bytes read so far (the whole body once exhausted)."""
        return self._hash.hexdigest()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def _raw_read(self, n: int) -> bytes:
        if self._data is not None:
            chunk = self._data[self._offset : self._offset + n]
            self._offset += len(chunk)
            return chunk
        assert self._response is not None
        try:
            return self._response.raw.read(n, decode_content=True) or b""
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise TruncatedDownloadError(
                f"{self.url}: connection failed after {self.size} bytes ({exc.__class__.__name__})",
                url=self.url,
            ) from exc

    def read(self, n: int = -1) -> bytes:
        """Read up to ``n`` bytes (all remaining if ``n < 0``).

        Raises :class:`TruncatedDownloadError` when the body ends short of its
        ``Content-Length`` or the connection drops, :class:`DownloadTooLargeError` past
        the size cap.
        """
        if n is None or n < 0:
            parts = []
            while chunk := self.read(1 << 20):
                parts.append(chunk)
            return b"".join(parts)
        chunk = self._raw_read(n)
        if chunk:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise DownloadTooLargeError(
                    f"{self.url}: body exceeds the cap of {self.max_bytes} bytes", url=self.url
                )
            self._hash.update(chunk)
        elif self.content_length is not None and self.size != self.content_length:
            raise TruncatedDownloadError(
                f"{self.url}: body ended after {self.size} of {self.content_length} bytes",
                url=self.url,
            )
        return chunk

    def close(self) -> None:
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_data_uri(uri: str) -> tuple[bytes, str]:
    """Decode an RFC 2397 ``data:`` URI into ``(bytes, content_type)``.

    Raises :class:`DownloadError` if it is malformed.
    """
    try:
        header, payload = uri[5:].split(",", 1)
    except ValueError:
        raise DownloadError("malformed data: URI (no comma)", url=uri[:64]) from None
    params = header.split(";")
    content_type = params[0] or "text/plain"
    try:
        if "base64" in params[1:]:
            data = base64.b64decode(payload, validate=False)
        else:
            data = unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise DownloadError(f"malformed data: URI ({exc})", url=uri[:64]) from None
    return data, content_type


class Fetcher:
    """Opens :class:`Download` streams; one per :class:`~cachelayer.layer.CacheLayer`.

    ``allowed_hosts``: patterns for :func:`host_allowed`. ``max_bytes``: size cap per file.
    ``pool_size``: connections kept per host (match the transfer concurrency).
    ``retries``: urllib3 retries for connection errors and 429/5xx, with exponential
    backoff (0.25 s doubling, capped at 30 s), jitter and ``Retry-After``.
    ``timeout``: (connect, read) seconds. ``ca_bundle``: path for TLS verification.
    Thread-safe: the session's connection pool is shared by the transfer threads.
    """

    def __init__(
        self,
        allowed_hosts: tuple[str, ...],
        *,
        max_bytes: int,
        pool_size: int = 10,
        retries: int = 4,
        timeout: tuple[float, float] = (10.0, 60.0),
        ca_bundle: str | None = None,
    ) -> None:
        self.allowed_hosts = allowed_hosts
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.session = requests.Session()
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            redirect=0,
            status_forcelist=sorted(RETRY_STATUSES),
            allowed_methods=frozenset({"GET", "HEAD"}),
            backoff_factor=0.25,
            backoff_max=30,
            backoff_jitter=0.25,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "cachelayer"
        # Passed on every request: a session-level verify loses to REQUESTS_CA_BUNDLE.
        self.verify: str | bool = ca_bundle or True

    def check(self, url: str) -> None:
        """Raise :class:`DisallowedUrlError` unless ``url`` is a ``data:`` URI or an allowed
        ``http(s)`` URL; raise :class:`SourceGoneError` if it is a signed URL past expiry."""
        if url.startswith("data:"):
            return
        if not host_allowed(url, self.allowed_hosts):
            raise DisallowedUrlError(
                f"refusing to download {url[:200]}: not an http(s) URL on an allowed host "
                f"(CACHELAYER_ALLOWED_HOSTS={','.join(self.allowed_hosts)})",
                url=url,
            )
        if signed_url_expired(url):
            raise SourceGoneError(f"{url}: signed URL is past its expiry", url=url, status=None)

    def open(self, url: str) -> Download:
        """Start downloading ``url``; returns a :class:`Download` positioned at byte 0.

        Redirects are followed (at most 5) only to allowed hosts. Raises
        :class:`DisallowedUrlError`, :class:`SourceGoneError` (403/404/410, expired
        signature), :class:`DownloadTooLargeError`, :class:`TruncatedDownloadError`
        (connection failed) or :class:`DownloadError` (other statuses).
        """
        self.check(url)
        if url.startswith("data:"):
            data, content_type = decode_data_uri(url)
            return Download(url, data=data, content_type=content_type, max_bytes=self.max_bytes)
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            try:
                resp = self.session.get(
                    current, stream=True, allow_redirects=False, timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                raise TruncatedDownloadError(f"{current}: request failed: {exc}", url=url) from exc
            if resp.is_redirect:
                location = resp.headers.get("Location", "")
                resp.close()
                current = urljoin(current, location)
                self.check(current)
                continue
            if resp.status_code in GONE_STATUSES:
                resp.close()
                raise SourceGoneError(
                    f"{current}: HTTP {resp.status_code}", url=url, status=resp.status_code
                )
            if resp.status_code != 200:
                resp.close()
                cls = TruncatedDownloadError if resp.status_code in RETRY_STATUSES else DownloadError
                raise cls(f"{current}: HTTP {resp.status_code} after retries", url=url)
            return Download(url, response=resp, max_bytes=self.max_bytes)
        raise DownloadError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()


def parse_content_type(value: str | None) -> str | None:
    """The media type of a ``Content-Type`` header without parameters, or ``None``."""
    if not value:
        return None
    msg = Message()
    msg["content-type"] = value
    return msg.get_content_type()


