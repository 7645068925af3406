"""The API token stays with the API (issue 17, item 5).

Finding: with ``CACHELAYER_ALLOWED_HOSTS=*`` an output URL on the API host
(``https://api.replicate.com/v1/predictions``) was fetched with the API token and stored, so
whoever controls a model's output got the account's prediction list copied into the bucket.
Now (:mod:`cachelayer.token_scope`) the token goes only to file-serving places
(``replicate.delivery``, ``*.replicate.delivery`` and the API's documented download path
``/v1/files/{file_id}/download``, OpenAPI ``files.download``), and every other output URL
on the API origin, in ``/v1`` or not, is refused with a reason on the file.

The simulator plays both origins as Replicate has them: the API on ``sim.base_url``
(``replicate_base_url`` points at it) and file delivery on ``sim.delivery_url``, another
port, marked as a file host (``token_hosts``) by the ``make_layer`` fixture as
``replicate.delivery`` is by default.
"""

from __future__ import annotations

import pytest
from hostile_net import HostileServer, send_response

from cachelayer.errors import ApiHostUrlError, DisallowedUrlError
from cachelayer.fetch import Fetcher
from cachelayer.testing.simulator import File
from cachelayer.token_scope import TokenScope
from cachelayer.urls import parse_source_url

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def test_an_api_url_as_output_is_refused_and_never_requested(make_layer, replicate_simulator):
    sim = replicate_simulator
    leaks = [f"{sim.base_url}/v1/predictions?leak=1", f"{sim.base_url}/v1/account?leak=2"]
    sim.add_model("acme/leaky", outputs=[File(PNG), *leaks])
    layer = make_layer(allowed_hosts=f"*,{sim.host_port},{sim.delivery_host_port}")
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


@pytest.mark.parametrize("allowed", ["*", "api"])
def test_any_path_on_the_api_origin_is_refused_with_a_reason_and_never_requested(
    make_layer, replicate_simulator, allowed
):
    """Outside ``/v1`` too: the API origin serves no outputs (the unchanged code fetched
    these, without the token, when the allow-list let the API host in)."""
    sim = replicate_simulator
    others = [
        f"{sim.base_url}/delivery/pbxt/abc/out-1.png",
        f"{sim.base_url}/anything/out-2.png",
        f"{sim.base_url}/",
    ]
    sim.add_model("acme/sneaky", outputs=[File(PNG), *others])
    hosts = "*" if allowed == "*" else sim.host_port
    layer = make_layer(allowed_hosts=f"{hosts},{sim.delivery_host_port}")
    with pytest.raises(DisallowedUrlError):
        layer.run("acme/sneaky")
    rows = {r.output_path: r for r in layer.catalog.files_of(sim.prediction_ids[0])}
    assert rows["/0"].status == "stored"
    for path in ("/1", "/2", "/3"):
        assert rows[path].status == "failed", path
        assert f"Replicate API's own host {sim.host_port}" in rows[path].last_error
    api_gets = [r for r in sim.request_log if r.origin == "api" and not r.path.startswith("/v1/")]
    assert api_gets == []


def test_the_token_reaches_the_delivery_origin_and_the_download_path_only(make_layer, replicate_simulator):
    sim = replicate_simulator
    with HostileServer(lambda req, sock: send_response(sock, PNG)) as elsewhere:
        url = sim.add_file(File(PNG, filename="upload.png"))
        sim.add_model("acme/uploader", outputs=[url, File(PNG), elsewhere.url("/x/out.png")])
        # the API host allowed for its download path (the allow-list still gates downloads)
        hosts = f"{sim.delivery_host_port},{sim.host_port},{elsewhere.host_port}"
        layer = make_layer(allowed_hosts=hosts)
        out = layer.run("acme/uploader")
    assert len(out) == 3
    assert [r.status for r in layer.catalog.files_of(sim.prediction_ids[0])] == ["stored"] * 3
    bearer = f"Bearer {sim.token}"
    downloads = [r for r in sim.request_log if r.path.endswith("/download")]
    assert [(r.origin, r.status, r.headers.get("authorization")) for r in downloads] == [("api", 200, bearer)]
    delivery = [r for r in sim.request_log if r.origin == "delivery"]
    assert [(r.path.startswith("/delivery/"), r.headers.get("authorization")) for r in delivery] == [
        (True, bearer)
    ]
    # the other allow-listed host is no file host: no token, whatever it serves
    assert [r.headers.get("authorization") for r in elsewhere.seen] == [None]


def test_without_marking_the_delivery_origin_it_gets_no_token(make_layer, replicate_simulator):
    """``token_hosts`` is what marks a file host; the default marks only Replicate's domains."""
    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=[File(PNG)])
    layer = make_layer(token_hosts=None)
    assert layer.settings.token_hosts == ("replicate.delivery", "*.replicate.delivery")
    layer.run("acme/painter")
    delivery = [r for r in sim.request_log if r.origin == "delivery"]
    assert len(delivery) == 1 and "authorization" not in delivery[0].headers
    sim.delivery_requires_token = True  # a CDN that enforces the header answers 401 then
    sim.add_model("acme/painter2", outputs=[File(PNG)])
    with pytest.raises(Exception, match="HTTP 401"):
        layer.run("acme/painter2")


def test_the_simulator_serves_files_only_from_its_delivery_origin(replicate_simulator):
    import httpx

    sim = replicate_simulator
    sim.add_model("acme/painter", outputs=[File(PNG)])
    pid = sim.seed_prediction("acme/painter", output=[File(PNG)])
    (url,) = sim.delivery_urls(pid)
    assert url.startswith(f"{sim.delivery_url}/delivery/pbxt/") and sim.delivery_url != sim.base_url
    assert httpx.get(url).content == PNG
    assert httpx.get(url.replace(sim.delivery_url, sim.base_url)).status_code == 404
    auth = {"Authorization": f"Bearer {sim.token}"}
    assert httpx.get(f"{sim.delivery_url}/v1/account", headers=auth).status_code == 404
    assert httpx.get(f"{sim.base_url}/v1/account", headers=auth).status_code == 200
    assert [r.origin for r in sim.request_log] == ["delivery", "api", "delivery", "api"]


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
    "/other/out.png",
    "/delivery/pbxt/t/out-0.png",
    "/",
]


@pytest.mark.parametrize("path", API_SPELLINGS)
def test_every_path_on_the_api_origin_is_refused_before_any_request(path):
    with HostileServer(lambda req, sock: send_response(sock, b"account data")) as api:
        fetcher = Fetcher(
            ("*", api.host_port),
            max_bytes=100,
            api_token="r8_secret",
            token_hosts=(api.host_port,),
            api_base_url=f"http://{api.host_port}",
        )
        with pytest.raises(ApiHostUrlError, match="Replicate API"):
            fetcher.open(api.url(path))
    assert api.seen == []


def test_a_redirect_into_the_api_is_refused_and_downloads_get_the_token_only_there():
    with HostileServer(lambda req, sock: send_response(sock, b"file")) as api:

        def redirect(req, sock):
            send_response(sock, status="302 Found", headers={"Location": api.url(req.path[len("/r") :])})

        with HostileServer(redirect) as cdn:
            fetcher = Fetcher(
                (api.host_port, cdn.host_port),
                max_bytes=100,
                api_token="r8_secret",
                token_hosts=(api.host_port, cdn.host_port),
                api_base_url=f"http://{api.host_port}/v1",
            )
            for target in ("/v1/predictions", "/other/out.png"):
                with pytest.raises(ApiHostUrlError, match="Replicate API"):
                    fetcher.open(cdn.url(f"/r{target}"))
            with fetcher.open(api.url("/v1/files/f1/download?owner=a&expiry=1&signature=x")) as dl:
                assert dl.read() == b"file"
            with pytest.raises(ApiHostUrlError):
                fetcher.open(api.url("/other/out.png"))
    assert [r.headers.get("authorization") for r in cdn.seen] == ["Bearer r8_secret"] * 2
    assert [(r.path, r.headers.get("authorization")) for r in api.seen] == [
        ("/v1/files/f1/download?owner=a&expiry=1&signature=x", "Bearer r8_secret"),
    ]


@pytest.mark.parametrize(
    ("url", "refused", "token"),
    [
        ("https://api.replicate.com/v1/files/abc/download?owner=a", False, True),
        ("http://api.replicate.com/v1/files/abc/download?owner=a", True, False),  # never in clear
        ("https://api.replicate.com:8443/v1/files/abc/download", False, False),  # another origin
        ("https://api.replicate.com/v1/predictions", True, False),
        ("https://api.replicate.com/pbxt/abc/out-0.png", True, False),
        ("http://api.replicate.com/pbxt/abc/out-0.png", True, False),
        ("https://API.Replicate.com/robots.txt", True, False),
        ("https://replicate.delivery/pbxt/abc/out-0.png", False, True),
        ("https://pbxt.replicate.delivery/abc/out-0.png", False, True),
        ("http://replicate.delivery/pbxt/abc/out-0.png", False, False),  # never in clear
        ("https://replicate.delivery.evil.com/out-0.png", False, False),
        ("https://cdn.example.com/out-0.png", False, False),
    ],
)
def test_the_rule_on_replicates_own_hosts(url, refused, token):
    scope = TokenScope()
    parsed = parse_source_url(url)
    assert (scope.refusal(parsed) is not None) == refused
    assert scope.sends_token(parsed) == token


def test_marking_the_api_host_as_a_file_host_does_not_open_it():
    scope = TokenScope("https://api.replicate.com/v1", ("api.replicate.com", "*.replicate.com"))
    parsed = parse_source_url("https://api.replicate.com/v1/predictions")
    assert isinstance(scope.refusal(parsed), ApiHostUrlError) and not scope.sends_token(parsed)
    assert scope.sends_token(parsed_cdn := parse_source_url("https://cdn.replicate.com/x.png"))
    assert scope.refusal(parsed_cdn) is None
