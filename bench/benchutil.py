"""Helpers shared by the bench scripts (imported from the scripts' own folder).

One home for what ``persist.py`` and ``backfill.py`` both need: child processes and their
rusage, CPU and memory readings from ``/proc``, additive call timers, the Replicate
simulator in a process of its own (with its ``latency`` knob), the moto environment for
children, py-spy profiles, Markdown tables and the header every run prints (machine,
commit, load). Nothing here changes cachelayer's behaviour: timers wrap public methods of
one object and only add a clock reading around the call.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import platform
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1 << 20
KB = 1000
ROOT = Path(__file__).resolve().parent.parent

# ---- child processes --------------------------------------------------------------------


def communicate_wait4(proc: subprocess.Popen[bytes]) -> tuple[str, str, int, Any]:
    """Read the child's output and reap it with ``os.wait4``, which gives that child's own
    ``rusage``. Returns ``(stdout, stderr, exit status, rusage)``."""
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr
    err_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: err_chunks.append(stderr.read()), daemon=True)
    reader.start()
    out = proc.stdout.read()
    reader.join()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    stderr.close()
    return out.decode(), b"".join(err_chunks).decode(errors="replace"), proc.returncode, usage


#: ``python -S -c LAUNCHER REPORT CMD...``: runs ``CMD`` as a child of a small process and
#: writes its wall seconds (fork to reaped), CPU seconds and ``ru_maxrss`` (KiB) to
#: ``REPORT``; exits with its status. Linux keeps the largest RSS a process had across
#: ``execve``, and a child forked from the bench (which holds boto3, moto's client, ...)
#: starts with the bench's RSS: ``wait4`` on such a child reports the bench's size for any
#: program smaller than it. Forked from this launcher (a few MiB), the program's own peak.
LAUNCHER = """
import json, os, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(cmd[0], cmd)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(report, "w") as f:
    json.dump({"seconds": seconds, "cpu": ru.ru_utime + ru.ru_stime, "maxrss_kib": ru.ru_maxrss}, f)
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def json_out(out: str) -> dict[str, Any]:
    """The JSON object a child printed: the last one that starts a line, whole (the CLI's
    indented ``--json``, a bench child's one line), whatever else stdout holds around it
    (py-spy's own lines under ``--profile``). Raises ``ValueError`` when there is none."""
    decoder = json.JSONDecoder()
    for start in reversed([m.start() for m in re.finditer(r"^\{", out, re.MULTILINE)]):
        try:
            return dict(decoder.raw_decode(out, start)[0])
        except json.JSONDecodeError:
            continue
    raise ValueError(f"no JSON object in the child's output: {out[-500:]!r}")


def run_json(cmd: list[str], env: dict[str, str], what: str) -> tuple[dict[str, Any], Any]:
    """Run ``cmd``; return the JSON it printed and its rusage. Raises ``RuntimeError`` with
    the end of its stderr when it fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err, status, usage = communicate_wait4(proc)
    if status != 0:
        raise RuntimeError(f"{what} failed ({status}):\n{err[-4000:]}\n{out[-1000:]}")
    return json_out(out), usage


def child_env(moto: Any) -> dict[str, str]:
    """This environment without ``CACHELAYER_*`` / ``REPLICATE_*`` settings, plus moto's
    credentials and region, for the bench's child processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHELAYER_", "REPLICATE_"))}
    env.update(
        AWS_ACCESS_KEY_ID=moto.access_key_id,
        AWS_SECRET_ACCESS_KEY=moto.secret_access_key,
        AWS_REGION=moto.region,
    )
    return env


def moto_pid(moto: Any) -> int:
    """The process id of a ``MotoS3Server`` (for its CPU time)."""
    return int(moto._proc.pid)


# ---- CPU and memory -------------------------------------------------------------------


def self_cpu() -> float:
    """User + system CPU seconds of this process."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_of_pid(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/<pid>/stat``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def proc_status_kib(name: str) -> int:
    """``VmHWM`` / ``VmRSS`` of this process from ``/proc/self/status``, KiB (0 if absent)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    return 0


class CpuMeter:
    """CPU seconds over a ``with`` block of each process in ``pids`` (name -> pid) and of
    the whole machine: ``cpu[name]``, ``machine`` (busy), ``machine_capacity`` (all CPUs)
    and ``wall``."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.cpu: dict[str, float] = {}

    def _sample(self) -> list[float]:
        busy, total = machine_cpu()
        return [*(cpu_of_pid(p) for p in self.pids.values()), busy, total, time.perf_counter()]

    def __enter__(self) -> CpuMeter:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        d = [b - a for a, b in zip(self._start, self._sample())]
        self.cpu = dict(zip([*self.pids, "machine", "machine_capacity", "wall"], d))


# ---- timers ---------------------------------------------------------------------------


class CallTimer:
    """Sums wall seconds and counts calls per method, by wrapping public methods of one
    object (an instance attribute shadows the method; the object is otherwise untouched).
    Time in an outermost timed call (not inside another timed one) is also summed as
    ``top``, so totals count nested calls (``record`` -> ``ensure_files``) once."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.top: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def wrap_all(self, target: Any, prefix: str = "") -> None:
        """Wrap every public method of ``target``, labelled ``prefix + name``."""
        for name in dir(type(target)):
            if name.startswith("_") or not inspect.isfunction(inspect.getattr_static(type(target), name)):
                continue  # properties, attributes and repositories are not calls to time
            self.wrap(target, name, prefix + name)

    def wrap(self, target: Any, name: str, label: str, on_return: Callable[[Any], Any] | None = None) -> None:
        """Wrap ``target.name``; ``on_return(result)`` may replace what the call returns
        (e.g. to wrap the object it returns as well)."""
        fn = getattr(target, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._local, "depth", 0)
            self._local.depth = depth + 1
            t0 = time.perf_counter()
            try:
                result = fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                self._local.depth = depth
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + dt
                    self.calls[label] = self.calls.get(label, 0) + 1
                    if depth == 0:
                        self.top[label] = self.top.get(label, 0.0) + dt
            return on_return(result) if on_return is not None else result

        setattr(target, name, timed)

    def take(self) -> dict[str, list[float]]:
        """``{label: [calls, seconds, outermost seconds]}`` since the last take; resets."""
        with self._lock:
            out = {k: [self.calls[k], self.seconds[k], self.top.get(k, 0.0)] for k in self.seconds}
            self.seconds, self.calls, self.top = {}, {}, {}
        return out


def time_s3_calls(client: Any) -> dict[str, float]:
    """Seconds spent in each S3 operation of a boto3 client (summed over calls; parts
    overlap), through botocore's ``before-call`` / ``after-call`` events."""
    spent: dict[str, float] = {}

    def before(context: dict[str, Any], **_: Any) -> None:
        context["bench_t0"] = time.perf_counter()

    def after(model: Any, context: dict[str, Any], **_: Any) -> None:
        if "bench_t0" in context:
            spent[model.name] = spent.get(model.name, 0.0) + time.perf_counter() - context["bench_t0"]

    client.meta.events.register("before-call.s3", before)
    client.meta.events.register("after-call.s3", after)
    return spent


# ---- the simulator in its own process -------------------------------------------------


def serve_simulator(
    seed: Callable[[Any], Any], commands: dict[str, Callable[[Any, str], Any]] | None = None
) -> None:
    """Child side of :class:`SimProcess`: start a simulator, ``seed(sim)``, print one JSON
    line (base URL, token, pid, what ``seed`` returned), then answer commands on stdin
    until EOF: ``downloads`` (JSON: delivery path -> successful GETs), ``latency S`` and
    the script's own ``commands`` (name -> ``fn(sim, argument)``, its JSON answer)."""
    from cachelayer.testing.simulator import ReplicateSimulator

    with ReplicateSimulator() as sim:
        info = {"base_url": sim.base_url, "delivery_host_port": sim.delivery_host_port, "token": sim.token}
        print(json.dumps({**info, "seeded": seed(sim)}), flush=True)
        for line in sys.stdin:
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "downloads":
                print(json.dumps(download_counts(sim)), flush=True)
            elif cmd == "latency":
                sim.latency = float(arg)
                print("{}", flush=True)
            elif commands and cmd in commands:
                print(json.dumps(commands[cmd](sim, arg)), flush=True)


def download_counts(sim: Any) -> dict[str, int]:
    """Delivery path -> how many GETs of it were answered 200/206."""
    counts: dict[str, int] = {}
    for r in sim.request_log:
        if r.method == "GET" and r.path.startswith("/delivery/") and r.status in (200, 206):
            counts[r.path] = counts.get(r.path, 0) + 1
    return counts


class SimProcess:
    """The simulator serving in a child process (``cmd`` runs :func:`serve_simulator`), so
    it shares no GIL with the code being timed. ``seeded`` is what its seeding returned."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"simulator process exited with {self.proc.returncode}")
        info = json.loads(line)
        self.pid = self.proc.pid
        self.base_url: str = info["base_url"]
        self.delivery_host_port: str = info["delivery_host_port"]
        self.token: str = info["token"]
        self.seeded: Any = info["seeded"]
        self._lock = threading.Lock()

    def _ask(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def downloads(self) -> dict[str, int]:
        return dict(self._ask("downloads"))

    def ask(self, command: str, argument: str = "") -> Any:
        """A script's own command (see :func:`serve_simulator`); its JSON answer."""
        return self._ask(f"{command} {argument}".rstrip())

    def set_latency(self, seconds: float) -> None:
        """The simulator's ``latency``: time to first byte of every API and delivery request."""
        self._ask(f"latency {seconds}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def latencies(text: str) -> list[float]:
    """``--latency-ms 0,50`` -> ``[0.0, 0.05]`` (seconds). Raises ``ValueError``."""
    values = [float(x) / 1000 for x in text.split(",") if x.strip()]
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--latency-ms needs comma-separated values >= 0, got {text!r}")
    return values


def postgres_url(given: str | None) -> str | None:
    """The PostgreSQL admin URL to use (``given``, ``CACHELAYER_TEST_POSTGRES_URL``, the
    local default), or ``None`` with a note on stderr when it does not answer."""
    from cachelayer.testing.fixtures import DEFAULT_POSTGRES_URL, PostgresAdmin

    url = given or os.environ.get("CACHELAYER_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    try:
        PostgresAdmin(url).ping()
    except Exception as exc:
        print(f"# PostgreSQL not usable at {url}: {exc}; skipping its runs", file=sys.stderr)
        return None
    return url


class Servers:
    """What a bench runs against: moto (its own process, or ``moto`` given by a test and
    left running), the simulator in a process of its own (``sim_cmd`` runs
    :func:`serve_simulator`), a temporary directory, fresh buckets and catalog databases,
    and :meth:`measured` commands (CPU of every process, py-spy with ``profile``)."""

    def __init__(
        self,
        sim_cmd: list[str],
        *,
        moto: Any = None,
        postgres_url: str | None = None,
        profile: str | None = None,
    ) -> None:
        from cachelayer.testing.s3server import MotoS3Server

        self._own_moto = moto is None
        self.moto = moto if moto is not None else MotoS3Server()
        self.sim = SimProcess(sim_cmd)
        self.latency = 0.0
        self.s3 = self.moto.client()
        self.tmp = tempfile.TemporaryDirectory(prefix="cachelayer-bench-")
        self.postgres_url = postgres_url
        self.profiler = Profiler(profile) if profile else None
        self.env = child_env(self.moto)

    def close(self) -> None:
        self.sim.stop()
        self.s3.close()
        if self._own_moto:
            self.moto.stop()
        self.tmp.cleanup()

    def set_latency(self, seconds: float) -> None:
        """The simulator's time to first byte on every API and delivery request."""
        self.sim.set_latency(seconds)
        self.latency = seconds

    @contextlib.contextmanager
    def bucket(self, label: str, *, keep: bool = False) -> Iterator[str]:
        """A fresh bucket ``bench-<label>-<random>``, deleted afterwards unless ``keep``."""
        name = f"bench-{label}-{secrets.token_hex(4)}"
        self.s3.create_bucket(Bucket=name)
        try:
            yield name
        finally:
            if not keep:
                self.delete_bucket(name)

    def delete_bucket(self, name: str) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        self.s3.delete_bucket(Bucket=name)

    def objects(self, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
        """Key relative to ``prefix/`` -> ``(size, ETag without quotes)`` of every output
        copy: the predictions' manifests (``_manifests/``, issue 18) are left out."""
        found = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                rel = o["Key"][len(prefix) + 1 :]
                if not rel.startswith("_manifests/"):
                    found[rel] = (o["Size"], o["ETag"].strip('"'))
        return found

    def cli_env(self, database_url: str, bucket: str, prefix: str) -> dict[str, str]:
        """The environment of a ``cachelayer`` command against these servers."""
        return dict(
            self.env,
            CACHELAYER_DATABASE_URL=database_url,
            CACHELAYER_STORAGE_URL=f"s3://{bucket}/{prefix}",
            CACHELAYER_ALLOWED_HOSTS=self.sim.delivery_host_port,
            AWS_ENDPOINT_URL_S3=self.moto.endpoint_url,
            REPLICATE_API_TOKEN=self.sim.token,
            REPLICATE_BASE_URL=self.sim.base_url,
        )

    def sqlite_url(self) -> str:
        return f"sqlite:///{self.tmp.name}/catalog-{secrets.token_hex(4)}.db"

    @contextlib.contextmanager
    def database(self, dialect: str) -> Iterator[str]:
        """A fresh catalog database URL: a SQLite file, or a new PostgreSQL database that is
        dropped afterwards."""
        if dialect == "sqlite":
            yield self.sqlite_url()
            return
        from cachelayer.testing.fixtures import PostgresAdmin

        assert self.postgres_url is not None
        admin = PostgresAdmin(self.postgres_url)
        url = admin.create_database("cachelayer_bench_")
        try:
            yield url
        finally:
            admin.drop_database(url)

    @contextlib.contextmanager
    def measured(self, label: str, *cmds: list[str]) -> Iterator[tuple[list[list[str]], CpuMeter]]:
        """``cmds`` (wrapped in py-spy with ``profile``, the simulator and moto profiled
        meanwhile) and a :class:`CpuMeter` of the simulator, moto and the machine."""
        pids = {"simulator": self.sim.pid, "moto": moto_pid(self.moto)}
        profiling: Any = contextlib.nullcontext()
        if self.profiler is not None:
            name = self.profiler.label(label)
            cmds = tuple(self.profiler.wrap(c, f"{name}-copier{i}") for i, c in enumerate(cmds))
            profiling = self.profiler.attach(name, pids)
        with profiling, CpuMeter(pids) as meter:
            yield list(cmds), meter

    def run(
        self, label: str, cmds: Sequence[list[str]], env: dict[str, str]
    ) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Run ``cmds`` at once (measured); return the JSON each printed and the CPU seconds
        (``child``: all of them together, from their rusage). Raises ``RuntimeError`` when
        one fails."""
        with self.measured(label, *cmds) as (wrapped, meter):
            procs = [
                subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in wrapped
            ]
            done = [communicate_wait4(p) for p in procs]
        keep = os.environ.get("BENCH_CHILD_STDERR")  # a folder: every child's stderr is kept there
        for out, err, status, _ in done:
            if keep:
                Path(keep).mkdir(parents=True, exist_ok=True)
                (Path(keep) / f"{label}-{secrets.token_hex(3)}.txt").write_text(err)
            if status != 0:
                raise RuntimeError(f"{label} failed ({status}):\n{err[-4000:]}\n{out[-1000:]}")
        child = sum(u.ru_utime + u.ru_stime for _, _, _, u in done)
        return [json_out(out) for out, _, _, _ in done], {**meter.cpu, "child": child}

    def run_rusage(
        self, label: str, cmds: Sequence[list[str]], env: dict[str, str]
    ) -> tuple[list[tuple[str, str, dict[str, float]]], dict[str, float]]:
        """:meth:`run` for commands that print anything, each started by :data:`LAUNCHER`:
        ``(stdout, stderr, own)`` of each, ``own`` its ``seconds`` (launch to exit), ``cpu``
        seconds and ``maxrss_kib`` (peak RSS; for ``xargs`` and the like, the largest among
        the processes it waited for), and the CPU seconds as :meth:`run` gives them
        (``child``: the commands' own). Raises ``RuntimeError`` when one fails."""
        reports = [Path(self.tmp.name) / f"rusage-{secrets.token_hex(4)}.json" for _ in cmds]
        launched = [[sys.executable, "-S", "-c", LAUNCHER, str(r), *c] for r, c in zip(reports, cmds)]
        with self.measured(label, *launched) as (wrapped, meter):
            procs = [
                subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for c in wrapped
            ]
            done = [communicate_wait4(p) for p in procs]
        for out, err, status, _ in done:
            if status != 0:
                raise RuntimeError(f"{label} failed ({status}):\n{err[-4000:]}\n{out[-1000:]}")
        own = [json.loads(r.read_text()) for r in reports]
        for r in reports:
            r.unlink()
        child = sum(o["cpu"] for o in own)
        return [(out, err, o) for (out, err, _, _), o in zip(done, own)], {**meter.cpu, "child": child}

    def object_sha256(self, bucket: str, key: str) -> tuple[int, str]:
        """``(size, SHA-256 hex)`` of an object's bytes, read back in 1 MiB chunks."""
        import hashlib

        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        h, n = hashlib.sha256(), 0
        for chunk in body.iter_chunks(MiB):
            h.update(chunk)
            n += len(chunk)
        return n, h.hexdigest()


@dataclass
class Run:
    """One measured run: wall seconds, files and bytes copied, CPU seconds per process
    (``child``, ``simulator``, ``moto``, ``machine``, ``machine_capacity``)."""

    label: str
    seconds: float
    files: int
    bytes: int
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def files_per_s(self) -> float:
        return self.files / self.seconds if self.seconds else 0.0


CPU_HEAD = ["CPU ms/file: copier", "simulator", "moto", "rest (PostgreSQL, others)", "machine busy"]


def cpu_cells(r: Run) -> list[str]:
    """CPU ms per file of the copier (all its processes together), the simulator, moto and
    the rest of the machine; the share of all cores busy (columns :data:`CPU_HEAD`)."""
    c, n = r.cpu, max(1, r.files)
    rest = c["machine"] - c["child"] - c["simulator"] - c["moto"]
    busy = c["machine"] / c["machine_capacity"] if c.get("machine_capacity") else 0.0
    return [f"{1000 * v / n:.2f}" for v in (c["child"], c["simulator"], c["moto"], rest)] + [f"{busy:.0%}"]


# ---- stand-ins for a no-op transfer -----------------------------------------------------


class NoBytes:
    """A stand-in download: a size, a digest, a content type and length, no bytes."""

    def __init__(self, size: int) -> None:
        self.size, self.sha256, self.content_type = size, "0" * 64, "image/png"
        self.content_length = size

    def read(self, n: int = -1) -> bytes:
        return b""

    def __enter__(self) -> NoBytes:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class NoTransfer:
    """Stands in for ``CacheLayer.fetcher`` (assigned before first use): every ``open``
    returns a :class:`NoBytes` of ``size`` bytes; nothing is requested."""

    def __init__(self, size: int) -> None:
        self.size = size

    def open(self, url: str, **kwargs: Any) -> NoBytes:
        return NoBytes(self.size)

    def close(self) -> None:
        pass


def null_store() -> Any:
    """A ``Store`` that keeps nothing (``CacheLayer(store=null_store())``): ``put`` reads
    no byte; objects never exist."""
    from cachelayer.storage.base import Store

    class NullStore(Store):
        uri = "null://"

        def check(self) -> None:
            pass

        def put(self, key: str, body: Any, **kwargs: Any) -> str:
            return "0" * 64

        def head(self, key: str) -> None:
            return None

        def open(self, key: str) -> Any:
            raise FileNotFoundError(key)

        def object_uri(self, key: str) -> str:
            return f"null:///{key}"

        def delete(self, keys: Any) -> None:
            pass

    return NullStore()


# ---- py-spy -----------------------------------------------------------------------------


class Profiler:
    """``--profile DIR``: py-spy (``record --format raw --nolineno --nonblocking --gil``) on
    child commands (:meth:`wrap`) and attached to running servers (:meth:`attach`). Each
    profile is a collapsed-stack file in ``DIR``; :func:`profile_summary` says where the
    samples (GIL-holding time) went. Profiled runs are slower: their timings are not the
    bench's numbers. Needs ``py-spy`` beside the Python interpreter (``pip install py-spy``)."""

    def __init__(self, directory: str, rate: int = 200) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rate = rate
        self.exe = str(Path(sys.executable).with_name("py-spy"))
        self.n = 0
        self.files: list[Path] = []

    def _args(self, name: str) -> list[str]:
        out = self.dir / f"{name}.txt"
        self.files.append(out)
        return [self.exe, "record", "--format", "raw", "--nolineno", "--nonblocking", "--gil"] + [
            "--rate",
            str(self.rate),
            "--output",
            str(out),
        ]

    def label(self, label: str) -> str:
        self.n += 1
        return f"{self.n:02d}-{label}"

    def wrap(self, cmd: list[str], name: str) -> list[str]:
        return [*self._args(name), "--subprocesses", "--", *cmd]

    @contextlib.contextmanager
    def attach(self, name: str, pids: dict[str, int]) -> Iterator[None]:
        procs = [
            subprocess.Popen(
                [*self._args(f"{name}-{what}"), "--pid", str(pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for what, pid in pids.items()
        ]
        time.sleep(0.3)  # let py-spy attach
        try:
            yield
        finally:
            for p in procs:
                p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


#: How :func:`profile_summary` buckets a sample: the first rule whose marker appears in
#: the stack (frames joined by ``;``) names it.
PROFILE_BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up (imports, building clients)", ("importlib", "CacheLayer.__init__", "make_engine")),
    ("catalog (SQLAlchemy, sqlite3/psycopg)", ("cachelayer/catalog/", "sqlalchemy/")),
    ("S3 upload (boto3, s3transfer)", ("s3transfer/", "botocore/", "S3Store.put")),
    ("download (requests, urllib3, sha256)", ("Fetcher.open", "Download.", "requests/", "urllib3/")),
    ("Replicate API (httpx, replicate)", ("httpx/", "replicate/")),
    ("cachelayer other", ("cachelayer/",)),
    ("threads, locks, futures", ("threading.py", "concurrent/futures")),
]


def profile_summary(path: Path, top: int = 15) -> str:
    """Where the samples of a py-spy raw profile went: by bucket (:data:`PROFILE_BUCKETS`),
    then the functions with the most samples, inclusive and self, as % of all samples."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    buckets: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not count.isdigit() or not frames:
            continue
        n = int(count)
        total += n
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        name = next((b for b, marks in PROFILE_BUCKETS if any(m in stack for m in marks)), "other")
        buckets[name] = buckets.get(name, 0) + n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  by bucket:"]
    for title, counts in (("", buckets), ("inclusive:", inclusive), ("self:", own)):
        if title:
            lines.append(f"  {title}")
        for f, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"    {100 * n / total:5.1f}%  {f}")
    return "\n".join(lines)


# ---- report -----------------------------------------------------------------------------


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_facts() -> str:
    import boto3
    import moto
    import requests
    import sqlalchemy

    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, moto {moto.__version__}, "
        f"boto3 {boto3.__version__}, requests {requests.__version__}, "
        f"SQLAlchemy {sqlalchemy.__version__}, {platform.system()} {platform.release()}"
    )


def code_state(root: str | Path = ROOT) -> str:
    """The commit measured (of the checkout at ``root``) and whether its ``cachelayer/``
    had uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, text=True, capture_output=True, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        changed = [
            ln[3:] for ln in git("status", "--porcelain", "--", "cachelayer").split("\n") if ln.strip()
        ]
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (
        f" + uncommitted changes to {', '.join(changed)}" if changed else " (cachelayer/ clean)"
    )


def compile_package(root: Path | None = None) -> str:
    """Compile cachelayer's modules to bytecode (``__pycache__``), as ``pip install`` does
    for an installed package. An editable install under ``PYTHONDONTWRITEBYTECODE=1``
    (this machine's environment) has none, so every fresh process would compile
    cachelayer's source again: about 0.09 s of a command's start-up that users of an
    installed package never pay. ``root``: that package's folder (default: the imported
    one). Returns the header line saying so."""
    import compileall

    if root is None:
        import cachelayer

        root = Path(cachelayer.__file__).parent
    ok = compileall.compile_dir(str(root), quiet=1)
    return f"# bytecode: {root} compiled ({'ok' if ok else 'with errors'}), as pip install does"


def header(script: str, argv: Sequence[str]) -> list[str]:
    """The lines every run starts with: date, machine, code, command, load average, and
    the bytecode line of :func:`compile_package` (which it runs)."""
    return [
        f"# {script} {time.strftime('%Y-%m-%d %H:%M %Z')}: {machine_facts()}",
        f"# code: {code_state()}",
        f"# command: python {script} {' '.join(argv)}".rstrip(),
        "# load average before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        compile_package(),
    ]
