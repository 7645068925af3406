"""The API token stays with the API (issue 17, item 5).

Finding: with ``CACHELAYER_ALLOWED_HOSTS=*`` an output URL on the API host
(``https://api.replicate.com/v1/predictions``) was fetched with the API token and stored, so
whoever controls a model's output got the account's prediction list copied into the bucket.
Now the token goes only to file-serving places (``replicate.delivery``,
``*.replicate.delivery`` and the API's documented download path
``/v1/files/{file_id}/download``, OpenAPI ``files.download``), and an output URL in the API's
namespace (``/v1/...``) on the configured API origin is refused with a reason on the file.

The simulator's base URL plays the API origin, as ``replicate_base_url`` points at it.
"""

from __future__ import annotations

import pytest
from hostile_net import HostileServer, send_response

from cachelayer.errors import DisallowedUrlError
from cachelayer.fetch import Fetcher
from cachelayer.testing.simulator import File

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_an_api_url_as_output_is_refused_and_never_requested(make_layer, replicate_simulator):
    sim = replicate_simulator
    leaks = [f"{sim.base_url}/v1/predictions?leak=1", f"{sim.base_url}/v1/account?leak=2"]
    sim.add_model("acme/leaky", outputs=[File(PNG), *leaks])
    layer = make_layer(allowed_hosts=f"*,{sim.host_port}")
    with pytest.raises(DisallowedUrlError):
        layer.run("acme/leaky")
    rows = {r.output_path: r for r in layer.catalog.files_of(sim.prediction_ids[0])}
    assert rows["/0"].status == "stored"
    for path in ("/1", "/2"):
        assert rows[path].status == "failed"
        assert "Replicate API" in rows[path].last_error and "/v1/files/" in rows[path].last_error
    assert not [r for r in sim.request_log if "leak" in r.query]
    listed = [
        r for r in sim.request_log if r.path in ("/v1/predictions", "/v1/account") and r.method == "GET"
    ]
    assert not listed


def test_the_documented_download_path_gets_the_token(make_layer, replicate_simulator):
    sim = replicate_simulator
    url = sim.add_file(File(PNG, filename="upload.png"))
    sim.add_model("acme/uploader", outputs=[url, File(PNG)])
    layer = make_layer()
    out = layer.run("acme/uploader")
    assert len(out) == 2
    rows = layer.catalog.files_of(sim.prediction_ids[0])
    assert [r.status for r in rows] == ["stored", "stored"]
    downloads = [r for r in sim.request_log if r.path.endswith("/download")]
    assert len(downloads) == 1 and downloads[0].status == 200
    assert downloads[0].headers.get("authorization") == f"Bearer {sim.token}"
    # The simulator's CDN shares the API origin but is outside the API's namespace: it is
    # fetched, without the token (only file-serving paths on the API origin get it).
    delivery = [r for r in sim.request_log if r.path.startswith("/delivery/")]
    assert len(delivery) == 1 and "authorization" not in delivery[0].headers


API_SPELLINGS = [
    "/v1/predictions",
    "/V1/predictions",
    "//v1/predictions",
    "/v1//predictions",
    "/x/../v1/predictions",
    "/v1/%70redictions",
    "/%76%31/predictions",
    "/v1%2Fpredictions",
    "/v1;x/predictions",
    "/v1",
    "/v1/files/abc",
    "/v1/files/abc/download/../../../predictions",
    "/v1/files/abc/download/x",
    "/v1/files/a%2Fb/download",
]


@pytest.mark.parametrize("path", API_SPELLINGS)
def test_every_spelling_of_an_api_path_is_refused_before_any_request(path):
    with HostileServer(lambda req, sock: send_response(sock, b"account data")) as api:
        fetcher = Fetcher(
            ("*", api.host_port),
            max_bytes=100,
            api_token="r8_secret",
            token_hosts=(api.host_port,),
            api_base_url=f"http://{api.host_port}",
        )
        with pytest.raises(DisallowedUrlError, match="Replicate API"):
            fetcher.open(api.url(path))
    assert api.seen == []


def test_a_redirect_into_the_api_is_refused_and_downloads_get_the_token_only_there():
    with HostileServer(lambda req, sock: send_response(sock, b"file")) as api:

        def redirect(req, sock):
            send_response(sock, status="302 Found", headers={"Location": api.url("/v1/predictions")})

        with HostileServer(redirect) as cdn:
            fetcher = Fetcher(
                (api.host_port, cdn.host_port),
                max_bytes=100,
                api_token="r8_secret",
                token_hosts=(api.host_port, cdn.host_port),
                api_base_url=f"http://{api.host_port}/v1",
            )
            with pytest.raises(DisallowedUrlError, match="Replicate API"):
                fetcher.open(cdn.url("/a.png"))
            with fetcher.open(api.url("/v1/files/f1/download?owner=a&expiry=1&signature=x")) as dl:
                assert dl.read() == b"file"
            with fetcher.open(api.url("/other/out.png")) as dl:
                assert dl.read() == b"file"
    assert [r.headers.get("authorization") for r in cdn.seen] == ["Bearer r8_secret"]
    assert [(r.path, r.headers.get("authorization")) for r in api.seen] == [
        ("/v1/files/f1/download?owner=a&expiry=1&signature=x", "Bearer r8_secret"),
        ("/other/out.png", None),
    ]
