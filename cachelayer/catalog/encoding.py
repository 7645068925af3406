"""The lossless rules by which the catalog stores values a database would refuse.

PostgreSQL refuses a NUL (U+0000) in ``text`` and in ``jsonb``, and both databases' drivers
refuse a lone surrogate (U+D800..U+DFFF: valid in a Python ``str`` and in JSON's ``\\ud800``
escape, but not encodable as UTF-8); ``jsonb`` also refuses ``NaN`` and ``Infinity``.
Replicate can send all of these inside a prediction's input, output or error, and in URLs.
So every text value and every JSON string (object keys included) the catalog writes, on
both databases, goes through the **text rule**:

* a NUL becomes the six characters ``\\u0000``;
* a lone surrogate becomes ``\\u`` and its four lowercase hex digits (``\\udc80``);
* a backslash followed by ``u`` and four lowercase hex digits becomes ``\\u005c`` (so
  text that already looks like an escape stays distinguishable);
* nothing else changes (a value without NUL, surrogate or ``\\uXXXX``-like text is stored
  as it is).

:func:`unescape_text` reverses it exactly (``\\uXXXX`` with lowercase hex back to the code
point), and the catalog applies it to everything it reads, so the library always hands back
the original value; SQL users see the escaped text. JSON numbers ``NaN``, ``Infinity`` and
``-Infinity`` become the strings ``\\u0001NaN``, ``\\u0001Infinity`` and
``\\u0001-Infinity`` (seven or more characters starting with a backslash): the text rule
never produces a string starting with ``\\u0001``, so they read back as the float.

``data:`` URIs are recorded by :func:`catalog_url` in the redacted form of
:mod:`cachelayer.datauri` (``data:<media type>;sha256=<hex of the decoded bytes>,``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from cachelayer.datauri import redact_data_uri

__all__ = ["catalog_url", "escape_json", "escape_text", "unescape_json", "unescape_text"]

_NEEDS = re.compile(r"[\x00\ud800-\udfff]|\\(?=u[0-9a-f]{4})")
_ESCAPED = re.compile(r"\\u([0-9a-f]{4})")
_FLOAT_MARK = "\\u0001"
_FLOATS = {
    f"{_FLOAT_MARK}NaN": math.nan,
    f"{_FLOAT_MARK}Infinity": math.inf,
    f"{_FLOAT_MARK}-Infinity": -math.inf,
}


def _escape_one(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()[0]):04x}"


def escape_text(value: str) -> str:
    """``value`` under the text rule (module docstring); unchanged for ordinary text."""
    if value.isascii() and "\x00" not in value and "\\u" not in value:
        return value
    return _NEEDS.sub(_escape_one, value)


def unescape_text(value: str) -> str:
    """Inverse of :func:`escape_text`: ``unescape_text(escape_text(s)) == s`` for every str."""
    if "\\u" not in value:
        return value
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), value)


def escape_json(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists/tuples, str, numbers, bools, ``None``) with every
    string and object key under the text rule and non-finite floats as their marker strings.
    Other objects are left for the JSON serializer (which refuses them)."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {escape_text(str(k)) if isinstance(k, str) else k: escape_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return f"{_FLOAT_MARK}{'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')}"
    return value


def unescape_json(value: Any) -> Any:
    """Inverse of :func:`escape_json` (tuples come back as lists, as JSON has no tuples)."""
    if isinstance(value, str):
        if value.startswith(_FLOAT_MARK) and value in _FLOATS:
            return _FLOATS[value]
        return unescape_text(value)
    if isinstance(value, dict):
        return {unescape_text(k) if isinstance(k, str) else k: unescape_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_json(v) for v in value]
    return value


def catalog_url(url: str) -> str:
    """The form in which a source URL is recorded (``output_files.source_url``,
    ``source_urls.url``) and looked up: the URL itself, except that a ``data:`` URI (which
    can be megabytes) becomes its redacted form ``data:<media type>;sha256=<64 hex>,`` where
    the digest is that of the decoded bytes, i.e. the ``sha256`` recorded for the stored
    object (``data:<media type>;malformed;sha256=<hex of the URI's UTF-8 text>,`` for a URI
    that does not decode). Memory stays bounded: the URI is decoded in chunks, never copied
    whole; lone surrogates are allowed. See :func:`cachelayer.datauri.redact_data_uri`.
    """
    if url[:5].lower() != "data:":
        return url
    return redact_data_uri(url)
