"""data: URIs (issue 8.10): the cap is applied before decoding, decoding is chunked, and
payloads can be kept out of the catalog with redact_data_uris."""

from __future__ import annotations

import base64
import hashlib
import tracemalloc

import pytest

from cachelayer.datauri import is_redacted_data_uri, parse_data_uri, redact_data_uri, redact_data_uris
from cachelayer.errors import DownloadTooLargeError, MalformedUrlError
from cachelayer.fetch import Fetcher
from cachelayer.outputs import find_files

MiB = 1 << 20


def big_uri(size: int) -> tuple[str, bytes]:
    data = bytes(range(256)) * (size // 256)
    return "data:video/mp4;base64," + base64.b64encode(data).decode(), data


def test_cap_applies_before_any_decoding():
    uri, _ = big_uri(40 * MiB)
    fetcher = Fetcher((), max_bytes=1 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(DownloadTooLargeError, match="over the cap"):
            fetcher.open(uri)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 * MiB  # the 40 MiB payload was never decoded nor copied


def test_large_uri_streams_in_chunks_with_exact_length_and_hash():
    uri, data = big_uri(24 * MiB)
    fetcher = Fetcher((), max_bytes=100 * MiB)
    tracemalloc.start()
    try:
        dl = fetcher.open(uri)
        assert dl.content_length == len(data) and dl.content_type == "video/mp4"
        total = 0
        while chunk := dl.read(MiB):
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == len(data) and dl.sha256 == hashlib.sha256(data).hexdigest()
    assert peak < 16 * MiB  # well under the 24 MiB a whole decode would need


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("data:,hello%20world", b"hello world"),
        ("data:text/plain;charset=utf-8,%E2%9C%93", "✓".encode()),
        ("data:;base64,aGk", b"hi"),  # unpadded
        ("data:image/png;base64,", b""),
        ("DATA:application/octet-stream;BASE64,AAEC", b"\x00\x01\x02"),
    ],
)
def test_small_uris_decode(uri, expected):
    with Fetcher((), max_bytes=100).open(uri) as dl:
        assert dl.read() == expected


@pytest.mark.parametrize(
    "uri",
    ["data:no-comma", "data:;base64,a", "data:;base64,@@@@", "data:;base64,AA==AA", "data:," + "\ud800"],
)
def test_malformed_uris_are_typed(uri):
    with pytest.raises(MalformedUrlError), Fetcher((), max_bytes=100).open(uri) as dl:
        dl.read()


def test_percent_encoded_bound_before_decoding():
    with pytest.raises(DownloadTooLargeError):
        parse_data_uri("data:," + "a" * 400, max_bytes=100)


def test_redaction_keeps_shape_and_names_the_bytes():
    uri, data = big_uri(3 * MiB)
    output = {"video": uri, "images": ["https://replicate.delivery/x/a.png", "data:,hi"], "n": 1}
    red = redact_data_uris(output)
    digest = hashlib.sha256(data).hexdigest()
    assert red["video"] == f"data:video/mp4;sha256={digest},"
    assert red["images"] == [
        "https://replicate.delivery/x/a.png",
        f"data:text/plain;sha256={hashlib.sha256(b'hi').hexdigest()},",
    ]
    assert red["n"] == 1
    assert [f.path for f in find_files(red)] == [f.path for f in find_files(output)]
    assert is_redacted_data_uri(red["video"]) and not is_redacted_data_uri(uri)
    assert redact_data_uri(red["video"]) == red["video"]  # idempotent
    bad = redact_data_uri("data:image/png;base64,@@")
    assert bad.startswith("data:image/png;malformed;sha256=") and is_redacted_data_uri(bad)
