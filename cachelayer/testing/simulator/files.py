"""Output leaves: :class:`File` (served from a delivery URL) and :class:`DataURI` (inline)."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from functools import lru_cache

__all__ = ["CHUNK_SIZE", "DataURI", "File"]

#: Bytes per streamed chunk, and the size of the pseudo-random block generated files repeat.
CHUNK_SIZE = 1 << 20


@lru_cache(maxsize=32)
def _random_block(seed: int) -> bytes:
    """The 1 MiB block a generated :class:`File` with this ``seed`` repeats."""
    return random.Random(seed).randbytes(CHUNK_SIZE)


class File:
    """An output file: literal ``content``, or ``size`` bytes generated from ``seed``.

    Generated content is one 1 MiB block of ``random.Random(seed).randbytes`` repeated and
    cut to ``size`` bytes, so files of hundreds of MB are streamed with flat memory.
    ``content_type`` is sent as ``Content-Type``; ``filename`` is the last segment of its
    delivery URL (``/delivery/pbxt/<token>/<filename>``, percent-encoded there as in
    Replicate's delivery URLs) and may not contain ``/``.

    ``bytes_per_second``: the delivery sends the body at about that rate (in 16 KiB pieces;
    ``None``: as fast as it can). It is read before each piece, so a test may set it to
    ``None`` mid-download to let the rest go. ``bytes_served`` counts body bytes sent by
    every delivery of this file so far (a test's sign that a download is under way).

    Raises :class:`ValueError` when neither ``content`` nor ``size`` is given, when both are
    given and disagree, or when ``size`` is negative.
    """

    def __init__(
        self,
        content: bytes | None = None,
        *,
        size: int | None = None,
        seed: int = 0,
        content_type: str = "image/png",
        filename: str = "out-0.png",
        bytes_per_second: float | None = None,
    ) -> None:
        if content is None and size is None:
            raise ValueError("File needs content or size")
        if content is not None:
            content = bytes(content)
            if size is not None and size != len(content):
                raise ValueError(f"size={size} but content has {len(content)} bytes")
            size = len(content)
        assert size is not None
        if size < 0:
            raise ValueError("size must be >= 0")
        if not filename or "/" in filename:
            raise ValueError(f"bad filename {filename!r}")
        self._content = content
        self.size: int = size
        """Length in bytes."""
        self.seed = seed
        self.content_type = content_type
        self.filename = filename
        self._sha256: str | None = None
        self.bytes_per_second = bytes_per_second
        self.bytes_served = 0

    @property
    def generated(self) -> bool:
        """True when the bytes come from ``seed`` rather than literal content."""
        return self._content is None

    def iter_range(self, start: int, stop: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield bytes ``[start, stop)`` in chunks of at most ``chunk_size`` bytes.

        Generated files never yield a chunk crossing a 1 MiB block boundary, so with the
        default ``chunk_size`` and an aligned ``start`` every full chunk is the cached block
        itself (no copy).
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        start = max(0, start)
        stop = min(self.size, stop)
        pos = start
        content = self._content
        if content is not None:
            while pos < stop:
                n = min(chunk_size, stop - pos)
                yield content[pos : pos + n]
                pos += n
            return
        block = _random_block(self.seed)
        while pos < stop:
            offset = pos % CHUNK_SIZE
            n = min(chunk_size, stop - pos, CHUNK_SIZE - offset)
            yield block if (offset == 0 and n == CHUNK_SIZE) else block[offset : offset + n]
            pos += n

    def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the whole file in chunks of at most ``chunk_size`` bytes."""
        return self.iter_range(0, self.size, chunk_size)

    def read(self) -> bytes:
        """The whole file in memory (only for small files)."""
        if self._content is not None:
            return self._content
        return b"".join(self.iter_bytes())

    def sha256(self) -> str:
        """Hex SHA-256 of the content, computed by streaming (cached after the first call)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            for chunk in self.iter_bytes():
                h.update(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256

    def __repr__(self) -> str:
        kind = f"seed={self.seed}" if self.generated else "literal"
        return f"File({self.filename!r}, size={self.size}, {kind}, {self.content_type!r})"


class DataURI:
    """An output leaf rendered inline as ``data:<content_type>;base64,<content>``.

    Replicate returns small files this way in sync mode (``Prefer: wait``).
    """

    def __init__(self, content: bytes, content_type: str = "image/webp") -> None:
        self.content = bytes(content)
        self.content_type = content_type

    @property
    def size(self) -> int:
        """Length of the decoded content in bytes."""
        return len(self.content)

    @property
    def uri(self) -> str:
        """The ``data:`` URI string."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.content).decode()}"

    def sha256(self) -> str:
        """Hex SHA-256 of the decoded content."""
        return hashlib.sha256(self.content).hexdigest()

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"DataURI({self.content_type!r}, size={self.size})"
