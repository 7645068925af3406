"""Querying the catalog (issue 4): listings with keyset cursors, show, bulk resolve, stats,
verify and repair, output formats and the CLI, on SQLite and on the local PostgreSQL.

The catalog is filled through the real ``Catalog`` methods or a real ``CacheLayer`` that
persists predictions from the Replicate simulator into moto's S3 server or a local
directory; the CLI runs as the installed ``cachelayer`` console script in a subprocess.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from cachelayer import CacheLayer
from cachelayer.catalog import Catalog, NewFile
from cachelayer.catalog.reports import CursorError, decode_cursor, encode_cursor
from cachelayer.cli.formatting import Column, write_fields, write_records
from cachelayer.errors import ConfigError
from cachelayer.prediction import Prediction
from cachelayer.testing.simulator import File, ReplicateSimulator
from cachelayer.timeparse import parse_duration, parse_when
from cachelayer.verify import verify

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
SCHEMA_MD = Path(__file__).resolve().parents[1] / "docs" / "SCHEMA.md"
CLI = str(Path(sys.executable).with_name("cachelayer"))


# ---- a catalog filled through the Catalog methods ---------------------------------------------


def _store_file(c: Catalog, file_id: int, size: int) -> None:
    assert c.queue.claim(file_id, "test", 60)
    assert c.queue.mark_stored(
        file_id, "test", size=size, sha256=f"{size:064x}", content_type="image/png", source_age_seconds=1.5
    )


def fill(c: Catalog) -> dict[str, Any]:
    """9 predictions of two models and one unknown model; p1/p2 share a creation time (the
    id breaks the tie); p7/p8 have no creation time. Statuses cycle stored, stored,
    pending, expired, failed. p0's first file was served from a URL that rotated; p4's
    first file is a data: URI."""
    statuses = ["stored", "stored", "pending", "expired", "failed"]
    info: dict[str, Any] = {"rotated": {}, "data_uri": None, "urls": {}}
    n = 0
    for k in range(9):
        pid = f"p{k}"
        model = ["acme/a", "acme/b", None][k % 3]
        created = None if k >= 7 else BASE + timedelta(hours=k if k != 2 else 1)
        c.predictions.record(
            Prediction.from_json(
                {
                    "id": pid,
                    "model": model,
                    "version": "v1",
                    "status": "succeeded",
                    "source": "api",
                    "input": {"prompt": f"cat {k}"},
                    "output": None,
                    "created_at": created.isoformat() if created else None,
                    "completed_at": created.isoformat() if created else None,
                }
            )
        )
        files = []
        for j in range(k % 3 + 1):
            url = f"https://replicate.delivery/pbxt/{pid}-{j}/out-{j}.png"
            if k == 4 and j == 0:
                url = "data:image/png;base64,iVBORw0KGgo" + "A" * 49  # 60 base64 characters
                info["data_uri"] = url
            files.append(NewFile(f"/{j}", url, f"replicate/{pid}/{j}-out-{j}.png"))
        rows = c.files.ensure(pid, files, store="s3://bucket", model=model, created_at=created)
        for j, (row, f) in enumerate(zip(rows, files, strict=True)):
            info["urls"][row.id] = f.source_url
            if k == 0 and f.output_path == "/0":  # Replicate rotated the URL before we copied
                new = "https://replicate.delivery/xezq/p0-0-new/out-0.png"
                c.files.add_source_url(row.id, new)
                info["rotated"] = {"old": f.source_url, "new": new, "id": row.id}
            status = "stored" if k == 4 and j == 0 else statuses[n % len(statuses)]
            n += 1
            if status == "stored":
                _store_file(c, row.id, 100 * row.id)
            elif status != "pending":
                assert c.queue.claim(row.id, "test", 60)
                c.queue.mark_unstored(row.id, "test", status=status, error=f"{status} for test")
    return info


def expected_order(c: Catalog, **where: Any) -> list[int]:
    every = [f for k in range(9) for f in c.files_of(f"p{k}")]
    keep = [f for f in every if all(getattr(f, k) == v for k, v in where.items())]
    dated = sorted((f for f in keep if f.created_at), key=lambda f: (f.created_at, f.id), reverse=True)
    undated = sorted((f for f in keep if not f.created_at), key=lambda f: f.id, reverse=True)
    return [f.id for f in dated + undated]


def walk(c: Catalog, limit: int, **filters: Any) -> list[int]:
    ids: list[int] = []
    cursor = None
    for _ in range(100):
        page = c.list_files(limit=limit, cursor=cursor, **filters)
        assert len(page.files) <= limit
        ids += [f.id for f in page.files]
        cursor = page.next_cursor
        if cursor is None:
            return ids
        assert len(page.files) == limit
    raise AssertionError("pagination did not end")


def test_listing_is_newest_first_and_cursor_pages_cover_everything(catalog):
    fill(catalog)
    everything = expected_order(catalog)
    assert len(everything) == 18
    assert catalog.list_files(limit=100).files[0].created_at == BASE + timedelta(hours=6)
    for limit in (1, 4, 7, 18, 50):
        assert walk(catalog, limit) == everything
    # undated files come last, by id descending; ties on created_at break by id
    tail = catalog.list_files(limit=100).files[-5:]
    assert all(f.created_at is None for f in tail)
    assert [f.id for f in tail] == sorted((f.id for f in tail), reverse=True)
    assert list(f.id for f in catalog.iter_files(batch_size=4)) == everything
    # a cursor is a position, not a snapshot: reusing it gives the same page
    first = catalog.list_files(limit=5)
    assert catalog.list_files(limit=5, cursor=first.next_cursor) == catalog.list_files(
        limit=5, cursor=first.next_cursor
    )


def test_filters_combine(catalog):
    fill(catalog)
    assert walk(catalog, 2, model="acme/a") == expected_order(catalog, model="acme/a")
    assert walk(catalog, 3, status="stored") == expected_order(catalog, status="stored")
    assert walk(catalog, 2, model="acme/b", status="failed") == expected_order(
        catalog, model="acme/b", status="failed"
    )
    assert [f.id for f in catalog.list_files(prediction_id="p5").files] == expected_order(
        catalog, prediction_id="p5"
    )
    assert list(catalog.iter_files(model="nobody/none")) == []
    # since inclusive, until exclusive; files without a creation time never match
    window = catalog.list_files(
        since=BASE + timedelta(hours=1), until=BASE + timedelta(hours=4), limit=100
    ).files
    assert {f.prediction_id for f in window} == {"p1", "p2", "p3"}
    assert all(f.created_at is not None for f in catalog.iter_files(since=BASE))
    assert sum(1 for _ in catalog.iter_files(since=BASE)) == 18 - 5
    # parse_when output is accepted as is
    assert catalog.list_files(until=parse_when("2026-11-01T13:00Z")).files[0].prediction_id == "p0"


def test_bad_cursor_limit_and_status_are_config_errors(catalog):
    with pytest.raises(CursorError):
        catalog.list_files(cursor="not-a-cursor")
    with pytest.raises(CursorError):
        catalog.list_files(cursor=encode_cursor(None, 1)[:-3] + "!!!")
    with pytest.raises(ConfigError):
        catalog.list_files(limit=0)
    with pytest.raises(ConfigError):
        catalog.list_files(status="done")
    with pytest.raises(ConfigError):
        catalog.stats(by="week")  # type: ignore[arg-type]
    stamp = datetime(2026, 11, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    assert decode_cursor(encode_cursor(stamp, 42)) == (stamp, 42)
    assert decode_cursor(encode_cursor(None, 7)) == (None, 7)


def test_show_returns_prediction_and_files(catalog):
    fill(catalog)
    pred, files = catalog.show("p5")
    assert pred.id == "p5" and pred.input == {"prompt": "cat 5"} and pred.model is None
    assert [f.output_path for f in files] == ["/0", "/1", "/2"]
    assert files == catalog.files_of("p5")
    assert catalog.show("nope") is None


def test_resolve_many_matches_resolve(catalog):
    info = fill(catalog)
    rot = info["rotated"]
    urls = [
        *info["urls"].values(),
        rot["old"],
        rot["new"],
        "https://example.com/never-seen.png",
        "data:image/png;base64,bm90IHNlZW4=",
    ]
    many = catalog.resolve_many(urls)
    assert list(many) == list(dict.fromkeys(urls))  # input order
    for url in urls:
        one = catalog.resolve(url)
        assert (many[url].id if many[url] else None) == (one.id if one else None), url
    assert many[rot["old"]].id == many[rot["new"]].id == rot["id"]  # rotated URL still resolves
    # a data: URI is recorded in the redacted form: the digest of its decoded bytes
    decoded = base64.b64decode(info["data_uri"].split(",", 1)[1])
    assert (
        many[info["data_uri"]].source_url == f"data:image/png;sha256={hashlib.sha256(decoded).hexdigest()},"
    )
    assert many["https://example.com/never-seen.png"] is None
    # files not stored (pending, expired, failed) are never answers
    for file_id, url in info["urls"].items():
        rec = catalog.files.get(file_id)
        assert (many[url] is not None) == (rec.status == "stored")
    assert len(catalog.resolve_many(list(info["urls"].values()) * 400)) == len(info["urls"])


def _schema_sql(title: str) -> str:
    """The ```sql block of docs/SCHEMA.md whose first line is ``-- <title>``."""
    doc = SCHEMA_MD.read_text()
    for block in re.findall(r"```sql\n(.*?)```", doc, re.S):
        if block.splitlines()[0].strip() == f"-- {title}":
            return block
    raise AssertionError(f"no SQL block '-- {title}' in {SCHEMA_MD}")


def test_stats_counts_and_bytes_match_the_documented_sql(catalog):
    fill(catalog)
    every = [f for k in range(9) for f in catalog.files_of(f"p{k}")]
    by_model = {r.group: r for r in catalog.stats("model")}
    assert set(by_model) == {"acme/a", "acme/b", None}
    for model, row in by_model.items():
        mine = [f for f in every if f.model == model]
        assert row.files == len(mine)
        assert row.stored_bytes == sum(f.size for f in mine if f.status == "stored")
        for st in ("stored", "pending", "expired", "failed"):
            assert getattr(row, st) == sum(1 for f in mine if f.status == st)
    assert [r.group for r in catalog.stats("status")] == ["pending", "stored", "expired", "failed"]
    days = catalog.stats("day")
    assert [r.group for r in days] == ["2026-11-01", None] and days[1].files == 5
    windowed = catalog.stats("model", since=BASE + timedelta(hours=3))
    assert sum(r.files for r in windowed) == sum(
        1 for f in every if f.created_at and f.created_at >= BASE + timedelta(hours=3)
    )

    dialect = "SQLite" if catalog.dialect == "sqlite" else "PostgreSQL"
    for by, title in (
        ("model", "stats --by model"),
        ("status", "stats --by status"),
        ("day", f"stats --by day ({dialect})"),
    ):
        with catalog.engine.connect() as conn:
            rows = conn.execute(text(_schema_sql(title))).mappings().all()
        documented = {r[by]: {k: int(v) for k, v in r.items() if k != by} for r in rows}
        ours = {r.group: {k: v for k, v in r.to_dict().items() if k != by} for r in catalog.stats(by)}
        assert documented == ours, by


# ---- verify against moto's S3 server, filled by a real CacheLayer -------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[ReplicateSimulator]:
    with ReplicateSimulator() as s:
        yield s


def _layer(sim: ReplicateSimulator, catalog_url: str, **kw: Any) -> CacheLayer:
    return CacheLayer(
        database_url=catalog_url,
        replicate_api_token=sim.token,
        replicate_base_url=sim.base_url,
        allowed_hosts=sim.delivery_host_port,
        auto_migrate=True,
        **kw,
    )


def test_verify_finds_missing_and_corrupt_objects_and_repair_requeues(sim, catalog_url, s3_store, s3_server):
    model = f"acme/verify-{s3_store.bucket[-6:]}"
    files = [File(size=3000 + i, seed=i, filename=f"out-{i}.png") for i in range(4)]
    sim.add_model(model, outputs=files)
    with _layer(sim, catalog_url, store=s3_store) as layer:
        pid = layer.run_result(model).prediction_id
        assert layer.verify(deep=True).summary().startswith("checked 4 objects (deep, 12006 bytes")
        recs = layer.catalog.files_of(pid)
        s3 = s3_server.client()
        bucket = s3_store.bucket
        s3.delete_object(Bucket=bucket, Key=recs[0].key)  # missing
        s3.put_object(Bucket=bucket, Key=recs[1].key, Body=b"x" * 10)  # wrong size
        s3.put_object(Bucket=bucket, Key=recs[2].key, Body=b"y" * recs[2].size)  # same size

        shallow = layer.verify()
        assert (shallow.checked, shallow.ok, shallow.missing, shallow.corrupt) == (4, 2, 1, 1)
        assert {p.file.id: p.problem for p in shallow.problems} == {
            recs[0].id: "missing",
            recs[1].id: "corrupt",
        }
        assert "10 bytes" in next(p.detail for p in shallow.problems if p.problem == "corrupt")

        deep = layer.verify(deep=True, model=model)
        assert (deep.ok, deep.missing, deep.corrupt) == (1, 1, 2) and not deep.clean
        assert all(p.action is None for p in deep.problems)
        assert layer.catalog.files_of(pid) == recs  # no repair, nothing changed

        repaired = layer.verify(deep=True, repair=True, prediction_id=pid)
        assert repaired.requeued == 3 and repaired.marked_failed == 0
        after = {f.id: f for f in layer.catalog.files_of(pid)}
        assert after[recs[0].id].status == "pending"
        assert after[recs[0].id].last_error == "verify: missing"
        assert after[recs[1].id].last_error == after[recs[2].id].last_error == "verify: corrupt"
        assert after[recs[3].id].status == "stored"
        # never deletes: the corrupt objects are still there until they are copied again
        assert s3.head_object(Bucket=bucket, Key=recs[1].key)["ContentLength"] == 10
        assert layer.resolve(recs[1].source_url) is None
        # verify only looks at stored files: the re-queued ones are not checked again
        assert layer.verify().checked == 1

        layer.persist(pid)  # the queue's job: copy the re-queued files again
        assert [f.status for f in layer.catalog.files_of(pid)] == ["stored"] * 4
        assert layer.verify(deep=True).clean


def test_verify_repair_marks_failed_when_the_source_is_gone(sim, catalog_url, s3_store, s3_server):
    model = f"acme/gone-{s3_store.bucket[-6:]}"
    sim.add_model(model, outputs=[File(b"only copy", filename="out.png")])
    with _layer(sim, catalog_url, store=s3_store) as layer:
        pid = layer.run_result(model).prediction_id
        sim.remove_data(pid)  # Replicate's one-hour removal
        layer.catalog.predictions.record(Prediction.from_json(sim.prediction(pid)))  # ... seen by the catalog
        assert layer.catalog.get_prediction(pid).data_removed
        (rec,) = layer.catalog.files_of(pid)
        s3_server.client().delete_object(Bucket=s3_store.bucket, Key=rec.key)
        report = layer.verify(repair=True)
        assert (report.missing, report.requeued, report.marked_failed) == (1, 0, 1)
        assert report.problems[0].action == "failed"
        assert layer.catalog.files.get(rec.id).status == "failed"
        assert layer.catalog.files.get(rec.id).last_error == "verify: missing"
        # a second repair finds nothing stored to check and changes nothing
        again = layer.verify(repair=True)
        assert again.clean and again.checked == 0


def test_verify_skips_files_of_another_store(catalog, local_store):
    fill(catalog)
    report = verify(catalog, local_store, deep=True, repair=True)
    stored = sum(1 for _ in catalog.iter_files(status="stored"))
    assert (report.checked, report.skipped, report.problems) == (0, stored, [])
    assert f"{stored} in another store skipped" in report.summary()
    assert sum(1 for _ in catalog.iter_files(status="stored")) == stored == 9


# ---- CLI: the installed console script, in subprocesses -----------------------------------------


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def catalog_cli(sim, catalog_url, tmp_path) -> Iterator[dict[str, Any]]:
    """A catalog with two predictions persisted into a local directory store."""
    import os

    name = f"acme/cli-{tmp_path.name[-8:].replace('_', '-')}"
    sim.add_model(name, outputs=[File(size=1000 + i, seed=i, filename=f"o-{i}.png") for i in range(3)])
    storage = f"file://{tmp_path}/objects"
    with _layer(sim, catalog_url, storage_url=storage) as layer:
        pids = [layer.run_result(name).prediction_id for _ in range(2)]
        files = [f for p in pids for f in layer.catalog.files_of(p)]
        urls = {f.source_url: layer.durable_url(f) for f in files}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHELAYER_")}
    env.update(
        CACHELAYER_DATABASE_URL=catalog_url,
        CACHELAYER_STORAGE_URL=storage,
        CACHELAYER_HOME=str(tmp_path / "home"),
        NO_COLOR="1",
    )
    yield {
        "env": env,
        "model": name,
        "pids": pids,
        "urls": urls,
        "root": tmp_path / "objects",
        "files": files,
    }


def test_console_script_formats_and_exit_codes(catalog_cli):
    """The installed ``cachelayer`` script: data on stdout, one-line errors, exit codes."""
    env, urls = catalog_cli["env"], catalog_cli["urls"]
    known = list(urls)
    stdin = "\n".join([known[2], "https://replicate.delivery/unknown/x.png", "", known[3]]) + "\n"
    calls = {
        "jsonl": (("ls", "--format", "jsonl"), None),
        "table": (("ls",), None),
        "resolve": (("resolve", "-", "--format", "jsonl"), stdin),
        "unknown_show": (("show", "no-such-prediction"), None),
        "bad_since": (("ls", "--since", "yesterday-ish"), None),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {k: pool.submit(run_cli, env, *a, stdin=i) for k, (a, i) in calls.items()}
        out = {k: f.result() for k, f in futures.items()}

    rows = [json.loads(line) for line in out["jsonl"].stdout.splitlines()]
    assert out["jsonl"].returncode == 0 and out["jsonl"].stderr == ""
    assert len(rows) == 6 and [r["prediction_id"] for r in rows[:3]] == [catalog_cli["pids"][1]] * 3
    assert list(rows[0]) == [
        "id",
        "prediction_id",
        "output_path",
        "source_url",
        "store",
        "key",
        "status",
        "size",
        "sha256",
        "content_type",
        "attempts",
        "last_error",
        "source_age_seconds",
        "stored_at",
        "model",
        "created_at",
        "durable_url",
    ]
    assert rows[0]["created_at"].endswith("Z") and isinstance(rows[0]["size"], int)
    assert {r["durable_url"] for r in rows} == set(urls.values())

    lines = out["table"].stdout.splitlines()  # not a terminal: plain aligned text, no color
    assert lines[0].split() == ["CREATED", "PREDICTION", "PATH", "MODEL", "STATUS", "SIZE", "URL"]
    assert len(lines) == 7 and "\x1b[" not in out["table"].stdout
    assert lines[1].split()[-1] == rows[0]["durable_url"]

    res = out["resolve"]
    answers = [json.loads(line) for line in res.stdout.splitlines()]
    assert (
        res.returncode == 1
        and res.stderr.strip() == "cachelayer: 1 of 3 URLs unknown (no stored file was copied from them)"
    )
    assert [a["durable_url"] for a in answers] == [urls[known[2]], None, urls[known[3]]]

    assert out["unknown_show"].returncode == 1 and out["unknown_show"].stdout == ""
    assert (
        out["unknown_show"].stderr.strip()
        == "cachelayer: error: prediction no-such-prediction is not in the catalog"
    )
    assert out["bad_since"].returncode == 2 and "yesterday-ish" in out["bad_since"].stderr

    victim = catalog_cli["files"][0]
    (catalog_cli["root"] / victim.key).unlink()
    broken = run_cli(env, "verify", "--repair", "--format", "jsonl")
    assert broken.returncode == 1
    (problem,) = [json.loads(line) for line in broken.stdout.splitlines()]
    assert problem["file_id"] == victim.id and problem["problem"] == "missing"
    assert problem["action"] == "requeued"
    assert broken.stderr.strip() == (
        "cachelayer: checked 6 objects (HEAD): 5 ok, 1 missing, "
        "0 corrupt, 0 errors; repair: 1 re-queued, 0 marked failed"
    )


@pytest.fixture
def cli(catalog_cli, monkeypatch) -> Iterator[Any]:
    """Invoke the ``cachelayer`` group in-process (click's runner: same code path as the
    script, much faster); restores the ``cachelayer`` logger the group reconfigures."""
    import logging

    from click.testing import CliRunner

    from cachelayer.cli import main

    for key, value in catalog_cli["env"].items():
        if key.startswith("CACHELAYER_") or key == "NO_COLOR":
            monkeypatch.setenv(key, value)
    logger = logging.getLogger("cachelayer")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Any:
        return runner.invoke(main, list(args), input=stdin, catch_exceptions=False)

    yield invoke
    logger.handlers[:], logger.level, logger.propagate = saved


def test_cli_commands(cli, catalog_cli, tmp_path):
    urls, pids = catalog_cli["urls"], catalog_cli["pids"]
    jsonl = [json.loads(x) for x in cli("ls", "--format", "jsonl").stdout.splitlines()]

    table = cli("ls", "--format", "csv", "--model", catalog_cli["model"]).stdout
    parsed = list(csv.DictReader(io.StringIO(table)))
    assert [r["id"] for r in parsed] == [str(r["id"]) for r in jsonl]
    assert parsed[0]["last_error"] == "" and parsed[0]["size"] == str(jsonl[0]["size"])

    first = cli("ls", "--format", "json", "--limit", "4")
    page = json.loads(first.stdout)
    assert len(page["files"]) == 4 and page["next_cursor"] and first.stderr == ""
    table_page = cli("ls", "--limit", "4")
    assert f"--cursor {page['next_cursor']}" in table_page.stderr
    rest = cli("ls", "--format", "jsonl", "--cursor", page["next_cursor"])
    assert [json.loads(x)["id"] for x in rest.stdout.splitlines()] == [r["id"] for r in jsonl[4:]]
    assert "more files" not in rest.stderr
    bad = cli("ls", "--cursor", "zzz")
    assert bad.exit_code == 2 and "invalid cursor" in bad.stderr

    shown = json.loads(cli("show", pids[0], "--format", "json").stdout)
    assert shown["prediction"]["id"] == pids[0] and len(shown["files"]) == 3
    assert shown["files"][0]["durable_url"] == urls[shown["files"][0]["source_url"]]
    show_table = cli("show", pids[0]).stdout
    assert show_table.splitlines()[0].split() == ["id", pids[0]]
    assert "PATH" in show_table and urls[shown["files"][2]["source_url"]] in show_table

    stats = json.loads(cli("stats", "--format", "json").stdout)
    assert stats == [
        {
            "model": catalog_cli["model"],
            "files": 6,
            "stored": 6,
            "pending": 0,
            "expired": 0,
            "failed": 0,
            "stored_bytes": 2 * (1000 + 1001 + 1002),
            "deleted": 0,
            "deleting": 0,
        }
    ]
    day = list(csv.DictReader(io.StringIO(cli("stats", "--by", "day", "--format", "csv").stdout)))
    assert len(day) == 1 and re.fullmatch(r"\d{4}-\d\d-\d\d", day[0]["day"])
    assert cli("stats", "--since", "1h", "--format", "jsonl").stdout.count("\n") == 1
    assert cli("stats", "--until", "2000-01-01", "--format", "json").stdout.strip() == "[]"

    known = list(urls)
    both = cli("resolve", known[0], known[1])
    assert both.exit_code == 0 and both.stderr == ""
    assert [line.split() for line in both.stdout.splitlines()] == [
        ["SOURCE", "URL", "DURABLE", "URL"],
        [known[0], urls[known[0]]],
        [known[1], urls[known[1]]],
    ]

    target = tmp_path / "export.csv"
    exported = cli("export", "--format", "csv", "-o", str(target))
    assert exported.exit_code == 0 and exported.stdout == ""
    assert exported.stderr.strip() == f"cachelayer: exported 6 files to {target}"
    assert [r["id"] for r in csv.DictReader(target.open())] == [str(r["id"]) for r in jsonl]
    assert len(cli("export").stdout.splitlines()) == 6

    clean = cli("verify", "--deep")
    assert clean.exit_code == 0 and clean.stdout == ""
    assert "6 ok, 0 missing" in clean.stderr and "6006 bytes read" in clean.stderr

    victim = catalog_cli["files"][1]
    (catalog_cli["root"] / victim.key).write_bytes(b"z" * (victim.size or 0))  # same size
    assert cli("verify").exit_code == 0  # HEAD sees the right size
    deep = cli("verify", "--deep", "--repair")
    assert deep.exit_code == 1 and "corrupt" in deep.stdout and "requeued" in deep.stdout
    pending = cli("ls", "--status", "pending", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(x)["last_error"] for x in pending] == ["verify: corrupt"]
    assert cli("resolve", victim.source_url).exit_code == 1


# ---- formats and time parsing -------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_formats_table_plain_rich_and_no_color(monkeypatch):
    rows = [
        {
            "name": "a",
            "size": 5,
            "when": datetime(2026, 1, 2, tzinfo=timezone.utc),
            "extra": None,
            "input": {"k": [1, 2]},
        },
        {"name": "bbbb", "size": 12345, "when": None, "extra": True, "input": None},
    ]
    cols = [
        Column("name", "NAME"),
        Column("size", "SIZE", numeric=True),
        Column("when", "WHEN"),
        Column("extra", "EXTRA"),
    ]
    plain = io.StringIO()
    write_records(rows, "table", columns=cols, out=plain)
    assert plain.getvalue().splitlines() == [
        "NAME   SIZE  WHEN                  EXTRA",
        "a         5  2026-01-02T00:00:00Z  -",
        "bbbb  12345  -                     true",
    ]
    js = io.StringIO()
    write_records(rows, "json", columns=cols, out=js)
    assert json.loads(js.getvalue())[0] == {
        "name": "a",
        "size": 5,
        "when": "2026-01-02T00:00:00Z",
        "extra": None,
        "input": {"k": [1, 2]},
    }
    c = io.StringIO()
    write_records(rows, "csv", columns=cols, out=c)
    assert c.getvalue().splitlines()[1] == 'a,5,2026-01-02T00:00:00Z,,"{""k"":[1,2]}"'
    empty = io.StringIO()
    write_records([], "json", columns=cols, out=empty)
    assert json.loads(empty.getvalue()) == []

    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    colored = _Tty()
    write_records(rows, "table", columns=cols, out=colored)
    assert "\x1b[" in colored.getvalue() and "12345" in colored.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    nocolor = _Tty()
    write_records(rows, "table", columns=cols, out=nocolor)
    write_fields([("id", "p1"), ("input", {"a": 1})], out=nocolor)
    assert "12345" in nocolor.getvalue() and not re.search(r"\x1b\[[0-9;]*3\dm", nocolor.getvalue())
    with pytest.raises(ValueError):
        write_records(rows, "xml", columns=cols, out=io.StringIO())


def test_parse_when_iso_and_relative():
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    assert parse_when("2026-11-01T00:00Z") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_when("2026-11-01") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_when("2026-11-01T02:00:00+02:00") == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert parse_when("6h", now=now) == now - timedelta(hours=6)
    assert parse_when("30m", now=now) == now - timedelta(minutes=30)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("1h30m", now=now) == now - timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(days=14)
    assert abs(parse_when("1s") - datetime.now(timezone.utc)) < timedelta(seconds=5)
    for bad in ("", "yesterday", "7 days", "-6h", "2026-13-01"):
        with pytest.raises(ValueError):
            parse_when(bad)
