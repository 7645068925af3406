"""``cachelayer run`` and ``cachelayer persist``: copy the files of one prediction now.

Both need everything (Replicate token, reachable store, catalog); both print the durable
output on stdout (one URL per line, or JSON with ``--json``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from cachelayer.cli.formatting import write_json, write_text
from cachelayer.cli.options import open_layer, settings_options
from cachelayer.errors import CacheLayerError, ConfigError
from cachelayer.expiry import ON_EXPIRED, check_on_expired

__all__ = ["parse_inputs", "persist", "print_output", "run"]


def print_output(output: Any, as_json: bool) -> None:
    """Durable output on stdout: JSON with ``--json``; otherwise one URL per line for a
    string or a flat list of strings, indented JSON for anything else (what stdout cannot
    encode escaped, :func:`~cachelayer.cli.formatting.escaping`)."""
    if as_json:
        write_json(output, compact=True)
    elif isinstance(output, str):
        write_text(output)
    elif isinstance(output, list) and all(isinstance(v, str) for v in output):
        for v in output:
            write_text(v)
    else:
        write_json(output)


def parse_inputs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``key=value`` pairs to a model input. Values parse as JSON when they can
    (``2`` is a number, ``true`` a boolean), else stay strings; ``@path`` sends a local file.
    Raises ``click.BadParameter`` (exit status 2) for a pair without ``=`` or a missing file."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-i/--input")
        value: Any
        if raw.startswith("@"):
            path = Path(raw[1:]).expanduser()
            if not path.is_file():
                raise click.BadParameter(f"no such file: {path}", param_hint="-i/--input")
            value = path
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        result[key] = value
    return result


_wait_timeout = click.option(
    "--wait-timeout",
    "wait_timeout",
    type=click.FloatRange(min=0),
    help="Seconds to wait for the prediction to finish; 0 waits forever [env CACHELAYER_WAIT_TIMEOUT, 1800].",
)
_on_expired = click.option("--on-expired", type=click.Choice(ON_EXPIRED), default="raise", show_default=True)


@click.command()
@click.argument("model")
@click.option(
    "-i",
    "--input",
    "inputs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model input; JSON values parse (num_outputs=2), @path sends a file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the durable output as JSON.")
@_on_expired
@click.option(
    "--file-encoding",
    type=click.Choice(["base64", "upload"]),
    default="base64",
    show_default=True,
    help="How @path inputs are sent: data: URI or Replicate's files API.",
)
@_wait_timeout
@settings_options
def run(
    model: str, inputs: tuple[str, ...], as_json: bool, on_expired: str, file_encoding: str, **options: Any
) -> None:
    """Run MODEL (owner/name[:version] or deployments/owner/name), store its files,
    print the output with durable URLs."""
    data = parse_inputs(inputs)
    params: dict[str, Any] = {}
    if any(isinstance(v, Path) for v in data.values()) and file_encoding == "base64":
        params["file_encoding_strategy"] = "base64"
    with open_layer(options) as layer:
        print_output(layer.run(model, input=data, on_expired=check_on_expired(on_expired), **params), as_json)


@click.command()
@click.argument("prediction_ids", nargs=-1, required=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {id: {"ok": true, "output": ...} or {"ok": false, "error": ..., "error_type": ...}}.',
)
@_on_expired
@_wait_timeout
@settings_options
def persist(prediction_ids: tuple[str, ...], as_json: bool, on_expired: str, **options: Any) -> None:
    """Copy the files of existing predictions; print their durable outputs.

    Every id is attempted; the exit status is 1 if any failed. With --json, every id is a
    key, in the order given: {"ok": true, "output": <durable output>} or {"ok": false,
    "error": <one line>, "error_type": <the error's class, e.g. ExpiredDownloadUrlError>}."""
    results: dict[str, dict[str, Any]] = {}
    with open_layer(options) as layer:
        for pid in prediction_ids:
            try:
                results[pid] = {
                    "ok": True,
                    "output": layer.persist(pid, on_expired=check_on_expired(on_expired)),
                }
            except ConfigError:
                raise
            except CacheLayerError as exc:
                line = " ".join(str(exc).split())
                click.echo(f"cachelayer: error: {pid}: {line}", err=True)
                results[pid] = {"ok": False, "error": line, "error_type": type(exc).__name__}
    if as_json:
        write_json(results, compact=True)
    else:
        for pid, result in results.items():
            if not result["ok"]:
                continue
            if len(prediction_ids) > 1:
                click.echo(f"# {pid}")
            print_output(result["output"], False)
    if any(not r["ok"] for r in results.values()):
        sys.exit(1)
