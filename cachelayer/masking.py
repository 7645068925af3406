"""Credentials out of messages: :func:`mask_secrets` is how every setting's value is shown
in an error (:mod:`cachelayer.config`) and how the catalog's URL is printed. A pure helper:
plain string operations, no imports."""

from __future__ import annotations

__all__ = ["MASK", "mask_secrets"]

#: Query parameters whose values :func:`mask_secrets` hides (matched as substrings of the
#: lower-cased name: ``password``, ``X-Amz-Signature``, ``access_token``, ``sslkey``...).
_SECRET_PARAMS = ("pass", "secret", "token", "signature", "credential", "key", "auth", "sig")
MASK = "***"


def _masked_query(query: str) -> str:
    items = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        secret = eq and any(word in name.lower() for word in _SECRET_PARAMS)
        items.append(f"{name}={MASK}" if secret else item)
    return "&".join(items)


def mask_secrets(value: str) -> str:
    """``value`` (a setting: URL, path or token) fit to print: the password of a URL's
    userinfo becomes ``***`` (``s3://user:***@bucket/x``, as SQLAlchemy's
    ``render_as_string(hide_password=True)`` shows a database URL; userinfo without a
    password is a token: ``https://***@host``) and so do the values of query parameters
    named like secrets (``?password=***``, ``X-Amz-Signature=***``). Plain string
    operations, linear in ``value``; every setting's error message shows values through it."""
    scheme, sep, rest = value.partition("://")
    head = scheme + sep if sep else ""
    if not sep:
        rest = value
    end = len(rest)
    for c in "?#":
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    slash = authority.find("/")
    host_end = len(authority) if slash < 0 else slash
    at = authority.rfind("@", 0, host_end)
    if at < 0 and ":" in authority[:host_end]:
        at = authority.rfind("@")  # a "/" inside the password
    if at >= 0:
        name, colon, _ = authority[:at].partition(":")
        authority = (f"{name}:{MASK}" if colon else MASK) + authority[at:]
    before, q, query = tail.partition("?")
    if q:
        query, hash_, fragment = query.partition("#")
        tail = f"{before}?{_masked_query(query)}{hash_}{fragment}"
    return head + authority + tail
