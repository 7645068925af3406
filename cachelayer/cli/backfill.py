"""``cachelayer backfill`` and ``cachelayer worker``: copy many predictions' files.

Both show a live progress line on stderr when it is a terminal and print a summary on
stdout (see :mod:`cachelayer.cli.progress`); exit status 0 when every retrievable file is
stored, 1 when some failed.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

import click

from cachelayer.cli.options import SINCE, WHEN, open_layer, settings_options
from cachelayer.cli.progress import LiveProgress, print_summary
from cachelayer.expiry import check_on_expired
from cachelayer.processes import default_processes

__all__ = ["BACKFILL_CONCURRENCY", "backfill", "worker"]

#: Default transfers at once for `backfill` and `worker` (many small files; network bound).
BACKFILL_CONCURRENCY = 16

_summary_options = [
    click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object."),
    click.option("--quiet", "quiet_progress", is_flag=True, help="No live progress display."),
]


_processes = click.option(
    "--processes",
    type=click.IntRange(min=1),
    help="Copy with this many processes in all, sharing the catalog [default: cores less one].",
)

_retry_failed = click.option(
    "--retry-failed", is_flag=True, help="Put files that failed for good back in the queue first."
)


@click.command()
@click.option(
    "--since",
    type=SINCE,
    help="Oldest creation time: ISO 8601, or a window (6h, 7d) that keeps one checkpoint across runs.",
)
@click.option("--until", type=WHEN, help="Newest creation time (same forms).")
@click.option("--model", "models", multiple=True, metavar="OWNER/NAME", help="Only this model (repeatable).")
@click.option("--source", type=click.Choice(["api", "web"]), help="Only predictions created this way.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["succeeded", "failed", "canceled", "aborted", "starting", "processing"]),
    help="Only predictions with this status (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many predictions.")
@click.option("--dry-run", is_flag=True, help="Scan and report what would be copied; write nothing.")
@click.option("--scan-only", is_flag=True, help="Record and queue only; `cachelayer worker` copies.")
@click.option("--on-expired", type=click.Choice(["skip", "rerun"]), default="skip", show_default=True)
@_processes
@_retry_failed
@_summary_options[0]
@_summary_options[1]
@settings_options
def backfill(
    since: datetime | timedelta | None,
    until: datetime | None,
    models: tuple[str, ...],
    source: str | None,
    statuses: tuple[str, ...],
    limit: int | None,
    dry_run: bool,
    scan_only: bool,
    on_expired: str,
    processes: int | None,
    retry_failed: bool,
    as_json: bool,
    quiet_progress: bool,
    **options: Any,
) -> None:
    """Copy every retrievable file of your prediction history (resumable).

    Exit status 0 when every retrievable file is stored, 1 when some failed."""
    options["concurrency"] = options.get("concurrency") or BACKFILL_CONCURRENCY
    with open_layer(options) as layer, LiveProgress(not quiet_progress) as live:
        summary = layer.backfill(
            since=since,
            until=until,
            models=models,
            source=source,
            statuses=statuses,
            limit=limit,
            dry_run=dry_run,
            scan_only=scan_only,
            on_expired=check_on_expired(on_expired),
            retry_failed=retry_failed,
            progress=live.update,
            processes=processes or default_processes(),
        )
    print_summary(summary, as_json=as_json)
    sys.exit(summary.exit_code)


@click.command()
@click.option(
    "--once", is_flag=True, help="Exit when the queue is drained (files others hold are waited for)."
)
@_processes
@_retry_failed
@_summary_options[0]
@_summary_options[1]
@settings_options
def worker(
    once: bool,
    processes: int | None,
    retry_failed: bool,
    as_json: bool,
    quiet_progress: bool,
    **options: Any,
) -> None:
    """Drain the catalog's queue of pending files (--processes: several processes at once).

    Without --once it keeps polling until interrupted: Ctrl-C or SIGTERM finish the files
    in flight first, then the summary is printed (a second Ctrl-C stops at once). Exit
    status 130 after Ctrl-C; otherwise 0, or 1 when some file failed."""
    import signal
    import threading

    stop = threading.Event()
    interrupted = threading.Event()

    def on_sigint(*_: object) -> None:
        interrupted.set()
        stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, on_sigint)
    options["concurrency"] = options.get("concurrency") or BACKFILL_CONCURRENCY
    with open_layer(options) as layer, LiveProgress(not quiet_progress) as live:
        summary = layer.work(
            once=once,
            retry_failed=retry_failed,
            stop=stop,
            progress=live.update,
            processes=processes or default_processes(),
        )
    print_summary(summary, as_json=as_json)
    if interrupted.is_set():
        click.echo("cachelayer: interrupted", err=True)
        sys.exit(130)
    sys.exit(summary.exit_code)
