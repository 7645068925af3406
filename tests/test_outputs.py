"""The output walker: files found in every shape, everything else untouched."""

from __future__ import annotations

import pytest

from cachelayer.outputs import find_files, lookup, materialize, replace_files


class FakeFileOutput:
    """Stands in for replicate.helpers.FileOutput's shape: an object with a .url."""

    def __init__(self, url: str) -> None:
        self.url = url


U1 = "https://replicate.delivery/pbxt/abc/out-0.png"
U2 = "https://replicate.delivery/xezq/def/output.mp4"
DATA = "data:image/webp;base64,UklGRg=="


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (U1, [("", U1)]),
        ([U1, U2], [("/0", U1), ("/1", U2)]),
        ({"images": [U1, {"video": U2}], "seed": 42}, [("/images/0", U1), ("/images/1/video", U2)]),
        ({"a/b": U1, "t~x": U2}, [("/a~1b", U1), ("/t~0x", U2)]),
        ([DATA], [("/0", DATA)]),
        ("hello world", []),
        (["hello", " world", 3, None, True, "not a url"], []),
        (None, []),
        ([FakeFileOutput(U1), "text"], [("/0", U1)]),
        (iter([U1, "chunk"]), [("/0", U1)]),
    ],
)
def test_find_files_every_shape(output, expected):
    assert [(f.path, f.url) for f in find_files(output)] == expected


def test_replace_keeps_shape_and_non_files():
    output = {"images": [FakeFileOutput(U1), U2], "caption": "a cat", "n": 2, "none": None}
    out = replace_files(output, lambda path, url: f"durable:{path}")
    assert out == {
        "images": ["durable:/images/0", "durable:/images/1"],
        "caption": "a cat",
        "n": 2,
        "none": None,
    }


def test_lookup_follows_pointers_and_raises_for_missing():
    output = {"images": [U1, {"a/b": U2}]}
    assert lookup(output, "/images/1/a~1b") == U2
    assert lookup(output, "") == output
    for missing in ("/images/5", "/nope", "/images/x", "images"):
        with pytest.raises(KeyError):
            lookup(output, missing)


def test_materialize_turns_iterators_and_tuples_into_lists():
    gen = (x for x in [FakeFileOutput(U1), "chunk"])
    out = materialize({"out": gen, "t": (1, [2, (3,)])})
    assert out["t"] == [1, [2, [3]]]
    assert out["out"][1] == "chunk" and out["out"][0].url == U1
