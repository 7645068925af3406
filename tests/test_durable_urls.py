"""Durable URLs rendered by the one policy (:mod:`cachelayer.durable_urls`) from what stores
can do (issue 20, item 1): the same URLs as before for each mode and backend, presigned URLs
that a real S3 server (moto) answers, one list of modes, and the gateway's choice between
redirect and proxy by capability, not class.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests

from cachelayer import gateway_urls
from cachelayer.config import URL_MODES, Settings
from cachelayer.durable_urls import UrlPolicy
from cachelayer.errors import ConfigError
from cachelayer.storage.local import LocalStore
from cachelayer.storage.s3 import S3Store


def render(store, key, mode, **options) -> str:
    return UrlPolicy(mode, **options).render(key, lambda: store)


def test_s3_urls(s3_store: S3Store) -> None:
    key = "outputs/run 1/a+b.png"
    s3_store.put(key, io.BytesIO(b"PNG bytes"), content_type="image/png")

    assert render(s3_store, key, "public", public_base_url="https://cdn.example.com/") == (
        "https://cdn.example.com/outputs/run%201/a%2Bb.png"
    )
    assert render(s3_store, key, "s3") == f"s3://{s3_store.bucket}/{key}"
    assert s3_store.object_uri(key) == f"s3://{s3_store.bucket}/{key}"
    assert s3_store.uri == f"s3://{s3_store.bucket}"

    presigned = render(s3_store, key, "presigned", presign_ttl=600)
    assert "X-Amz-Expires=600" in presigned and "X-Amz-Signature=" in presigned
    resp = requests.get(presigned, timeout=10)
    assert resp.status_code == 200
    assert resp.content == b"PNG bytes"
    assert resp.headers["Content-Type"] == "image/png"

    with pytest.raises(ConfigError):
        UrlPolicy("public")
    with pytest.raises(ConfigError):
        UrlPolicy("presigned", presign_ttl=7 * 24 * 3600 + 1)
    with pytest.raises(ConfigError):
        s3_store.presign(key, 7 * 24 * 3600 + 1)
    with pytest.raises(ConfigError):
        UrlPolicy("nonsense")  # type: ignore[arg-type]


def test_local_urls(local_store: LocalStore) -> None:
    key = "outputs/run 1/a+b.png"
    local_store.put(key, io.BytesIO(b"PNG bytes"))
    file_uri = (local_store.root / "outputs" / "run 1" / "a+b.png").as_uri()
    assert local_store.uri == local_store.root.as_uri()
    assert local_store.uri.startswith("file:///")
    assert render(local_store, key, "s3") == file_uri
    assert render(local_store, key, "presigned") == file_uri  # nothing to sign locally
    assert local_store.object_uri(key) == file_uri
    assert render(local_store, key, "public", public_base_url="https://files.example.com") == (
        "https://files.example.com/outputs/run%201/a%2Bb.png"
    )
    # the file URI names the bytes
    assert Path(unquote(urlsplit(file_uri).path)).read_bytes() == b"PNG bytes"


def test_gateway_urls_need_no_store(local_store: LocalStore) -> None:
    calls: list[int] = []

    def store() -> LocalStore:
        calls.append(1)
        return local_store

    policy = UrlPolicy("gateway", gateway_url="https://gw.example/", gateway_secret=lambda: b"k" * 16)
    url = policy.render("p/abc/0-out.png", store)
    assert url == gateway_urls.gateway_url("https://gw.example", b"k" * 16, "p/abc/0-out.png")
    assert calls == []
    with pytest.raises(ConfigError):
        UrlPolicy("gateway", gateway_secret=lambda: b"k")  # no gateway URL


def test_the_gateway_redirects_by_capability(s3_store: S3Store, local_store: LocalStore) -> None:
    redirecting = UrlPolicy("s3", presign_ttl=60)
    proxying = UrlPolicy("s3", gateway_proxy=True)
    assert (s3_store.can_presign, local_store.can_presign) == (True, False)
    assert redirecting.redirects(s3_store) and not redirecting.redirects(local_store)
    assert not proxying.redirects(s3_store)
    url = redirecting.redirect(s3_store, "k")
    assert url is not None and "X-Amz-Expires=60" in url
    assert redirecting.redirect(local_store, "k") is None
    assert proxying.redirect(s3_store, "k") is None
    assert local_store.presign("k", 60) is None


def test_one_list_of_url_modes_accepted_everywhere() -> None:
    """Settings and the policy take the same four modes (``--url-mode`` too: i19-cli)."""
    assert URL_MODES == ("public", "presigned", "s3", "gateway")
    for mode in URL_MODES:
        s = Settings(
            database_url="sqlite://",
            storage_url="/tmp/x",
            url_mode=mode,
            public_base_url="https://cdn.example",
            gateway_url="https://gw.example",
        )
        assert UrlPolicy.from_settings(s, lambda: b"secret").mode == mode
