"""``cachelayer demo``: the offline walk-through on the Replicate simulator."""

from __future__ import annotations

import math

import click

__all__ = ["demo"]


def _seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or not 0.5 <= value <= 600:
        raise click.BadParameter(f"must be between 0.5 and 600 seconds, got {value}")
    return value


@click.command()
@click.option(
    "--images", type=click.IntRange(1, 50), default=3, show_default=True, help="Images the demo model makes."
)
@click.option(
    "--url-ttl",
    type=float,
    default=3.0,
    show_default=True,
    callback=_seconds,
    help="Seconds the source URLs live (0.5..600).",
)
@click.option("--keep", is_flag=True, help="Keep the demo's catalog and objects.")
def demo(images: int, url_ttl: float, keep: bool) -> None:
    """Offline demo: simulator -> persist -> source URLs expire -> durable URLs still serve."""
    from cachelayer.testing.demo import run_demo

    run_demo(images=images, url_ttl=url_ttl, keep=keep, echo=click.echo)
