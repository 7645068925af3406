"""Issue 18 item 4: the bucket describes itself (a manifest per prediction) and a lost
catalog is rebuilt from it (``cachelayer db rebuild --from-store``), on SQLite and
PostgreSQL, with the moto S3 server and the local store."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import run_cli
from serving import process_env

from cachelayer.catalog import Catalog
from cachelayer.catalog.db import make_engine
from cachelayer.manifests import (
    MANIFEST_DIR,
    Manifest,
    Tombstone,
    manifest_key,
    read_manifest,
    write_tombstone,
)
from cachelayer.storage import open_store
from cachelayer.testing.simulator import File

NOW = datetime.now(timezone.utc)
SECRET = "a-gateway-secret-of-some-length"


def _storage_url(kind: str, bucket: str, tmp_path: Path) -> str:
    return f"s3://{bucket}/hist" if kind == "s3" else (tmp_path / "objects").as_uri()


def _fresh_catalog_url(catalog_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the rebuilt catalog goes: a SQLite file that does not exist, or a new empty
    PostgreSQL database (dropped afterwards)."""
    if catalog_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/rebuilt.db"
    admin = request.getfixturevalue("_cachelayer_postgres_admin")
    url = admin.create_database()
    request.addfinalizer(lambda: admin.drop_database(url))
    return url


def _drop(catalog_url: str, request: pytest.FixtureRequest) -> None:
    if catalog_url.startswith("sqlite"):
        Path(catalog_url.removeprefix("sqlite:///")).unlink()
    else:
        request.getfixturevalue("_cachelayer_postgres_admin").drop_database(catalog_url)


def _export(env: dict[str, str]) -> list[dict]:
    done = run_cli(env, "export", "--format", "jsonl")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _resolve(env: dict[str, str], urls: list[str]) -> list[dict]:
    done = run_cli(env, "resolve", "-", "--format", "jsonl", stdin="\n".join(urls) + "\n")
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def _history(sim) -> dict[str, str]:
    """A mixed history on the simulator: {name: prediction id}."""
    sim.add_model("acme/painter", outputs=lambda inp: [File(b"again-" + str(inp["i"]).encode())])
    made = {
        "images": sim.seed_prediction(
            "acme/painter",
            input={"i": 1, "prompt": "ünïcode ☃"},
            output=[File(size=3000, seed=1, filename="a.png"), File(size=2000, seed=2, filename="b.png")],
            created_at=NOW - timedelta(minutes=30),
        ),
        "persisted": sim.seed_prediction(
            "acme/painter",
            input={"i": 2},
            output=[File(size=1500, seed=3)],
            created_at=NOW - timedelta(minutes=25),
        ),
        "dict": sim.seed_prediction(
            "acme/segmenter",
            input={"image": "x"},
            output={"mask": File(size=500, seed=4, filename="mask.png"), "caption": "a cat", "score": 0.5},
            created_at=NOW - timedelta(minutes=20),
        ),
        "text": sim.seed_prediction(
            "acme/llm", input={"p": "hi"}, output=["hello", " world"], created_at=NOW - timedelta(minutes=15)
        ),
        "expired": sim.seed_prediction(
            "acme/painter", input={"i": 3}, output=[File(b"gone")], created_at=NOW - timedelta(minutes=10)
        ),
        "failed": sim.seed_prediction(
            "acme/painter",
            input={"i": 4},
            output=None,
            status="failed",
            error="CUDA out of memory",
            created_at=NOW - timedelta(minutes=9),
        ),
        "rotated": sim.seed_prediction(
            "acme/painter", input={"i": 5}, output=[File(b"rotating")], created_at=NOW - timedelta(minutes=8)
        ),
        "rerun": sim.seed_prediction(
            "acme/painter", input={"i": 7}, output=[File(b"orig")], created_at=NOW - timedelta(minutes=5)
        ),
    }
    return made


@pytest.mark.parametrize("store_kind", ["s3", "local"])
def test_a_dropped_catalog_is_rebuilt_from_the_bucket(
    make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path, request, store_kind
):
    """Persist and backfill a mixed history, export, drop the catalog, rebuild it from the
    bucket's manifests, export again: the same predictions, files, keys, hashes, statuses,
    aliases and (with CACHELAYER_GATEWAY_SECRET) gateway URLs; resolve answers alike."""
    sim = replicate_simulator
    storage_url = _storage_url(store_kind, s3_bucket, tmp_path)
    made = _history(sim)
    layer = make_layer(storage_url=storage_url)
    layer.persist(made["persisted"])  # the persist path (the copier records the durable output)
    layer.enqueue(sim.prediction(made["rotated"]))  # recorded with its first URL...
    sim.rotate_urls(made["rotated"])  # ... which dies: the backfill records the new one (an alias)
    layer.enqueue(sim.prediction(made["rerun"]))  # input recorded, then Replicate removes the data
    sim.remove_data(made["rerun"])
    sim.expire_urls(made["expired"])
    summary = layer.backfill(on_expired="rerun")
    assert summary.predictions_rerun == 2  # the removed one and the expired one
    (rerun,) = layer.catalog.predictions.reruns_of(made["rerun"])
    (rerun_of_expired,) = layer.catalog.predictions.reruns_of(made["expired"])
    layer.close()

    env = process_env(
        sim,
        s3_server,
        storage_url,
        catalog_url,
        CACHELAYER_URL_MODE="gateway",
        CACHELAYER_GATEWAY_URL="https://gw.example.test",
        CACHELAYER_GATEWAY_SECRET=SECRET,
    )
    before = _export(env)
    statuses = {(r["prediction_id"], r["status"]) for r in before}
    assert (made["expired"], "expired") in statuses and (made["rerun"], "expired") in statuses
    assert {r["status"] for r in before} == {"stored", "expired"}
    catalog = Catalog(make_engine(catalog_url))
    ids = [*made.values(), rerun.id, rerun_of_expired.id]
    predictions = {pid: catalog.get_prediction(pid).to_dict() for pid in ids}
    assert predictions[rerun.id]["rerun_of"] == made["rerun"]
    assert predictions[made["failed"]]["status"] == "failed"
    rotated = sorted(_aliases(catalog, made["rotated"]))
    assert len(rotated) == 2  # the first URL and the rotated one
    urls = sorted({r["source_url"] for r in before} | set(rotated))
    resolved = _resolve(env, urls)
    assert sum(r["durable_url"] is not None for r in resolved) >= 6
    catalog.engine.dispose()

    _drop(catalog_url, request)
    new_url = _fresh_catalog_url(catalog_url, tmp_path, request)
    new_env = {**env, "CACHELAYER_DATABASE_URL": new_url}
    done = run_cli(new_env, "db", "rebuild", "--from-store", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["predictions"] == len(ids) and report["skipped"] == [] and report["tombstones"] == 0
    assert report["files"] == len(before)
    assert "CACHELAYER_GATEWAY_SECRET" not in done.stderr  # set: gateway URLs survive

    after = _export(new_env)
    assert sorted(after, key=lambda r: r["id"]) == sorted(before, key=lambda r: r["id"])
    assert [r["id"] for r in after] == [r["id"] for r in before]  # the same order, too
    assert _resolve(new_env, urls) == resolved
    rebuilt = Catalog(make_engine(new_url))
    try:
        assert {pid: rebuilt.get_prediction(pid).to_dict() for pid in ids} == predictions
        assert sorted(_aliases(rebuilt, made["rotated"])) == rotated
        # the catalog goes on: a new prediction's file gets a fresh id after the restored ones
        again = make_layer(storage_url=storage_url, database_url=new_url)
        pid = sim.seed_prediction("acme/painter", input={"i": 9}, output=[File(b"new one")])
        again.persist(pid)
        assert again.catalog.files_of(pid)[0].id > max(r["id"] for r in before)
    finally:
        rebuilt.engine.dispose()


def _aliases(catalog: Catalog, pid: str) -> list[str]:
    from cachelayer.catalog.manifest_rows import ManifestRows

    recorded = ManifestRows(catalog.db).read(pid)
    return [u for urls in recorded.aliases.values() for u in urls]


def test_rebuild_reports_a_corrupt_manifest_refuses_a_full_catalog_and_warns_without_secret(
    make_layer, replicate_simulator, s3_server, s3_bucket, catalog_url, tmp_path, request
):
    """A corrupt manifest is reported and skipped (the others restored, exit 1); a catalog
    that holds rows is refused with one line (exit 2); without CACHELAYER_GATEWAY_SECRET
    the rebuild says gateway URLs do not survive it."""
    sim = replicate_simulator
    storage_url = f"s3://{s3_bucket}/corrupt"
    ids = [sim.seed_prediction("acme/x", input={"n": i}, output=[File(size=100, seed=i)]) for i in range(3)]
    layer = make_layer(storage_url=storage_url)
    for pid in ids:
        layer.persist(pid)
    layer.close()
    client = s3_server.client()
    bad = manifest_key("corrupt", ids[1])
    client.put_object(Bucket=s3_bucket, Key=bad, Body=b'{"format": 1, "kind": "prediction", "predic')
    client.put_object(Bucket=s3_bucket, Key="corrupt/_manifests/other-format.json", Body=b'{"format": 99}')
    env = process_env(sim, s3_server, storage_url, catalog_url)

    refused = run_cli(env, "db", "rebuild", "--from-store")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "not empty" in refused.stderr and "Traceback" not in refused.stderr

    new_env = {**env, "CACHELAYER_DATABASE_URL": _fresh_catalog_url(catalog_url, tmp_path, request)}
    done = run_cli(new_env, "db", "rebuild", "--from-store", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["predictions"] == 2 and report["manifests"] == 4
    assert sorted(s["key"] for s in report["skipped"]) == sorted(
        [bad, "corrupt/_manifests/other-format.json"]
    )
    assert "not JSON" in next(s["reason"] for s in report["skipped"] if s["key"] == bad)
    assert "CACHELAYER_GATEWAY_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr
    shown = run_cli(new_env, "show", ids[0], "--format", "json")
    assert shown.returncode == 0 and ids[0] in shown.stdout
    assert run_cli(new_env, "show", ids[1], "--format", "json").returncode != 0


def test_manifest_document_and_tombstone(make_layer, replicate_simulator, s3_server, s3_bucket, tmp_path):
    """The manifest is written after the files, holds the recorded prediction and every
    file's facts, is rewritten when a late file is stored, lives at the fixed key for any
    Unicode id, and is replaced by a tombstone that a rebuild counts without restoring."""
    sim = replicate_simulator
    storage_url = (tmp_path / "store").as_uri()
    weird = "préd/ü 1--☃"
    pid = sim.seed_prediction(
        "acme/x",
        input={"x": 1},
        output=[File(size=200, seed=1, filename="a.png"), File(size=90_000, seed=2, filename="big.png")],
        prediction_id=weird,
    )
    small = make_layer(storage_url=storage_url, max_file_bytes=50_000)
    small.backfill()
    store = open_store(storage_url)
    key = manifest_key(store.prefix, weird)
    assert (
        key.startswith(f"{MANIFEST_DIR}/")
        and key.endswith(".json")
        and "/" not in key[len(MANIFEST_DIR) + 1 :]
    )
    doc = read_manifest(store.open(key).read())
    assert isinstance(doc, Manifest) and doc.doc["prediction_id"] == weird == pid
    assert doc.doc["prediction"]["input"] == {"x": 1} and doc.doc["prediction"]["model"] == "acme/x"
    first, second = doc.doc["files"]
    assert (first["status"], second["status"]) == ("stored", "failed")
    assert first["sha256"] == File(size=200, seed=1, filename="a.png").sha256() and first["size"] == 200
    assert first["content_type"] == "image/png" and first["store"] == store.uri
    assert first["object_uri"] == store.object_uri(first["key"]) and first["source_urls"] == [
        first["source_url"]
    ]
    assert second["last_error"] and doc.doc["output"]["durable"][0] == first["object_uri"]
    assert doc.doc["output"]["source"] == doc.doc["prediction"]["output"]

    big = make_layer(storage_url=storage_url)
    assert big.work(retry_failed=True).files_stored == 1  # the late file
    doc = read_manifest(store.open(key).read())
    assert [f["status"] for f in doc.doc["files"]] == ["stored", "stored"]  # rewritten

    write_tombstone(store, weird, {"id": weird, "model": "acme/x", "reason": "GDPR", "bytes_freed": 90_200})
    gone = read_manifest(store.open(key).read())
    assert isinstance(gone, Tombstone) and gone.prediction_id == weird and gone.tombstone["reason"] == "GDPR"
    env = process_env(sim, s3_server, storage_url, f"sqlite:///{tmp_path}/rebuilt.db")
    done = run_cli(env, "db", "rebuild", "--from-store", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["tombstones"] == 1 and json.loads(done.stdout)["predictions"] == 0


def test_read_manifest_refuses_what_is_not_one():
    for data, reason in [
        (b"\xff", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"format": 2, "prediction_id": "p"}', "format 2"),
        (b'{"format": 1}', "no prediction_id"),
        (b'{"format": 1, "prediction_id": "p", "kind": "prediction", "prediction": {}}', "bad manifest"),
        (b'{"format": 1, "prediction_id": "p", "kind": "what"}', "unknown kind"),
    ]:
        with pytest.raises(ValueError, match=reason):
            read_manifest(data)


def test_list_keys_of_both_stores(s3_store, local_store):
    """``Store.list_keys``: every page of an S3 listing (over 1,000 keys), and a local walk
    without sidecars or temporary files."""
    keys = [f"replicate/_manifests/{i:04d}.json" for i in range(1003)]
    for key in [*keys, "replicate/p/0-out.png", "other/_manifests/x.json"]:
        s3_store.client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"{}")
    assert sorted(s3_store.list_keys("replicate/_manifests/")) == keys

    for key in ["a/_manifests/p1.json", "a/_manifests/p2.json", "a/p1/0-x.png", "b/_manifests/p3.json"]:
        local_store.put(key, io.BytesIO(b"{}"))
    (local_store.root / "a" / "_manifests" / ".p4.json.tmp-0123456789abcdef").write_bytes(b"half")
    assert sorted(local_store.list_keys("a/_manifests/")) == ["a/_manifests/p1.json", "a/_manifests/p2.json"]
    assert sorted(local_store.list_keys("a/")) == [
        "a/_manifests/p1.json",
        "a/_manifests/p2.json",
        "a/p1/0-x.png",
    ]
    assert list(local_store.list_keys("nothing/here/")) == []
    assert len(list(local_store.list_keys(""))) == 4  # no sidecar (.cachelayer-meta/) listed


def test_write_manifests_covers_predictions_recorded_before_manifests(
    make_layer, replicate_simulator, s3_server, catalog_url, tmp_path
):
    """A catalog from before manifests (its objects there, no manifest): `db write-manifests`
    writes one per prediction, so a rebuild restores them all."""
    sim = replicate_simulator
    storage_url = (tmp_path / "old").as_uri()
    ids = [sim.seed_prediction("acme/x", input={"n": i}, output=[File(size=50, seed=i)]) for i in range(3)]
    ids.append(sim.seed_prediction("acme/llm", input={}, output="just text"))
    layer = make_layer(storage_url=storage_url)
    layer.backfill()
    layer.close()
    store = open_store(storage_url)
    store.delete(list(store.list_keys(f"{MANIFEST_DIR}/")))  # as an older release left the bucket
    assert list(store.list_keys(f"{MANIFEST_DIR}/")) == []
    env = process_env(sim, s3_server, storage_url, catalog_url)
    done = run_cli(env, "db", "write-manifests")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 manifests written")
    assert sorted(store.list_keys(f"{MANIFEST_DIR}/")) == sorted(manifest_key("", pid) for pid in ids)
    rebuilt = run_cli(
        {**env, "CACHELAYER_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"},
        "db",
        "rebuild",
        "--from-store",
        "--json",
    )
    assert rebuilt.returncode == 0 and json.loads(rebuilt.stdout)["predictions"] == 4, rebuilt.stderr


def test_rebuild_from_a_store_without_manifests_says_so(replicate_simulator, s3_server, tmp_path):
    """A wrong --storage-url (no manifest under it) is not a silent empty catalog: exit 1."""
    env = process_env(
        replicate_simulator, s3_server, (tmp_path / "empty").as_uri(), f"sqlite:///{tmp_path}/c.db"
    )
    done = run_cli(env, "db", "rebuild", "--from-store")
    assert done.returncode == 1 and "no manifests under" in done.stderr and "Traceback" not in done.stderr


def test_an_interrupted_rebuild_resumes(make_layer, replicate_simulator, catalog_url, tmp_path, request):
    """The store fails half-way: the rebuild stops (the error raised), a catalog holding
    its first predictions is not refused the second time, and the second run finishes."""
    from cachelayer.errors import StorageError
    from cachelayer.rebuild import rebuild
    from cachelayer.storage.local import LocalStore

    sim = replicate_simulator
    storage_url = (tmp_path / "objs").as_uri()
    ids = [sim.seed_prediction("acme/x", input={"n": i}, output=[File(size=80, seed=i)]) for i in range(4)]
    layer = make_layer(storage_url=storage_url)
    layer.backfill()
    layer.close()

    class Failing(LocalStore):
        reads = 0

        def open(self, key):
            Failing.reads += 1
            if Failing.reads == 3:
                raise StorageError("the store went away")
            return super().open(key)

    new_url = _fresh_catalog_url(catalog_url, tmp_path, request)
    fresh = make_layer(database_url=new_url, storage_url=storage_url)
    with pytest.raises(StorageError):
        rebuild(fresh.catalog, Failing(tmp_path / "objs"))
    assert sum(fresh.catalog.get_prediction(pid) is not None for pid in ids) == 2
    summary = rebuild(fresh.catalog, open_store(storage_url))
    assert (summary.predictions, summary.already, summary.skipped) == (2, 2, [])
    assert all(fresh.catalog.files_of(pid)[0].status == "stored" for pid in ids)
    with pytest.raises(Exception, match="not empty"):
        rebuild(fresh.catalog, open_store(storage_url))  # finished: a third run is refused


@pytest.mark.parametrize("where", ["configured", "other"])
def test_delete_replaces_the_manifest_with_its_tombstone(make_layer, replicate_simulator, tmp_path, where):
    """``delete`` writes the tombstone over the manifest where the manifest was written:
    the configured store, or another store the files went to (under that store's prefix),
    and a text-only prediction's (no files) in the configured store."""
    sim = replicate_simulator
    configured = (tmp_path / "configured").as_uri() + "/pfx"
    other = (tmp_path / "other").as_uri() + "/elsewhere"
    with_files = sim.seed_prediction("acme/x", input={}, output=[File(size=300, seed=3, filename="a.png")])
    text_only = sim.seed_prediction("acme/x", input={}, output="just text")
    make_layer(storage_url=other if where == "other" else configured).persist(with_files)
    layer = make_layer(storage_url=configured)
    layer.persist(text_only)
    written_to = open_store(other if where == "other" else configured)
    home = open_store(configured)
    for store, pid in ((written_to, with_files), (home, text_only)):
        assert isinstance(read_manifest(store.open(manifest_key(store.prefix, pid)).read()), Manifest)
    summary = layer.delete([with_files, text_only], reason="GDPR")
    assert summary.predictions == 2, summary.to_dict()
    for store, pid in ((written_to, with_files), (home, text_only)):
        gone = read_manifest(store.open(manifest_key(store.prefix, pid)).read())
        assert isinstance(gone, Tombstone) and gone.prediction_id == pid
        assert gone.tombstone["reason"] == "GDPR"
