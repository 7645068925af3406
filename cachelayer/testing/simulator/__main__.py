"""Run the Replicate simulator on its own, to try a client or the ``cachelayer`` CLI
against it::

    python -m cachelayer.testing.simulator --port 8765 [--delivery-port 8766]
        [--host 127.0.0.1] [--https]
        [--seed N] [--latency-ms N] [--token T] [--url-ttl S] [--data-removal-after S]
        [--prediction-duration S]

It registers the example models of :mod:`cachelayer.testing.simulator.examples`, seeds
``--seed`` past predictions, prints its base URL (the API), its file-delivery URL (another
port, as replicate.delivery is another host), token, CA file (``--https``) and the
``export`` line that points the ``replicate`` client and ``cachelayer`` at it, then serves
until Ctrl-C or SIGTERM (exit status 0).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from cachelayer.testing.simulator.examples import seed_examples
from cachelayer.testing.simulator.server import ReplicateSimulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cachelayer.testing.simulator",
        description="A local Replicate API and file-delivery server with example models.",
    )
    parser.add_argument("--port", type=int, default=8765, help="API port to listen on; 0 picks a free one")
    parser.add_argument(
        "--delivery-port",
        type=int,
        default=0,
        help="file-delivery port on the same host (default: a free one)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    parser.add_argument("--https", action="store_true", help="serve HTTPS with a generated throwaway CA")
    parser.add_argument(
        "--seed",
        type=int,
        default=8,
        metavar="N",
        help="past predictions to seed into the history (default %(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        metavar="N",
        help="milliseconds every request waits before it is answered (time to first byte)",
    )
    parser.add_argument("--token", default="test-token", help="API token to require (default %(default)s)")
    parser.add_argument(
        "--url-ttl", type=float, default=3600.0, metavar="S", help="seconds a file URL lives (default 3600)"
    )
    parser.add_argument(
        "--data-removal-after",
        type=float,
        default=3600.0,
        metavar="S",
        help="seconds after completion when API predictions lose their data (default 3600)",
    )
    parser.add_argument(
        "--prediction-duration",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds a new prediction takes (default %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGINT/SIGTERM; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.seed < 0:
        _parser().error("--seed must be >= 0")
    if args.latency_ms < 0:
        _parser().error("--latency-ms must be >= 0")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sim = ReplicateSimulator(
        args.token,
        https=args.https,
        host=args.host,
        port=args.port,
        delivery_port=args.delivery_port,
        url_ttl=args.url_ttl,
        data_removal_after=args.data_removal_after,
        prediction_duration=args.prediction_duration,
        latency=args.latency_ms / 1000,
    )
    try:
        sim.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    try:
        examples = seed_examples(sim, history=args.seed)
        say = print
        say(f"Replicate simulator on {sim.base_url}  (API: {sim.base_url}/v1, files: {sim.delivery_url})")
        say(f"token      {sim.token}")
        if sim.latency:
            say(f"latency    {args.latency_ms:g} ms before every response")
        if sim.ca_file:
            say(f"CA file    {sim.ca_file}")
        say("models")
        for ref, what in examples.refs.items():
            say(f"  {ref}\n      {what}")
        say("  deployment examples/painter-prod (runs examples/painter)")
        say(f"history    {len(examples.history)} past predictions of examples/painter")
        env = {
            "REPLICATE_BASE_URL": sim.base_url,
            "REPLICATE_API_TOKEN": sim.token,
            "CACHELAYER_ALLOWED_HOSTS": sim.delivery_host_port,
            "CACHELAYER_TOKEN_HOSTS": sim.delivery_host_port,
        }
        if sim.ca_file:
            env["CACHELAYER_CA_BUNDLE"] = sim.ca_file
            env["SSL_CERT_FILE"] = sim.ca_file
        say("point the replicate client and cachelayer at it:")
        say("  export " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()))
        say("then e.g.: cachelayer run examples/official-painter; cachelayer backfill")
        say("Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    try:
        status = main()
    except BrokenPipeError:  # stdout closed early (piped into head): nothing went wrong here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 0
    raise SystemExit(status)
