"""File delivery: ``GET``/``HEAD /delivery/pbxt/<token>/<filename>``, like
``https://replicate.delivery/pbxt/<token>/out-0.png``: streamed, with ``Content-Length``
and single ``Range`` support."""

from __future__ import annotations

import time
from collections.abc import Iterator

from werkzeug.wrappers import Request, Response

from cachelayer.testing.simulator.files import File
from cachelayer.testing.simulator.predictions import Predictions
from cachelayer.testing.simulator.problems import ProblemError, problem

__all__ = ["file_response", "parse_range", "serve_file"]


def serve_file(
    request: Request, predictions: Predictions, prefix: str, token: str, filename: str
) -> Response:
    """The response for one delivery request; 404 problem when the URL is unknown or dead."""
    file = predictions.live_file(token, prefix, filename)
    if file is None:
        raise ProblemError(404, "Not found", "The file does not exist or has expired")
    return file_response(request, file, etag=token)


def file_response(request: Request, file: File, *, etag: str) -> Response:
    """``file`` streamed with ``Content-Length``, ``ETag: "<etag>"`` and single ``Range``."""
    size = file.size
    headers = {
        "Content-Type": file.content_type,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=3600",
        "ETag": f'"{etag}"',
    }
    start, stop, status = 0, size, 200
    range_header = request.headers.get("Range")
    if range_header:
        parsed = parse_range(range_header, size)
        if isinstance(parsed, str):
            return problem(
                416,
                "Range Not Satisfiable",
                f"{range_header} is outside 0-{size}",
                {"Content-Range": f"bytes */{size}"},
            )
        if parsed is not None:
            start, stop = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    response = Response(_paced(file, start, stop), status=status, headers=headers, direct_passthrough=True)
    response.content_length = stop - start
    return response


#: Bytes per piece of a paced delivery (``File.bytes_per_second``).
PACED_PIECE = 16 * 1024


def _paced(file: File, start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``[start, stop)`` of ``file``, at ``file.bytes_per_second`` when set (read again
    before each piece), counted in ``file.bytes_served``."""
    if file.bytes_per_second is None:
        for chunk in file.iter_range(start, stop):
            file.bytes_served += len(chunk)
            yield chunk
        return
    for piece in file.iter_range(start, stop, PACED_PIECE):
        file.bytes_served += len(piece)
        yield piece
        rate = file.bytes_per_second
        if rate:
            time.sleep(len(piece) / rate)


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """Parse a single ``bytes=`` range into ``(start, stop)``; ``None`` to ignore it (multi
    or malformed), ``"unsatisfiable"`` when it lies outside the file."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size)
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return None
    if start >= size or stop <= start:
        return "unsatisfiable"
    return (start, stop)
