"""Live progress on stderr and the final summary of backfill and worker runs (rclone-style).

The live line is drawn only when stderr is a terminal (rich ``Live``); the summary is
always printed on stdout: a ``name  value`` table, or one JSON object with ``--json``.
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

from cachelayer.cli.formatting import write_fields, write_json

__all__ = ["LiveProgress", "RunSummary", "human_bytes", "print_summary", "status_line"]


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


def status_line(s: RunSummary) -> str:
    """One line: predictions scanned, files stored/skipped/expired/failed, bytes, rate, ETA."""
    done = s.files_stored + s.files_expired + s.files_failed
    left = max(0, s.files_queued - done)
    files_per_s = s.files_stored / s.elapsed_seconds if s.elapsed_seconds else 0.0
    eta = f"{left / files_per_s:.0f}s" if files_per_s and s.scan_complete else "-"
    return (
        f"predictions {s.predictions_scanned}  files stored {s.files_stored} "
        f"skipped {s.files_skipped} expired {s.files_expired} failed {s.files_failed}  "
        f"queued {left}  {human_bytes(s.bytes_stored)}  "
        f"{human_bytes(s.rate_bytes_per_second)}/s  ETA {eta}"
    )


class LiveProgress:
    """A context manager whose ``update(summary)`` redraws the status line on stderr when
    stderr is a terminal, and does nothing otherwise (or when ``enabled`` is false)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._live: Any = None

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            self._live = Live("", console=Console(file=sys.stderr), refresh_per_second=5, transient=True)
            self._live.__enter__()
        return self

    def update(self, summary: RunSummary) -> None:
        if self._live is not None:
            self._live.update(status_line(summary))

    def __exit__(self, *exc: object) -> None:
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
    rows.append(("elapsed", f"{s.elapsed_seconds:.1f}s"))
    for reason, n in sorted(s.failures.items(), key=lambda kv: -kv[1]):
        rows.append((f"failed: {reason}", n))
    write_fields(rows)
