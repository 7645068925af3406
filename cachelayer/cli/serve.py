"""``cachelayer serve``: the webhook receiver and the gateway (:mod:`cachelayer.server`).

The command itself lives with the server (:data:`cachelayer.server.command.serve_command`,
also runnable as ``python -m cachelayer.server``); importing it is cheap (click only), the
ASGI stack loads when the command runs."""

from __future__ import annotations

from cachelayer.cli.app import main
from cachelayer.server.command import serve_command

main.add_command(serve_command)
