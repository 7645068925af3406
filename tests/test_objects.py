"""Objects as other tools see them (issue 9, finding 11), on two S3 implementations.

Every test here runs against moto's server and against s3rver (Node.js, npm), each a real
server on a real socket: Content-Type with its charset, keys that need no escaping in public
URLs, the sha256 written with the object, and failed uploads that never leak parts. The
``rclone`` test reads objects back with Debian's rclone when it is installed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from cachelayer import CacheLayer
from cachelayer.errors import StorageError
from cachelayer.storage.s3 import S3Store
from cachelayer.testing.simulator import DataURI, File

MiB = 1024 * 1024


@dataclass
class Target:
    """One S3 implementation: its server, a fresh bucket and a store on it (prefix ``replicate``)."""

    name: str
    server: Any
    bucket: str
    store: S3Store

    def make_store(self, **options: Any) -> S3Store:
        return S3Store(
            self.bucket,
            options.pop("prefix", "replicate"),
            endpoint_url=self.server.endpoint_url,
            region=self.server.region,
            addressing_style="path",
            access_key_id=self.server.access_key_id,
            secret_access_key=self.server.secret_access_key,
            **options,
        )

    @property
    def public_base_url(self) -> str:
        """Path-style ``endpoint/bucket``; the bucket is made world-readable (a public ACL on
        moto; s3rver serves anonymous GETs anyway)."""
        if self.name == "moto":
            self.server.admin_client.put_bucket_acl(Bucket=self.bucket, ACL="public-read")
        return f"{self.server.endpoint_url}/{self.bucket}"


@pytest.fixture(params=["moto", "s3rver"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """moto, then s3rver (skipped with the reason when npm cannot install it)."""
    if request.param == "moto":
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    else:
        server, bucket = request.getfixturevalue("s3rver_server"), request.getfixturevalue("s3rver_bucket")
    t = Target(request.param, server, bucket, None)  # type: ignore[arg-type]
    t.store = t.make_store()
    yield t
    t.store.close()


@pytest.fixture
def make_layer(target: Target, replicate_simulator: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[CacheLayer] = []

    def make(**options: Any) -> CacheLayer:
        sim = replicate_simulator
        layer = CacheLayer(
            database_url=f"sqlite:///{tmp_path}/catalog-{len(made)}.db",
            store=options.pop("store", target.store),
            replicate_api_token=sim.token,
            replicate_base_url=sim.base_url,
            allowed_hosts=sim.delivery_host_port,
            auto_migrate=True,
            **options,
        )
        made.append(layer)
        return layer

    yield make
    for layer in made:
        layer.close()


# ---- Content-Type keeps its parameters --------------------------------------------------------

TEXT = "naïve café — 日本語 ✓ Ærøskøbing\n"


def test_text_outputs_keep_their_charset(target: Target, make_layer: Any, replicate_simulator: Any) -> None:
    replicate_simulator.add_model(
        "acme/writer",
        outputs={
            "poem": File(TEXT.encode("utf-8"), content_type="text/plain; charset=utf-8", filename="poem.txt"),
            "latin": File(TEXT.encode("utf-16"), content_type="text/csv;Charset=UTF-16", filename="t.csv"),
            "inline": DataURI(TEXT.encode("utf-8"), content_type="text/markdown;charset=utf-8"),
        },
    )
    layer = make_layer(url_mode="presigned")
    result = layer.run_result("acme/writer")
    rows = {r.output_path: r for r in layer.catalog.files_of(result.prediction_id)}
    expected = {
        "/poem": ("text/plain; charset=utf-8", "utf-8"),
        "/latin": ("text/csv; charset=UTF-16", "utf-16"),
        "/inline": ("text/markdown; charset=utf-8", "utf-8"),
    }
    for path, (ctype, charset) in expected.items():
        row = rows[path]
        assert row.content_type == ctype
        info = layer.store.head(row.key)
        assert info is not None and info.content_type == ctype
        # What a browser or another tool sees: the charset, and the text decoded with it.
        resp = requests.get(layer.durable_url(row), timeout=10)
        assert resp.status_code == 200
        assert resp.headers["Content-Type"] == ctype
        assert resp.encoding is not None and resp.encoding.lower() == charset
        assert resp.text.lstrip("\ufeff") == TEXT


# ---- keys need no escaping in public URLs -----------------------------------------------------


def test_keys_read_back_verbatim_through_public_urls(
    target: Target, make_layer: Any, replicate_simulator: Any
) -> None:
    outputs = {
        "my file": File(b"spaced", content_type="image/png", filename="my file.png"),
        "naïve-ключ": File(b"unicode", content_type="image/png", filename="café 100%.png"),
        "images": [File(b"plain", content_type="image/png", filename="out-0.png")],
    }
    replicate_simulator.add_model("acme/names", outputs=outputs)
    layer = make_layer(url_mode="public", public_base_url=target.public_base_url)
    result = layer.run_result("acme/names")
    rows = layer.catalog.files_of(result.prediction_id)
    assert len(rows) == 3 and all(r.status == "stored" for r in rows)
    body = {"/my file": b"spaced", "/naïve-ключ": b"unicode", "/images/0": b"plain"}
    for row in rows:
        url = layer.durable_url(row)
        assert url == f"{target.public_base_url}/{row.key}"  # the key verbatim: no %-escapes
        assert "%" not in url
        resp = requests.get(url, timeout=10)
        assert resp.status_code == 200, (url, resp.status_code)
        assert resp.content == body[row.output_path]
    assert {r.key.rsplit("/", 1)[-1] for r in rows} >= {"images.0-out-0.png"}


# ---- the sha256 is written with the object, and verify uses it --------------------------------


class Stream:
    """A non-seekable body of ``total`` bytes (``seed`` varies them) handed out 64 KiB at a time;
    ``read`` raises ``error`` once ``fail_at`` bytes are out (a source truncated mid-stream)."""

    def __init__(self, total: int, seed: int = 0, fail_at: int | None = None) -> None:
        self.total, self.fail_at, self.pos = total, fail_at, 0
        self.block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
        self.error = ConnectionResetError("source truncated mid-stream")

    def read(self, n: int = -1) -> bytes:
        if self.fail_at is not None and self.pos >= self.fail_at:
            raise self.error
        take = min(len(self.block), self.total - self.pos, n if n >= 0 else len(self.block))
        self.pos += take
        return self.block[:take]

    def digest(self) -> str:
        h, left = hashlib.sha256(), self.total
        while left:
            h.update(self.block[: min(left, len(self.block))])
            left -= min(left, len(self.block))
        return h.hexdigest()


def test_sha256_is_written_with_single_and_multipart_objects(target: Target) -> None:
    store = target.make_store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    small, big = Stream(1000, seed=1), Stream(12 * MiB + 3, seed=2)
    ctype = "text/plain; charset=utf-8"
    store.put("replicate/p/small.txt", small, content_type=ctype, metadata={"prediction-id": "p"})  # type: ignore[arg-type]
    store.put("replicate/p/big.txt", big, content_type=ctype, metadata={"prediction-id": "p"})  # type: ignore[arg-type]
    for key, stream in (("replicate/p/small.txt", small), ("replicate/p/big.txt", big)):
        info = store.head(key)
        assert info is not None and info.size == stream.total
        assert info.sha256 == stream.digest() == info.metadata["sha256"]
        # adding the sha256 to the multipart object kept what was written with it
        assert info.content_type == ctype and info.metadata["prediction-id"] == "p"
        body = target.server.admin_client.get_object(Bucket=target.bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == stream.digest()
    store.close()


def test_verify_compares_the_stored_sha256_without_reading(
    target: Target, make_layer: Any, replicate_simulator: Any
) -> None:
    store = target.make_store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    files = [File(size=3000, seed=1, filename="a.png"), File(size=11 * MiB, seed=2, filename="b.png")]
    replicate_simulator.add_model("acme/verify", outputs=files)
    layer = make_layer(store=store)
    rows = [f.record for f in layer.run_result("acme/verify").files]
    assert [r.status for r in rows] == ["stored", "stored"]

    clean = layer.verify()
    assert clean.clean and clean.checked == 2 and clean.bytes_read == 0 and clean.size_only == 0

    # Same size, other bytes, written through a store (so with their own, true sha256): a
    # HEAD is enough to see it, for the multipart object too.
    for row in rows:
        store.put(row.key, Stream(row.size, seed=99), content_type="image/png")  # type: ignore[arg-type]
    report = layer.verify()
    assert (report.corrupt, report.bytes_read) == (2, 0)
    assert all("stored sha256" in p.detail for p in report.problems)

    # Written by another tool without a sha256: only the size can be checked without reading.
    for row in rows:
        target.server.admin_client.put_object(Bucket=target.bucket, Key=row.key, Body=b"z" * row.size)
    shallow = layer.verify()
    assert (shallow.ok, shallow.size_only, shallow.bytes_read) == (2, 2, 0)
    assert "2 with no stored sha256 checked by size only" in shallow.summary()
    deep = layer.verify(deep=True)
    assert deep.corrupt == 2 and deep.bytes_read == 3000 + 11 * MiB
    store.close()


# ---- failures never leak uploads --------------------------------------------------------------


def _watch_upload_ids(store: S3Store) -> list[str]:
    """Upload ids the server hands out (an observer on boto3's events, not a stand-in)."""
    ids: list[str] = []

    def seen(parsed: dict[str, Any], **_: Any) -> None:
        if "UploadId" in parsed:
            ids.append(parsed["UploadId"])

    store.client.meta.events.register("after-call.s3.CreateMultipartUpload", seen)
    return ids


def test_a_source_truncated_mid_upload_leaves_no_object_and_no_silent_parts(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    store = target.make_store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    ids = _watch_upload_ids(store)
    stream = Stream(20 * MiB, fail_at=12 * MiB)  # two parts sent, then the source breaks
    with caplog.at_level(logging.WARNING, logger="cachelayer"), pytest.raises(ConnectionResetError) as exc:
        store.put("replicate/p/broken.bin", stream)  # type: ignore[arg-type]
    assert exc.value is stream.error
    assert store.head("replicate/p/broken.bin") is None
    assert len(ids) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if target.name == "moto":
        # aborted: nothing left, nothing to warn about
        assert store.client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []
        assert warnings == []
    else:
        # s3rver refuses AbortMultipartUpload (405): one warning names the upload and the way out
        (warning,) = warnings
        assert ids[0] in warning and "MethodNotAllowed" in warning
        assert "AbortIncompleteMultipartUpload" in warning
    store.close()


def test_a_truncated_download_through_the_copier_is_not_stored(
    target: Target, make_layer: Any, replicate_simulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = target.make_store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    ids = _watch_upload_ids(store)
    replicate_simulator.add_model("acme/big", outputs=[File(size=14 * MiB, seed=3, filename="v.mp4")])
    replicate_simulator.inject_fault("truncate", times=10, path_prefix="/delivery/")  # half the body
    layer = make_layer(store=store, download_retries=1, max_attempts=1)
    with caplog.at_level(logging.WARNING, logger="cachelayer"):
        result = layer.run_result("acme/big")
    (outcome,) = result.files
    row = outcome.record
    assert row.status == "failed" and store.head(row.key) is None
    assert len(ids) == 1  # the first 5 MiB part went up before the source broke
    if target.name == "moto":
        assert store.client.list_multipart_uploads(Bucket=target.bucket).get("Uploads", []) == []
    else:
        assert any(ids[0] in r.getMessage() for r in caplog.records)
    store.close()


def test_cleanup_of_incomplete_uploads_is_a_clear_error_where_the_server_cannot_list(target: Target) -> None:
    if target.name == "moto":
        assert target.store.cleanup_incomplete_uploads(0) == []
        return
    with pytest.raises(StorageError, match="NotImplemented"):
        target.store.cleanup_incomplete_uploads(0)


# ---- delete: DeleteObjects in batches of at most 1,000 keys ------------------------------------


def test_delete_in_batches_is_idempotent(target: Target) -> None:
    """``Store.delete`` (issue 20): the keys are gone, others stay, a missing key is fine."""
    keys = [f"replicate/del/{i:04d}.txt" for i in range(1003)]  # two DeleteObjects calls
    client = target.store.client
    for key in [*keys, "replicate/keep.txt"]:
        client.put_object(Bucket=target.bucket, Key=key, Body=b"x")
    target.store.delete([*keys, "replicate/never-was.txt"])
    target.store.delete(keys[:5])
    left = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=target.bucket)
        for o in page.get("Contents", [])
    ]
    assert left == ["replicate/keep.txt"]


# ---- read back by another tool: rclone -------------------------------------------------------


def test_rclone_reads_the_objects_back_and_sees_their_hashes_without_downloading(
    target: Target, tmp_path: Path
) -> None:
    """Debian's rclone (``apt-get install rclone``) through an on-the-fly S3 remote."""
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed (apt-get install rclone)")
    store = target.make_store(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    objects = {
        "replicate/p/small.txt": Stream(1000, seed=1),
        "replicate/p/big.bin": Stream(12 * MiB + 3, seed=2),
    }
    expected: dict[str, bytes] = {}
    for key, stream in objects.items():
        store.put(key, stream)  # type: ignore[arg-type]
        again = Stream(stream.total, seed=2 if key.endswith(".bin") else 1)
        expected[key] = b"".join(iter(lambda s=again: s.read(MiB), b""))
    (tmp_path / "rclone.conf").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env["RCLONE_CONFIG"] = str(tmp_path / "rclone.conf")
    remote = (
        f":s3,provider=Other,endpoint='{target.server.endpoint_url}',"
        f"access_key_id={target.server.access_key_id},secret_access_key={target.server.secret_access_key},"
        f"force_path_style=true:{target.bucket}"
    )

    def run(*args: str) -> bytes:
        done = subprocess.run([rclone, *args], env=env, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
        return done.stdout

    def sums(*args: str) -> dict[str, str]:
        lines = run("hashsum", *args, f"{remote}/replicate").decode().splitlines()
        return {"replicate/" + name: digest for digest, name in (line.split(None, 1) for line in lines)}

    for key, data in expected.items():
        assert run("cat", f"{remote}/{key}") == data
    # md5 straight from the listing (no download): for the multipart object too, since the
    # copy that wrote its sha256 left it an MD5 ETag
    assert sums("md5") == {k: hashlib.md5(d).hexdigest() for k, d in expected.items()}
    assert sums("sha256", "--download") == {k: store.head(k).sha256 for k in expected}  # type: ignore[union-attr]
    store.close()
