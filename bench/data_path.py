"""Client CPU of one small file's data path, candidates side by side (issue 21, item 1).

Before choosing a different data path, each candidate is measured on the same file, the same
servers and in the same run: the CPU this process spends (``time.process_time``, user +
system of every thread of the bench process) per 100 kB download and per 100 kB upload,
with the servers in processes of their own so their CPU is not counted.

Downloads (a keep-alive HTTP/1.1 file server in a child process; the body hashed with
SHA-256 in every candidate, as cachelayer verifies it):

* ``library``: ``cachelayer.fetch.Fetcher.open(url)`` read to the end (allow-list checked at
  connect time, retries, deadline and stall rules, the hash on the way): today's path;
* ``requests``: ``requests.Session().get(url, stream=True)`` + ``iter_content``;
* ``urllib3``: ``urllib3.PoolManager().request("GET", url, preload_content=False)`` +
  ``stream``: what a leaner path under the same connect-time guard would cost at least;
* ``obstore``: ``obstore.get(HTTPStore, path).bytes()`` (Rust, releases the GIL).

Uploads (moto's S3 server in a child process; every candidate sends Content-Type,
Cache-Control, the three user metadata entries cachelayer writes and a SHA-256 checksum):

* ``library``: ``cachelayer.storage.s3.S3Store.put`` (today's path: one ``PutObject`` with
  ``ChecksumSHA256``);
* ``boto3``: ``client.put_object(...)`` with the same headers and ``ChecksumSHA256``;
* ``obstore``: ``obstore.put`` on an ``obstore.store.S3Store`` built with
  ``checksum_algorithm="sha256"`` and the same attributes (read back with ``head_object``
  once, to check that the metadata arrived).

Usage::

    python bench/data_path.py                    # 300 files of 100 kB, 5 rounds
    python bench/data_path.py --files 50 --rounds 1 --json   # the suite's small version

Rounds interleave the candidates (order reversed every other round); the table shows the
median and best CPU ms per file over the rounds, and the ratio to today's path. obstore is
optional (``pip install obstore``); without it its rows are skipped.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import header, md_table  # noqa: E402

FILE_SERVER = r"""
import http.server, os, sys
root = sys.argv[1]
class H(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def __init__(self, *a, **k):
        super().__init__(*a, directory=root, **k)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def file_server(root: str) -> tuple[subprocess.Popen[str], int]:
    """A keep-alive HTTP/1.1 static file server over ``root`` in a child process."""
    proc = subprocess.Popen([sys.executable, "-c", FILE_SERVER, root], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def cpu_per_call(fn: Callable[[int], None], n: int) -> tuple[float, float]:
    """Run ``fn(i)`` for ``i`` in ``range(n)``; CPU ms and wall ms per call."""
    fn(-1)  # warm-up: connections and clients built before the clock
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.process_time() - c0) * 1000 / n, (time.perf_counter() - w0) * 1000 / n


def download_candidates(url: str, host_port: str) -> dict[str, Callable[[int], None]]:
    import requests
    import urllib3

    from cachelayer.fetch import Fetcher

    expected = None

    def check(digest: str) -> None:
        nonlocal expected
        if expected is None:
            expected = digest
        assert digest == expected, "bodies differ between candidates"

    fetcher = Fetcher([host_port], max_bytes=1 << 30)

    def library(_: int) -> None:
        with fetcher.open(url) as dl:
            while dl.read(1 << 16):
                pass
            check(dl.sha256)

    session = requests.Session()
    session.trust_env = False

    def with_requests(_: int) -> None:
        h = hashlib.sha256()
        with session.get(url, stream=True) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 16):
                h.update(chunk)
        check(h.hexdigest())

    pool = urllib3.PoolManager(maxsize=4)

    def with_urllib3(_: int) -> None:
        h = hashlib.sha256()
        r = pool.request("GET", url, preload_content=False)
        for chunk in r.stream(1 << 16):
            h.update(chunk)
        r.release_conn()
        check(h.hexdigest())

    found: dict[str, Callable[[int], None]] = {
        "library": library,
        "requests": with_requests,
        "urllib3": with_urllib3,
    }
    try:
        import obstore
        from obstore.store import HTTPStore
    except ImportError:
        return found
    base, _, name = url.rpartition("/")
    store = HTTPStore.from_url(base, client_options={"allow_http": True})

    def with_obstore(_: int) -> None:
        data = obstore.get(store, name).bytes()
        check(hashlib.sha256(memoryview(data)).hexdigest())

    found["obstore"] = with_obstore
    return found


def upload_candidates(moto: Any, bucket: str, body: bytes) -> dict[str, Callable[[int], None]]:
    from cachelayer.storage.s3 import S3Store

    meta = {"prediction-id": "p0", "output-path": "output", "sha256": hashlib.sha256(body).hexdigest()}
    ctype, cache = "image/png", "public, max-age=31536000, immutable"
    store = S3Store(
        bucket,
        prefix="library",
        endpoint_url=moto.endpoint_url,
        region=moto.region,
        addressing_style="path",
        access_key_id=moto.access_key_id,
        secret_access_key=moto.secret_access_key,
    )

    def library(i: int) -> None:
        store.put(f"{i}.png", io.BytesIO(body), content_type=ctype, metadata=dict(meta), cache_control=cache)

    client = moto.client()

    def with_boto3(i: int) -> None:
        digest = hashlib.sha256(body).digest()
        client.put_object(
            Bucket=bucket,
            Key=f"boto3/{i}.png",
            Body=body,
            ContentType=ctype,
            CacheControl=cache,
            Metadata={**meta, "sha256": digest.hex()},
            ChecksumSHA256=base64.b64encode(digest).decode(),
        )

    found: dict[str, Callable[[int], None]] = {"library": library, "boto3": with_boto3}
    try:
        import obstore
        from obstore.store import S3Store as ObjStore
    except ImportError:
        return found
    obj = ObjStore(
        bucket,
        endpoint=moto.endpoint_url,
        region=moto.region,
        access_key_id=moto.access_key_id,
        secret_access_key=moto.secret_access_key,
        virtual_hosted_style_request=False,
        checksum_algorithm="sha256",
        client_options={"allow_http": True},
    )

    def with_obstore(i: int) -> None:
        digest = hashlib.sha256(body).hexdigest()
        attrs: dict[str, str] = {"Content-Type": ctype, "Cache-Control": cache, **meta, "sha256": digest}
        obstore.put(obj, f"obstore/{i}.png", body, attributes=attrs, use_multipart=False)  # type: ignore[arg-type]

    found["obstore"] = with_obstore
    return found


def measure(
    cands: dict[str, Callable[[int], None]], n: int, rounds: int
) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in cands}
    names = list(cands)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(cpu_per_call(cands[name], n))
    return out


def rows(results: dict[str, list[tuple[float, float]]]) -> list[list[str]]:
    base = statistics.median(c for c, _ in results["library"])
    table = []
    for name, runs in results.items():
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        med = statistics.median(cpu)
        table.append(
            [
                name,
                f"{med:.3f} / {min(cpu):.3f}",
                f"{statistics.median(wall):.3f}",
                f"{med / base:.2f}x",
            ]
        )
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=100_000, help="bytes per file")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from cachelayer.testing.s3server import MotoS3Server

    body = os.urandom(args.size)
    with tempfile.TemporaryDirectory() as tmp, MotoS3Server() as moto:
        Path(tmp, "out-0.png").write_bytes(body)
        proc, port = file_server(tmp)
        try:
            bucket = "bench-data-path"
            moto.create_bucket(bucket)
            down = measure(
                download_candidates(f"http://127.0.0.1:{port}/out-0.png", f"127.0.0.1:{port}"),
                args.files,
                args.rounds,
            )
            up = measure(upload_candidates(moto, bucket, body), args.files, args.rounds)
            if "obstore" in up:
                head = moto.client().head_object(Bucket=bucket, Key="obstore/0.png")
                assert head["Metadata"].get("prediction-id") == "p0", head["Metadata"]
                assert head["ContentType"] == "image/png"
        finally:
            proc.terminate()
            proc.wait()
    result = {"download": down, "upload": up}
    if args.json:
        print(json.dumps(result))
        return result
    print("\n".join(header("bench/data_path.py", sys.argv[1:])))
    cols = ["candidate", "CPU ms per file (median / best)", "wall ms per file (median)", "CPU vs library"]
    print(f"\n### Download, {args.size} bytes, SHA-256, {args.files} files x {args.rounds} rounds\n")
    print(md_table(cols, rows(down)))
    what = f"{args.size} bytes, metadata + ChecksumSHA256, {args.files} files x {args.rounds} rounds"
    print(f"\n### Upload, {what}\n")
    print(md_table(cols, rows(up)))
    return result


if __name__ == "__main__":
    main()
