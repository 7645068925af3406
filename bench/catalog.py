"""Catalog queries at 1,000,000 output-file rows, on SQLite and on the local PostgreSQL.

Fills a fresh catalog (schema from the shipped Alembic revisions) with a realistic mix and
times the queries users run, through the same ``Catalog`` methods the CLI calls:

* 250,000 predictions of 20 models (Zipf-like popularity: the top model has about 28% of
  the rows), 1 to 7 files each (4 on average), exactly ``--rows`` output files; created
  uniformly over 90 days; 94% ``stored``, 3% ``expired``, 2% ``failed``, 1% ``pending``;
  every source URL also in ``source_urls`` (as ``ensure_files`` records them) plus 5% of
  files with a second, rotated URL.
* Bulk loading: ``executemany`` in one transaction on SQLite, ``COPY`` on PostgreSQL,
  into the indexed tables; then ``ANALYZE`` (PostgreSQL's autovacuum does the same after a
  load; SQLite is measured both before and after ``ANALYZE``, see ``--sqlite-analyze``).

Measured (median and p95 over ``--repeat`` runs, after warm-up; milliseconds):

* ``baseline``: ``get_file`` of a random id (primary key), the floor of one query through
  SQLAlchemy; every other number is also given as a ratio to it.
* ``resolve``: ``Catalog.resolve`` of a random stored file's current source URL;
  ``resolve (rotated URL)`` of an older URL, found through ``source_urls``;
  ``resolve_many (1,000 URLs)``.
* ``show``: ``Catalog.show`` of a random prediction (prediction + its files).
* ``ls first page`` / ``ls page 1,000``: ``list_files(model=<top model>, limit=50)``, the
  latter with the cursor reached by walking 999 pages (the walk is timed once, too);
  ``ls first page (no filter)``, ``(status=failed)`` and ``(status=stored)``.
* ``stats by model`` (and by day, by status).

Usage::

    python bench/catalog.py                         # both databases, 1,000,000 rows
    python bench/catalog.py --only sqlite --rows 200000
    python bench/catalog.py --postgres-admin postgresql+psycopg://root@127.0.0.1:5432/postgres

The PostgreSQL database ``cachelayer_bench_<hex>`` and the SQLite file (in a temporary
directory unless ``--sqlite PATH``) are dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cachelayer.catalog import Catalog
from cachelayer.catalog.db import make_engine, upgrade

MODELS = [
    "black-forest-labs/flux-schnell",
    "black-forest-labs/flux-dev",
    "stability-ai/sdxl",
    "bytedance/sdxl-lightning-4step",
    "ideogram-ai/ideogram-v2",
    "recraft-ai/recraft-v3",
    "lucataco/remove-bg",
    "nightmareai/real-esrgan",
    "tencentarc/gfpgan",
    "fofr/face-to-many",
    "zsxkib/instant-id",
    "minimax/video-01",
    "luma/ray",
    "meta/musicgen",
    "openai/whisper",
    "suno-ai/bark",
    "cjwbw/rembg",
    "jagilley/controlnet-canny",
    "andreasjansson/stable-diffusion-animation",
    "acme/painter",
]
NOW = datetime(2026, 11, 20, tzinfo=timezone.utc)
DAYS = 90
STATUS_WEIGHTS = (("stored", 94), ("expired", 3), ("failed", 2), ("pending", 1))
ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


# ---- data --------------------------------------------------------------------------------------


def _file_counts(rng: random.Random, predictions: int, rows: int) -> list[int]:
    counts = [rng.randint(1, 7) for _ in range(predictions)]
    diff = rows - sum(counts)
    i = 0
    while diff:  # nudge counts (staying in 1..8) until the total is exact
        j = i % predictions
        if diff > 0 and counts[j] < 8:
            counts[j] += 1
            diff -= 1
        elif diff < 0 and counts[j] > 1:
            counts[j] -= 1
            diff += 1
        i += 1
    return counts


def generate(
    rows: int, predictions: int, seed: int = 42, chunk: int = 20_000
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[int, str, datetime]]]]:
    """Yield (predictions, files, source_urls) in chunks of ``chunk`` predictions."""
    rng = random.Random(seed)
    weights = [1 / (k + 1) for k in range(len(MODELS))]
    counts = _file_counts(rng, predictions, rows)
    file_id = 0
    for start in range(0, predictions, chunk):
        preds: list[dict[str, Any]] = []
        files: list[dict[str, Any]] = []
        aliases: list[tuple[int, str, datetime]] = []
        for n in counts[start : start + chunk]:
            pid = "".join(rng.choices(ALNUM, k=26))
            model = rng.choices(MODELS, weights)[0]
            created = NOW - timedelta(seconds=rng.uniform(0, DAYS * 86400))
            completed = created + timedelta(seconds=rng.uniform(1, 30))
            source = "web" if rng.random() < 0.1 else "api"
            urls = [
                f"https://replicate.delivery/xezq/{''.join(rng.choices(ALNUM, k=40))}/out-{i}.png"
                for i in range(n)
            ]
            keys = [f"replicate/{pid}/{i}-out-{i}.png" for i in range(n)]
            preds.append(
                {
                    "id": pid,
                    "model": model,
                    "version": f"{rng.getrandbits(256):064x}",
                    "status": "succeeded",
                    "source": source,
                    "input": {
                        "prompt": f"a photo of a cat number {rng.randint(0, 10**6)}",
                        "num_outputs": n,
                        "seed": rng.randint(0, 2**31),
                    },
                    "output": urls,
                    "durable_output": [f"s3://bench-bucket/{k}" for k in keys],
                    "created_at": created,
                    "started_at": created + timedelta(seconds=0.5),
                    "completed_at": completed,
                    "data_removed": source == "api" and completed < NOW - timedelta(hours=1),
                    "recorded_at": completed,
                    "updated_at": completed,
                }
            )
            for i in range(n):
                file_id += 1
                status = rng.choices([s for s, _ in STATUS_WEIGHTS], [w for _, w in STATUS_WEIGHTS])[0]
                stored = status == "stored"
                files.append(
                    {
                        "id": file_id,
                        "prediction_id": pid,
                        "output_path": f"/{i}",
                        "source_url": urls[i],
                        "store": "s3://bench-bucket",
                        "key": keys[i],
                        "size": rng.randint(100_000, 5_000_000) if stored else None,
                        "sha256": f"{rng.getrandbits(256):064x}" if stored else None,
                        "content_type": "image/png" if stored else None,
                        "status": status,
                        "attempts": 1 if status != "pending" else 0,
                        "last_error": None
                        if stored or status == "pending"
                        else "The output URL has expired"
                        if status == "expired"
                        else "TruncatedDownloadError",
                        "source_age_seconds": rng.uniform(0.5, 20.0),
                        "stored_at": completed + timedelta(seconds=2) if stored else None,
                        "model": model,
                        "created_at": created,
                        "available_at": completed,
                    }
                )
                aliases.append((file_id, urls[i], completed))
                if rng.random() < 0.05:  # a rotated URL the file was served from earlier
                    aliases.append((file_id, urls[i].replace("/xezq/", "/pbxt/"), completed))
        yield preds, files, aliases


PRED_COLS = [
    "id",
    "model",
    "version",
    "status",
    "source",
    "input",
    "output",
    "durable_output",
    "error",
    "created_at",
    "started_at",
    "completed_at",
    "data_removed",
    "rerun_of",
    "recorded_at",
    "updated_at",
]
FILE_COLS = [
    "id",
    "prediction_id",
    "output_path",
    "source_url",
    "store",
    "key",
    "size",
    "sha256",
    "content_type",
    "status",
    "attempts",
    "last_error",
    "source_age_seconds",
    "stored_at",
    "model",
    "created_at",
    "lease_owner",
    "lease_expires_at",
    "available_at",
]
JSON_COLS = {"input", "output", "durable_output"}


def _sqlite_value(col: str, v: Any) -> Any:
    if isinstance(v, datetime):  # the text form SQLAlchemy's SQLite DateTime writes (UTC)
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    if col in JSON_COLS and v is not None:
        return json.dumps(v)
    if isinstance(v, bool):
        return int(v)
    return v


def load_sqlite(engine: Any, rows: int, predictions: int) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        pq = f"INSERT INTO predictions ({', '.join(PRED_COLS)}) VALUES ({', '.join('?' * len(PRED_COLS))})"
        fq = f"INSERT INTO output_files ({', '.join(FILE_COLS)}) VALUES ({', '.join('?' * len(FILE_COLS))})"
        aq = "INSERT INTO source_urls (output_file_id, url, seen_at) VALUES (?, ?, ?)"
        cur.execute("BEGIN")
        for preds, files, aliases in generate(rows, predictions):
            cur.executemany(pq, [[_sqlite_value(c, p.get(c)) for c in PRED_COLS] for p in preds])
            cur.executemany(fq, [[_sqlite_value(c, f.get(c)) for c in FILE_COLS] for f in files])
            cur.executemany(aq, [(i, u, _sqlite_value("seen_at", t)) for i, u, t in aliases])
        cur.execute("COMMIT")
    finally:
        raw.close()


def load_postgres(engine: Any, rows: int, predictions: int) -> None:
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with conn.cursor() as cur:
            for preds, files, aliases in generate(rows, predictions):
                with cur.copy(f"COPY predictions ({', '.join(PRED_COLS)}) FROM STDIN") as cp:
                    for p in preds:
                        cp.write_row(
                            [
                                json.dumps(p[c]) if c in JSON_COLS and p.get(c) is not None else p.get(c)
                                for c in PRED_COLS
                            ]
                        )
                with cur.copy(f"COPY output_files ({', '.join(FILE_COLS)}) FROM STDIN") as cp:
                    for f in files:
                        cp.write_row([f.get(c) for c in FILE_COLS])
                with cur.copy("COPY source_urls (output_file_id, url, seen_at) FROM STDIN") as cp:
                    for a in aliases:
                        cp.write_row(a)
            cur.execute(
                "SELECT setval(pg_get_serial_sequence('output_files', 'id'), "
                "(SELECT max(id) FROM output_files))"
            )
        conn.commit()
    finally:
        raw.close()


# ---- measuring ---------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def measure(catalog: Catalog, repeat: int, rng: random.Random) -> list[tuple[str, list[float]]]:
    from sqlalchemy import func, select

    from cachelayer.catalog.models import OUTPUT_FILES as OutputFile
    from cachelayer.catalog.models import SOURCE_URLS as SourceUrl

    with catalog.db.engine.connect() as s:
        max_id = s.scalar(select(func.max(OutputFile.c.id))) or 1
        sample = s.execute(
            select(OutputFile.c.source_url, OutputFile.c.prediction_id).where(
                OutputFile.c.status == "stored",
                OutputFile.c.id.in_([rng.randint(1, max_id) for _ in range(5000)]),
            )
        ).all()
        rotated = list(
            s.scalars(
                select(SourceUrl.c.url)
                .join(OutputFile, OutputFile.c.id == SourceUrl.c.output_file_id)
                .where(
                    SourceUrl.c.url.like("https://replicate.delivery/pbxt/%"),
                    OutputFile.c.id.in_([rng.randint(1, max_id) for _ in range(20_000)]),
                    OutputFile.c.status == "stored",
                )
            )
        )
        top = s.execute(
            select(OutputFile.c.model, func.count())
            .group_by(OutputFile.c.model)
            .order_by(func.count().desc())
            .limit(1)
        ).one()
    urls = [r.source_url for r in sample]
    pids = [r.prediction_id for r in sample]
    model = top[0]
    results: list[tuple[str, list[float]]] = []

    def add(name: str, fn: Callable[[], Any], n: int = repeat, warmup: int = 3) -> None:
        results.append((name, timed(fn, n, warmup)))
        print(f"  {name}: median {statistics.median(results[-1][1]):.2f} ms", file=sys.stderr)

    add("baseline: get_file by primary key", lambda: catalog.files.get(rng.randint(1, max_id)))

    def resolve_one() -> None:
        assert catalog.resolve(rng.choice(urls)) is not None

    add("resolve (current URL)", resolve_one)

    def resolve_rotated() -> None:
        assert catalog.resolve(rng.choice(rotated)) is not None

    add("resolve (rotated URL, via source_urls)", resolve_rotated)

    def resolve_many_rotated() -> None:
        url = rng.choice(rotated)
        assert catalog.resolve_many([url])[url] is not None

    add("resolve_many([one rotated URL])", resolve_many_rotated)

    batch = urls[:1000]
    add("resolve_many (1,000 URLs)", lambda: catalog.resolve_many(batch), max(5, repeat // 20), 1)

    def show_one() -> None:
        assert catalog.show(rng.choice(pids)) is not None

    add("show", show_one)

    add(
        f"ls first page (model={model}, 50 rows)",
        lambda: catalog.list_files(model=model, limit=50),
        max(20, repeat // 4),
    )
    deep = min(1000, top[1] // 50)  # page 1,000 at 1,000,000 rows; less in small runs
    t = time.perf_counter()
    cursor = None
    for _ in range(deep - 1):
        cursor = catalog.list_files(model=model, limit=50, cursor=cursor).next_cursor
        assert cursor is not None
    walk_ms = (time.perf_counter() - t) * 1000
    print(f"  walking {deep - 1} pages took {walk_ms:.0f} ms", file=sys.stderr)
    results.append((f"ls: walking pages 1..{deep - 1:,} (total, once)", [walk_ms]))

    def page_deep() -> None:
        page = catalog.list_files(model=model, limit=50, cursor=cursor)
        assert len(page.files) == 50

    add(f"ls page {deep:,} (model={model}, 50 rows)", page_deep, max(20, repeat // 4))
    add("ls first page (no filter)", lambda: catalog.list_files(limit=50), max(20, repeat // 4))
    add(
        "ls first page (status=failed)",
        lambda: catalog.list_files(status="failed", limit=50),
        max(20, repeat // 4),
    )
    add(
        "ls first page (status=stored)",
        lambda: catalog.list_files(status="stored", limit=50),
        max(20, repeat // 4),
    )
    add("stats by model", lambda: catalog.stats("model"), 5, 1)
    add("stats by day", lambda: catalog.stats("day"), 3, 1)
    add("stats by status", lambda: catalog.stats("status"), 3, 1)
    return results


TARGETS = {
    "resolve (current URL)": 5,
    "show": 5,
    "ls first page (model=": 50,
    "ls page ": 50,
    "stats by model": 2000,
}


def report(backend: str, results: list[tuple[str, list[float]]], load_s: float) -> str:
    base = statistics.median(results[0][1])
    lines = [
        f"### {backend}",
        "",
        f"Load: {load_s:.1f} s.",
        "",
        "| query | median ms | p95 ms | runs | x baseline | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, vals in results:
        med = statistics.median(vals)
        target = next(
            (f"< {v} ms" + (" ✓" if med < v else " ✗") for k, v in TARGETS.items() if name.startswith(k)), ""
        )
        lines.append(
            f"| {name} | {med:.2f} | {pct(vals, 0.95):.2f} | {len(vals)} | {med / base:.1f} | {target} |"
        )
    return "\n".join(lines) + "\n"


# ---- backends ----------------------------------------------------------------------------------


def run_sqlite(args: argparse.Namespace) -> list[str]:
    tmp = None
    if args.sqlite:
        path = Path(args.sqlite)
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    else:
        tmp = tempfile.mkdtemp(prefix="cachelayer-bench-")
        path = Path(tmp) / "catalog.db"
    engine = make_engine(f"sqlite:///{path}")
    out = []
    try:
        upgrade(engine)
        t = time.perf_counter()
        load_sqlite(engine, args.rows, args.predictions)
        load_s = time.perf_counter() - t
        print(
            f"sqlite: loaded {args.rows} rows in {load_s:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)",
            file=sys.stderr,
        )
        catalog = Catalog(engine)
        if args.sqlite_analyze in ("no", "both"):
            out.append(report("SQLite (no ANALYZE)", measure(catalog, args.repeat, random.Random(7)), load_s))
        if args.sqlite_analyze in ("yes", "both"):
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
            out.append(
                report("SQLite (after ANALYZE)", measure(catalog, args.repeat, random.Random(7)), load_s)
            )
    finally:
        engine.dispose()
        if tmp and not args.keep:
            for f in Path(tmp).iterdir():
                f.unlink()
            os.rmdir(tmp)
    return out


def run_postgres(args: argparse.Namespace) -> list[str]:
    from cachelayer.testing.fixtures import PostgresAdmin

    admin = PostgresAdmin(args.postgres_admin)
    url = admin.create_database("cachelayer_bench_")
    engine = make_engine(url)
    try:
        upgrade(engine)
        t = time.perf_counter()
        load_postgres(engine, args.rows, args.predictions)
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("VACUUM ANALYZE")
        load_s = time.perf_counter() - t
        print(f"postgresql: loaded {args.rows} rows (+ VACUUM ANALYZE) in {load_s:.1f} s", file=sys.stderr)
        return [report("PostgreSQL", measure(Catalog(engine), args.repeat, random.Random(7)), load_s)]
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept {url}", file=sys.stderr)
        else:
            admin.drop_database(url)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="output-file rows")
    p.add_argument("--predictions", type=int, default=None, help="predictions (default rows / 4)")
    p.add_argument("--repeat", type=int, default=200, help="runs per point query")
    p.add_argument("--only", choices=["sqlite", "postgresql"])
    p.add_argument("--sqlite", metavar="PATH", help="SQLite file to (re)create")
    p.add_argument("--sqlite-analyze", choices=["no", "yes", "both"], default="both")
    p.add_argument(
        "--postgres-admin",
        default=os.environ.get(
            "CACHELAYER_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/postgres"
        ),
    )
    p.add_argument("--keep", action="store_true", help="keep the databases")
    args = p.parse_args()
    args.predictions = args.predictions or args.rows // 4
    sections = []
    if args.only in (None, "sqlite"):
        sections += run_sqlite(args)
    if args.only in (None, "postgresql"):
        sections += run_postgres(args)
    print("\n".join(sections))


if __name__ == "__main__":
    main()
