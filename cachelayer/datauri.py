"""RFC 2397 ``data:`` URIs: bounded parsing, chunked decoding and redaction.

Replicate returns small files as ``data:`` URIs in sync mode (``Prefer: wait``), e.g.
``data:image/webp;base64,...`` (shared/reference/replicate-api.md). A URI can be large, so
nothing here decodes it whole: :func:`parse_data_uri` reads only the header and bounds the
decoded size from the encoded length (exact for base64), so a size cap is applied before
any decoding, and :meth:`DataUri.chunks` decodes 3 MiB at a time.

:func:`redact_data_uris` keeps payloads out of the catalog: it replaces every ``data:`` URI
in an output by its *redacted form* ``data:<media type>;sha256=<64 hex>,`` (empty payload),
where the digest is that of the decoded bytes, i.e. the ``sha256`` recorded for the stored
object. A URI that does not decode gets ``data:<media type>;malformed;sha256=<hex>,`` with the
digest of its UTF-8 text instead. :func:`is_redacted_data_uri` recognises both forms.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from cachelayer.errors import DownloadTooLargeError, MalformedUrlError
from cachelayer.outputs import replace_files

#: Longest header (``data:`` up to the comma) accepted, in characters.
MAX_HEADER = 4096
#: Characters of base64 decoded per chunk (a multiple of 4: 3 MiB of bytes).
CHUNK_CHARS = 4 << 20
_B64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MEDIA_RE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_REDACTED_RE = re.compile(r"data:[^,;]*(?:;malformed)?;sha256=[0-9a-f]{64},")


@dataclass(frozen=True)
class DataUri:
    """A parsed ``data:`` URI over the original string (no copy of the payload).

    ``content_type``: the media type without parameters (``text/plain`` when absent or
    unusable). ``base64``: payload encoding. ``start``: index of the payload in ``uri``.
    ``decoded_size``: exact decoded length for base64, ``None`` otherwise.
    ``min_size``: a lower bound of the decoded length (bytes).
    """

    uri: str
    content_type: str
    base64: bool
    start: int
    decoded_size: int | None
    min_size: int

    def chunks(self, chunk_chars: int = CHUNK_CHARS) -> Iterator[bytes]:
        """The decoded payload in pieces of at most ``chunk_chars * 3 // 4`` bytes (base64)
        or ``chunk_chars * 4`` bytes (percent-encoded text). Raises
        :class:`~cachelayer.errors.MalformedUrlError` for bytes that do not decode."""
        uri, end = self.uri, len(self.uri)
        pos = self.start
        if self.base64:
            step = max(4, chunk_chars - chunk_chars % 4)
            while pos < end:
                piece = uri[pos : pos + step]
                pos += step
                if pos >= end:
                    piece += "=" * (-len(piece.rstrip("=")) % 4) if "=" not in piece else ""
                try:
                    yield base64.b64decode(piece, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise MalformedUrlError(f"malformed data: URI ({exc})", url=uri[:64]) from None
            return
        while pos < end:
            stop = min(end, pos + chunk_chars)
            pct = uri.rfind("%", max(pos, stop - 2), stop)
            if pct != -1 and stop < end:
                stop = pct  # do not split a %XX escape
            piece = uri[pos:stop] if stop > pos else uri[pos : pos + 3]
            pos += len(piece)
            try:
                yield unquote_to_bytes(piece.encode("utf-8"))
            except UnicodeEncodeError:
                raise MalformedUrlError("malformed data: URI (lone surrogate)", url=uri[:64]) from None


def parse_data_uri(uri: str, max_bytes: int | None = None) -> DataUri:
    """Parse the header of ``uri`` and bound its decoded size, without decoding.

    Raises :class:`~cachelayer.errors.MalformedUrlError` (no comma, header longer than
    :data:`MAX_HEADER`, invalid base64 alphabet or length) and
    :class:`~cachelayer.errors.DownloadTooLargeError` when the decoded payload is certain to
    exceed ``max_bytes``.
    """
    if not isinstance(uri, str) or uri[:5].lower() != "data:":
        raise MalformedUrlError("not a data: URI", url=str(uri)[:64])
    comma = uri.find(",", 5, 5 + MAX_HEADER)
    if comma == -1:
        raise MalformedUrlError("malformed data: URI (no comma within the header)", url=uri[:64])
    params = [p.strip() for p in uri[5:comma].split(";")]
    is_b64 = any(p.lower() == "base64" for p in params[1:])
    media = params[0].lower() if _MEDIA_RE.fullmatch(params[0]) else "text/plain"
    start, length = comma + 1, len(uri) - comma - 1
    if is_b64:
        if not _B64_RE.fullmatch(uri, start) or length % 4 == 1:
            raise MalformedUrlError("malformed data: URI (invalid base64)", url=uri[:64])
        pad = 0
        while pad < 2 and length > pad and uri[-1 - pad] == "=":
            pad += 1
        size: int | None = (length - pad) * 3 // 4
        least = size or 0
    else:
        size, least = None, length // 3
    if max_bytes is not None and least > max_bytes:
        raise DownloadTooLargeError(
            f"data: URI decodes to at least {least} bytes, over the cap of {max_bytes} bytes", url=uri[:64]
        )
    return DataUri(uri, media, is_b64, start, size, least)


def decode_data_uri(uri: str, max_bytes: int | None = None) -> tuple[bytes, str]:
    """Decode ``uri`` whole into ``(bytes, content_type)``; for small URIs only (the fetcher
    streams). Raises like :func:`parse_data_uri` and :meth:`DataUri.chunks`."""
    parsed = parse_data_uri(uri, max_bytes)
    data = b"".join(parsed.chunks())
    if max_bytes is not None and len(data) > max_bytes:
        raise DownloadTooLargeError(f"data: URI exceeds the cap of {max_bytes} bytes", url=uri[:64])
    return data, parsed.content_type


def redact_data_uri(uri: str) -> str:
    """The redacted form of one ``data:`` URI (see the module docstring); other strings and
    already-redacted URIs are returned unchanged. Memory stays bounded (chunked decoding)."""
    if not isinstance(uri, str) or uri[:5].lower() != "data:" or is_redacted_data_uri(uri):
        return uri
    digest = hashlib.sha256()
    try:
        parsed = parse_data_uri(uri)
        for piece in parsed.chunks():
            digest.update(piece)
        return f"data:{parsed.content_type};sha256={digest.hexdigest()},"
    except MalformedUrlError:
        head = uri[5 : uri.find(",", 5, 5 + MAX_HEADER)] if "," in uri[5 : 5 + MAX_HEADER] else ""
        media = head.split(";", 1)[0].lower()
        media = media if _MEDIA_RE.fullmatch(media) else "application/octet-stream"
        text = hashlib.sha256()
        for i in range(0, len(uri), CHUNK_CHARS):  # chunked: never a second copy of a huge URI
            text.update(uri[i : i + CHUNK_CHARS].encode("utf-8", "surrogatepass"))
        return f"data:{media};malformed;sha256={text.hexdigest()},"


def is_redacted_data_uri(value: object) -> bool:
    """Whether ``value`` is a redacted ``data:`` URI made by :func:`redact_data_uri`."""
    return isinstance(value, str) and _REDACTED_RE.fullmatch(value) is not None


def redact_data_uris(output: Any) -> Any:
    """A copy of ``output`` (any JSON value, ``FileOutput`` objects allowed) with every
    ``data:`` URI file replaced by its redacted form and every other file by its URL string;
    non-file values are kept. Shape is unchanged, so output paths still address the files.
    Use it before storing an output in the catalog."""
    return replace_files(output, lambda _path, url: redact_data_uri(url))
