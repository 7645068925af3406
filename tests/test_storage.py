"""Storage backends against real services: moto's S3 server in a subprocess (real sockets,
real SigV4 signing, real multipart uploads) and real files. Nothing is mocked.

Fixtures (``s3_server``, ``s3_bucket``, ``s3_store``, ``local_store``) come from the
``cachelayer.testing.fixtures`` pytest plugin.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import socket
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachelayer.errors import (
    BucketNotFoundError,
    ConfigError,
    StorageAuthError,
    StorageConfigError,
    StorageError,
)
from cachelayer.storage import Store, open_store
from cachelayer.storage.local import META_DIR, LocalStore
from cachelayer.storage.s3 import S3Store
from cachelayer.testing.s3server import MotoS3Server

MiB = 1024 * 1024


class GeneratedStream(io.RawIOBase):
    """Non-seekable stream of ``total`` deterministic bytes, handing out at most ``chunk``
    bytes per read (short reads, like a socket). Raises ``error`` once ``fail_at`` bytes
    have been read."""

    def __init__(
        self,
        total: int,
        *,
        chunk: int = 64 * 1024,
        fail_at: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.total = total
        self.chunk = chunk
        self.fail_at = fail_at
        self.error = error or RuntimeError("source broke mid-way")
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        if self.fail_at is not None and self.position >= self.fail_at:
            raise self.error
        n = self.chunk if size is None or size < 0 else min(size, self.chunk)
        n = min(n, self.total - self.position)
        data = _pattern(self.position, n)
        self.position += n
        return data

    def readinto(self, b: Any) -> int:  # pragma: no cover - RawIOBase protocol completeness
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def _pattern(offset: int, n: int) -> bytes:
    """Bytes ``offset..offset+n`` of an endless non-repeating-per-MiB pattern."""
    out = bytearray()
    while n > 0:
        block = offset // 4096
        start = offset % 4096
        piece = hashlib.sha256(block.to_bytes(8, "big")).digest() * 128  # 4096 bytes
        take = min(n, 4096 - start)
        out += piece[start : start + take]
        offset += take
        n -= take
    return bytes(out)


def expected_digest(total: int) -> str:
    h = hashlib.sha256()
    pos = 0
    while pos < total:
        n = min(MiB, total - pos)
        h.update(_pattern(pos, n))
        pos += n
    return h.hexdigest()


def read_digest(fh: Any) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    try:
        while True:
            chunk = fh.read(MiB)
            if not chunk:
                break
            h.update(chunk)
            size += len(chunk)
    finally:
        fh.close()
    return size, h.hexdigest()


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each backend in turn."""
    name = "s3_store" if request.param == "s3" else "local_store"
    return request.getfixturevalue(name)


def moto_store(s3_server: MotoS3Server, bucket: str, *args: Any, **settings: Any) -> S3Store:
    """An S3Store on the test's moto server (path-style, its credentials), with ``settings``."""
    return S3Store(
        bucket,
        *args,
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        addressing_style="path",
        access_key_id="testing",
        secret_access_key="testing",
        **settings,
    )


def leftover_files(store: Store) -> list[str]:
    """Temp files a LocalStore might have left behind."""
    if not isinstance(store, LocalStore) or not store.root.exists():
        return []
    return sorted(str(p) for p in store.root.rglob("*.tmp-*"))


# -- round trips ---------------------------------------------------------------------------


def test_put_head_open_round_trip(store: Store) -> None:
    body = b"hello, durable world\n" * 100
    meta = {"sha256": hashlib.sha256(body).hexdigest(), "source-url": "https://x.test/a.png"}
    written = store.put(
        "predictions/abc/out-0.png",
        io.BytesIO(body),
        content_type="image/png",
        metadata=meta,
        cache_control="public, max-age=31536000, immutable",
    )

    assert written == meta["sha256"]  # put returns the SHA-256 of what it wrote
    info = store.head("predictions/abc/out-0.png")
    assert info is not None
    assert info.key == "predictions/abc/out-0.png"
    assert info.size == len(body)
    assert info.content_type == "image/png"
    assert info.metadata == meta
    assert info.sha256 == meta["sha256"]
    with store.open("predictions/abc/out-0.png") as fh:
        assert fh.read() == body

    if isinstance(store, S3Store):
        raw = store.client.head_object(Bucket=store.bucket, Key="predictions/abc/out-0.png")
        assert raw["CacheControl"] == "public, max-age=31536000, immutable"
    else:
        assert isinstance(store, LocalStore)
        sidecar = json.loads(store._meta_path("predictions/abc/out-0.png").read_text())
        assert sidecar["cache_control"] == "public, max-age=31536000, immutable"
        # objects directories hold only objects
        assert sorted(p.name for p in (store.root / "predictions/abc").iterdir()) == ["out-0.png"]


def test_metadata_names_come_back_lower_case(store: Store) -> None:
    store.put("k", io.BytesIO(b"x"), metadata={"Prediction-ID": "ab", "Source-URL": "u"})
    info = store.head("k")
    assert info is not None
    assert info.metadata == {
        "prediction-id": "ab",
        "source-url": "u",
        "sha256": hashlib.sha256(b"x").hexdigest(),
    }


def test_the_store_writes_the_sha256_of_the_bytes_it_stored(store: Store) -> None:
    """A ``sha256`` passed in is replaced: the store hashes what it writes."""
    store.put("k", io.BytesIO(b"actual bytes"), metadata={"SHA256": "not-the-hash"})
    info = store.head("k")
    assert info is not None
    assert info.sha256 == info.metadata["sha256"] == hashlib.sha256(b"actual bytes").hexdigest()


def test_missing_object(store: Store) -> None:
    assert store.head("nope/missing.bin") is None
    with pytest.raises(FileNotFoundError):
        store.open("nope/missing.bin")


def test_overwrite_replaces_bytes_and_metadata(store: Store) -> None:
    store.put("k.txt", io.BytesIO(b"first version"), content_type="text/plain", metadata={"note": "1"})
    store.put("k.txt", io.BytesIO(b"second"))
    info = store.head("k.txt")
    assert info is not None
    assert info.size == 6
    assert info.metadata == {"sha256": hashlib.sha256(b"second").hexdigest()}
    assert info.content_type in (None, "binary/octet-stream")  # S3 default when unset
    with store.open("k.txt") as fh:
        assert fh.read() == b"second"


def test_empty_object(store: Store) -> None:
    store.put("empty", io.BytesIO(b""), content_type="application/octet-stream")
    info = store.head("empty")
    assert info is not None and info.size == 0
    with store.open("empty") as fh:
        assert fh.read() == b""


def test_s3_store_default_cache_control(s3_server: MotoS3Server, s3_bucket: str) -> None:
    store = moto_store(s3_server, s3_bucket, cache_control="public, max-age=60")
    store.put("a", io.BytesIO(b"1"))
    store.put("b", io.BytesIO(b"2"), cache_control="no-store")
    assert store.client.head_object(Bucket=s3_bucket, Key="a")["CacheControl"] == ("public, max-age=60")
    assert store.client.head_object(Bucket=s3_bucket, Key="b")["CacheControl"] == "no-store"
    store.close()


# -- big, non-seekable uploads ---------------------------------------------------------------


def test_multipart_upload_from_non_seekable_stream(store: Store) -> None:
    total = 20 * MiB + 12345  # > 8 MiB threshold: 3 parts of 8, 8 and ~4 MiB
    stream = GeneratedStream(total)
    sent: dict[int, int] = {}
    if isinstance(store, S3Store):
        store.multipart_threshold = 8 * MiB  # the default (64 MiB) would make it one PutObject

        # Watch the requests boto3 sends (an observer, not a stand-in: the server does the work);
        # parts go up concurrently, so they are keyed by part number, not arrival order.
        def seen(params: dict[str, Any], **_: Any) -> None:
            sent[params["PartNumber"]] = len(params["Body"])

        store.client.meta.events.register("provide-client-params.s3.UploadPart", seen)
    written = store.put(
        "big/video.mp4",
        stream,  # type: ignore[arg-type]
        content_type="video/mp4",
        cache_control="max-age=60",
        metadata={"prediction-id": "p"},
    )

    assert written == expected_digest(total)
    info = store.head("big/video.mp4")
    assert info is not None and info.size == total
    assert read_digest(store.open("big/video.mp4")) == (total, expected_digest(total))
    # the sha256 is written with the object (after the upload, for a multipart one), and
    # writing it kept the content type, cache control and metadata
    assert info.sha256 == expected_digest(total)
    assert info.content_type == "video/mp4" and info.metadata["prediction-id"] == "p"
    if isinstance(store, S3Store):
        # the short reads (64 KiB per call) still made full 8 MiB parts
        assert [sent[n] for n in sorted(sent)] == [8 * MiB, 8 * MiB, total - 16 * MiB]
        raw = store.client.head_object(Bucket=store.bucket, Key="big/video.mp4")
        assert raw["CacheControl"] == "max-age=60"


def open_files_in(directory: Path) -> list[str]:
    """Files under ``directory`` this process holds open (``/proc/self/fd``): the anonymous
    temporary files a spool uses (``O_TMPFILE``) never appear in a directory listing."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            found.append(target)
    return sorted(found)


class S3Calls:
    """The S3 operations a store's client sends, in order (botocore's ``before-call`` event:
    an observer, the server does the work), and the files this process held open in the
    spool directory at the first call of each."""

    def __init__(self, store: S3Store, spool_dir: Path | None = None) -> None:
        self.ops: list[str] = []
        self.params: dict[str, dict[str, Any]] = {}
        self.spooled_at: dict[str, list[str]] = {}

        def seen(model: Any, params: dict[str, Any], **_: Any) -> None:
            self.ops.append(model.name)
            self.params.setdefault(model.name, dict(params.get("headers", {})))
            if spool_dir is not None:
                self.spooled_at.setdefault(model.name, open_files_in(spool_dir))

        store.client.meta.events.register("before-call.s3", seen)


def test_mid_size_body_goes_up_in_one_put_spooled_to_disk(
    s3_server: MotoS3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """Issue 11: a 40 MiB stream under ``multipart_threshold`` (64 MiB by default) is one
    ``PutObject`` written with its metadata ``sha256`` and ``ChecksumSHA256``: no multipart
    upload and no ``CopyObject``. Past ``spool_memory_bytes`` the bytes wait in a temporary
    file, not in memory, and the file is gone afterwards."""
    store = moto_store(s3_server, s3_bucket, spool_dir=str(tmp_path))
    calls = S3Calls(store, tmp_path)
    total = 40 * MiB + 12345
    tracemalloc.start()
    try:
        written = store.put("mid/video.mp4", GeneratedStream(total, chunk=MiB), content_type="video/mp4")  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert calls.ops == ["PutObject"] and written == expected_digest(total)
    assert len(calls.spooled_at["PutObject"]) == 1  # the spool file existed while it went up
    assert open_files_in(tmp_path) == [] and list(tmp_path.iterdir()) == []  # and is gone
    # memory: the 8 MiB held before spooling (1 MiB reads copied into one buffer, never
    # joined into a second copy) plus a read and botocore's buffers, not the 40 MiB body
    assert peak < store.spool_memory_bytes + 4 * MiB, f"peak {peak / MiB:.1f} MiB"
    info = store.head("mid/video.mp4")
    assert info is not None and info.size == total and info.sha256 == expected_digest(total)
    assert info.content_type == "video/mp4"
    # the request carried S3's own check of the bytes (moto does not report it back)
    assert base64.b64decode(calls.params["PutObject"]["x-amz-checksum-sha256"]).hex() == expected_digest(
        total
    )
    assert read_digest(store.open("mid/video.mp4")) == (total, expected_digest(total))
    store.close()


def _spooling_store(s3_server: MotoS3Server, bucket: str, spool_dir: Path) -> tuple[S3Store, S3Calls]:
    """A store that holds 5 MiB in memory, spools into ``spool_dir`` up to 12 MiB and goes
    multipart from there in 5 MiB parts; with the observer of its calls."""
    store = _five_mib_parts(
        s3_server, bucket, multipart_threshold=12 * MiB, spool_memory_bytes=5 * MiB, spool_dir=str(spool_dir)
    )
    return store, S3Calls(store, spool_dir)


def test_spooled_body_that_reaches_the_threshold_continues_as_multipart(
    s3_server: MotoS3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A body of unknown length is spooled up to ``multipart_threshold``; when it reaches it,
    the spooled bytes become the first parts of a multipart upload (none read twice from the
    source, none lost) and the spool file is removed."""
    store, calls = _spooling_store(s3_server, s3_bucket, tmp_path)
    sizes: dict[int, int] = {}
    store.client.meta.events.register(
        "provide-client-params.s3.UploadPart",
        lambda params, **_: sizes.__setitem__(params["PartNumber"], len(params["Body"])),
    )
    total = 23 * MiB + 7
    stream = GeneratedStream(total)
    written = store.put("grow/long.bin", stream)  # type: ignore[arg-type]
    assert stream.position == total and written == expected_digest(total)  # each byte read once
    assert calls.ops[0] == "CreateMultipartUpload" and "PutObject" not in calls.ops
    assert len(calls.spooled_at["CreateMultipartUpload"]) == 1  # it had been spooled
    assert [sizes[n] for n in sorted(sizes)] == [5 * MiB] * 4 + [3 * MiB + 7]
    assert open_files_in(tmp_path) == [] and list(tmp_path.iterdir()) == []
    info = store.head("grow/long.bin")
    assert info is not None and info.size == total
    assert read_digest(store.open("grow/long.bin")) == (total, expected_digest(total))
    store.close()


def test_announced_size_over_the_threshold_starts_multipart_without_spooling(
    s3_server: MotoS3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """``size`` (the source's Content-Length) at or over ``multipart_threshold``: the upload
    starts at once, nothing is written to the spool directory; an announced size under it
    spools. A missing spool directory falls back to multipart instead of failing."""
    store, calls = _spooling_store(s3_server, s3_bucket, tmp_path)
    store.put("hint/big.bin", GeneratedStream(13 * MiB), size=13 * MiB)  # type: ignore[arg-type]
    assert calls.ops[0] == "CreateMultipartUpload" and calls.spooled_at["CreateMultipartUpload"] == []
    store.put("hint/mid.bin", GeneratedStream(7 * MiB), size=7 * MiB)  # type: ignore[arg-type]
    assert calls.ops[-1] == "PutObject" and len(calls.spooled_at["PutObject"]) == 1
    store.spool_dir = str(tmp_path / "missing")
    before = len(calls.ops)
    store.put("hint/nospool.bin", GeneratedStream(7 * MiB))  # type: ignore[arg-type]
    assert calls.ops[before] == "CreateMultipartUpload"
    for key, total in (("hint/big.bin", 13 * MiB), ("hint/mid.bin", 7 * MiB), ("hint/nospool.bin", 7 * MiB)):
        assert read_digest(store.open(key)) == (total, expected_digest(total))
        info = store.head(key)
        assert info is not None and info.sha256 == expected_digest(total)  # copy limit 64 MiB
    store.close()


def _five_mib_parts(s3_server: MotoS3Server, bucket: str, **tuning: Any) -> S3Store:
    """A store on moto that goes multipart from 5 MiB in 5 MiB parts (S3's smallest)."""
    return moto_store(
        s3_server, bucket, **{"multipart_chunksize": 5 * MiB, "multipart_threshold": 5 * MiB, **tuning}
    )


def test_multipart_objects_above_the_copy_limit_skip_the_sha256_copy(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    """Issue 11: the server-side copy that writes metadata ``sha256`` after a multipart
    upload is a second full write of the object; above ``checksum_copy_max_bytes`` (64 MiB
    by default) it is skipped. Below, the object gets it; above, S3 keeps the parts'
    checksums and the object is intact, without the metadata (verify compares its size)."""
    from cachelayer.storage.s3 import DEFAULT_CHECKSUM_COPY_MAX

    default = S3Store(s3_bucket, endpoint_url=s3_server.endpoint_url).checksum_copy_max_bytes
    assert default == DEFAULT_CHECKSUM_COPY_MAX == 64 * MiB
    total = 12 * MiB
    copies: list[str] = []
    for limit, key in ((total, "copy/under.bin"), (total - 1, "copy/over.bin")):
        st = _five_mib_parts(s3_server, s3_bucket, checksum_copy_max_bytes=limit)
        st.client.meta.events.register("before-call.s3.CopyObject", lambda k=key, **kw: copies.append(k))
        st.put(key, GeneratedStream(total))  # type: ignore[arg-type]
        info = st.head(key)
        assert info is not None and info.size == total
        assert read_digest(st.open(key)) == (total, expected_digest(total))
        assert info.sha256 == (expected_digest(total) if key.endswith("under.bin") else None)
    assert copies == ["copy/under.bin"]


def test_s3_upload_memory_is_bounded_by_part_size(s3_server: MotoS3Server, s3_bucket: str) -> None:
    """64 MiB through a store with 2 parts in flight stays far below the object size."""
    store = _five_mib_parts(s3_server, s3_bucket, max_concurrency=2)
    total = 64 * MiB
    tracemalloc.start()
    try:
        store.put("mem/big.bin", GeneratedStream(total, chunk=MiB))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # documented bound: (max_concurrency + 2) x chunksize = 20 MiB (the parts in flight, the
    # one being read and one just sent that its pool thread has not let go of yet; a part is
    # never copied), plus the stream's 1 MiB reads and botocore's buffers (measured 15.4 to
    # 23.3 MiB in all): far below the 64 MiB object
    assert peak < (2 + 2) * 5 * MiB + 4 * MiB, f"peak {peak / MiB:.1f} MiB"
    info = store.head("mem/big.bin")
    assert info is not None and info.size == total
    store.close()


@pytest.mark.parametrize(
    "total, fail_at, threshold",
    [(20 * MiB, 12 * MiB, 8 * MiB), (20 * MiB, 12 * MiB, None), (1 * MiB, 300 * 1024, None)],
    ids=["multipart", "spooled-put", "single-put"],
)
def test_failing_body_leaves_no_object(store: Store, total: int, fail_at: int, threshold: int | None) -> None:
    if threshold is not None and isinstance(store, S3Store):
        store.multipart_threshold = threshold
    error = RuntimeError("download dropped")
    stream = GeneratedStream(total, fail_at=fail_at, error=error)
    with pytest.raises(RuntimeError) as excinfo:
        store.put("broken.bin", stream, content_type="video/mp4")  # type: ignore[arg-type]
    assert excinfo.value is error  # propagated unchanged, not wrapped in StorageError
    assert store.head("broken.bin") is None
    assert leftover_files(store) == []
    if isinstance(store, S3Store):
        uploads = store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
        assert uploads == []  # s3transfer aborted the multipart upload


def test_failing_overwrite_keeps_previous_object(store: Store) -> None:
    store.put("keep.bin", io.BytesIO(b"old complete object"), metadata={"note": "old"})
    error = ConnectionResetError("peer reset")  # an OSError: must not become StorageError
    stream = GeneratedStream(10 * MiB, fail_at=9 * MiB, error=error)
    with pytest.raises(ConnectionResetError) as excinfo:
        store.put("keep.bin", stream)  # type: ignore[arg-type]
    assert excinfo.value is error
    info = store.head("keep.bin")
    assert info is not None and info.size == len(b"old complete object")
    assert info.metadata == {"note": "old", "sha256": hashlib.sha256(b"old complete object").hexdigest()}
    with store.open("keep.bin") as fh:
        assert fh.read() == b"old complete object"
    assert leftover_files(store) == []


def test_s3_concurrent_puts_share_one_client(s3_store: S3Store) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            data = f"object {i}".encode() * 1000
            s3_store.put(f"c/{i}", io.BytesIO(data), metadata={"i": str(i)})
            info = s3_store.head(f"c/{i}")
            assert info is not None and info.size == len(data) and info.metadata["i"] == str(i)
            assert info.sha256 == hashlib.sha256(data).hexdigest()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# -- check() -------------------------------------------------------------------------------


def test_check_passes(store: Store) -> None:
    store.check()


def test_check_missing_bucket(s3_server: MotoS3Server) -> None:
    store = moto_store(s3_server, "no-such-bucket-here")
    with pytest.raises(BucketNotFoundError) as excinfo:
        store.check()
    message = str(excinfo.value)
    assert message == f"bucket no-such-bucket-here does not exist at {s3_server.endpoint_url}"
    assert "\n" not in message


@pytest.fixture(scope="module")
def auth_s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3Server]:
    """A second moto server that checks credentials: moto lets the first
    ``INITIAL_NO_AUTH_ACTION_COUNT`` S3 actions through and then validates every access key
    against its IAM backend (moto ``settings.INITIAL_NO_AUTH_ACTION_COUNT``). One free
    action creates the bucket; after that any key is unknown, so requests get 403."""
    log = tmp_path_factory.mktemp("moto-auth") / "moto.log"
    with MotoS3Server(log_path=log, env={"INITIAL_NO_AUTH_ACTION_COUNT": "1"}) as server:
        server.create_bucket("guarded-bucket")
        yield server


def test_check_bad_credentials(auth_s3_server: MotoS3Server) -> None:
    store = S3Store(
        "guarded-bucket",
        endpoint_url=auth_s3_server.endpoint_url,
        region="us-east-1",
        addressing_style="path",
        access_key_id="AKIAWRONGWRONGWRONG",
        secret_access_key="nope",
    )
    with pytest.raises(StorageAuthError) as excinfo:
        store.check()
    assert "guarded-bucket" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    # outside check(), refused credentials are a StorageError
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        store.put("k", io.BytesIO(b"data"))


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_unreachable_endpoint() -> None:
    store = S3Store(
        "some-bucket",
        endpoint_url=f"http://127.0.0.1:{_dead_port()}",
        region="us-east-1",
        addressing_style="path",
        access_key_id="testing",
        secret_access_key="testing",
    )
    with pytest.raises(StorageConfigError, match="cannot connect to S3 endpoint"):
        store.check()
    with pytest.raises(StorageError):
        store.head("k")


def test_check_without_credentials(
    s3_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = S3Store("some-bucket", endpoint_url=s3_server.endpoint_url, region="us-east-1")
    with pytest.raises(StorageConfigError, match="credentials") as excinfo:
        store.check()
    assert not isinstance(excinfo.value, (BucketNotFoundError, StorageAuthError))


def test_s3_store_reads_boto3_environment(
    s3_server: MotoS3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No explicit settings: boto3 itself reads AWS_ENDPOINT_URL_S3, AWS_REGION and keys."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    store = open_store(f"s3://{s3_bucket}/some/prefix", addressing_style="path")
    assert isinstance(store, S3Store)
    assert store.endpoint_url == s3_server.endpoint_url
    store.check()
    store.put("x", io.BytesIO(b"via env"))
    assert store.head("x") is not None
    store.close()


def test_local_check_creates_root_and_reports_unusable_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a" / "b")
    store.check()
    assert (tmp_path / "a" / "b").is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # probe removed

    (tmp_path / "plainfile").write_text("x")
    bad = LocalStore(tmp_path / "plainfile" / "objects")
    with pytest.raises(StorageConfigError, match="cannot create storage directory"):
        bad.check()
    with pytest.raises(StorageConfigError, match="not a directory"):
        LocalStore(tmp_path / "plainfile").check()


# -- key validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "a/../../escape",
        "/etc/passwd",
        "a\\..\\b",
        "a\x00b",
        "",
        "a//b",
        "a/",
        "./a",
        "a/./b",
        "..",
        f"{META_DIR}/x.json",
    ],
)
def test_local_store_rejects_unsafe_keys(local_store: LocalStore, key: str) -> None:
    with pytest.raises(ValueError):
        local_store.put(key, io.BytesIO(b"x"))
    with pytest.raises(ValueError):
        local_store.head(key)
    with pytest.raises(ValueError):
        local_store.open(key)
    with pytest.raises(ValueError):
        local_store.object_uri(key)
    with pytest.raises(ValueError):
        local_store.delete([key])
    assert not (local_store.root.parent / "escape").exists()


def test_local_store_rejects_symlink_escape(local_store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    local_store.root.mkdir(parents=True)
    (local_store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside"):
        local_store.put("link/x", io.BytesIO(b"x"))
    assert list(outside.iterdir()) == []


def test_local_store_accepts_ordinary_keys(local_store: LocalStore) -> None:
    for key in ("a.png", "p/abc/0/out put.png", "dots..in..name", ".hidden", "ünïcode/ß.txt"):
        local_store.put(key, io.BytesIO(key.encode()))
        with local_store.open(key) as fh:
            assert fh.read() == key.encode()


# -- delete ----------------------------------------------------------------------------------


def test_delete_removes_objects_and_is_idempotent(store: Store) -> None:
    for key in ("p/a/0.png", "p/a/1.png", "p/b/0.png"):
        store.put(key, io.BytesIO(key.encode()), content_type="image/png", metadata={"prediction-id": "a"})

    store.delete(["p/a/0.png", "p/a/1.png", "p/a/0.png", "p/never/was.png"])  # duplicates, a missing key

    assert store.head("p/a/0.png") is None and store.head("p/a/1.png") is None
    with pytest.raises(FileNotFoundError):
        store.open("p/a/0.png")
    kept = store.head("p/b/0.png")
    assert kept is not None and kept.metadata["prediction-id"] == "a"
    store.delete(["p/a/0.png", "p/a/1.png"])  # again: nothing left to delete, no error
    store.delete([])
    if isinstance(store, LocalStore):  # the sidecars went with their files
        assert not store._meta_path("p/a/0.png").exists() and store._meta_path("p/b/0.png").exists()
    # a key written again after its delete is a new object
    store.put("p/a/0.png", io.BytesIO(b"again"))
    info = store.head("p/a/0.png")
    assert info is not None and info.size == 5 and "prediction-id" not in info.metadata


def test_s3_delete_sends_at_most_1000_keys_a_call(s3_store: S3Store) -> None:
    keys = [f"many/{i:05d}.txt" for i in range(2345)]
    client = s3_store.client
    client.put_object(Bucket=s3_store.bucket, Key="many/keep.txt", Body=b"k")
    for key in keys:
        client.put_object(Bucket=s3_store.bucket, Key=key, Body=b"x")
    sent: list[int] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        sent.append(len(params["Delete"]["Objects"]))

    client.meta.events.register("provide-client-params.s3.DeleteObjects", seen)
    s3_store.delete(keys)

    assert sent == [1000, 1000, 345]
    left = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=s3_store.bucket)
        for o in page.get("Contents", [])
    ]
    assert left == ["many/keep.txt"]


def test_s3_delete_failures_raise_storage_error(s3_server: MotoS3Server) -> None:
    store = moto_store(s3_server, "no-such-bucket-for-delete")
    with pytest.raises(StorageError, match="cannot delete from s3://no-such-bucket-for-delete: a, b"):
        store.delete(["a", "b"])


def test_local_delete_leaves_directories_and_other_files(local_store: LocalStore) -> None:
    local_store.put("d/x.bin", io.BytesIO(b"x"))
    local_store.put("d/y.bin", io.BytesIO(b"y"))
    local_store.delete(["d/x.bin", "d"])  # "d" is a directory, not an object: nothing to delete
    assert sorted(p.name for p in (local_store.root / "d").iterdir()) == ["y.bin"]
    assert local_store.head("d/y.bin") is not None


# -- open_store ----------------------------------------------------------------------------


def test_open_store_s3_urls() -> None:
    store = open_store(
        "s3://my-bucket",
        endpoint_url="http://127.0.0.1:1",
        region="auto",
        access_key_id="a",
        secret_access_key="b",
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.uri) == ("my-bucket", "", "s3://my-bucket")
    assert store.endpoint_url == "http://127.0.0.1:1"

    store = open_store("s3://my-bucket/cache/replicate/", endpoint_url=None, region="us-east-1")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.uri) == (
        "my-bucket",
        "cache/replicate",
        "s3://my-bucket",
    )


def test_open_store_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "with space" / "objects"
    store = open_store(target.as_uri())  # file:///.../with%20space/objects
    assert isinstance(store, LocalStore) and store.root == target.resolve()

    store = open_store(f"file://localhost{target}")
    assert isinstance(store, LocalStore) and store.root == target.resolve()

    store = open_store(str(target))
    assert isinstance(store, LocalStore) and store.root == target.resolve()

    monkeypatch.chdir(tmp_path)
    store = open_store("relative/objects")
    assert isinstance(store, LocalStore) and store.root == (tmp_path / "relative/objects").resolve()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/x",
        "gs://bucket",
        "s3://",
        "s3:///prefix-only",
        "file://otherhost/x",
        "ftp://host/x",
        "",
        "s3://bucket?versionId=1",
    ],
)
def test_open_store_rejects_unsupported_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="unsupported storage URL"):
        open_store(url)


# -- incomplete multipart uploads ------------------------------------------------------------


def test_cleanup_incomplete_uploads_aborts_stale_ones_under_the_prefix(
    s3_server: MotoS3Server, s3_bucket: str
) -> None:
    client = s3_server.admin_client
    store = moto_store(s3_server, s3_bucket, "replicate")
    ours = [
        client.create_multipart_upload(Bucket=s3_bucket, Key=f"replicate/p/{i}.bin")["UploadId"]
        for i in (1, 2)
    ]
    theirs = client.create_multipart_upload(Bucket=s3_bucket, Key="replicated-elsewhere/x.bin")["UploadId"]
    client.upload_part(
        Bucket=s3_bucket, Key="replicate/p/1.bin", UploadId=ours[0], PartNumber=1, Body=b"x" * 100
    )

    def listed() -> set[str]:
        return {u["UploadId"] for u in client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])}

    # moto reports every upload as initiated on 2010-11-10, so "older than a day" matches
    # them all and "older than ~300 years" none: the age filter is still exercised.
    assert store.cleanup_incomplete_uploads(10**10) == []
    planned = store.cleanup_incomplete_uploads(86400, dry_run=True)
    assert {u.upload_id for u in planned} == set(ours) and listed() == {*ours, theirs}
    assert all(u.key.startswith("replicate/") and u.initiated is not None for u in planned)

    aborted = store.cleanup_incomplete_uploads()  # default: older than one day
    assert {u.upload_id for u in aborted} == set(ours)
    assert listed() == {theirs}  # another prefix ("replicated-elsewhere/") is left alone
    with pytest.raises(ValueError):
        store.cleanup_incomplete_uploads(-1)
    store.close()


def test_the_readme_lifecycle_rule_is_accepted(s3_server: MotoS3Server, s3_bucket: str) -> None:
    """The README's clean-up rule for incomplete multipart uploads is a valid configuration."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Incomplete multipart uploads.**") :]
    rule = json.loads(
        section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    )
    client = s3_server.admin_client
    client.put_bucket_lifecycle_configuration(Bucket=s3_bucket, LifecycleConfiguration=rule)
    (stored,) = client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"]
    assert stored["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert stored["Status"] == "Enabled"


def test_small_body_in_short_reads_costs_its_own_size(s3_store: S3Store) -> None:
    """A 100 kB image arriving in 16 KiB reads is held in about 100 kB, not in a buffer of
    the 8 MiB read that was asked for (allocating that for every file doubled a backfill's
    CPU per file)."""
    tracemalloc.start()
    try:
        written = s3_store.put("small/img.png", GeneratedStream(100_000, chunk=16 * 1024))  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written == expected_digest(100_000)
    assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB"


class PayloadHashes:
    """``X-Amz-Content-SHA256`` of every request a store's client sends, by operation
    (botocore's ``before-send`` event, after signing: an observer of what goes on the wire),
    and the SHA-256 of each request's body."""

    def __init__(self, store: S3Store) -> None:
        self.sent: list[tuple[str, str, str]] = []  # (operation, header, sha256 of the body)

        def seen(request: Any, **_: Any) -> None:
            query = request.url.partition("?")[2]
            op = {"PUT": "UploadPart" if "partNumber=" in query else "PutObject"}.get(request.method, "")
            if "x-amz-copy-source" in request.headers:
                op = "CopyObject"
            if request.method == "POST":
                op = "CompleteMultipartUpload" if "uploadId=" in query else "CreateMultipartUpload"
            body = request.body if isinstance(request.body, (bytes, bytearray)) else b""
            header = request.headers.get("X-Amz-Content-SHA256", b"")
            text = header.decode() if isinstance(header, bytes) else str(header)
            self.sent.append((op, text, hashlib.sha256(body).hexdigest()))

        store.client.meta.events.register("before-send.s3", seen)

    def of(self, op: str) -> list[str]:
        return [h for o, h, _ in self.sent if o == op]


@pytest.fixture(scope="module")
def tls_s3_server() -> Iterator[MotoS3Server]:
    """moto over HTTPS (a throwaway CA), for what differs between HTTP and HTTPS."""
    with MotoS3Server(tls=True) as server:
        yield server


def _put_small_and_multipart(store: S3Store) -> tuple[bytes, int]:
    """A 100 kB ``PutObject`` and an 11 MiB multipart upload (5 MiB parts) through
    ``store``, both read back intact; returns the small body and the long one's size."""
    small = os.urandom(100_000)
    assert store.put("img/small.png", io.BytesIO(small)) == hashlib.sha256(small).hexdigest()
    total = 11 * MiB + 3
    assert store.put("vid/long.mp4", GeneratedStream(total)) == expected_digest(total)  # type: ignore[arg-type]
    assert read_digest(store.open("img/small.png")) == (len(small), hashlib.sha256(small).hexdigest())
    assert read_digest(store.open("vid/long.mp4")) == (total, expected_digest(total))
    return small, total


def test_over_https_a_body_covered_by_a_checksum_is_not_hashed_again_for_the_signature(
    tls_s3_server: MotoS3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11 (session 6): over HTTPS, a ``PutObject`` or ``UploadPart`` that carries
    ``x-amz-checksum-sha256`` is signed with ``UNSIGNED-PAYLOAD``; botocore alone hashed
    it a second time (it looks for its own checksum or ``Content-MD5``, not one the caller
    sent). ``CompleteMultipartUpload``, which has no checksum header, keeps its payload
    hash. Every object reads back intact."""
    server = tls_s3_server
    monkeypatch.setenv("AWS_CA_BUNDLE", str(server.ca_file))
    bucket = server.create_bucket(f"tls-{os.urandom(4).hex()}")
    store = _five_mib_parts(server, bucket)
    assert store.endpoint_url.startswith("https://")
    wire = PayloadHashes(store)
    _put_small_and_multipart(store)
    assert wire.of("PutObject") == ["UNSIGNED-PAYLOAD"]
    assert wire.of("UploadPart") == ["UNSIGNED-PAYLOAD"] * 3
    ((_, header, body_sha),) = [s for s in wire.sent if s[0] == "CompleteMultipartUpload"]
    assert header == body_sha  # the XML body's own SHA-256, as before
    assert wire.of("CopyObject") == [hashlib.sha256(b"").hexdigest()]  # the sha256 copy: no body
    store.close()


def test_over_plain_http_every_body_stays_in_the_signature(s3_server: MotoS3Server, s3_bucket: str) -> None:
    """Over plain HTTP the payload hash stays signed even under a checksum header, as every
    AWS SDK keeps it: moto, for one, does not check ``x-amz-checksum-sha256`` against the
    body, so the signature is then the server's only check of the bytes."""
    store = _five_mib_parts(s3_server, s3_bucket)
    wire = PayloadHashes(store)
    small, _ = _put_small_and_multipart(store)
    assert [h for o, h, b in wire.sent if o in ("PutObject", "UploadPart") and h == b] == [
        h for o, h, _ in wire.sent if o in ("PutObject", "UploadPart")
    ]
    assert wire.of("PutObject") == [hashlib.sha256(small).hexdigest()]
    assert len(wire.of("UploadPart")) == 3 and "UNSIGNED-PAYLOAD" not in wire.of("UploadPart")
    store.close()


def test_without_checksums_bodies_keep_their_signed_payload_hash(
    s3_server: MotoS3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``AWS_REQUEST_CHECKSUM_CALCULATION=when_required`` (services that reject checksum
    headers) no checksum header is sent, so the signature keeps covering the body's SHA-256."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = moto_store(s3_server, s3_bucket)
    wire = PayloadHashes(store)
    body = os.urandom(100_000)
    store.put("img/plain.png", io.BytesIO(body))
    ((op, header, body_sha),) = wire.sent
    assert op == "PutObject" and header == body_sha == hashlib.sha256(body).hexdigest()
    assert read_digest(store.open("img/plain.png")) == (len(body), body_sha)
    store.close()
