"""Backfill: cachelayer against the naive loop and a plain concurrent download (issues 3, 11).

Three parts against one Replicate simulator and one moto S3 server (each its own process):

1. **throughput**, each method a fresh process, interleaved over ``--reps``: ``naive``, the
   seed's fixed code looping over ``predictions.list`` pages (``requests.get(url).content``
   then ``s3.put_object``); ``download``, the floor: the same listing, then every file
   downloaded and discarded by ``--concurrency`` threads (a keep-alive session each);
   ``backfill``, ``layer.backfill(concurrency=N)`` on a fresh SQLite catalog, its parts
   built before the clock; ``cli``, ``cachelayer backfill --concurrency N`` from launch to
   exit (start-up included). ``naive`` and ``download`` are timed inside their process
   (imports and clients before the clock); ``naive-script`` and ``download-script`` run the
   same code as a whole program (``bench/baselines.py``), launch to exit like ``cli``, and
   get a second table of their own.
2. **catalog**: catalog time per file. The backfill runs with a no-op transfer (the layer's
   ``fetcher`` replaced before first use by a stand-in whose downloads have a size and no
   bytes, the store one that keeps nothing; list calls and every catalog statement are
   real), every public ``Catalog`` method and ``Persister.record`` timed by additive
   wrappers. Sequentially (``backfill(scan_only=True)``, then ``work(concurrency=1)``) the
   summed call times per file are the catalog's cost; at ``--concurrency``, the files/s the
   catalog and the scan alone allow. SQLite and PostgreSQL.
3. **scaling**: ``cachelayer backfill --scan-only`` into a fresh PostgreSQL database, then 1,
   2, 4 ``cachelayer worker --once`` processes drain it together (launch to last exit).

CPU per file of the copier, the simulator, moto and the rest of the machine is reported
with each run. ``--latency-ms 0,50`` runs every part at each simulator ``latency`` (time to
first byte of every API and delivery request, as a distant CDN adds it; moto is not
delayed); ratios are within one latency. Every object's size and ETag (MD5) must match the
generated file, every file be downloaded exactly once per run (the simulator's request
log), and all methods leave the same objects; buckets and databases are deleted.

Usage::

    python bench/backfill.py                                          # 400 x 100 kB, 0 ms
    python bench/backfill.py --parts throughput --latency-ms 0,50 --reps 3
    python bench/backfill.py --parts throughput --reps 1 --profile /tmp/prof  # py-spy

``--profile DIR`` records every child, the simulator and moto with py-spy (``pip install
py-spy``); profiled timings are not the bench's numbers. Results: ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402
import benchutil as bu  # noqa: E402
from benchutil import Run  # noqa: E402

BENCH = Path(__file__).resolve()
BASELINES = BENCH.with_name("baselines.py")
CLI = str(Path(sys.executable).with_name("cachelayer"))
MODEL = "bench/backfill"
SEEDS = 32  # distinct 1 MiB blocks the simulator keeps cached (its lru_cache holds 32)
METHODS = ("naive", "download", "backfill", "cli", "cli-other", "naive-script", "download-script")
#: What a run measures unless ``--methods`` says otherwise (``cli-other`` needs ``--other-code``).
DEFAULT_METHODS = ("naive", "download", "backfill", "cli")
PARTS = ("throughput", "catalog", "scaling")

# ---- the history ----------------------------------------------------------------------


@dataclass
class History:
    """What the simulator holds: prediction id -> ``[(seed, size)]`` of its files (newest
    first); file ``i`` of a prediction is ``out-{i}.png`` at output path ``/i``."""

    predictions: dict[str, list[tuple[int, int]]]

    @property
    def files(self) -> int:
        return sum(len(f) for f in self.predictions.values())

    @property
    def bytes(self) -> int:
        return sum(n for fs in self.predictions.values() for _, n in fs)

    def expected(self) -> dict[str, tuple[int, str]]:
        """Relative key (``pid/0-out-0.png``, the layout of ``cachelayer.keys``) ->
        ``(size, md5 hex)`` of the generated content."""
        from cachelayer.testing.simulator import File

        return {
            f"{pid}/{i}-out-{i}.png": (n, hashlib.md5(File(size=n, seed=s).read()).hexdigest())
            for pid, files in self.predictions.items()
            for i, (s, n) in enumerate(files)
        }


def seed_history(sim: Any, predictions: int, files_per: int, size: int) -> dict[str, list[tuple[int, int]]]:
    """Seed ``predictions`` web predictions of ``files_per`` files (web ones are never
    removed), newest first. File ``n`` is ``size + n // SEEDS`` bytes of block ``n %
    SEEDS``: every file differs, and the simulator serves them from its cached blocks."""
    from datetime import datetime, timedelta, timezone

    from cachelayer.testing.simulator import File

    sim.add_model(MODEL)
    now = datetime.now(timezone.utc)
    made = {}
    for p in range(predictions):
        specs = [((p * files_per + j) % SEEDS, size + (p * files_per + j) // SEEDS) for j in range(files_per)]
        created = now - timedelta(seconds=60 + p)
        pid = sim.seed_prediction(
            MODEL,
            input={"n": p},
            output=[File(size=n, seed=s, filename=f"out-{j}.png") for j, (s, n) in enumerate(specs)],
            source="web",
            created_at=created,
            completed_at=created + timedelta(seconds=1),
        )
        made[pid] = specs
    return made


# ---- child side -----------------------------------------------------------------------


def _layer(spec: dict[str, Any], concurrency: int, **kwargs: Any) -> Any:
    from cachelayer import CacheLayer

    return CacheLayer(
        database_url=spec["database_url"],
        storage_url=f"s3://{spec['bucket']}/{spec['prefix']}",
        s3_endpoint_url=spec["endpoint"],
        s3_region=spec["region"],
        replicate_api_token=spec["token"],
        replicate_base_url=spec["base_url"],
        allowed_hosts=spec["host_port"],
        concurrency=concurrency,
        auto_migrate=True,
        **kwargs,
    )


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s result with the wall and CPU seconds it took."""
    cpu0, t0 = bu.self_cpu(), time.perf_counter()
    result = fn()
    return {**result, "seconds": time.perf_counter() - t0, "cpu_seconds": bu.self_cpu() - cpu0}


def child_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """The naive loop (``baselines.naive``), its clients built before the clock."""
    return _timed(baselines.naive(spec))


def child_download(spec: dict[str, Any]) -> dict[str, Any]:
    """The floor (``baselines.download``), its client built before the clock."""
    return _timed(baselines.download(spec))


def child_backfill(spec: dict[str, Any]) -> dict[str, Any]:
    """``layer.backfill(concurrency=N)``, as ``cachelayer backfill --concurrency N`` runs it,
    with the layer's parts built (catalog migrated, bucket checked) before the clock."""
    layer = _layer(spec, spec["concurrency"])
    layer.copier, layer.api  # noqa: B018 - build them now

    def backfill() -> dict[str, Any]:
        s = layer.backfill(concurrency=spec["concurrency"])
        return {"files": s.files_stored, "bytes": s.bytes_stored, "summary": s.to_dict()}

    result = _timed(backfill)
    layer.close()
    return result


def child_catalog(spec: dict[str, Any]) -> dict[str, Any]:
    """The backfill with a no-op transfer and every Catalog method timed. ``mode``
    ``sequential``: ``backfill(scan_only=True)`` then ``work(concurrency=1)``;
    ``concurrent``: one ``backfill(concurrency=N)``."""
    concurrency = 1 if spec["mode"] == "sequential" else spec["concurrency"]
    layer = _layer(spec, concurrency, store=bu.null_store())
    layer.fetcher = bu.NoTransfer(spec["size"])  # the facade's part, replaced before first use
    timer = bu.CallTimer()
    for repo in ("predictions", "files", "queue", "checkpoints"):  # what the library calls
        timer.wrap_all(getattr(layer.catalog, repo))
    timer.wrap(layer.persister, "record", "Persister.record")
    layer.api  # noqa: B018 - build it now
    result: dict[str, Any] = {"mode": spec["mode"], "dialect": layer.engine.dialect.name}

    def sequential() -> dict[str, Any]:
        t0 = time.perf_counter()
        queued = layer.backfill(scan_only=True).files_queued
        result["scan"] = {"seconds": time.perf_counter() - t0, "calls": timer.take(), "files": queued}
        files = layer.work(concurrency=1, once=True).files_stored
        result["work"] = {"calls": timer.take(), "files": files}
        return {"files": files}

    def concurrent() -> dict[str, Any]:
        files = layer.backfill(concurrency=concurrency).files_stored
        result["all"] = {"calls": timer.take(), "files": files}
        return {"files": files}

    result.update(_timed(sequential if spec["mode"] == "sequential" else concurrent))
    layer.close()
    return result


CHILDREN: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "naive": child_naive,
    "download": child_download,
    "backfill": child_backfill,
    "catalog": child_catalog,
}

# ---- parent side ----------------------------------------------------------------------


class Bench(bu.Servers):
    """The seeded simulator, the moto server and the three parts' runs.

    ``moto``: a running ``MotoS3Server`` (tests), left running by :meth:`close`.
    ``postgres_url``: admin URL of a PostgreSQL server (``None``: SQLite only).
    """

    def __init__(
        self, *, predictions: int, files_per: int, size: int, other_code: str | None = None, **servers: Any
    ) -> None:
        self.other_code = other_code  # ``cli-other``: a checkout of another commit
        spec = json.dumps({"predictions": predictions, "files_per": files_per, "size": size})
        super().__init__([sys.executable, str(BENCH), "--serve-sim", spec], **servers)
        self.history = History({pid: [tuple(f) for f in fs] for pid, fs in self.sim.seeded.items()})
        self.expected = self.history.expected()
        self.size = size

    def verify(self, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
        """Every generated file, and nothing else, is under ``prefix/`` with its size and
        MD5 (single-part ETag). Raises ``RuntimeError`` otherwise; returns the listing."""
        found = self.objects(bucket, prefix)
        if found != self.expected:
            missing = sorted(set(self.expected) - set(found))
            wrong = sorted(k for k in found if found[k] != self.expected.get(k))
            raise RuntimeError(f"{bucket}/{prefix}: {len(missing)} missing, {len(wrong)} wrong or extra")
        return found

    def spec(self, bucket: str, prefix: str, database_url: str, **more: Any) -> dict[str, Any]:
        sim, moto = self.sim, self.moto
        return (
            dict(bucket=bucket, prefix=prefix, database_url=database_url, size=self.size, **more)
            | dict(endpoint=moto.endpoint_url, region=moto.region, token=sim.token, base_url=sim.base_url)
            | dict(host_port=sim.delivery_host_port)
        )

    def child(self, kind: str, spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """Run ``--child kind``; return its JSON result and the CPU seconds around it."""
        path = Path(self.tmp.name) / f"spec-{secrets.token_hex(4)}.json"
        path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(BENCH), "--child", kind, "--spec", str(path)]
        (data,), cpu = self.run(f"{kind}{spec.get('mode', '')}", [cmd], self.env)
        return data, cpu

    # -- the parts ---------------------------------------------------------------------

    def run_method(
        self, method: str, concurrency: int, *, keep: bool = False
    ) -> tuple[Run, dict[str, tuple[int, str]]]:
        """One throughput run of ``method`` (see ``METHODS``). Raises ``RuntimeError`` unless
        every file was downloaded exactly once and (except ``download``) stored intact.
        Returns the run and the objects stored (key -> size, MD5)."""
        before = self.sim.downloads()
        with self.bucket(method, keep=keep) as bucket:
            if method in ("cli", "cli-other"):
                args = ["backfill", "--json", "--quiet", "--concurrency", str(concurrency)]
                env = self.cli_env(self.sqlite_url(), bucket, method)
                if method == "cli":
                    cmd = [CLI, *args]
                else:  # the same command from another checkout: -P keeps the cwd off sys.path
                    if not self.other_code:
                        raise RuntimeError("cli-other needs --other-code DIR")
                    cmd = [sys.executable, "-P", "-m", "cachelayer.cli", *args]
                    env = {**env, "PYTHONPATH": self.other_code}
                (summary,), cpu = self.run(method, [cmd], env)
                data = dict(seconds=cpu["wall"], files=summary["files_stored"], bytes=summary["bytes_stored"])
                data["summary"] = summary
            elif method.endswith("-script"):  # the baseline as a whole program, launch to exit
                kind = method.removesuffix("-script")
                path = Path(self.tmp.name) / f"spec-{secrets.token_hex(4)}.json"
                path.write_text(json.dumps(self.spec(bucket, method, "-", concurrency=concurrency)))
                (data,), cpu = self.run(method, [[sys.executable, str(BASELINES), kind, str(path)]], self.env)
                data["seconds"] = cpu["wall"]
            else:
                spec = self.spec(bucket, method, self.sqlite_url(), concurrency=concurrency)
                data, cpu = self.child(method, spec)
            objects = {} if method.startswith("download") else self.verify(bucket, method)
        after = self.sim.downloads()
        once = [p for p, c in after.items() if c - before.get(p, 0) != 1]
        if data["files"] != self.history.files or len(after) != self.history.files or once:
            raise RuntimeError(f"{method}: {data['files']} files, {len(once)} not downloaded exactly once")
        extra = {"bucket": bucket, "latency_ms": self.latency * 1000, "summary": data.get("summary")}
        return Run(method, data["seconds"], data["files"], data["bytes"], cpu, extra), objects

    def run_catalog(self, dialect: str, mode: str, concurrency: int) -> Run:
        with self.database(dialect) as url:
            data, cpu = self.child(
                "catalog", self.spec("no-bucket", "catalog", url, concurrency=concurrency, mode=mode)
            )
        if data["files"] != self.history.files:
            raise RuntimeError(f"catalog {dialect} {mode}: stored {data['files']} rows")
        label = dialect + (f" c{concurrency}" if mode != "sequential" else "")
        return Run(label, data["seconds"], data["files"], 0, cpu, {**data, "concurrency": concurrency})

    def run_workers(self, n: int, concurrency: int) -> Run:
        """Queue every file with ``backfill --scan-only`` in a fresh PostgreSQL database,
        then time ``n`` ``worker --once`` processes draining it. Raises ``RuntimeError``
        unless every file was stored, intact, and downloaded once."""
        from cachelayer.catalog.db import make_engine, upgrade

        with self.bucket(f"workers{n}") as bucket, self.database("postgresql") as url:
            env = self.cli_env(url, bucket, "workers")
            engine = make_engine(url)
            upgrade(engine)  # what `cachelayer db upgrade` does
            engine.dispose()
            t0 = time.perf_counter()
            scan, _ = bu.run_json([CLI, "backfill", "--scan-only", "--json", "--quiet"], env, "scan-only")
            scan_seconds = time.perf_counter() - t0
            before = self.sim.downloads()
            worker = [CLI, "worker", "--once", "--json", "--quiet", "--concurrency", str(concurrency)]
            summaries, cpu = self.run(f"workers{n}", [worker] * n, env)
            after = self.sim.downloads()
            stored = [s["files_stored"] for s in summaries]
            self.verify(bucket, "workers")
        twice = [p for p, c in after.items() if c - before.get(p, 0) > 1]
        if sum(stored) != self.history.files or scan["files_queued"] != self.history.files or twice:
            raise RuntimeError(
                f"{n} workers: queued {scan['files_queued']}, stored {stored}, {len(twice)} twice"
            )
        extra = {"scan_seconds": scan_seconds, "stored_per_worker": stored}
        extra["drain_seconds"] = max(s["elapsed_seconds"] for s in summaries)
        label = f"{n} worker{'s' if n > 1 else ''}"
        return Run(label, cpu["wall"], sum(stored), sum(s["bytes_stored"] for s in summaries), cpu, extra)


# ---- report ---------------------------------------------------------------------------


def throughput_table(groups: dict[str, list[Run]], naive: str = "naive", floor: str = "download") -> str:
    """One row per method: the best run's wall time, files/s (best / median), MB/s, the
    ratios to ``naive`` (best to best, median to median) and to the ``floor`` (best wall
    time over the floor's best), the best run's CPU per file."""
    best = {k: max(v, key=lambda r: r.files_per_s) for k, v in groups.items()}
    med = {k: statistics.median(r.files_per_s for r in v) for k, v in groups.items()}
    rows = []
    for label, runs in groups.items():
        b = best[label]
        vs_naive = vs_floor = "-"
        if naive in best:
            vs_naive = f"**{b.files_per_s / best[naive].files_per_s:.2f}x** / {med[label] / med[naive]:.2f}x"
        if floor in best:
            vs_floor = f"{b.seconds / best[floor].seconds:.2f}x"
        rows.append(
            [label, len(runs), f"{b.seconds:.2f}", f"{b.files_per_s:.0f} / {med[label]:.0f}"]
            + [f"{b.bytes / 1e6 / b.seconds:.1f}", vs_naive, vs_floor, *bu.cpu_cells(b)]
        )
    head = ["method", "runs", "wall s (best)", "files/s best / median", "MB/s (best)"]
    return bu.md_table([*head, f"vs {naive} best / median", f"time / {floor}", *bu.CPU_HEAD], rows)


def _calls(r: Run) -> dict[str, list[float]]:
    """Per method ``[calls, seconds, outermost seconds]`` over all parts of a run."""
    out: dict[str, list[float]] = {}
    for part in ("scan", "work", "all"):
        for m, v in r.extra.get(part, {}).get("calls", {}).items():
            acc = out.setdefault(m, [0, 0.0, 0.0])
            for i in range(3):
                acc[i] += v[i]
    return out


def catalog_tables(runs: Sequence[Run]) -> str:
    """Per-file catalog cost of the sequential runs (by method) and the no-op rates."""
    lines = []
    seq = [r for r in runs if r.extra["mode"] == "sequential"]
    if seq:
        lines += [
            "Sequential (`backfill(scan_only=True)`, then `work(concurrency=1)`), no-op transfer: wall "
            "time inside each catalog call, ms per file (`Persister.record` includes the Catalog "
            "calls it makes).",
            "",
        ]
        calls = [_calls(r) for r in seq]
        methods = sorted({m for c in calls for m in c}, key=lambda m: (m != "Persister.record", m))
        rows: list[list[Any]] = [
            [m]
            + [
                f"{int(c[m][0])}, {c[m][1] * 1000 / r.files:.3f}" if m in c else "-"
                for r, c in zip(seq, calls)
            ]
            for m in methods
        ]
        totals = [sum(v[2] for v in c.values()) * 1000 / r.files for r, c in zip(seq, calls)]
        rows.append(["**catalog total**", *(f"**{t:.2f}**" for t in totals)])
        rows.append(["whole run (scan + work), ms/file", *(f"{r.seconds * 1000 / r.files:.2f}" for r in seq)])
        lines += [bu.md_table(["call", *(f"{r.label}: calls, ms/file" for r in seq)], rows), ""]
    conc = [r for r in runs if r.extra["mode"] != "sequential"]
    if conc:
        lines += [
            f"No-op transfer, whole backfill at concurrency {conc[0].extra['concurrency']} (scan and "
            "workers overlapping): the rate the catalog and the scan alone allow.",
            "",
        ]
        rows = [
            [
                r.label,
                f"{r.seconds:.2f}",
                f"{r.files_per_s:.0f}",
                f"{r.seconds * 1000 / r.files:.2f}",
                *bu.cpu_cells(r),
            ]
            for r in conc
        ]
        lines.append(bu.md_table(["run", "wall s", "files/s", "ms/file", *bu.CPU_HEAD], rows))
    return "\n".join(lines)


def scaling_table(runs: Sequence[Run]) -> str:
    """One row per worker count; speedups against the first (1 worker)."""
    rows = [
        [r.label, f"{r.seconds:.2f}", f"{r.extra['drain_seconds']:.2f}", f"{r.files_per_s:.0f}"]
        + [f"**{runs[0].seconds / r.seconds:.2f}x**", "/".join(map(str, r.extra["stored_per_worker"]))]
        + bu.cpu_cells(r)
        for r in runs
    ]
    head = [
        "workers",
        "wall s",
        "drain s (slowest worker's own)",
        "files/s",
        "speedup vs 1",
        "files per worker",
    ]
    scans = ", ".join(f"{r.extra['scan_seconds']:.1f}" for r in runs)
    return (
        bu.md_table([*head, *bu.CPU_HEAD], rows)
        + f"\n\n(`backfill --scan-only` before each, not included: {scans} s; copier = all workers together)"
    )


def run_all(
    bench: Bench,
    *,
    parts: Sequence[str],
    methods: Sequence[str] = DEFAULT_METHODS,
    latency: Sequence[float] = (0.0,),
    concurrency: int = 16,
    workers: Sequence[int] = (1, 2, 4),
    reps: int = 3,
    out: Callable[[str], None] = print,
) -> dict[tuple[str, float], Any]:
    """Run the requested parts at each ``latency`` (seconds); print progress and tables
    through ``out``; return the runs by ``(part, latency in ms)``."""
    h = bench.history
    out(f"# history: {len(h.predictions)} predictions, {h.files} files, {h.bytes / 1e6:.1f} MB")
    results: dict[tuple[str, float], Any] = {}
    for lat in latency:
        bench.set_latency(lat)
        ms = f"{lat * 1000:g} ms"
        if "throughput" in parts:
            groups: dict[str, list[Run]] = {m: [] for m in methods}
            first: dict[str, tuple[int, str]] = {}
            for rep in range(reps):
                for method in methods if rep % 2 == 0 else methods[::-1]:
                    r, objects = bench.run_method(method, concurrency)
                    groups[method].append(r)
                    first = first or objects  # verify() matched each to the generated files
                    if objects and objects != first:
                        raise RuntimeError(f"{method} stored other objects than the first run")
                    out(f"  {ms} {method} rep {rep + 1}: {r.seconds:.2f} s {r.files_per_s:.0f} files/s")
            results["throughput", lat * 1000] = groups
            out(f"\nThroughput at {ms} ({reps} runs of each, interleaved; concurrency {concurrency}):\n")
            out(throughput_table(groups) + "\n")
            whole = {m: g for m, g in groups.items() if m.startswith("cli") or m.endswith("-script")}
            if any(m.endswith("-script") for m in whole):
                out(f"\nLaunch to exit on every side at {ms} (the baselines as whole scripts):\n")
                out(throughput_table(whole, "naive-script", "download-script") + "\n")
        if "catalog" in parts:
            runs = []
            for dialect in ["sqlite"] + (["postgresql"] if bench.postgres_url else []):
                for mode in ("sequential", "concurrent"):
                    r = bench.run_catalog(dialect, mode, concurrency)
                    runs.append(r)
                    out(f"  {ms} catalog {r.label}: {r.seconds * 1000 / r.files:.2f} ms/file")
            results["catalog", lat * 1000] = runs
            out(f"\nCatalog at {ms}:\n\n{catalog_tables(runs)}\n")
        if "scaling" in parts and bench.postgres_url:
            runs = [bench.run_workers(n, concurrency) for n in workers]
            results["scaling", lat * 1000] = runs
            out(f"\nScaling on PostgreSQL at {ms} (`worker --once --concurrency {concurrency}`):\n")
            out(scaling_table(runs) + "\n")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", default=",".join(PARTS), help="comma-separated, from " + ",".join(PARTS))
    ap.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="throughput methods, from " + ",".join(METHODS)
    )
    ap.add_argument("--predictions", type=int, default=80)
    ap.add_argument("--files-per", type=int, default=5, help="files per prediction")
    ap.add_argument("--size", type=int, default=100 * bu.KB, help="bytes per file (about)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", default="1,2,4", help="worker process counts for scaling")
    ap.add_argument("--reps", type=int, default=3, help="throughput runs of each method, interleaved")
    ap.add_argument("--latency-ms", default="0", help="simulator latency, comma-separated (e.g. 0,50)")
    ap.add_argument("--profile", metavar="DIR", help="py-spy every child, the simulator and moto into DIR")
    ap.add_argument("--postgres-url", help="PostgreSQL admin URL [CACHELAYER_TEST_POSTGRES_URL, local]")
    ap.add_argument(
        "--other-code",
        metavar="DIR",
        help="method cli-other runs `python -m cachelayer.cli backfill` from this checkout of another "
        "commit (git worktree add DIR COMMIT), to compare commits in one run",
    )
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--serve-sim", metavar="SPEC", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_sim:
        h = json.loads(args.serve_sim)
        bu.serve_simulator(lambda sim: seed_history(sim, h["predictions"], h["files_per"], h["size"]))
        return 0
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(Path(args.spec).read_text()))))
        return 0

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [p for p in parts if p not in PARTS] + [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"unknown parts or methods {bad}")
    if ("cli-other" in methods) != bool(args.other_code):
        ap.error("--other-code DIR and the method cli-other go together")
    if args.other_code and not (Path(args.other_code) / "cachelayer" / "cli").is_dir():
        ap.error(f"--other-code {args.other_code}: no cachelayer/cli there")
    try:
        lats = bu.latencies(args.latency_ms)
    except ValueError as exc:
        ap.error(str(exc))
    print("\n".join(bu.header("bench/backfill.py", sys.argv[1:] if argv is None else argv)))
    started = time.monotonic()
    pg = bu.postgres_url(args.postgres_url) if {"catalog", "scaling"} & set(parts) else None
    history = dict(predictions=args.predictions, files_per=args.files_per, size=args.size)
    if args.other_code:
        bu.compile_package(Path(args.other_code) / "cachelayer")
        print(f"# cli-other: {args.other_code} at {bu.code_state(args.other_code)}")
    bench = Bench(**history, postgres_url=pg, profile=args.profile, other_code=args.other_code)
    try:
        workers = [int(n) for n in args.workers.split(",") if n.strip()]
        kwargs = dict(concurrency=args.concurrency, workers=workers, reps=args.reps)
        run_all(bench, parts=parts, methods=methods, latency=lats, **kwargs)
    finally:
        bench.close()
    for path in bench.profiler.files if bench.profiler else []:
        if path.exists():
            print(bu.profile_summary(path))
    print(f"# total {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
