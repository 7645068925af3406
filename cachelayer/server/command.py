"""``serve_command``: the click command ``cachelayer serve`` (registered by the CLI;
also runnable alone as ``python -m cachelayer.server``)."""

from __future__ import annotations

from typing import Any

import click

from cachelayer.errors import CacheLayerError

__all__ = ["serve_command"]


class _Command(click.Command):
    """Prints cachelayer errors as one line with their exit status (2: configuration)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CacheLayerError as exc:
            click.echo(f"cachelayer: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.command("serve", cls=_Command)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one)."
)
@click.option(
    "--workers",
    type=click.IntRange(0, 256),
    default=None,
    help="Copy threads draining the queue [default: CACHELAYER_CONCURRENCY; 0: none].",
)
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Seconds SIGTERM waits for files in flight before releasing them to the queue.",
)
@click.option(
    "--sweep-interval",
    type=float,  # checked with the setting (cachelayer.config)
    default=None,
    help="Seconds between sweeps for predictions whose webhook never arrived "
    "[env CACHELAYER_SWEEP_INTERVAL; default 300; 0: off].",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
)
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One line per request.")
@click.option("--database-url", help="Catalog URL [env CACHELAYER_DATABASE_URL].")
@click.option("--storage-url", help="s3://bucket[/prefix] or file:///dir [env CACHELAYER_STORAGE_URL].")
def serve_command(
    host: str,
    port: int,
    workers: int | None,
    grace: float,
    log_level: str,
    access_log: bool,
    **options: Any,
) -> None:
    """Receive Replicate webhooks and serve gateway URLs (until SIGTERM or Ctrl-C).

    Routes: POST /webhooks/replicate, GET /files/{signature}/{key}, GET /healthz,
    GET /metrics. Copies run in this process's worker threads (and in any
    `cachelayer worker` sharing the catalog). Every --sweep-interval seconds a sweep
    queues the files of predictions whose webhook never arrived (see `cachelayer sweep`)."""
    from cachelayer.layer import CacheLayer
    from cachelayer.server.runner import run

    layer = CacheLayer(**{k: v for k, v in options.items() if v is not None})
    run(layer, host, port, workers=workers, grace=grace, log_level=log_level, access_log=access_log)
