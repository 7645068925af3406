"""The adapter for the ``replicate`` 2.x client (2.0.0 pre-releases, generated from the
OpenAPI schema), through its public API only.

Facts (shared/reference/replicate-api.md, "The 2.x Python client"; read in 2.0.0b4): the
client is ``replicate.Replicate(bearer_token=, base_url=)`` with ``base_url`` ending in
``/v1``; methods take keyword arguments only; ``with_raw_response`` gives the answer as
sent (``.json()``), so no field is lost to its models; errors are ``APIStatusError``
(``status_code``, ``response``, ``body``) and ``APIConnectionError``. It retries every
request, ``POST`` included, on 408/409/429/5xx with no idempotency key, so creates go
through ``client.with_options(max_retries=0)``: one ``POST`` per call, our own 429/503
policy (:meth:`cachelayer.replicate_api.ReplicateApi.create`) decides the rest. Reads keep
the client's retries.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import replicate

from cachelayer.replicate_clients.base import (
    CreateRequest,
    ReplicateAdapter,
    ReplicateHTTPError,
    ReplicateUnreachableError,
    api_origin,
    origin_of,
)

__all__ = ["V2Adapter", "make_v2_client"]


def make_v2_client(api_token: str | None, base_url: str | None, ca_bundle: str | None) -> Any:
    """A 2.x ``replicate.Replicate`` on ``{origin}/v1``; ``ca_bundle`` (a PEM path) verifies
    a private TLS server through the client's public ``DefaultHttpxClient(verify=)``."""
    kwargs: dict[str, Any] = {}
    if ca_bundle:
        ctx = ssl.create_default_context(cafile=ca_bundle)
        kwargs["http_client"] = replicate.DefaultHttpxClient(verify=ctx)  # type: ignore[attr-defined,unused-ignore]
    cls: Any = replicate.Replicate  # type: ignore[attr-defined,unused-ignore]
    return cls(bearer_token=api_token, base_url=api_origin(base_url) + "/v1", **kwargs)


def _split(name: str | None) -> tuple[str, str]:
    owner, _, model = str(name).partition("/")
    return owner, model


class V2Adapter(ReplicateAdapter):
    """:class:`ReplicateAdapter` over a 2.x ``replicate.Replicate`` client (see the module
    docstring). The API origin is the client's ``base_url`` without its ``/v1``.
    ``owns_client``: :meth:`close` closes the client (leave ``False`` for a caller's)."""

    def __init__(self, client: Any, *, owns_client: bool = False) -> None:
        self.client = client
        self._owns_client = owns_client
        self.origin = origin_of(api_origin(str(client.base_url)))
        self._once = client.with_options(max_retries=0)  # creates: one POST each

    @property
    def poll_interval(self) -> float:  # type: ignore[override]
        return float(self.client.poll_interval)

    @staticmethod
    def _call(fn: Any, **kwargs: Any) -> dict[str, Any]:
        """``fn(**kwargs)`` (a ``with_raw_response`` method) -> the JSON it answered."""
        try:
            return dict(fn(**kwargs).json())
        except replicate.APIStatusError as exc:  # type: ignore[attr-defined,unused-ignore]
            raise ReplicateHTTPError.of(exc.response, exc.body) from None
        except replicate.APIConnectionError as exc:  # type: ignore[attr-defined,unused-ignore]
            raise ReplicateUnreachableError(str(exc) or type(exc).__name__) from None

    def create(self, request: CreateRequest) -> dict[str, Any]:
        c = self._once
        kwargs: dict[str, Any] = {"input": request.input}
        for key in ("webhook", "webhook_events_filter", "stream"):
            if getattr(request, key) is not None:
                kwargs[key] = getattr(request, key)
        if request.file_encoding_strategy is not None:
            kwargs["file_encoding_strategy"] = request.file_encoding_strategy
        if request.prefer:
            kwargs["prefer"] = request.prefer
            kwargs["timeout"] = httpx.Timeout(5.0, read=request.read_timeout)
        if request.kind == "deployment":
            owner, name = _split(request.name)
            fn = c.deployments.predictions.with_raw_response.create
            return self._call(fn, deployment_owner=owner, deployment_name=name, **kwargs)
        if request.kind == "model":
            owner, name = _split(request.name)
            fn = c.models.predictions.with_raw_response.create
            return self._call(fn, model_owner=owner, model_name=name, **kwargs)
        return self._call(c.predictions.with_raw_response.create, version=str(request.version), **kwargs)

    def get(self, prediction_id: str) -> dict[str, Any]:
        return self._call(self.client.predictions.with_raw_response.get, prediction_id=prediction_id)

    def list_page(self, path: str) -> dict[str, Any]:
        # The link's query (cursor, created_after, created_before, source) is sent as it is.
        query = dict(parse_qsl(urlsplit(path).query, keep_blank_values=True))
        return self._call(self.client.predictions.with_raw_response.list, extra_query=query)

    def cancel(self, prediction_id: str) -> dict[str, Any]:
        return self._call(self._once.predictions.with_raw_response.cancel, prediction_id=prediction_id)

    def webhook_secret(self) -> str:
        return str(self._call(self.client.webhooks.default.secret.with_raw_response.get)["key"])

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
