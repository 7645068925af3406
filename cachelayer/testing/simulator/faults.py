"""Injected faults: error statuses, truncated downloads, dropped connections."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from werkzeug.wrappers import Response

from cachelayer.testing.simulator.problems import problem

__all__ = ["FAULT_KINDS", "Fault", "Faults", "damage", "fault_response"]

FAULT_KINDS = ("status", "truncate", "drop")


@dataclass
class Fault:
    """A pending injected fault (see :meth:`ReplicateSimulator.inject_fault`).

    ``remaining`` counts down as matching requests are hit.
    """

    kind: str
    remaining: int
    path_prefix: str | None = None
    status: int | None = None
    retry_after: float | None = None
    method: str | None = None


class Faults:
    """The pending faults, checked in the order they were injected. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[Fault] = []

    def inject(
        self,
        kind: str,
        times: int = 1,
        path_prefix: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        *,
        method: str | None = None,
    ) -> Fault:
        """See :meth:`ReplicateSimulator.inject_fault`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "status" and status is None:
            status = 429 if retry_after is not None else 500
        fault = Fault(kind, times, path_prefix, status, retry_after, method.upper() if method else None)
        with self._lock:
            self._pending.append(fault)
        return fault

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._pending.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first pending fault matching this request (counted down), or None."""
        with self._lock:
            for fault in self._pending:
                if fault.remaining <= 0:
                    continue
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if fault.kind == "truncate" and not (method == "GET" and path.startswith("/delivery/")):
                    continue
                if fault.kind == "drop" and method == "HEAD":
                    continue
                fault.remaining -= 1
                self._pending = [f for f in self._pending if f.remaining > 0]
                return fault
        return None


def fault_response(fault: Fault) -> Response:
    """The problem-details answer of a ``"status"`` fault (with ``Retry-After`` if set)."""
    status = fault.status or 500
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        ra = fault.retry_after
        # whole numbers without a fraction: the client only parses digits
        headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
    return problem(status, "Injected fault", f"simulated HTTP {status}", headers)


def damage(response: Response, fault: Fault) -> Response:
    """Wrap ``response`` so it sends its full Content-Length but only part of the body
    (half for ``"truncate"``, at most 8 bytes for ``"drop"``), then the connection closes."""
    body_iter: Iterable[bytes]
    if response.direct_passthrough:
        body_iter = response.response  # type: ignore[assignment]
        length = response.content_length or 0
    else:
        data = response.get_data()
        body_iter = [data]
        length = len(data)
    limit = length // 2 if fault.kind == "truncate" else min(8, length // 2)

    def partial() -> Iterator[bytes]:
        sent = 0
        it = iter(body_iter)
        try:
            for chunk in it:
                if sent >= limit:
                    break
                piece = chunk[: limit - sent]
                sent += len(piece)
                yield piece
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    damaged = Response(
        partial(),
        status=response.status_code,
        headers=list(response.headers.items()),
        direct_passthrough=True,
    )
    damaged.content_length = length
    return damaged
