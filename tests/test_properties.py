"""Property-based tests (hypothesis) for the URL check, key derivation and the output walker.

* URL check: for any string, only the documented errors escape; a URL it accepts is one
  whose host and port are exactly what ``requests`` (stdlib ``urlparse`` on the prepared URL,
  which picks the connection pool) and ``urllib3.util.parse_url`` will connect to.
* On real sockets: with only ``127.0.0.1:<port>`` allowed, URLs built from hostile pieces
  are connected to that address or nowhere (connect audit).
* Keys: never raise for strings (but a too-long prefix), fit 255/200/1,024 bytes, never
  escape the prediction's folder, are deterministic.
* Walker: every file found is at its path (``lookup``), ``replace_files`` keeps the rest.
"""

from __future__ import annotations

import posixpath
from urllib.parse import urlparse

import pytest
import requests
from hostile_net import HostileServer, connect_audit, send_response
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from cachelayer.errors import DisallowedUrlError, DownloadError, SourceGoneError
from cachelayer.fetch import Fetcher
from cachelayer.keys import MAX_KEY_BYTES, MAX_LAST_SEGMENT_BYTES, MAX_SEGMENT_BYTES, object_key
from cachelayer.outputs import find_files, lookup, replace_files
from cachelayer.urls import AddressPolicy, canonical_host, parse_source_url

HOSTS = [
    "replicate.delivery",
    "pbxt.replicate.delivery",
    "REPLICATE.delivery",
    "127.0.0.1",
    "127.0.0.2",
    "localhost",
    "169.254.169.254",
    "2852039166",
    "0xa9fea9fe",
    "0251.0376.0251.0376",
    "169.254.43518",
    "[::1]",
    "[::ffff:169.254.169.254]",
    "[::ffff:a9fe:a9fe]",
    "[fd00:ec2::254]",
    "evil.com",
    "8.8.8.8",
    "ｒeplicate.delivery",
    "xn--nxasmq6b.com",
]
TRICKS = [
    "",
    "@",
    "\\@",
    "\\",
    "%40",
    "%5C@",
    "＠",
    "＃",
    "#",
    "?",
    "/",
    ":",
    "[",
    "]",
    " ",
    "\t",
    "\x00",
    ".",
    "%2e",
]
PORTS = ["", ":80", ":443", ":8080", ":0", ":99999", ":abc", ":", ":65535", ":１"]
SCHEMES = ["http", "https", "HTTP", "hTtPs", "ftp", "data", "file", ""]
SEPS = ["://", ":/", ":\\\\", ":///", "://\\", ":"]


@st.composite
def hostile_urls(draw: st.DrawFn, hosts: list[str] = HOSTS, ports: list[str] = PORTS) -> str:
    # weighted towards well-formed http URLs so that many are accepted and fetched
    scheme = draw(st.sampled_from(["http"] * 8 + SCHEMES))
    sep = draw(st.sampled_from(["://"] * 8 + SEPS))
    parts = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        parts.append(draw(st.sampled_from(hosts)) + draw(st.sampled_from(ports)))
        parts.append(draw(st.sampled_from([""] * len(TRICKS) + TRICKS)))
    path = draw(st.text(st.sampled_from("/abc.-_%?#@\\:[] ＃é\u3000"), max_size=12))
    return scheme + sep + "".join(parts) + path


any_url = st.one_of(
    hostile_urls(), st.text(max_size=60), st.from_regex(r"https?://[ -~]{0,40}", fullmatch=True)
)

POLICY = AddressPolicy(("replicate.delivery", "*.replicate.delivery", "127.0.0.1:8080", "*"))


def requests_target(prepared: str) -> tuple[str, str, int | None]:
    std = urlparse(prepared)
    return std.scheme, std.hostname or "", std.port


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_url)
def test_url_check_raises_only_documented_errors_and_agrees_with_requests(url):
    try:
        parsed = parse_source_url(url)
        POLICY.check(parsed)
    except (DisallowedUrlError, SourceGoneError) as exc:
        assert isinstance(exc, DownloadError) and "\n" not in str(exc)
        return
    # accepted: what requests would connect to is exactly what was checked
    prep = requests.Request("GET", url).prepare()
    assert prep.url == parsed.prepared
    scheme, host, port = requests_target(prep.url)
    canon, _ = canonical_host(f"[{host}]" if ":" in host else host)
    assert (scheme, canon, port or {"http": 80, "https": 443}[scheme]) == (
        parsed.scheme,
        parsed.host,
        parsed.port,
    )
    u3 = parse_url(prep.url)
    assert canonical_host(u3.host or "")[0] == parsed.host
    assert "@" not in (u3.auth or "") and u3.auth is None
    assert POLICY.match(parsed.host, parsed.port) is not None


@pytest.fixture(scope="module")
def two_servers():
    with (
        HostileServer(lambda req, sock: send_response(sock, b"ok")) as allowed,
        HostileServer(lambda req, sock: send_response(sock, b"NO")) as other,
    ):
        yield allowed, other


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_accepted_urls_connect_only_to_the_checked_address(two_servers, data):
    allowed, other = two_servers
    hosts = [allowed.host_port, other.host_port, "127.0.0.2", "169.254.169.254", "replicate.delivery"]
    tail = st.tuples(st.sampled_from(TRICKS), st.sampled_from(hosts + [""]), st.text("/ab.?#@%:", max_size=8))
    url = data.draw(
        st.one_of(
            hostile_urls(hosts=hosts, ports=["", f":{other.port}", f":{allowed.port}", ":80"]),
            tail.map(lambda t: f"http://{allowed.host_port}{t[0]}{t[1]}{t[2]}"),
            tail.map(lambda t: f"http://{allowed.host_port}/{t[0]}{t[1]}{t[2]}"),
        )
    )
    fetcher = Fetcher((allowed.host_port,), max_bytes=100, retries=0, timeout=(1, 2))
    with connect_audit() as attempts:
        try:
            with fetcher.open(url) as dl:
                body = dl.read()
        except DownloadError:
            body = None
    fetcher.close()
    event("fetched" if body is not None else "refused")
    assert set(attempts) <= {allowed.address}
    assert other.seen == []
    if body is not None:
        assert body == b"ok"


text = st.text(max_size=40)
pointer = st.lists(st.text(max_size=12), max_size=8).map(lambda ts: "".join("/" + t for t in ts))


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.text(st.characters(blacklist_characters="/"), max_size=30).map(
        lambda p: "pre/" + p if p else "pre"
    ),
    pid=st.one_of(text, st.text(min_size=200, max_size=700)),
    path=st.one_of(pointer, text, st.text(min_size=300, max_size=3000).map(lambda t: "/" + t)),
    url=st.one_of(any_url, text, st.text(max_size=400).map(lambda t: "https://h/x/" + t)),
)
def test_keys_fit_never_escape_and_are_deterministic(prefix, pid, path, url):
    key = object_key(prefix, pid, path, url)
    assert key == object_key(prefix, pid, path, url)
    segments = key.split("/")
    head = [p for p in prefix.strip("/").split("/") if p]
    assert segments[: len(head)] == head and len(segments) == len(head) + 2
    assert len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES
    assert all(len(s.encode("utf-8", "surrogatepass")) <= MAX_SEGMENT_BYTES for s in segments[len(head) :])
    assert len(segments[-1]) <= MAX_LAST_SEGMENT_BYTES and segments[-1].isascii() and segments[-2].isascii()
    assert all(s not in ("", ".", "..") for s in segments[len(head) :])
    assert "\x00" not in key[len(prefix) :] and "\\" not in key[len(prefix) :]
    assert posixpath.normpath("/".join(segments[len(head) :])) == "/".join(segments[len(head) :])


file_strings = st.one_of(
    st.sampled_from(["https://replicate.delivery/p/a/out.png", "data:,x", "http://h/x y", "s3://b/k"]),
    any_url,
)
leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), text, file_strings)
json_values = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_walker_finds_each_file_at_its_path_and_keeps_everything_else(output):
    files = find_files(output)
    for f in files:
        assert lookup(output, f.path) == f.url
    marked = replace_files(output, lambda path, url: {"durable": path})
    assert [f.path for f in find_files(marked)] == []
    for f in files:
        assert lookup(marked, f.path) == {"durable": f.path}
    assert replace_files(output, lambda path, url: url) == output


def test_walker_survives_deep_nesting_and_refuses_cycles():
    from cachelayer.errors import MalformedOutputError

    deep: list = ["https://replicate.delivery/p/a/out.png"]
    for _ in range(20_000):
        deep = [deep]
    (ref,) = find_files(deep)
    assert ref.path == "/0" * 20_000 + "/0" and lookup(deep, ref.path) == ref.url
    loop: list = []
    loop.append(loop)
    try:
        find_files(loop)
    except MalformedOutputError:
        pass
    else:
        raise AssertionError("cycle not detected")
