"""``cachelayer sweep``: one pass of the catch-up of missed webhooks, for cron.

Thin over :meth:`cachelayer.CacheLayer.sweep` (see :mod:`cachelayer.sweep`). Prints a
summary on stdout; exit status 0 when the pass completed and nothing failed, 1 when work
failed (Replicate or the catalog unreachable, a file or prediction that failed), 2 for
configuration errors.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from cachelayer.cli.options import open_layer, settings_options

__all__ = ["sweep"]


@click.command()
@click.option(
    "--scan-only", is_flag=True, help="Record and queue only; `cachelayer worker` or `serve` copies."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@settings_options
def sweep(scan_only: bool, as_json: bool, **options: Any) -> None:
    """Store what missed webhooks left behind (run it from cron, or let `serve` do it).

    Lists the predictions created since the last sweep (the last hour the first time),
    records and copies every finished one whose files are not stored, and re-reads the
    ones recorded as still running. Safe to run beside `serve` and other sweeps."""
    from cachelayer.cli.formatting import write_fields, write_json

    with open_layer(options) as layer:
        summary = layer.sweep(copy=not scan_only)
    if as_json:
        write_json(summary.to_dict())
    else:
        rows: list[tuple[str, Any]] = [
            ("listed since", summary.since),
            ("predictions listed", summary.predictions_listed),
            ("predictions re-read", summary.predictions_reread),
            ("predictions lost", summary.predictions_lost),
            ("files queued", summary.files_queued),
            ("files stored", summary.files_stored),
            ("files expired", summary.files_expired),
            ("files failed", summary.files_failed),
            ("predictions deleted", summary.predictions_deleted),
            ("checkpoint", summary.checkpoint),
            ("elapsed", f"{summary.elapsed_seconds:.1f}s"),
        ]
        rows += [(f"failed: {reason}", n) for reason, n in sorted(summary.failures.items())]
        rows += [("error", line) for line in summary.errors]
        write_fields(rows)
    sys.exit(summary.exit_code)
