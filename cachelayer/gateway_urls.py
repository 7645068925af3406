"""Gateway URLs: durable, unguessable URLs of stored objects, served by ``cachelayer serve``.

A gateway URL is ``{gateway base}/files/{signature}/{key}``: the object's key (path-quoted,
``/`` kept, so the last segment is the file name) behind an HMAC-SHA256 of the key, so a
URL cannot be forged for another key nor keys enumerated without the secret. It carries no
expiry: the gateway answers each request with a redirect to a freshly presigned URL (or the
bytes), which is how Rails Active Storage's redirect controller makes private blobs
linkable.

Pure functions only (no catalog, no server): :class:`cachelayer.layer.CacheLayer` builds the
URLs, :mod:`cachelayer.server` checks them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import quote

__all__ = ["ROUTE", "SIGNATURE_CHARS", "gateway_url", "new_secret", "secret_bytes", "signature", "verify"]

#: The path segment under the gateway base that gateway URLs live in.
ROUTE = "files"
#: Length of the signature segment: 32 URL-safe base64 characters = 192 bits of the HMAC.
SIGNATURE_CHARS = 32
_CONTEXT = b"cachelayer-gateway-v1\n"


def secret_bytes(secret: str | bytes) -> bytes:
    """The HMAC key: ``secret`` as UTF-8 bytes (``bytes`` pass through). Raises
    ``ValueError`` for an empty secret."""
    key = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if not key:
        raise ValueError("the gateway secret is empty")
    return key


def new_secret() -> str:
    """A fresh random secret: 32 random bytes as URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def signature(secret: bytes, key: str) -> str:
    """The signature segment of ``key``'s gateway URL: the first :data:`SIGNATURE_CHARS`
    characters of the URL-safe base64 HMAC-SHA256 of ``key`` (UTF-8, surrogates escaped)."""
    mac = hmac.new(secret, _CONTEXT + key.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii")[:SIGNATURE_CHARS]


def verify(secret: bytes, key: str, sig: str) -> bool:
    """Whether ``sig`` is the signature of ``key`` (constant-time comparison)."""
    if len(sig) != SIGNATURE_CHARS:
        return False
    return hmac.compare_digest(signature(secret, key).encode("ascii"), sig.encode("ascii", "replace"))


def gateway_url(base_url: str, secret: bytes, key: str) -> str:
    """``{base_url}/files/{signature}/{quoted key}``; ``base_url`` is where clients reach
    ``cachelayer serve`` (``CACHELAYER_GATEWAY_URL``, a trailing ``/`` is ignored)."""
    path = quote(key, safe="/", errors="surrogateescape")
    return f"{base_url.rstrip('/')}/{ROUTE}/{signature(secret, key)}/{path}"
