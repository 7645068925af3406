"""Each file in its own store (issue 18, item 1): one catalog holding files of two buckets
and a local directory; every durable URL is rendered from the store the file was written
to (its ``store`` column), never from the store configured now.

Files are persisted through real ``CacheLayer``s into two moto buckets and a local store;
then a third configuration (a third, empty bucket) lists, shows, resolves and exports them
with the installed ``cachelayer`` script, renders them in the library, and a real
``cachelayer serve`` gateway answers each file's gateway URL with that file's bytes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import run_cli
from serving import ServeProcess, serve_env

from cachelayer.testing.fixtures import delete_bucket
from cachelayer.testing.simulator import File


def _bucket(s3_server: Any) -> Iterator[str]:
    name = f"cachelayer-test-{secrets.token_hex(8)}"
    s3_server.create_bucket(name)
    try:
        yield name
    finally:
        delete_bucket(s3_server, name)


@pytest.fixture
def bucket_b(s3_server: Any) -> Iterator[str]:
    yield from _bucket(s3_server)


@pytest.fixture
def bucket_now(s3_server: Any) -> Iterator[str]:
    """The bucket of the configuration in use after the copies (it holds nothing)."""
    yield from _bucket(s3_server)


@pytest.fixture
def mixed(make_layer, replicate_simulator, s3_bucket, bucket_b, tmp_path) -> dict[str, Any]:
    """Three predictions, each persisted into its own store: ``s3://<a>/pa``,
    ``s3://<b>/pb`` and a local directory. Returns their ids, records and bytes."""
    sim = replicate_simulator
    storages = [f"s3://{s3_bucket}/pa", f"s3://{bucket_b}/pb", str(tmp_path / "local-objects")]
    content: dict[str, bytes] = {}
    pids, records = [], []
    for i, storage in enumerate(storages):
        files = [File(size=300 + 10 * i + j, seed=10 * i + j, filename=f"img-{j}.png") for j in range(2)]
        pid = sim.seed_prediction("acme/mixed", input={"store": i}, output=files)
        layer = make_layer(storage_url=storage)
        layer.persist(pid)
        recs = layer.catalog.files.of_prediction(pid)
        assert [r.status for r in recs] == ["stored", "stored"]
        assert {r.store for r in recs} == {layer.store.uri}
        for rec, f in zip(recs, files, strict=True):
            content[rec.key] = f.read()
        pids.append(pid)
        records.extend(recs)
    stores = {r.store for r in records}
    assert len(stores) == 3 and any(s.startswith("file:///") for s in stores)
    return {"pids": pids, "records": records, "content": content}


def _own_url(rec: Any) -> str:
    """docs/SCHEMA.md: the ``s3`` mode URL is ``store || '/' || key``."""
    return f"{rec.store}/{rec.key}"


def test_cli_renders_each_file_from_its_own_store(
    mixed, replicate_simulator, s3_server, bucket_now, catalog_url
):
    env = serve_env(replicate_simulator, s3_server, bucket_now, catalog_url, CACHELAYER_URL_MODE="s3")
    by_id = {r.id: r for r in mixed["records"]}

    for command in (("ls", "--format", "jsonl", "--limit", "100"), ("export", "--format", "jsonl")):
        done = run_cli(env, *command)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in done.stdout.splitlines()]
        assert {row["id"] for row in rows} == set(by_id), command
        for row in rows:
            assert row["durable_url"] == _own_url(by_id[row["id"]]), (command, row)

    for pid in mixed["pids"]:
        done = run_cli(env, "show", pid, "--format", "json")
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        files = shown["files"]
        assert len(files) == 2
        for f in files:
            assert f["durable_url"] == _own_url(by_id[f["id"]])

    urls = [r.source_url for r in mixed["records"]]
    done = run_cli(env, "resolve", *urls, "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["durable_url"] for a in answers] == [_own_url(r) for r in mixed["records"]]


def test_library_renders_and_reads_each_file_from_its_own_store(
    mixed, make_layer, replicate_simulator, bucket_now
):
    now = make_layer(storage_url=f"s3://{bucket_now}/now")
    for rec in mixed["records"]:
        assert now.durable_url(rec) == _own_url(rec)
        assert now.resolve(rec.source_url) == _own_url(rec)
    # persisting again under the new configuration copies nothing and answers the same URLs
    for pid in mixed["pids"]:
        recs = now.catalog.files.of_prediction(pid)
        assert now.persist(pid) == [_own_url(r) for r in recs]
    assert now.store.head(mixed["records"][0].key) is None  # nothing went to the new bucket

    presigning = make_layer(storage_url=f"s3://{bucket_now}/now", url_mode="presigned")
    for rec in mixed["records"]:
        url = presigning.durable_url(rec)
        if rec.store.startswith("file:"):
            assert url == _own_url(rec)  # a directory has nothing to sign
        else:
            assert url.split("?")[0].endswith(f"/{rec.store.removeprefix('s3://')}/{rec.key}")
            got = httpx.get(url)
            assert got.status_code == 200 and got.content == mixed["content"][rec.key]


def test_gateway_serves_each_file_from_its_own_store(
    mixed, make_layer, replicate_simulator, s3_server, bucket_now, catalog_url, tmp_path: Path
):
    for proxy in ("0", "1"):
        env = serve_env(
            replicate_simulator, s3_server, bucket_now, catalog_url, CACHELAYER_GATEWAY_PROXY=proxy
        )
        server = ServeProcess(env, tmp_path / f"serve-{proxy}.log", "--workers", "0")
        try:
            layer = make_layer(
                storage_url=f"s3://{bucket_now}/replicate", url_mode="gateway", gateway_url=server.url
            )
            for rec in mixed["records"]:
                url = layer.durable_url(rec)
                first = httpx.get(url)
                redirected = first.status_code in (302, 307)
                # a local directory cannot presign: its files are proxied in either mode
                assert redirected == (proxy == "0" and not rec.store.startswith("file:")), (rec.store, proxy)
                got = httpx.get(url, follow_redirects=True)
                assert got.status_code == 200, (rec.store, got.status_code)
                assert got.content == mixed["content"][rec.key]
                head = httpx.head(url)
                assert head.status_code == 200 and int(head.headers["content-length"]) == rec.size
        finally:
            server.stop()
        out = server.output()
        assert "Traceback" not in out and " 500 " not in out, out
