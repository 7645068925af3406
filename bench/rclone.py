"""cachelayer side by side with ``rclone copyurl`` (issue 11).

Both tools read the same Replicate simulator delivery URLs and write into the same moto S3
server (each run into a fresh bucket), every run a fresh process timed from launch to exit
(start-up included), with the tools interleaved within each repetition (order reversed
every other one):

1. **one file** (``--sizes``, MiB): ``rclone copyurl URL bench:BUCKET/rclone/PID/out.bin``
   against ``cachelayer persist --json PID`` (settings from the environment, as
   ``bench/backfill.py``'s ``cli`` method runs the command; the catalog is a SQLite file
   already migrated, copied from a template before each run, so schema migrations are not
   timed). The simulator serves a freshly seeded prediction each repetition, copied by both.
   Reported: wall seconds, MiB/s, the ratio cachelayer/rclone, peak RSS (``ru_maxrss`` from
   ``wait4``), CPU seconds of the process. Each object is read back: size and SHA-256 must
   match the generated file, and the file must have been downloaded exactly once per run.
2. **a history** (``--predictions`` x ``--files-per`` files of ``--size`` bytes, 80 x 5 x
   100 kB by default; the simulator of ``bench/backfill.py``): rclone as a user would run
   it, one fresh ``rclone copyurl`` per file, ``--concurrency`` at a time
   (``xargs -P 16 -n 2``), against ``cachelayer backfill --concurrency 16`` (fresh process,
   fresh SQLite catalog: ``bench/backfill.py``'s ``cli`` method itself). rclone is given
   the list of URLs: listing the predictions (``predictions.list`` with the ``replicate``
   client, in this process) is done before its clock starts and reported on its own;
   cachelayer's time includes its own listing. rclone writes the keys cachelayer uses
   (``PID/I-NAME``) so both buckets are checked against the same generated files (size and
   MD5); every file must be downloaded exactly once per run.
   Third, **cachelayer as a library in a warm process** (``library``), which is how an app
   calling ``run``/``persist`` or ``cachelayer serve`` copies: a child builds
   ``CacheLayer()`` from the same environment, makes one 1 KiB copy first, reads the
   prediction, and only ``layer.persist(prediction)`` is timed (no interpreter start-up,
   imports or client construction; the same checks of the stored object).
3. **start-up**: ``rclone version`` against ``cachelayer --version`` (launch to exit), the
   floor of every fresh process above; and, after the smallest file's copy, the same
   ``cachelayer persist`` run again on its catalog (``persist, already stored``: it finds
   the file stored and copies nothing), cachelayer's fixed cost per command; and the
   libraries such a command needs, imported with one S3 client built and nothing else
   (``libraries alone``, :data:`STACK`): the floor of that fixed cost.

rclone's S3 remote is defined by ``RCLONE_CONFIG_BENCH_*`` variables (``type=s3``,
``provider=Other``, moto's endpoint, keys and region; ``RCLONE_CONFIG=/dev/null``) with
rclone's defaults otherwise (single ``PutObject`` below its 200 MiB ``upload_cutoff``,
then 5 MiB parts, 4 at a time). ``AWS_CA_BUNDLE`` is removed from rclone's environment:
with it set, rclone 1.60 refuses to start an S3 remote ("unable to load custom CA bundle,
HTTPClient's transport unsupported type"); the endpoint is plain HTTP anyway. From
rclone's 200 MiB cutoff on (multipart), rclone gets ``--s3-no-head``: after completing a
multipart upload rclone 1.60 checks the object with ``HEAD key?versionId=null``, which
moto answers ``400 Bad Request`` on an unversioned bucket, and rclone then fails and
retries the whole copy (download included) three times. The bench reads every object back
itself.

``--latency-ms 0,50`` runs everything at each simulator ``latency`` (time to first byte of
every API and delivery request; moto is not delayed); ratios are within one latency. Note
that ``persist`` makes one API request (``predictions.get``) before its download, which
``copyurl``, given the URL, does not.

Usage::

    python bench/rclone.py                                  # 1, 50, 500 MiB and 400 files, 0 ms
    python bench/rclone.py --sizes 1,50,500 --reps 3 --latency-ms 0,50
    python bench/rclone.py --sizes 1,50,500 --reps 3 --big-reps 2 --latency-ms 0,50

``--reps`` applies to sizes below 100 MiB, the history and the start-up; bigger sizes use
``--big-reps`` (default: ``--reps``). Needs ``rclone`` (``--rclone PATH``, default
``/usr/bin/rclone``) and GNU ``xargs``. Results: ``docs/BENCHMARKS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import backfill as bf  # noqa: E402  (its history simulator and its `cli` run, reused as they are)
import benchutil as bu  # noqa: E402
from benchutil import MiB, Run  # noqa: E402

BENCH = Path(__file__).resolve()
CLI = str(Path(sys.executable).with_name("cachelayer"))
RCLONE = "/usr/bin/rclone"
MODEL = "bench/rclone"
TOOLS = ("rclone", "cachelayer")
#: What ``cachelayer persist`` cannot start faster than: its libraries imported and one
#: boto3 S3 client built (no catalog opened, no request sent).
STACK = (
    "import boto3, click, replicate, requests, sqlalchemy.orm, sqlalchemy.dialects.sqlite\n"
    "boto3.session.Session().client('s3')"
)
REMOTE = "bench"  # the rclone remote defined by RCLONE_CONFIG_BENCH_* variables
#: rclone's default ``--s3-upload-cutoff``: from this size it uploads in parts, and then
#: needs ``--s3-no-head`` against moto (see the module docstring).
RCLONE_UPLOAD_CUTOFF = 200 * MiB


def rclone_env(base: dict[str, str], moto: Any) -> dict[str, str]:
    """``base`` plus an rclone S3 remote named ``bench`` on moto (no config file), without
    ``AWS_CA_BUNDLE`` (rclone 1.60 cannot start an S3 remote with it set)."""
    env = {k: v for k, v in base.items() if k != "AWS_CA_BUNDLE"}
    prefix = f"RCLONE_CONFIG_{REMOTE.upper()}_"
    env.update(
        {
            "RCLONE_CONFIG": os.devnull,
            prefix + "TYPE": "s3",
            prefix + "PROVIDER": "Other",
            prefix + "ENDPOINT": moto.endpoint_url,
            prefix + "ACCESS_KEY_ID": moto.access_key_id,
            prefix + "SECRET_ACCESS_KEY": moto.secret_access_key,
            prefix + "REGION": moto.region,
        }
    )
    return env


# ---- simulator side -------------------------------------------------------------------


def _seed_model(sim: Any) -> None:
    sim.add_model(MODEL)


def _seed_file(sim: Any, arg: str) -> dict[str, str]:
    """Simulator command ``seed SIZE SEED``: a new prediction with one generated file."""
    from cachelayer.testing.simulator import File

    size, seed = (int(x) for x in arg.split())
    file = File(size=size, seed=seed, filename="out.bin", content_type="application/octet-stream")
    pid = sim.seed_prediction(MODEL, {"size": size, "seed": seed}, file)
    (url,) = sim.delivery_urls(pid)
    return {"pid": pid, "url": url}


# ---- cachelayer as a library, in a warm process ------------------------------------------


def library_child(pid: str, warm_pid: str) -> None:
    """``CacheLayer()`` from the environment, as a long-lived app (or ``cachelayer serve``)
    has it: built, then one small copy (``warm_pid``) so clients, pools and statement caches
    are warm; then the prediction ``pid`` is read (what ``run()`` or a webhook hands over)
    and the timed part is ``layer.persist(prediction)``. Prints ``{"seconds": ...}``."""
    from cachelayer import CacheLayer

    layer = CacheLayer()
    layer.persist(warm_pid)
    held = layer.api.get(pid)
    t0 = time.perf_counter()
    layer.persist(held)
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    layer.close()


# ---- measurements ---------------------------------------------------------------------


@dataclass
class Copy:
    """One run of one tool: wall seconds (launch to exit), peak RSS (KiB), CPU seconds."""

    tool: str
    case: str  # "1 MiB", "startup", ...
    latency_ms: float
    seconds: float
    size: int = 0
    rss_kib: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mib_s(self) -> float:
        return self.size / MiB / self.seconds if self.seconds else 0.0


class OneFile(bu.Servers):
    """Case 1 and the start-up: a simulator of single-file predictions (its own process)
    and moto (``moto``: a running one, left running)."""

    def __init__(self, rclone: str = RCLONE, **servers: Any) -> None:
        from cachelayer.catalog.db import make_engine, upgrade

        super().__init__([sys.executable, str(BENCH), "--serve-sim"], **servers)
        self.rclone = rclone
        self.rclone_env = rclone_env(self.env, self.moto)
        self._sha: dict[tuple[int, int], str] = {}
        self._n = 0
        self.template = Path(self.tmp.name) / "template.db"
        engine = make_engine(f"sqlite:///{self.template}")
        upgrade(engine)  # what `cachelayer db upgrade` does; copied for every persist run
        engine.dispose()

    def seed(self, size: int, seed: int) -> tuple[str, str]:
        """A new prediction with one ``size``-byte file: ``(prediction id, delivery URL)``."""
        made = self.sim.ask("seed", f"{size} {seed}")
        return made["pid"], made["url"]

    def expected_sha256(self, size: int, seed: int) -> str:
        from cachelayer.testing.simulator import File

        if (size, seed) not in self._sha:
            self._sha[size, seed] = File(size=size, seed=seed).sha256()
        return self._sha[size, seed]

    def catalog(self) -> str:
        """A migrated SQLite catalog of its own (a copy of the template)."""
        self._n += 1
        db = Path(self.tmp.name) / f"catalog-{self._n}.db"
        shutil.copyfile(self.template, db)
        return f"sqlite:///{db}"

    def copy(
        self,
        tool: str,
        pid: str,
        url: str,
        size: int,
        seed: int,
        *,
        verify: bool = True,
        keep: bool = False,
        again: bool = False,
    ) -> Copy:
        """Copy prediction ``pid`` (its one file at ``url``) with ``tool`` in a fresh process,
        into a fresh bucket. Raises ``RuntimeError`` unless the file was downloaded once and
        (with ``verify``) the one object stored has its size and SHA-256. ``keep`` leaves the
        bucket (``extra["bucket"]``, key ``extra["key"]``). ``again`` (cachelayer): then run
        the same ``persist`` once more on that catalog, which finds the file stored and
        copies nothing (start-up, settings, clients, ``predictions.get``, catalog reads);
        that run is ``extra["again"]``, case ``persist, already stored``."""
        path = "/" + url.split("/", 3)[3]
        before = self.sim.downloads().get(path, 0)
        with self.bucket(tool, keep=keep) as bucket:
            warm = ""
            if tool == "rclone":
                no_head = ["--s3-no-head"] if size >= RCLONE_UPLOAD_CUTOFF else []
                cmd = [self.rclone, "copyurl", *no_head, url, f"{REMOTE}:{bucket}/rclone/{pid}/out.bin"]
                env = self.rclone_env
            elif tool == "library":
                warm, _ = self.seed(1024, 999)
                cmd = [sys.executable, str(BENCH), "--library-child", pid, warm]
                env = self.cli_env(self.catalog(), bucket, "library")
            else:
                cmd = [CLI, "persist", "--json", pid]
                env = self.cli_env(self.catalog(), bucket, "cachelayer")
            ((out, _, own),), cpu = self.run_rusage(tool, [cmd], env)
            if again and tool == "cachelayer":
                ((_, _, own2),), cpu2 = self.run_rusage(f"{tool}-again", [cmd], env)
                lat = self.latency * 1000
                second = Copy(
                    tool, "persist, already stored", lat, own2["seconds"], 0, own2["maxrss_kib"], cpu2
                )
            objects = {
                k: v for k, v in self.objects(bucket, tool).items() if not (warm and k.startswith(warm))
            }
            if len(objects) != 1:
                raise RuntimeError(f"{tool}: {len(objects)} objects stored, expected 1: {sorted(objects)}")
            ((rel, (stored, _)),) = objects.items()
            key = f"{tool}/{rel}"
            if stored != size:
                raise RuntimeError(f"{tool}: object {key} has {stored} bytes, expected {size}")
            if verify and self.object_sha256(bucket, key) != (size, self.expected_sha256(size, seed)):
                raise RuntimeError(f"{tool}: object {key} differs from the generated file")
        downloads = self.sim.downloads().get(path, 0) - before
        if downloads != 1:
            raise RuntimeError(f"{tool}: {url} downloaded {downloads} times, expected once")
        extra = {"bucket": bucket, "key": key, "verified": verify, "stdout": out[-2000:]}
        if again and tool == "cachelayer":
            extra["again"] = second
        seconds = own["seconds"]
        if tool == "library":  # the persist call alone, in the warm process
            extra["process_seconds"] = seconds
            seconds = float(json.loads(out.strip().splitlines()[-1])["seconds"])
        return Copy(tool, fmt_size(size), self.latency * 1000, seconds, size, own["maxrss_kib"], cpu, extra)

    def stack(self) -> Copy:
        """The floor under any ``cachelayer`` command that copies: a fresh interpreter that
        imports the libraries a copy needs and builds one S3 client (:data:`STACK`), nothing
        else; reported as the case ``libraries alone`` (cachelayer's column)."""
        ((_, _, own),), cpu = self.run_rusage("stack", [[sys.executable, "-c", STACK]], self.env)
        return Copy(
            "cachelayer", "libraries alone", self.latency * 1000, own["seconds"], 0, own["maxrss_kib"], cpu
        )

    def startup(self, tool: str) -> Copy:
        """``rclone version`` / ``cachelayer --version``: a fresh process doing nothing."""
        cmd = [self.rclone, "version"] if tool == "rclone" else [CLI, "--version"]
        ((_, _, own),), cpu = self.run_rusage(f"{tool}-startup", [cmd], self.env)
        return Copy(tool, "startup", self.latency * 1000, own["seconds"], 0, own["maxrss_kib"], cpu)


class History(bf.Bench):
    """Case 2: ``bench/backfill.py``'s seeded history (its simulator process), copied by
    ``xargs -P N rclone copyurl`` or by its ``cli`` method (``cachelayer backfill``)."""

    def __init__(self, *, rclone: str = RCLONE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rclone = rclone
        self.rclone_env = rclone_env(self.env, self.moto)

    def delivery_urls(self) -> list[tuple[str, int, str]]:
        """``(prediction id, index, URL)`` of every output file, as a user's script lists
        them (``replicate.paginate(client.predictions.list)``)."""
        import replicate

        client = replicate.Client(api_token=self.sim.token, base_url=self.sim.base_url)
        return [
            (p.id, i, url)
            for page in replicate.paginate(client.predictions.list)
            for p in page
            for i, url in enumerate(p.output or [])
        ]

    def run_rclone(self, concurrency: int, *, keep: bool = False) -> tuple[Run, dict[str, tuple[int, str]]]:
        """List the URLs (timed on its own), then ``xargs -P concurrency -n 2 rclone copyurl``
        over ``URL bench:BUCKET/rclone/PID/I-NAME`` pairs. Raises ``RuntimeError`` unless
        every file was downloaded exactly once and stored intact. Returns the run (wall
        seconds without the listing) and the objects (relative key -> size, MD5)."""
        t0 = time.perf_counter()
        urls = self.delivery_urls()
        listing = time.perf_counter() - t0
        before = self.sim.downloads()
        with self.bucket("rclone", keep=keep) as bucket:
            pairs = [
                f"{url}\n{REMOTE}:{bucket}/rclone/{pid}/{i}-{url.rsplit('/', 1)[-1]}" for pid, i, url in urls
            ]
            listfile = Path(self.tmp.name) / f"{bucket}.txt"
            listfile.write_text("\n".join(pairs) + "\n")
            cmd = ["xargs", "-a", str(listfile), "-d", "\\n", "-n", "2", "-P", str(concurrency)]
            ((_, _, own),), cpu = self.run_rusage(
                "rclone-xargs", [[*cmd, self.rclone, "copyurl"]], self.rclone_env
            )
            objects = self.verify(bucket, "rclone")
        after = self.sim.downloads()
        once = [p for p, c in after.items() if c - before.get(p, 0) != 1]
        if len(urls) != self.history.files or len(after) != self.history.files or once:
            raise RuntimeError(f"rclone: {len(urls)} URLs, {len(once)} not downloaded exactly once")
        extra = {"bucket": bucket, "prefix": "rclone", "latency_ms": self.latency * 1000}
        extra["listing_seconds"] = listing
        extra["peak_rss_kib"] = own["maxrss_kib"]
        return Run("rclone", own["seconds"], len(urls), self.history.bytes, cpu, extra), objects

    def run_tool(
        self, tool: str, concurrency: int, *, keep: bool = False
    ) -> tuple[Run, dict[str, tuple[int, str]]]:
        if tool == "rclone":
            return self.run_rclone(concurrency, keep=keep)
        run, objects = self.run_method("cli", concurrency, keep=keep)
        run.label = "cachelayer"
        run.extra["prefix"] = "cli"  # bench/backfill.py's key prefix for its `cli` method
        return run, objects


# ---- report ---------------------------------------------------------------------------


def fmt_size(size: int) -> str:
    return f"{size / MiB:g} MiB"


def _pair(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(min(values))} / {fmt.format(statistics.median(values))}"


def files_table(copies: Sequence[Copy]) -> str:
    """One row per (case, latency): both tools' wall seconds best / median, the ratio
    cachelayer/rclone (best to best, median to median), MiB/s, peak RSS and CPU."""
    rows = []
    keys = list(dict.fromkeys((c.case, c.latency_ms) for c in copies))
    for case, lat in keys:
        by = {t: [c for c in copies if (c.case, c.latency_ms, c.tool) == (case, lat, t)] for t in TOOLS}
        if not by["cachelayer"]:
            continue
        if not by["rclone"]:  # cachelayer alone (persist, already stored)
            secs = [c.seconds for c in by["cachelayer"]]
            cpu = statistics.median(c.cpu["child"] for c in by["cachelayer"])
            rss = max(c.rss_kib for c in by["cachelayer"]) / 1024
            rows.append([case, f"{lat:g}", len(secs), "-", _pair(secs, "{:.3f}"), "-", "-", "-", "-"])
            rows[-1] += [f"- / {rss:.0f}", f"- / {cpu:.2f}"]
            continue
        secs = {t: [c.seconds for c in cs] for t, cs in by.items()}
        best = {t: min(v) for t, v in secs.items()}
        med = {t: statistics.median(v) for t, v in secs.items()}
        ratio = f"**{best['cachelayer'] / best['rclone']:.2f}** / {med['cachelayer'] / med['rclone']:.2f}"
        lib = [c.seconds for c in copies if (c.case, c.latency_ms, c.tool) == (case, lat, "library")]
        lib_cells = ["-", "-"]
        if lib:
            lib_ratio = f"**{min(lib) / best['rclone']:.2f}** / {statistics.median(lib) / med['rclone']:.2f}"
            lib_cells = [_pair(lib, "{:.3f}"), lib_ratio]
        rate = "-"
        if by["rclone"][0].size:
            rate = " / ".join(f"{by[t][0].size / MiB / best[t]:.3g}" for t in TOOLS)
        rows.append(
            [
                case,
                f"{lat:g}",
                len(by["rclone"]),
                _pair(secs["rclone"], "{:.3f}"),
                _pair(secs["cachelayer"], "{:.3f}"),
            ]
            + [ratio, *lib_cells, rate]
            + [" / ".join(f"{max(c.rss_kib for c in by[t]) / 1024:.0f}" for t in TOOLS)]
            + [" / ".join(f"{statistics.median(c.cpu['child'] for c in by[t]):.2f}" for t in TOOLS)]
        )
    head = ["case", "latency ms", "runs", "rclone s (best / median)", "cachelayer s (best / median)"]
    head += ["time ratio cachelayer/rclone (best / median)"]
    head += ["library s, warm process (best / median)", "time ratio library/rclone (best / median)"]
    head += ["MiB/s best: rclone / cachelayer"]
    return bu.md_table(
        [*head, "peak RSS MiB: rclone / cachelayer", "CPU s (median): rclone / cachelayer"], rows
    )


def history_table(groups: dict[tuple[str, float], list[Run]]) -> str:
    """One row per (tool, latency): files/s best / median, the time ratio
    cachelayer/rclone, rclone's listing time, CPU per file of each process."""
    rows = []
    for (tool, lat), runs in groups.items():
        b = max(runs, key=lambda r: r.files_per_s)
        other = groups.get(("rclone", lat), [])
        ratio = "-"
        if tool == "cachelayer" and other:
            best_rc = min(r.seconds for r in other)
            med_rc = statistics.median(r.seconds for r in other)
            med = statistics.median(r.seconds for r in runs)
            ratio = f"**{b.seconds / best_rc:.2f}** / {med / med_rc:.2f}"
        listing = "-"
        if tool == "rclone":
            listing = f"{statistics.median(r.extra['listing_seconds'] for r in runs):.2f}"
        rows.append(
            [tool, f"{lat:g}", len(runs), f"{b.seconds:.2f}"]
            + [f"{b.files_per_s:.0f} / {statistics.median(r.files_per_s for r in runs):.0f}", ratio, listing]
            + bu.cpu_cells(b)
        )
    head = ["tool", "latency ms", "runs", "wall s (best)", "files/s best / median"]
    head += ["time ratio cachelayer/rclone (best / median)", "listing s (not in rclone's time)"]
    return bu.md_table([*head, *bu.CPU_HEAD], rows)


def run_all(
    one: OneFile,
    history: History | None,
    *,
    sizes: Sequence[int],
    latency: Sequence[float] = (0.0,),
    reps: int = 3,
    big_reps: int | None = None,
    concurrency: int = 16,
    verify: bool = True,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every case at each ``latency`` (seconds), tools interleaved within a repetition
    (order reversed every other one). Prints progress and tables through ``out``; returns
    ``{"files": [Copy], "history": {(tool, latency ms): [Run]}}``."""
    big_reps = reps if big_reps is None else big_reps
    copies: list[Copy] = []
    groups: dict[tuple[str, float], list[Run]] = {}
    if history is not None:
        h = history.history
        out(f"# history: {len(h.predictions)} predictions, {h.files} files, {h.bytes / 1e6:.1f} MB")
    for lat in latency:
        one.set_latency(lat)
        if history is not None:
            history.set_latency(lat)
        ms = f"{lat * 1000:g} ms"
        for rep in range(max(reps, big_reps)):
            order = TOOLS if rep % 2 == 0 else TOOLS[::-1]
            if rep < reps:
                for tool in order:
                    c = one.startup(tool)
                    copies.append(c)
                    out(f"  {ms} startup {tool} rep {rep + 1}: {c.seconds:.3f} s")
                copies.append(one.stack())
                out(f"  {ms} libraries alone rep {rep + 1}: {copies[-1].seconds:.3f} s")
            for size in sizes:
                if rep >= (reps if size < 100 * MiB else big_reps):
                    continue
                pid, url = one.seed(size, 1)
                for tool in (*order, "library"):
                    c = one.copy(tool, pid, url, size, 1, verify=verify, again=size == min(sizes))
                    copies.append(c)
                    if "again" in c.extra:
                        copies.append(c.extra.pop("again"))
                        out(
                            f"  {ms} persist again (already stored) rep {rep + 1}: {copies[-1].seconds:.3f} s"
                        )
                    out(
                        f"  {ms} {fmt_size(size)} {tool} rep {rep + 1}: {c.seconds:.3f} s "
                        f"{c.mib_s:.1f} MiB/s "
                        f"peak RSS {c.rss_kib / 1024:.0f} MiB CPU {c.cpu['child']:.2f} s"
                        + (" (verified)" if verify else "")
                    )
            if history is not None and rep < reps:
                first: dict[str, tuple[int, str]] = {}
                for tool in order:
                    r, objects = history.run_tool(tool, concurrency)
                    groups.setdefault((tool, lat * 1000), []).append(r)
                    first = first or objects
                    if objects != first:
                        raise RuntimeError(f"{tool} stored other objects than the other tool")
                    out(f"  {ms} history {tool} rep {rep + 1}: {r.seconds:.2f} s {r.files_per_s:.0f} files/s")
    out("\nOne file (and start-up), fresh process each, launch to exit:\n")
    out(files_table(copies) + "\n")
    if groups:
        out(f"\nHistory, concurrency {concurrency} (rclone: xargs -P {concurrency}, a process per file):\n")
        out(history_table(groups) + "\n")
    return {"files": copies, "history": groups}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1,50,500", help="single-file sizes in MiB, comma-separated")
    ap.add_argument("--predictions", type=int, default=80, help="history: predictions")
    ap.add_argument("--files-per", type=int, default=5, help="history: files per prediction")
    ap.add_argument("--size", type=int, default=100 * bu.KB, help="history: bytes per file (about)")
    ap.add_argument("--no-history", action="store_true", help="skip case 2")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="runs of each tool (sizes < 100 MiB, history)")
    ap.add_argument("--big-reps", type=int, help="runs of each tool from 100 MiB [--reps]")
    ap.add_argument("--latency-ms", default="0", help="simulator latency, comma-separated (e.g. 0,50)")
    ap.add_argument("--no-verify", action="store_true", help="skip reading single files back (SHA-256)")
    ap.add_argument("--rclone", default=RCLONE, help=f"rclone binary [{RCLONE}]")
    ap.add_argument("--json", metavar="PATH", help="also write every measurement as JSON")
    ap.add_argument("--serve-sim", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--library-child", nargs=2, metavar=("PID", "WARM_PID"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.library_child:
        library_child(*args.library_child)
        return 0
    if args.serve_sim:
        bu.serve_simulator(_seed_model, {"seed": _seed_file})
        return 0
    try:
        lats = bu.latencies(args.latency_ms)
        sizes = [int(float(s) * MiB) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        ap.error(str(exc))
    if any(s <= 0 for s in sizes) or args.reps < 1 or (args.big_reps is not None and args.big_reps < 1):
        ap.error("sizes and repetitions must be positive")
    if not shutil.which(args.rclone):
        ap.error(f"rclone not found at {args.rclone}")
    from cachelayer.testing.s3server import MotoS3Server

    print("\n".join(bu.header("bench/rclone.py", sys.argv[1:] if argv is None else argv)))
    version = subprocess.run([args.rclone, "version"], capture_output=True, text=True).stdout
    print(f"# {version.splitlines()[0] if version else 'rclone: no version'}")
    started = time.monotonic()
    moto = MotoS3Server()
    one = history = None
    try:
        one = OneFile(args.rclone, moto=moto)
        if not args.no_history:
            kw = dict(predictions=args.predictions, files_per=args.files_per, size=args.size)
            history = History(rclone=args.rclone, moto=moto, **kw)
        results = run_all(
            one,
            history,
            sizes=sizes,
            latency=lats,
            reps=args.reps,
            big_reps=args.big_reps,
            concurrency=args.concurrency,
            verify=not args.no_verify,
        )
    finally:
        for s in (one, history):
            if s is not None:
                s.close()
        moto.stop()
    print(f"# total {time.monotonic() - started:.0f} s; load average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        rows = [{**c.__dict__, "kind": "file"} for c in results["files"]]
        rows += [{**r.__dict__, "kind": "history"} for rs in results["history"].values() for r in rs]
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
