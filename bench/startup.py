"""Start-up of the copy commands: time from starting ``cachelayer`` to its first request on
the network (issue 21, item 5: under 400 ms for ``run``, ``persist`` and ``backfill``).

A TCP relay stands in front of the Replicate simulator and of moto; each relay notes when
its first connection arrives, so the figure is what the servers see (the store's bucket
check, the API's ``GET``), whichever comes first. The clock starts just before the child
process is started (``subprocess.Popen``), so the interpreter's own start-up is included.
Each run uses a fresh copy of a migrated SQLite catalog (as an existing catalog is) and the
command's whole run is also timed (wall and CPU of the child, from ``wait4``).

    python bench/startup.py --runs 10            # every copy command, medians printed

The figures are whole-process figures on the machine it runs on: give its load with them
(the header prints it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchutil import child_env, communicate_wait4, cpu_of_pid, header, md_table  # noqa: E402

MODEL = "bench/startup"
COMMANDS = ("persist", "run", "backfill")


class FirstContact:
    """A TCP relay on 127.0.0.1 in front of ``target`` (host, port): every connection is
    forwarded both ways; :attr:`first` is the ``time.monotonic()`` of the first connection
    accepted since :meth:`reset` (``None`` before one)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.first: float | None = None
        #: CPU seconds (user + system) the process :attr:`pid` had used at the first connection
        self.first_cpu: float | None = None
        self.pid: int | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, pid: int | None = None) -> None:
        self.first = self.first_cpu = None
        self.pid = pid

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            if self.first is None:
                self.first = time.monotonic()
                if self.pid is not None:
                    self.first_cpu = cpu_of_pid(self.pid)
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


def ms(seconds: float) -> str:
    return f"{1000 * seconds:.0f}"


def command_args(name: str, pid: str) -> list[str]:
    if name == "persist":
        return ["persist", pid]
    if name == "run":
        return ["run", MODEL, "-i", "size=1000"]
    return ["backfill", "--limit", "1"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="runs of each command (default 10)")
    ap.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated: persist,run,backfill")
    args = ap.parse_args(argv)

    from cachelayer.catalog.db import make_engine, upgrade
    from cachelayer.testing.s3server import MotoS3Server
    from cachelayer.testing.simulator import File, ReplicateSimulator

    print("\n".join(header("startup.py", sys.argv[1:] if argv is None else argv)))
    sim = ReplicateSimulator().start()
    sim.prediction_duration = 0.0
    sim.add_model(MODEL)
    moto = MotoS3Server()
    moto.create_bucket("startup")
    tmp = tempfile.mkdtemp(prefix="cachelayer-startup-")
    template = os.path.join(tmp, "template.db")
    engine = make_engine(f"sqlite:///{template}")
    upgrade(engine)
    engine.dispose()
    sim_host, sim_port = sim.host_port.rsplit(":", 1)
    moto_host, moto_port = moto.endpoint_url.split("//", 1)[1].rsplit(":", 1)
    api_relay = FirstContact((sim_host, int(sim_port)))
    s3_relay = FirstContact((moto_host, int(moto_port)))
    env = dict(
        child_env(moto),
        CACHELAYER_STORAGE_URL="s3://startup/runs",
        CACHELAYER_ALLOWED_HOSTS=sim.delivery_host_port,  # files come from its delivery origin
        AWS_ENDPOINT_URL_S3=f"http://127.0.0.1:{s3_relay.port}",
        REPLICATE_API_TOKEN=sim.token,
        REPLICATE_BASE_URL=f"http://127.0.0.1:{api_relay.port}/v1",
    )
    exe = [sys.executable, "-m", "cachelayer.cli"]
    rows = []
    try:
        for name in args.commands.split(","):
            firsts: list[float] = []
            first_cpus: list[float] = []
            walls: list[float] = []
            cpus: list[float] = []
            for i in range(args.runs + 1):  # the first run warms the page cache, not counted
                pid = sim.seed_prediction(MODEL, {"size": 1000}, File(size=1000, seed=i, filename="o.bin"))
                db = os.path.join(tmp, f"{name}-{i}.db")
                shutil.copy(template, db)
                api_relay.reset()
                s3_relay.reset()
                t0 = time.monotonic()
                proc = subprocess.Popen(
                    [*exe, *command_args(name, pid)],
                    env=dict(env, CACHELAYER_DATABASE_URL=f"sqlite:///{db}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                api_relay.pid = s3_relay.pid = proc.pid
                out, err, code, usage = communicate_wait4(proc)
                wall = time.monotonic() - t0
                if code != 0:
                    raise RuntimeError(f"{name} exited {code}: {err.strip()[-2000:]}")
                seen = [(r.first, r.first_cpu) for r in (api_relay, s3_relay) if r.first is not None]
                if not seen:
                    raise RuntimeError(f"{name}: no request reached either server")
                if i:
                    at, cpu_at = min(seen, key=lambda pair: pair[0])
                    firsts.append(at - t0)
                    first_cpus.append(cpu_at if cpu_at is not None else float("nan"))
                    walls.append(wall)
                    cpus.append(usage.ru_utime + usage.ru_stime)
            a, b = api_relay.first, s3_relay.first
            api_first = a is not None and (b is None or a < b)
            first = "API" if api_first else "S3"
            rows.append(
                [
                    f"`cachelayer {' '.join(command_args(name, '<id>'))}`",
                    f"{ms(statistics.median(firsts))} ({ms(min(firsts))}-{ms(max(firsts))})",
                    f"{1000 * statistics.median(first_cpus):.0f}",
                    first,
                    f"{1000 * statistics.median(walls):.0f}",
                    f"{1000 * statistics.median(cpus):.0f}",
                ]
            )
    finally:
        api_relay.close()
        s3_relay.close()
        moto.stop()
        sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        md_table(
            [
                "command",
                "wall ms to first request, median (min-max)",
                "CPU ms by then",
                "first to",
                "whole run wall ms",
                "child CPU ms",
            ],
            rows,
        )
    )
    print(f"{args.runs} runs each after one warm-up; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
