"""The baselines cachelayer's backfill is measured against, as code and as whole scripts.

* ``naive``: the seed's fixed code in a for loop over ``predictions.list`` pages, one file
  at a time (``requests.get(url).content``, then ``s3.put_object``).
* ``download``: the floor: the same listing, then every file downloaded and discarded by
  ``concurrency`` threads (a keep-alive ``requests.Session`` each).

``bench/backfill.py`` times :func:`naive` and :func:`download` inside its child process
(``naive``, ``download``: the loop alone, imports and clients built before the clock).
Run as a script, this file is the same code as a user's whole program, for the methods
``naive-script`` and ``download-script``, timed from launch to exit like ``cachelayer
backfill``::

    python bench/baselines.py naive|download SPEC.json     # prints {"files": n, "bytes": b}

It imports only the standard library and what the loop needs (replicate, boto3,
requests). SPEC is the JSON ``bench/backfill.py`` writes for its children: ``token``,
``base_url``, ``endpoint``, ``region``, ``bucket``, ``prefix``, ``concurrency``; S3
credentials come from the environment.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Loop = Callable[[], dict[str, Any]]


def naive(spec: dict[str, Any]) -> Loop:
    """Build the naive loop's clients (and check the bucket); return the loop, which
    returns ``{"files": n, "bytes": b}``."""
    import boto3
    import replicate
    import requests

    client = replicate.Client(api_token=spec["token"], base_url=spec["base_url"])
    s3 = boto3.client("s3", endpoint_url=spec["endpoint"], region_name=spec["region"])
    s3.head_bucket(Bucket=spec["bucket"])

    def loop() -> dict[str, Any]:
        files = size = 0
        for page in replicate.paginate(client.predictions.list):
            for prediction in page:
                for i, output_url in enumerate(prediction.output or []):
                    content = requests.get(output_url).content
                    key = f"{spec['prefix']}/{prediction.id}/{i}-{output_url.rsplit('/', 1)[-1]}"
                    s3.put_object(Bucket=spec["bucket"], Key=key, Body=content)
                    files, size = files + 1, size + len(content)
        return {"files": files, "bytes": size}

    return loop


def download(spec: dict[str, Any]) -> Loop:
    """Build the floor's API client; return the listing-and-download loop, which returns
    ``{"files": n, "bytes": b}``."""
    import replicate
    import requests

    client = replicate.Client(api_token=spec["token"], base_url=spec["base_url"])
    local = threading.local()

    def get(url: str) -> int:
        local.session = getattr(local, "session", None) or requests.Session()
        with local.session.get(url, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            return sum(len(chunk) for chunk in resp.iter_content(1 << 16))

    def loop() -> dict[str, Any]:
        pages = replicate.paginate(client.predictions.list)
        urls = [u for page in pages for p in page for u in p.output or []]
        with ThreadPoolExecutor(spec["concurrency"]) as pool:
            sizes = list(pool.map(get, urls))
        return {"files": len(sizes), "bytes": sum(sizes)}

    return loop


BASELINES: dict[str, Callable[[dict[str, Any]], Loop]] = {"naive": naive, "download": download}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in BASELINES:
        print(f"usage: baselines.py {'|'.join(BASELINES)} SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    print(json.dumps(BASELINES[argv[0]](spec)()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
