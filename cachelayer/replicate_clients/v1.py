"""The adapter for the ``replicate`` 1.x client (1.0.4 to the newest 1.0.x).

1.x parses answers into pydantic-v1 models that drop ``data_removed``, ``source`` and
``deployment`` and refuse ``status: "aborted"``, and it offers no public way to read the raw
JSON. So this adapter sends plain HTTP requests to Replicate's documented API through its
own ``httpx.Client`` (the token and base URL given, the same the 1.x client is built from;
1.x keeps its own private), wrapped in 1.x's public ``replicate.client.RetryTransport``:
reads are retried on 429/503/504 with backoff exactly as the 1.x client retries them, and
``POST`` never is. From the client it uses only public API: ``replicate.helpers.encode_json``
(file inputs uploaded through ``client.files`` or sent as ``data:`` URIs),
``client.webhooks.default.secret()`` and ``client.poll_interval``.
"""

from __future__ import annotations

import ssl
from functools import cached_property
from typing import Any

import httpx
from replicate.client import Client, RetryTransport
from replicate.exceptions import ReplicateError
from replicate.helpers import encode_json

from cachelayer.replicate_clients.base import (
    CreateRequest,
    ReplicateAdapter,
    ReplicateHTTPError,
    ReplicateUnreachableError,
    api_origin,
    origin_of,
)

__all__ = ["V1Adapter", "make_v1_client"]

#: The 1.x client's own timeouts (seconds), kept for the requests sent here.
_TIMEOUT = httpx.Timeout(5.0, read=30.0, write=30.0, connect=5.0, pool=10.0)


def _verify(ca_bundle: str | None) -> ssl.SSLContext | bool:
    return ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True


def make_v1_client(api_token: str | None, base_url: str | None, ca_bundle: str | None) -> Client:
    """A 1.x ``replicate.Client``; ``ca_bundle`` (a PEM path) verifies a private TLS server
    (1.x ignores ``verify=``, so a transport carrying the bundle is passed)."""
    kwargs: dict[str, Any] = {}
    if ca_bundle:
        kwargs["transport"] = httpx.HTTPTransport(verify=_verify(ca_bundle))
    return Client(api_token=api_token, base_url=api_origin(base_url), **kwargs)


class V1Adapter(ReplicateAdapter):
    """:class:`ReplicateAdapter` over the 1.x client (see the module docstring).

    ``client``: the 1.x ``replicate.Client`` (built from the other arguments if ``None``);
    ``api_token``, ``base_url`` (either client's convention, see
    :func:`~cachelayer.replicate_clients.base.api_origin`) and ``ca_bundle`` (PEM path) for
    the requests sent here.
    """

    def __init__(
        self,
        client: Client | None,
        *,
        api_token: str | None,
        base_url: str | None,
        ca_bundle: str | None = None,
    ) -> None:
        self.client = client if client is not None else make_v1_client(api_token, base_url, ca_bundle)
        self._base = api_origin(base_url)
        self.origin = origin_of(self._base)
        self._token, self._ca_bundle = api_token, ca_bundle

    @cached_property
    def _http(self) -> httpx.Client:
        """The ``httpx.Client`` of the plain requests (built on first use)."""
        headers = {"User-Agent": "cachelayer (replicate-python 1.x)"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        transport = RetryTransport(wrapped_transport=httpx.HTTPTransport(verify=_verify(self._ca_bundle)))
        return httpx.Client(base_url=self._base, headers=headers, timeout=_TIMEOUT, transport=transport)

    @property
    def poll_interval(self) -> float:  # type: ignore[override]
        return float(self.client.poll_interval)

    def _send(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ReplicateUnreachableError(str(exc) or type(exc).__name__) from None
        if resp.status_code >= 400:
            try:
                body: Any = resp.json()
            except ValueError:
                body = None
            raise ReplicateHTTPError.of(resp, body)
        return dict(resp.json())

    def create(self, request: CreateRequest) -> dict[str, Any]:
        body = {
            "input": encode_json(
                request.input,
                client=self.client,
                file_encoding_strategy=request.file_encoding_strategy,  # type: ignore[arg-type]
            ),
            **request.body_fields(),
        }
        extra: dict[str, Any] = {}
        if request.prefer:
            extra["headers"] = {"Prefer": request.prefer}
            extra["timeout"] = httpx.Timeout(5.0, read=request.read_timeout)
        return self._send("POST", request.path, json=body, **extra)

    def get(self, prediction_id: str) -> dict[str, Any]:
        return self._send("GET", f"/v1/predictions/{prediction_id}")

    def list_page(self, path: str) -> dict[str, Any]:
        return self._send("GET", path)

    def cancel(self, prediction_id: str) -> dict[str, Any]:
        return self._send("POST", f"/v1/predictions/{prediction_id}/cancel")

    def webhook_secret(self) -> str:
        try:
            return str(self.client.webhooks.default.secret().key)
        except ReplicateError as exc:
            raise ReplicateHTTPError(exc.status or 0, exc.detail or exc.title or str(exc)) from None
        except httpx.HTTPError as exc:
            raise ReplicateUnreachableError(str(exc) or type(exc).__name__) from None

    def close(self) -> None:
        if "_http" in self.__dict__:
            self._http.close()
