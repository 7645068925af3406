"""Object keys need no escaping (issue 9, finding 11): every key cachelayer derives is in
``[A-Za-z0-9._-]`` plus ``/``, distinct output paths and prediction ids never share a key, and
names already in the alphabet keep the keys earlier releases gave them."""

from __future__ import annotations

import re
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cachelayer.keys import MAX_KEY_BYTES, MAX_LAST_SEGMENT_BYTES, MAX_SEGMENT_BYTES, object_key

KEY_RE = re.compile(r"[A-Za-z0-9._/-]+")

word = st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True)
# Tokens with the characters that used to be percent-encoded: spaces, %, -, ., ~, /, non-ASCII.
token = st.one_of(
    word, st.text(max_size=12), st.sampled_from(["", "-", "my file", "a%20b", "é", "~", "/", "."])
)


def pointer_of(tokens: list[str]) -> str:
    return "".join("/" + t.replace("~", "~0").replace("/", "~1") for t in tokens)


pointer = st.lists(token, max_size=6).map(pointer_of)
long_pointer = st.text(min_size=150, max_size=1500).map(lambda t: "/" + t)
any_path = st.one_of(pointer, long_pointer, st.text(max_size=30))
prefix = st.from_regex(r"([A-Za-z0-9_-]{1,10}(/[A-Za-z0-9_-]{1,10}){0,3})?", fullmatch=True)
pid = st.one_of(
    st.from_regex(r"[a-z0-9]{26}", fullmatch=True),  # Replicate's ids
    st.text(max_size=40),
    st.text(min_size=200, max_size=600),
)
filename = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["out-0.png", "my file.png", "-x.png", "--dash", "..", "a--0123456789abcdef-b.png"]),
    st.text(min_size=100, max_size=400),
)


def url_of(name: str) -> str:
    return "https://replicate.delivery/pbxt/t/" + quote(name, safe="", errors="surrogatepass")


@settings(max_examples=500, deadline=None)
@given(prefix=prefix, pid=pid, path=any_path, name=filename)
@example(prefix="replicate", pid="gm3q", path="/my file", name="my%20file.png")
def test_every_key_is_in_the_alphabet_and_its_own_url_path(prefix, pid, path, name):
    key = object_key(prefix, pid, path, url_of(name))
    assert KEY_RE.fullmatch(key), key
    assert quote(key) == key  # a public URL holds the key verbatim: nothing to re-encode
    ours = key.split("/")[-2:]
    assert all(s and s[0] not in ".-" for s in ours), ours
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert len(ours[0]) <= MAX_SEGMENT_BYTES and len(ours[1]) <= MAX_LAST_SEGMENT_BYTES


@settings(max_examples=300, deadline=None)
@given(
    pid=pid,
    files=st.lists(st.tuples(any_path, filename), min_size=2, max_size=8, unique_by=lambda f: f[0]),
)
@example(pid="p", files=[("/a-b", "c.png"), ("/a", "b-c.png")])  # used to collide: a-b-c.png
@example(pid="p", files=[("/", "x.png"), ("/_", "x.png")])  # empty token vs "_": used to collide
@example(pid="p", files=[("/a b", "x.png"), ("/a_b", "x.png"), ("/a%20b", "x.png")])
@example(pid="p", files=[("/a", "-0123456789abcdef-x.png"), ("/a b", "x.png")])
def test_distinct_output_paths_of_a_prediction_never_share_a_key(pid, files):
    keys = [object_key("replicate", pid, path, url_of(name)) for path, name in files]
    assert len(set(keys)) == len(keys), keys


@settings(max_examples=300, deadline=None)
@given(pids=st.lists(pid, min_size=2, max_size=6, unique=True), path=any_path)
@example(pids=["a-b", "a_b", "a b", "a--b", "a.b", ".", "..", ""], path="/0")
def test_distinct_predictions_never_share_a_key(pids, path):
    keys = [object_key("replicate", p, path, url_of("out.png")) for p in pids]
    assert len(set(keys)) == len(keys), keys


@settings(max_examples=200, deadline=None)
@given(
    pid=st.from_regex(r"[a-z0-9]{26}", fullmatch=True),
    tokens=st.lists(word, min_size=1, max_size=4),
    name=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,30}[A-Za-z0-9]", fullmatch=True),
)
def test_names_in_the_alphabet_keep_their_keys(pid, tokens, name):
    """Keys from earlier releases stay valid: no change where nothing needed escaping."""
    key = object_key("replicate", pid, pointer_of(tokens), url_of(name))
    assert key == f"replicate/{pid}/{'.'.join(tokens)}-{name}"


def test_documented_examples():
    k = object_key
    assert k("replicate", "gm3q", "/0", "https://h/pbxt/t/out-0.png") == "replicate/gm3q/0-out-0.png"
    assert k("replicate", "gm3q", "", "https://h/pbxt/t/output.mp4") == "replicate/gm3q/output-output.mp4"
    assert k("replicate", "gm3q", "/images/1", "https://h/t/x.png") == "replicate/gm3q/images.1-x.png"
    # percent-decoded filename, unsafe characters -> "_"; an output path outside the
    # alphabet takes the hashed form
    assert k("r", "gm3q", "/0", "https://h/t/my%20file.png") == "r/gm3q/0-my_file.png"
    key = k("r", "gm3q", "/my file", "https://h/t/a.png")
    assert re.fullmatch(r"r/gm3q/my_file--[0-9a-f]{16}-a\.png", key), key
