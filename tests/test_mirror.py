"""The mirror (issue 18, item 5): ``CACHELAYER_MIRROR_URLS``.

Real servers only: the Replicate simulator, one moto S3 server holding the primary bucket
and the mirror bucket (or a local directory as the mirror), the catalog on SQLite and
PostgreSQL, and a real ``cachelayer serve`` for the gateway. The primary object is deleted
or overwritten behind cachelayer's back with boto3, as an operator's mistake would.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_cli
from serving import ServeProcess, process_env, serve_env

from cachelayer.catalog.records import FileStatus
from cachelayer.errors import ConfigError
from cachelayer.mirror import mirror_key
from cachelayer.testing.simulator import File


def _drop_bucket(s3_server: Any, name: str) -> None:
    client = s3_server.admin_client
    with contextlib.suppress(Exception):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys: list[Any] = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        client.delete_bucket(Bucket=name)


@pytest.fixture
def mirror_bucket(s3_server: Any) -> Iterator[str]:
    name = f"cachelayer-mirror-{secrets.token_hex(8)}"
    s3_server.create_bucket(name)
    yield name
    _drop_bucket(s3_server, name)


def _get(s3_server: Any, bucket: str, key: str) -> bytes:
    return bytes(s3_server.admin_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def _seed(sim: Any, n: int = 2) -> tuple[str, list[File]]:
    files = [
        File(secrets.token_bytes(40_000 + 1000 * i), content_type="image/png", filename=f"m{i}.png")
        for i in range(n)
    ]
    return sim.seed_prediction("acme/mirrored", input={"n": n}, output=files), files


def test_mirror_copies_verify_repair_and_gateway_without_a_second_download(
    make_layer, replicate_simulator, s3_server, s3_bucket, mirror_bucket, catalog_url, tmp_path: Path
):
    sim = replicate_simulator
    mirror_url = f"s3://{mirror_bucket}/mirror"
    layer = make_layer(mirror_urls=mirror_url)
    pid, files = _seed(sim)

    out = layer.persist(pid)
    recs = layer.catalog.files.of_prediction(pid)
    assert out == [layer.durable_url(r) for r in recs]
    layer.work()  # drains the mirror queue (waits for the background thread's copies)

    copies = layer.catalog.copies.of_files(r.id for r in recs)
    for rec, f in zip(recs, files, strict=True):
        (copy,) = copies[rec.id]
        assert copy.status == FileStatus.STORED, copy.error
        assert copy.store == f"s3://{mirror_bucket}"
        assert copy.key == mirror_key(rec.key, "replicate", "mirror") and copy.key.startswith("mirror/")
        assert (copy.sha256, copy.size) == (rec.sha256, rec.size)
        assert _get(s3_server, s3_bucket, rec.key) == f.read()
        assert _get(s3_server, mirror_bucket, copy.key) == f.read()
    every = layer.catalog.copies.of_predictions([pid])
    assert set(every) == {(r.store, r.key) for r in recs} | {
        (c.store, c.key) for cs in copies.values() for c in cs
    }
    assert len(every) == 4

    # the primary object of the first file disappears behind cachelayer's back
    lost = recs[0]
    s3_server.admin_client.delete_object(Bucket=s3_bucket, Key=lost.key)

    # the gateway still serves its bytes, from the mirror, redirecting or streaming
    for proxy in ("0", "1"):
        env = serve_env(
            sim,
            s3_server,
            s3_bucket,
            catalog_url,
            CACHELAYER_GATEWAY_PROXY=proxy,
            CACHELAYER_MIRROR_URLS=mirror_url,
        )
        server = ServeProcess(env, tmp_path / f"serve-{proxy}.log", "--workers", "0")
        try:
            gw = make_layer(url_mode="gateway", gateway_url=server.url, mirror_urls=mirror_url)
            for rec, f in zip(recs, files, strict=True):
                got = httpx.get(gw.durable_url(rec), follow_redirects=True)
                assert got.status_code == 200, (proxy, rec.key, got.status_code)
                assert got.content == f.read()
        finally:
            server.stop()
        output = server.output()
        assert "Traceback" not in output and " 500 " not in output, output

    # verify reports the missing primary copy (and checks both stores: 4 objects)
    report = layer.verify()
    assert (report.checked, report.ok, report.missing, report.corrupt) == (4, 3, 1, 0), report.summary()
    (problem,) = report.problems
    assert (problem.file.store, problem.file.key) == (lost.store, lost.key)

    # a mirror copy overwritten with other bytes of the same length: a deep check finds it
    other = layer.catalog.copies.of_files([recs[1].id])[recs[1].id][0]
    s3_server.admin_client.put_object(Bucket=mirror_bucket, Key=other.key, Body=b"x" * (other.size or 0))
    report = layer.verify(deep=True)
    assert (report.missing, report.corrupt) == (1, 1), report.summary()

    # repair restores both from the good copy of each file, without Replicate
    repaired = layer.verify(deep=True, repair=True)
    assert repaired.restored == 2, repaired.summary()
    assert {p.action for p in repaired.problems} == {"restored"}
    assert _get(s3_server, s3_bucket, lost.key) == files[0].read()
    assert _get(s3_server, mirror_bucket, other.key) == files[1].read()
    assert layer.verify(deep=True).clean
    assert [r.status for r in layer.catalog.files.of_prediction(pid)] == ["stored", "stored"]

    # each file came from Replicate exactly once, whatever happened after
    for rec in recs:
        assert sim.download_count(rec.source_url) == 1, rec.source_url


def test_a_mirror_that_is_down_neither_delays_nor_fails_the_persist(
    make_layer, replicate_simulator, s3_server, s3_bucket
):
    sim = replicate_simulator
    absent = f"cachelayer-mirror-{secrets.token_hex(8)}"  # the mirror's bucket is not there yet
    layer = make_layer(mirror_urls=f"s3://{absent}")
    pid, files = _seed(sim, 1)
    try:
        out = layer.persist(pid)
        (rec,) = layer.catalog.files.of_prediction(pid)
        assert rec.status == FileStatus.STORED and out == [layer.durable_url(rec)]
        summary = layer.work()
        assert summary.exit_code == 0  # the files are stored; the mirror copy waits
        (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
        assert copy.status == FileStatus.PENDING and copy.attempts >= 1 and copy.error
        assert layer.catalog.copies.counts() == {"pending": 1}

        s3_server.create_bucket(absent)  # the mirror is back
        layer.work()  # still in its backoff: nothing to do yet
        layer.work(retry_failed=True)  # ends the backoff
        (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
        assert copy.status == FileStatus.STORED and copy.error is None
        assert _get(s3_server, absent, copy.key) == files[0].read()
        assert sim.download_count(rec.source_url) == 1
    finally:
        _drop_bucket(s3_server, absent)


def test_files_stored_before_the_mirror_or_before_a_crash_are_queued_by_the_next_worker(
    make_layer, replicate_simulator, s3_server, tmp_path: Path
):
    sim = replicate_simulator
    pid, files = _seed(sim)
    make_layer().persist(pid)  # no mirror configured: no copy rows (as a crash would leave)
    local = tmp_path / "mirror-objects"
    layer = make_layer(mirror_urls=str(local))
    recs = layer.catalog.files.of_prediction(pid)
    assert layer.catalog.copies.of_files(r.id for r in recs) == {}
    layer.work()
    copies = layer.catalog.copies.of_files(r.id for r in recs)
    for rec, f in zip(recs, files, strict=True):
        (copy,) = copies[rec.id]
        assert copy.status == FileStatus.STORED and copy.store == local.resolve().as_uri()
        assert (local / copy.key).read_bytes() == f.read()
    # a local mirror copy deleted by hand: verify --repair (the CLI) writes it back
    (local / copies[recs[0].id][0].key).unlink()
    env = process_env(sim, s3_server, layer.settings.storage_url, layer.settings.database_url)
    env["CACHELAYER_MIRROR_URLS"] = str(local)
    done = run_cli(env, "verify")
    assert done.returncode == 1 and "1 missing" in done.stdout + done.stderr, done.stdout + done.stderr
    done = run_cli(env, "verify", "--repair")
    assert "restored" in done.stdout + done.stderr, done.stdout + done.stderr
    assert (local / copies[recs[0].id][0].key).read_bytes() == files[0].read()
    assert run_cli(env, "verify").returncode == 0
    for rec in recs:
        assert sim.download_count(rec.source_url) == 1


def test_mirror_urls_are_validated_and_masked(tmp_path: Path):
    from cachelayer.config import Settings

    base = {"database_url": f"sqlite:///{tmp_path}/c.db", "storage_url": "s3://primary/p"}
    s = Settings.from_env({}, **base, mirror_urls=" s3://m1/x , file:///srv/m2 ,")
    assert s.mirror_urls == ("s3://m1/x", "file:///srv/m2")
    assert Settings.from_env({"CACHELAYER_MIRROR_URLS": "s3://m1"}, **base).mirror_urls == ("s3://m1",)
    assert Settings.from_env({}, **base).mirror_urls == ()
    with pytest.raises(ConfigError, match="CACHELAYER_MIRROR_URLS") as bad:
        Settings.from_env({"CACHELAYER_MIRROR_URLS": "http://user:hunter2@host/x"}, **base)
    assert "hunter2" not in str(bad.value)
    with pytest.raises(ConfigError, match="primary store"):
        Settings.from_env({}, **base, mirror_urls="s3://primary/p")
    with pytest.raises(ConfigError, match="twice"):
        Settings.from_env({}, **base, mirror_urls="s3://m1,s3://m1/")


def test_mirror_key_swaps_the_prefix():
    assert mirror_key("replicate/ab/x.png", "replicate", "mirror") == "mirror/ab/x.png"
    assert mirror_key("replicate/ab/x.png", "replicate", "") == "ab/x.png"
    assert mirror_key("ab/x.png", "", "m") == "m/ab/x.png"
    assert mirror_key("other/x.png", "replicate", "m") == "m/other/x.png"


def test_a_catalog_at_revision_0006_upgrades_and_its_stored_files_get_mirrored(
    make_layer, replicate_simulator, catalog_url, tmp_path: Path
):
    """A catalog as the landed code left it (revision 0006: no ``file_copies``), with a
    stored prediction: ``db upgrade`` adds the table, and the first worker run with a
    mirror copies the old files there."""
    from alembic import command
    from sqlalchemy import inspect

    from cachelayer.catalog.db import _alembic_config, current_revision, make_engine, upgrade

    pid, files = _seed(replicate_simulator)
    make_layer().persist(pid)
    engine = make_engine(catalog_url)
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert current_revision(engine) == "0006" and "file_copies" not in inspect(engine).get_table_names()
    assert upgrade(engine)[0] == "0006"
    assert "file_copies" in inspect(engine).get_table_names()
    engine.dispose()

    local = tmp_path / "mirror-after-upgrade"
    layer = make_layer(mirror_urls=local.as_uri())
    layer.work()
    recs = layer.catalog.files.of_prediction(pid)
    copies = layer.catalog.copies.of_files(r.id for r in recs)
    for rec, f in zip(recs, files, strict=True):
        (copy,) = copies[rec.id]
        assert copy.status == FileStatus.STORED and (local / copy.key).read_bytes() == f.read()


def test_serve_workers_drain_pending_mirror_copies(make_layer, replicate_simulator, s3_server, served):
    """A copy left pending while the mirror was down is made by ``cachelayer serve``'s
    workers once the mirror answers (its backoff over), not by the process that stored it."""
    import time

    absent = f"cachelayer-mirror-{secrets.token_hex(8)}"
    layer = make_layer(mirror_urls=f"s3://{absent}")
    pid, files = _seed(replicate_simulator, 1)
    try:
        layer.persist(pid)
        layer.work()
        (rec,) = layer.catalog.files.of_prediction(pid)
        (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
        assert copy.status == FileStatus.PENDING
        layer.close()  # this process stops; the copy stays queued
        s3_server.create_bucket(absent)
        served("--workers", "1", CACHELAYER_MIRROR_URLS=f"s3://{absent}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (copy,) = layer.catalog.copies.of_files([rec.id])[rec.id]
            if copy.status == FileStatus.STORED:
                break
            time.sleep(0.5)
        assert copy.status == FileStatus.STORED, copy
        assert _get(s3_server, absent, copy.key) == files[0].read()
        assert replicate_simulator.download_count(rec.source_url) == 1
    finally:
        _drop_bucket(s3_server, absent)


def test_delete_removes_every_copy_and_its_rows(
    make_layer, replicate_simulator, s3_server, s3_bucket, mirror_bucket
):
    """``delete`` removes the primary objects and the mirrors' (issue 18: "delete removes
    every copy"); no copy row says stored afterwards, and nothing is copied again."""
    layer = make_layer(mirror_urls=f"s3://{mirror_bucket}/mirror")
    pid, _ = _seed(replicate_simulator)
    layer.persist(pid)
    layer.work()
    recs = layer.catalog.files.of_prediction(pid)
    copies = [c for cs in layer.catalog.copies.of_files(r.id for r in recs).values() for c in cs]
    assert len(copies) == 2 and {c.status for c in copies} == {FileStatus.STORED}
    summary = layer.delete([pid], reason="takedown")
    assert summary.predictions == 1
    client = s3_server.admin_client
    for rec in recs:
        assert client.list_objects_v2(Bucket=s3_bucket, Prefix=rec.key).get("KeyCount") == 0
    for c in copies:
        assert client.list_objects_v2(Bucket=mirror_bucket, Prefix=c.key).get("KeyCount") == 0
    assert layer.catalog.copies.of_files(r.id for r in recs) == {}
    layer.work(retry_failed=True)  # nothing is mirrored again
    assert client.list_objects_v2(Bucket=mirror_bucket).get("KeyCount") == 0
