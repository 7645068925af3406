"""``cachelayer demo``: the whole story offline, on the embedded defaults.

It lives in :mod:`cachelayer.testing` because it runs the Replicate simulator; the CLI
imports it lazily, so the library itself never imports test code.

Starts the Replicate simulator (HTTPS, so the real client wraps files in ``FileOutput`` as
in production), runs a model that paints several PNG images through ``CacheLayer.run``,
runs the same model the naive way (keep the URLs, use them later), waits until the source
URLs expire and Replicate removes the data, then shows the naive source URLs failing with
:class:`~cachelayer.errors.ExpiredDownloadUrlError` while the durable URLs still serve
byte-identical content (SHA-256 of both shown). Everything lives in a temporary data
directory laid out like the defaults (``catalog.db`` + ``objects/``), removed at the end.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import requests

from cachelayer.errors import CacheLayerError, ExpiredDownloadUrlError
from cachelayer.testing.simulator.examples import png

__all__ = ["png", "read_durable", "run_demo"]


def read_durable(url: str) -> bytes:
    """Bytes behind a durable URL (``file://`` for the local store, else HTTP GET)."""
    if url.startswith("file://"):
        return Path(url2pathname(urlsplit(url).path)).read_bytes()
    resp = requests.get(url, timeout=30)
    resp.raise_for_status()
    return resp.content


def _tls_available() -> bool:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(
    *, images: int = 3, url_ttl: float = 3.0, keep: bool = False, echo: Callable[[str], Any] = print
) -> None:
    """Run the demo, printing what happens through ``echo``. Raises
    :class:`~cachelayer.errors.CacheLayerError` if any step does not behave as promised."""
    from cachelayer.layer import CacheLayer
    from cachelayer.testing.simulator import File, ReplicateSimulator

    home = Path(tempfile.mkdtemp(prefix="cachelayer-demo-"))
    contents = {i: png(64, 64, i) for i in range(images)}
    try:
        # HTTPS (a throwaway CA) when cryptography is installed, plain HTTP otherwise: the
        # demo runs on cachelayer[demo] alone.
        https = _tls_available()
        with ReplicateSimulator(https=https, url_ttl=url_ttl, data_removal_after=url_ttl) as sim:
            sim.add_model(
                "demo/painter",
                outputs=lambda inp: [
                    File(contents[i], content_type="image/png", filename=f"out-{i}.png")
                    for i in range(int(inp.get("num_outputs", images)))
                ],
            )
            scheme = f"HTTPS, self-signed CA {sim.ca_file}" if https else "HTTP"
            echo(f"simulator   {sim.base_url} ({scheme})")
            echo(f"catalog     sqlite:///{home}/catalog.db")
            echo(f"storage     {(home / 'objects').as_uri()}")
            layer = CacheLayer(
                database_url=f"sqlite:///{home}/catalog.db",
                storage_url=(home / "objects").as_uri(),
                replicate_api_token=sim.token,
                replicate_base_url=sim.base_url,
                ca_bundle=sim.ca_file,
                # files come from the simulator's delivery origin, its replicate.delivery
                allowed_hosts=sim.delivery_host_port,
                token_hosts=(sim.delivery_host_port,),
            )
            with layer:
                result = layer.run_result("demo/painter", input={"prompt": "a cat", "num_outputs": images})
                durable = layer.output_of(result)
                echo(f"\n1. layer.run('demo/painter') stored {len(durable)} images:")
                # The naive app: keep Replicate's URLs and use them later.
                # (created through the Replicate adapter: nothing recorded, nothing copied)
                dog = {"prompt": "a dog", "num_outputs": images}
                naive = layer.api.create("demo/painter", dog, wait=True)
                sources = [f.record for f in result.files]
                for f, url in zip(sources, durable):
                    echo(f"   {f.source_url}\n     -> {url}")
                echo(f"\n2. waiting {url_ttl:.0f} s for the source URLs to expire ...")
                time.sleep(url_ttl + 0.5)
                echo("\n3. the source URLs now:")
                for f in sources:
                    status = requests.get(f.source_url, verify=sim.ca_file, timeout=10).status_code
                    echo(f"   GET {f.source_url} -> HTTP {status}")
                try:
                    layer.persist(naive.id)
                except ExpiredDownloadUrlError as exc:
                    echo(f"   naive app, prediction {naive.id}: ExpiredDownloadUrlError: {exc}")
                else:
                    raise CacheLayerError("demo: expected the naive prediction to have expired")
                echo("\n4. the durable URLs still serve the same bytes:")
                for i, (f, url) in enumerate(zip(sources, durable)):
                    original = hashlib.sha256(contents[i]).hexdigest()
                    now = hashlib.sha256(read_durable(url)).hexdigest()
                    mark = "identical" if original == now == f.sha256 else "DIFFERENT"
                    echo(f"   {f.output_path}: source sha256 {original}\n      durable sha256 {now}  {mark}")
                    if mark != "identical":
                        raise CacheLayerError(f"demo: durable copy of {f.output_path} differs")
        echo("\ndemo ok: every output survived its source URL.")
    finally:
        if keep:
            echo(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
