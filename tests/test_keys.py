"""Object keys: deterministic, documented layout, no escape from the prefix."""

from __future__ import annotations

import posixpath

import pytest

from cachelayer.keys import object_key


def test_layout():
    assert object_key("replicate", "gm3q", "/0", "https://replicate.delivery/pbxt/t/out-0.png") \
        == "replicate/gm3q/0-out-0.png"
    assert object_key("", "gm3q", "", "https://replicate.delivery/x/t/output.mp4") \
        == "gm3q/output-output.mp4"
    assert object_key("a/b/", "p", "/images/1", "data:image/webp;base64,AAAA") \
        == "a/b/p/images.1-file.webp"


@pytest.mark.parametrize("url", [
    "https://h/../../etc/passwd", "https://h/x/%2e%2e%2f%2e%2e%2fetc", "https://h/x/..%5c..%5cwin",
    "https://h/x/.hidden", "https://h/x/", "https://h/x/%00nul",
])
@pytest.mark.parametrize("path", ["/..", "/../..", "/a~1..~1b", "/%2e%2e", ""])
def test_keys_never_escape_the_prediction_folder(url, path):
    key = object_key("pre", "pid", path, url)
    assert key.startswith("pre/pid/")
    assert posixpath.normpath(key) == key
    assert "/" not in key[len("pre/pid/"):]
    assert "\x00" not in key and "\\" not in key


def test_distinct_paths_get_distinct_keys():
    url = "https://h/o.png"
    paths = ["/a./b", "/a/.b", "/a.b", "/a/b", "/a~1b", ""]
    keys = {object_key("", "p", p, url) for p in paths}
    assert len(keys) == len(paths)
