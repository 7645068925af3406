"""The upload side of :class:`~cachelayer.storage.s3.S3Store`: one ``PutObject`` for small
bodies, a multipart upload driven here for the others, the sha256 written with the object,
aborts that never pass silently, and the listing of incomplete uploads for clean-up.

Why and how the sha256 is written, and what happens when a server refuses an abort, is in
the :mod:`cachelayer.storage.s3` module docstring. The limits used here come from the AWS S3
"Amazon S3 multipart upload limits" and "Copy an object" pages.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from cachelayer.errors import StorageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "MAX_COPY_SIZE",
    "MAX_PARTS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "FullReader",
    "IncompleteUpload",
    "abort_upload",
    "list_incomplete_uploads",
    "put_multipart",
    "put_single",
]

log = logging.getLogger("cachelayer")

MiB = 1024 * 1024
#: Smallest part S3 accepts, except the last one (AWS S3 multipart upload limits).
MIN_PART_SIZE = 5 * MiB
#: Largest part S3 accepts (AWS S3 multipart upload limits).
MAX_PART_SIZE = 5 * 1024 * MiB
#: Most parts in one multipart upload (AWS S3 multipart upload limits).
MAX_PARTS = 10_000
#: Largest object one ``CopyObject`` (or one ``PutObject``) can write (AWS S3 "Copy an object").
MAX_COPY_SIZE = 5 * 1024 * MiB


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "") or "")


def http_status(exc: ClientError) -> int | None:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return int(status) if status is not None else None


def describe(exc: ClientError) -> str:
    """``Code (HTTP 403): message`` on one line."""
    code = error_code(exc) or "error"
    status = http_status(exc)
    message = str(exc.response.get("Error", {}).get("Message", "") or "").strip()
    text = f"{code} (HTTP {status})" if status is not None and str(status) != code else code
    if message and message != code:
        text += f": {message}"
    return " ".join(text.split())


def one_line(exc: BaseException) -> str:
    """``exc`` on one line: a :class:`ClientError` as :func:`describe`, others as ``str``."""
    if isinstance(exc, ClientError):
        return describe(exc)
    return " ".join(str(exc).split()) or type(exc).__name__


def b64_sha256(data: bytes) -> str:
    """The base64 SHA-256 of ``data``, as ``x-amz-checksum-sha256`` carries it."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


class FullReader:
    """A read-only, deliberately non-seekable view of ``body`` whose ``read(n)`` returns
    exactly ``n`` bytes unless the stream ends first.

    Remembers the exception ``body.read`` raised (``error``) so :meth:`S3Store.put` can
    re-raise it unchanged instead of wrapping it in :class:`StorageError`.
    """

    def __init__(self, body: BinaryIO) -> None:
        self._body = body
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self._lock:
            try:
                data = self._read_all() if size is None or size < 0 else self._read_exact(size)
            except BaseException as exc:
                self.error = exc
                raise
            self.bytes_read += len(data)
            return data

    def _read_exact(self, size: int) -> bytes:
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = self._body.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        if len(chunks) == 1:
            return chunks[0]
        return b"".join(chunks)

    def _read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self._body.read(MIN_PART_SIZE)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def _parts(head: bytes, reader: FullReader, size: int) -> Iterator[bytes]:
    """``head`` then the rest of ``reader`` in parts of exactly ``size`` bytes (the last may
    be shorter); never holds more than one part plus ``head``."""
    buf = head
    while True:
        while len(buf) >= size:
            part, buf = buf[:size], buf[size:]
            yield part
            del part
        more = reader.read(size - len(buf))
        if not more:
            if buf:
                yield buf
            return
        buf = more if not buf else buf + more


def put_single(
    client: S3Client, bucket: str, key: str, data: bytes, extra: dict[str, Any], *, send_checksums: bool
) -> None:
    """One ``PutObject`` of ``data`` with metadata ``sha256`` (hex) and, with
    ``send_checksums``, ``ChecksumSHA256`` (S3 refuses the body if it does not match).
    Raises botocore's errors."""
    digest = hashlib.sha256(data)
    args = dict(extra, Metadata={**extra.get("Metadata", {}), "sha256": digest.hexdigest()})
    if send_checksums:
        args["ChecksumSHA256"] = base64.b64encode(digest.digest()).decode("ascii")
    client.put_object(Bucket=bucket, Key=key, Body=data, **args)


def put_multipart(
    client: S3Client,
    bucket: str,
    key: str,
    head: bytes,
    reader: FullReader,
    extra: dict[str, Any],
    *,
    chunksize: int,
    max_concurrency: int,
    send_checksums: bool,
    copy_max_bytes: int,
) -> None:
    """Upload ``head`` + the rest of ``reader`` as one multipart upload, then add metadata
    ``sha256`` with a ``CopyObject`` onto itself when the object is at most
    ``copy_max_bytes`` bytes.

    At most ``max_concurrency`` parts are in flight (and in memory) while the next one is
    read. On any failure, the parts in flight are awaited and the upload is aborted
    (:func:`abort_upload`) before the exception propagates unchanged. Raises
    :class:`StorageError` past :data:`MAX_PARTS` parts, botocore's errors otherwise.
    """
    create = dict(extra)
    if send_checksums:
        create["ChecksumAlgorithm"] = "SHA256"
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **create)["UploadId"]
    digest = hashlib.sha256()
    size = 0
    parts: list[dict[str, Any]] = []

    def send(number: int, data: bytes) -> dict[str, Any]:
        args: dict[str, Any] = {"ChecksumSHA256": b64_sha256(data)} if send_checksums else {}
        resp = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data, **args
        )
        return {"PartNumber": number, "ETag": resp["ETag"], **args}

    pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="cachelayer-s3-part")
    try:
        pending: set[Future[dict[str, Any]]] = set()
        for number, data in enumerate(_parts(head, reader, chunksize), start=1):
            if number == 1:
                del head  # the generator hands it out as the first part(s)
            if number > MAX_PARTS:
                raise StorageError(
                    f"S3 upload to s3://{bucket}/{key} failed: the body is longer than {MAX_PARTS} "
                    f"parts of {chunksize} bytes (raise multipart_chunksize)"
                )
            digest.update(data)
            size += len(data)
            pending.add(pool.submit(send, number, data))
            del data
            if len(pending) >= max_concurrency:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                parts.extend(f.result() for f in done)
        parts.extend(f.result() for f in pending)
        parts.sort(key=lambda p: int(p["PartNumber"]))
        done_resp = client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
        )
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        abort_upload(client, bucket, key, upload_id)
        raise
    pool.shutdown(wait=True)
    if size <= min(copy_max_bytes, MAX_COPY_SIZE):
        _add_sha256(client, bucket, key, digest.hexdigest(), done_resp.get("ETag"), extra, send_checksums)


def _add_sha256(
    client: S3Client,
    bucket: str,
    key: str,
    sha256: str,
    etag: str | None,
    extra: dict[str, Any],
    send_checksums: bool,
) -> None:
    """Copy ``key`` onto itself with metadata ``sha256`` added (``MetadataDirective=REPLACE``
    restates content type, cache control and metadata; ``CopySourceIfMatch`` keeps an object
    replaced meanwhile untouched). A failure only logs a warning: the object is complete."""
    args = dict(extra, Metadata={**extra.get("Metadata", {}), "sha256": sha256})
    if etag:
        args["CopySourceIfMatch"] = etag
    if send_checksums:
        args["ChecksumAlgorithm"] = "SHA256"
    try:
        client.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            MetadataDirective="REPLACE",
            **args,
        )
    except (ClientError, BotoCoreError) as exc:
        log.warning(
            "s3://%s/%s is stored but its sha256 metadata could not be added (%s); "
            "verify will check its size only unless --deep",
            bucket,
            key,
            one_line(exc),
        )


def abort_upload(client: S3Client, bucket: str, key: str, upload_id: str) -> bool:
    """``AbortMultipartUpload``; ``True`` when the upload is gone (aborted, or already
    unknown to the server). When the server refuses (s3rver answers 405), logs one warning
    naming the upload id and the clean-up (a lifecycle rule, or
    :meth:`S3Store.cleanup_incomplete_uploads`) and returns ``False``. Never raises."""
    try:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        return True
    except ClientError as exc:
        if error_code(exc) == "NoSuchUpload":
            return True
        reason = describe(exc)
    except BotoCoreError as exc:
        reason = one_line(exc)
    log.warning(
        "could not abort multipart upload %s of s3://%s/%s (%s): its parts stay in the bucket, "
        "billed as storage, until a lifecycle rule (AbortIncompleteMultipartUpload) or "
        "S3Store.cleanup_incomplete_uploads() removes them",
        upload_id,
        bucket,
        key,
        reason,
    )
    return False


@dataclass(frozen=True)
class IncompleteUpload:
    """A multipart upload that was started and never completed nor aborted: its ``key``,
    ``upload_id`` and ``initiated`` time (timezone-aware, as the server reports it)."""

    key: str
    upload_id: str
    initiated: datetime | None


def list_incomplete_uploads(client: S3Client, bucket: str, prefix: str) -> Iterator[IncompleteUpload]:
    """Every incomplete multipart upload whose key starts with ``prefix``
    (``ListMultipartUploads``, all pages). Raises botocore's errors (s3rver answers 501
    ``NotImplemented``)."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            initiated = up.get("Initiated")
            yield IncompleteUpload(str(up.get("Key", "")), str(up.get("UploadId", "")), initiated)
