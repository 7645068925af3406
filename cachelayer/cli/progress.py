"""Live progress on stderr and the final summary of backfill and worker runs (rclone-style).

The live line is drawn only when stderr is a terminal (rich ``Live``). While it is drawn,
the ``cachelayer`` logger's records are printed through the same rich console, above the
line (rich redraws the line below them), so a warning is never overwritten by the next
redraw nor cut into it. The ETA is the files left at the rate of the last
:data:`ETA_WINDOW` seconds (:class:`EtaEstimator`), not the run's average, which a slow
start (the scan, the first page) would drag down. The summary is always printed on
stdout: a ``name  value`` table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from cachelayer.cli.formatting import write_fields, write_json

if TYPE_CHECKING:
    from rich.console import Console

__all__ = [
    "ETA_WINDOW",
    "EtaEstimator",
    "LiveProgress",
    "RunSummary",
    "done_and_left",
    "human_bytes",
    "print_summary",
    "status_line",
]

#: Seconds of recent progress the ETA's rate is measured over.
ETA_WINDOW = 10.0


class RunSummary(Protocol):
    """What this module reads of a run's summary
    (:class:`cachelayer.workers.BackfillSummary`): counts, bytes, seconds."""

    predictions_scanned: int
    predictions_removed: int
    predictions_rerun: int
    files_queued: int
    files_stored: int
    files_skipped: int
    files_expired: int
    files_failed: int
    files_retrying: int
    files_to_copy: int
    bytes_stored: int
    elapsed_seconds: float
    failures: dict[str, int]
    dry_run: bool
    scan_complete: bool
    processes: int
    files_stored_by_helpers: int

    @property
    def rate_bytes_per_second(self) -> float: ...

    def to_dict(self) -> dict[str, Any]: ...


def human_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB`` (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class EtaEstimator:
    """Seconds left from the recent rate: ``estimate(done, left)`` records how many files
    are done at ``clock()`` (seconds, default ``time.monotonic``) and returns ``left``
    divided by the files done per second over the last ``window`` seconds, counted from
    the first file done (time before it, spent scanning, is no rate); ``None`` while no
    rate is known (nothing done yet, or nothing done within the window)."""

    def __init__(self, window: float = ETA_WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque()
        self._start: tuple[float, int] | None = None  # the last reading before the first file done

    def estimate(self, done: int, left: int) -> float | None:
        now = self.clock()
        if self._start is None or self._start[1] == done and len(self._samples) <= 1:
            self._start = (now, done)
            self._samples.clear()
        samples = self._samples
        samples.append((now, done))
        # keep one sample at or before the window's start as its baseline
        while len(samples) > 1 and samples[1][0] <= now - self.window:
            samples.popleft()
        if left <= 0:
            return 0.0
        t0, d0 = max(samples[0], self._start)
        if now <= t0 or done <= d0:
            return None
        return left / ((done - d0) / (now - t0))


def done_and_left(s: RunSummary) -> tuple[int, int]:
    """Files a run is through with (stored, expired, failed) and files left of those queued."""
    done = s.files_stored + s.files_expired + s.files_failed
    return done, max(0, s.files_queued - done)


def status_line(s: RunSummary, eta_seconds: float | None = None) -> str:
    """One line: predictions scanned, files stored/skipped/expired/failed, files left in
    the queue, bytes, rate and ``eta_seconds`` (shown once the scan is complete)."""
    _, left = done_and_left(s)
    eta = f"{eta_seconds:.0f}s" if eta_seconds is not None and s.scan_complete else "-"
    return (
        f"predictions {s.predictions_scanned}  files stored {s.files_stored} "
        f"skipped {s.files_skipped} expired {s.files_expired} failed {s.files_failed}  "
        f"queued {left}  {human_bytes(s.bytes_stored)}  "
        f"{human_bytes(s.rate_bytes_per_second)}/s  ETA {eta}"
    )


class _ConsoleHandler(logging.Handler):
    """Prints log records through a rich console (above its live display), formatted as
    the handler it stands in for formatted them."""

    def __init__(self, console: Console, like: logging.Handler | None) -> None:
        super().__init__()
        self.console = console
        if like is not None:
            self.setFormatter(like.formatter)
            self.setLevel(like.level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            self.console.print(text, markup=False, highlight=False, emoji=False, soft_wrap=True)
        except Exception:
            self.handleError(record)


class LiveProgress:
    """A context manager whose ``update(summary)`` redraws the status line on stderr when
    stderr is a terminal, and does nothing otherwise (or when ``enabled`` is false).

    While the line is shown, the ``cachelayer`` logger prints through the live display's
    console (see the module docstring); its handlers are put back on exit. ``console``:
    draw on this rich console instead (tests; it is then taken as the terminal)."""

    def __init__(self, enabled: bool = True, *, console: Console | None = None) -> None:
        self.enabled = enabled and (console is not None or sys.stderr.isatty())
        self._console = console
        self._live: Any = None
        self._eta = EtaEstimator()
        self._saved_handlers: list[logging.Handler] | None = None

    @property
    def console(self) -> Console:
        """The console the live line is drawn on (only while it is shown)."""
        assert self._live is not None
        return self._live.console  # type: ignore[no-any-return]

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            console = self._console or Console(file=sys.stderr)
            self._live = Live("", console=console, refresh_per_second=5, transient=True)
            self._live.__enter__()
            logger = logging.getLogger("cachelayer")
            self._saved_handlers = logger.handlers[:]
            like = self._saved_handlers[0] if self._saved_handlers else None
            logger.handlers[:] = [_ConsoleHandler(console, like)]
        return self

    def update(self, summary: RunSummary) -> None:
        if self._live is not None:
            self._live.update(status_line(summary, self._eta.estimate(*done_and_left(summary))))

    def show(self, text: str) -> None:
        """Redraw the line with ``text`` (a run whose summary is not a :class:`RunSummary`:
        ``cachelayer prune``)."""
        if self._live is not None:
            self._live.update(text)

    def __exit__(self, *exc: object) -> None:
        if self._saved_handlers is not None:
            logging.getLogger("cachelayer").handlers[:] = self._saved_handlers
            self._saved_handlers = None
        if self._live is not None:
            self._live.__exit__(None, None, None)


def print_summary(s: RunSummary, *, as_json: bool) -> None:
    """The final summary on stdout: one JSON object, or an aligned table with the
    failures grouped by reason (and a dry-run notice when nothing was written)."""
    if as_json:
        write_json(s.to_dict())
        return
    rows: list[tuple[str, Any]] = []
    if s.dry_run:
        rows.append(("dry run", "nothing was written to storage or the catalog"))
    rows += [
        ("predictions scanned", s.predictions_scanned),
        ("predictions removed", s.predictions_removed),
    ]
    if not s.dry_run:
        rows.append(("files queued", s.files_queued))
    if s.predictions_rerun:
        rows.append(("predictions rerun", s.predictions_rerun))
    if s.dry_run:
        rows += [("files to copy", s.files_to_copy), ("files already stored", s.files_skipped)]
    else:
        rows += [
            ("files stored", s.files_stored),
            ("files skipped", s.files_skipped),
            ("files expired", s.files_expired),
            ("files failed", s.files_failed),
        ]
        if s.files_retrying:
            rows.append(("files to retry", s.files_retrying))
        rows += [
            ("bytes stored", s.bytes_stored),
            ("rate", f"{human_bytes(s.rate_bytes_per_second)}/s"),
        ]
    if s.processes > 1:
        rows.append(("processes", s.processes))
        rows.append(("stored by the other processes", s.files_stored_by_helpers))
    rows.append(("elapsed", f"{s.elapsed_seconds:.1f}s"))
    for reason, n in sorted(s.failures.items(), key=lambda kv: -kv[1]):
        rows.append((f"failed: {reason}", n))
    write_fields(rows)
