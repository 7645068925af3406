"""``cachelayer delete`` and ``cachelayer prune``: delete predictions' copies.

Thin over :meth:`cachelayer.CacheLayer.delete` and :meth:`~cachelayer.CacheLayer.prune`
(see :mod:`cachelayer.delete`). Both print a summary on stdout (a table, or one JSON object
with ``--json``). Exit status: 0 when every id was deleted (or had been); 1 when an id is
unknown to the catalog or a delete was left unfinished (a store failed, a copy was in
flight: run it again, or serve's sweep finishes it); 2 for usage and configuration errors.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import click

from cachelayer.cli.options import open_layer, reading_options

if TYPE_CHECKING:
    from cachelayer.delete import DeleteSummary

__all__ = ["delete", "prune"]

#: Prediction statuses ``prune --status`` takes (Replicate's API reference).
PREDICTION_STATUSES = ("starting", "processing", "succeeded", "failed", "canceled", "aborted")


def _report(summary: DeleteSummary, as_json: bool) -> None:
    from cachelayer.cli.formatting import write_fields, write_json

    if as_json:
        write_json(summary.to_dict())
    else:
        rows: list[tuple[str, Any]] = []
        if summary.dry_run:
            rows.append(("dry run", "nothing was deleted"))
        verb = "to delete" if summary.dry_run else "deleted"
        rows += [
            (f"predictions {verb}", summary.predictions),
            (f"files {verb}", summary.files),
            ("bytes freed" if not summary.dry_run else "bytes to free", summary.bytes_freed),
            ("already deleted", len(summary.ids("already_deleted"))),
            ("elapsed", f"{summary.elapsed_seconds:.1f}s"),
        ]
        rows += [("unknown", pid) for pid in summary.ids("unknown")]
        rows += [
            (f"unfinished {o.prediction_id}", o.error) for o in summary.outcomes if o.outcome == "unfinished"
        ]
        write_fields(rows)
    unknown, unfinished = summary.ids("unknown"), summary.ids("unfinished")
    if unknown or unfinished:
        parts = [f"{len(unknown)} unknown id(s)"] if unknown else []
        if unfinished:
            parts.append(
                f"{len(unfinished)} delete(s) unfinished (run it again; serve's sweep finishes them)"
            )
        click.echo(f"cachelayer: {'; '.join(parts)}", err=True)
        sys.exit(1)


@click.command()
@click.argument("prediction_ids", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option("--reason", help="Why (kept on each tombstone: a GDPR request, a takedown).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@reading_options
def delete(
    prediction_ids: tuple[str, ...], dry_run: bool, reason: str | None, as_json: bool, **options: Any
) -> None:
    """Delete predictions' stored copies: every file's object (from the store it records),
    the recorded input and output. A tombstone stays (id, model, when, reason, bytes
    freed): `ls --status deleted` lists the files, `resolve` answers their URLs as
    unknown, the gateway 410 Gone, and nothing copies them again. Safe to run again;
    unknown ids are reported and exit 1."""
    with open_layer(options) as layer:
        summary = layer.delete(list(prediction_ids), reason, dry_run=dry_run)
    _report(summary, as_json)


def _age(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    from cachelayer.timeparse import parse_duration

    try:
        age = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if age <= timedelta(0):
        raise click.BadParameter("must be more than 0")
    return age


@click.command()
@click.option(
    "--older-than", required=True, callback=_age, help="Created longer ago than this: 90d, 12w, 36h."
)
@click.option("--model", "models", multiple=True, metavar="OWNER/NAME", help="Only this model (repeatable).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(PREDICTION_STATUSES),
    help="Only predictions with this status (repeatable).",
)
@click.option("--reason", help="Kept on each tombstone (default: retention: older than N days).")
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "quiet_progress", is_flag=True, help="No live progress display.")
@reading_options
def prune(
    older_than: timedelta,
    models: tuple[str, ...],
    statuses: tuple[str, ...],
    reason: str | None,
    dry_run: bool,
    as_json: bool,
    quiet_progress: bool,
    **options: Any,
) -> None:
    """Delete (as `cachelayer delete`) every recorded prediction created longer ago than
    --older-than, in batches, with progress on a terminal and a summary. The same as
    CACHELAYER_RETENTION does in every sweep of `serve`."""
    from cachelayer.cli.progress import LiveProgress, human_bytes

    with open_layer(options) as layer, LiveProgress(not quiet_progress) as live:

        def progress(s: DeleteSummary) -> None:
            verb = "to delete" if s.dry_run else "deleted"
            live.show(
                f"{s.predictions} prediction(s) {verb}, {s.files} file(s), "
                f"{human_bytes(s.bytes_freed)} in {s.elapsed_seconds:.0f}s"
            )

        summary = layer.prune(
            older_than, models=models, statuses=statuses, reason=reason, dry_run=dry_run, progress=progress
        )
    _report(summary, as_json)
