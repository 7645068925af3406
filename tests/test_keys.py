"""Object keys: deterministic, documented layout, no escape from the prefix."""

from __future__ import annotations

import io
import posixpath

import pytest

from cachelayer.errors import ConfigError
from cachelayer.keys import MAX_KEY_BYTES, MAX_LAST_SEGMENT_BYTES, MAX_SEGMENT_BYTES, object_key
from cachelayer.storage.local import LocalStore


def test_layout():
    assert (
        object_key("replicate", "gm3q", "/0", "https://replicate.delivery/pbxt/t/out-0.png")
        == "replicate/gm3q/0-out-0.png"
    )
    assert object_key("", "gm3q", "", "https://replicate.delivery/x/t/output.mp4") == "gm3q/output-output.mp4"
    assert object_key("a/b/", "p", "/images/1", "data:image/webp;base64,AAAA") == "a/b/p/images.1-file.webp"


@pytest.mark.parametrize(
    "url",
    [
        "https://h/../../etc/passwd",
        "https://h/x/%2e%2e%2f%2e%2e%2fetc",
        "https://h/x/..%5c..%5cwin",
        "https://h/x/.hidden",
        "https://h/x/",
        "https://h/x/%00nul",
    ],
)
@pytest.mark.parametrize("path", ["/..", "/../..", "/a~1..~1b", "/%2e%2e", ""])
def test_keys_never_escape_the_prediction_folder(url, path):
    key = object_key("pre", "pid", path, url)
    assert key.startswith("pre/pid/")
    assert posixpath.normpath(key) == key
    assert "/" not in key[len("pre/pid/") :]
    assert "\x00" not in key and "\\" not in key


def test_distinct_paths_get_distinct_keys():
    url = "https://h/o.png"
    paths = ["/a./b", "/a/.b", "/a.b", "/a/b", "/a~1b", ""]
    keys = {object_key("", "p", p, url) for p in paths}
    assert len(keys) == len(paths)


# ---- length rule (issue 8.10): keys fit a local file system and S3 ---------------------------

LONG_CASES = [
    ("replicate", "gm3q", "/" + "/".join(["images"] * 300) + "/0", "https://h/x/out-0.png"),
    ("replicate", "gm3q", "/" + "k" * 5000, "https://h/x/" + "f" * 3000 + ".webp"),
    ("replicate", "gm3q", "/" + "é" * 400, "https://h/x/out.png"),
    ("", "p" * 600, "/0", "https://h/x/out.png"),
    ("a/" * 100 + "b", "gm3q", "/" + "z" * 900, "https://h/x/" + "y" * 200),
    ("replicate", "gm3q", "/0", "https://h/x/" + "n" * 500 + "." + "e" * 30),
]


def assert_fits(key: str) -> None:
    segments = key.split("/")
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert all(0 < len(s.encode()) <= MAX_SEGMENT_BYTES for s in segments)
    assert len(segments[-1].encode()) <= MAX_LAST_SEGMENT_BYTES
    assert all(s not in (".", "..") for s in segments)


@pytest.mark.parametrize(("prefix", "pid", "path", "url"), LONG_CASES)
def test_long_paths_give_keys_that_fit_and_store_locally(tmp_path, prefix, pid, path, url):
    key = object_key(prefix, pid, path, url)
    assert_fits(key)
    assert object_key(prefix, pid, path, url) == key  # deterministic
    store = LocalStore(tmp_path)
    store.check()
    store.put(key, io.BytesIO(b"bytes"), content_type="image/png")
    with store.open(key) as fh:
        assert fh.read() == b"bytes"


def test_short_keys_are_unchanged_and_long_ones_stay_distinct():
    assert object_key("replicate", "gm3q", "/0", "https://h/pbxt/t/out-0.png") == "replicate/gm3q/0-out-0.png"
    base = "/" + "q" * 4000
    keys = {object_key("r", "p", base + suffix, "https://h/o.png") for suffix in ("a", "b", "/0", "/1", "")}
    assert len(keys) == 5
    for key in keys:
        assert key.endswith("-o.png") and "--" in key


def test_a_prefix_that_leaves_no_room_is_a_config_error():
    with pytest.raises(ConfigError):
        object_key("p/" * 500, "gm3q", "/0", "https://h/o.png")


@pytest.mark.parametrize(
    "args",
    [
        ("pre", "\ud800", "/\udfff", "https://h/\ud800.png"),
        ("pre", "pid", "no-leading-slash", "https://[unclosed/x.png"),
        ("pre", "pid", "/0", "https://h:99999/x.png"),
        ("pre", "pid", "/0", "data:" + "x" * 10000),
        ("pre", "pid", "/0", "https://h/%ff%fe.png"),
        ("pre", "pid", "/0", "https://replicate.delivery＃@evil/x.png"),
        ("pre", "", "", ""),
    ],
)
def test_odd_inputs_never_raise(args):
    key = object_key(*args)
    assert key.startswith("pre/")
    assert_fits(key)


@pytest.mark.parametrize("pid", [".", "..", "..."])
def test_dot_prediction_ids_stay_inside_the_prefix(pid):
    key = object_key("pre", pid, "/0", "https://h/o.png")
    assert posixpath.normpath(key) == key and key.startswith("pre/_--")
