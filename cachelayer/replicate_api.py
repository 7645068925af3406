"""The calls cachelayer makes to Replicate, through the official ``replicate`` client.

Replicate errors become typed cachelayer errors: 401/403 -> :class:`ReplicateConfigError`,
404 on a model/version/deployment -> :class:`ModelNotFoundError`, 404 on a prediction ->
:class:`PredictionNotFoundError`, an unreachable API -> :class:`ReplicateConfigError`.
The client itself retries GET on 429/503/504 honouring ``Retry-After`` (its
``RetryTransport``; shared/reference/replicate-api.md).
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import replicate
from replicate.exceptions import ReplicateError

from cachelayer.errors import (
    CacheLayerError,
    ModelNotFoundError,
    PredictionFailedError,
    PredictionNotFoundError,
    ReplicateConfigError,
)

_VERSION_RE = re.compile(r"^[0-9a-f]{64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
TERMINAL = ("succeeded", "failed", "canceled")


def make_client(api_token: str | None, base_url: str | None, ca_bundle: str | None) -> replicate.Client:
    """A ``replicate.Client``; ``ca_bundle`` (a PEM path) verifies a private TLS server.

    The client builds its own httpx transport and ignores ``verify=``, so a transport
    with the bundle is passed instead.
    """
    kwargs: dict[str, Any] = {}
    if ca_bundle:
        kwargs["transport"] = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=ca_bundle))
    return replicate.Client(api_token=api_token, base_url=base_url, **kwargs)


def as_dict(prediction: Any) -> dict[str, Any]:
    """A prediction (``replicate.prediction.Prediction`` or dict) as Replicate's JSON dict."""
    if isinstance(prediction, dict):
        return dict(prediction)
    for attr in ("model_dump", "dict"):
        fn = getattr(prediction, attr, None)
        if callable(fn):
            try:
                return dict(fn())
            except TypeError:
                continue
    raise TypeError(f"not a prediction: {prediction!r}")


@contextmanager
def _errors(what: str, *, not_found: type[CacheLayerError]) -> Iterator[None]:
    try:
        yield
    except ReplicateError as exc:
        status = exc.status or 0
        detail = exc.detail or exc.title or str(exc)
        if status in (401, 403):
            raise ReplicateConfigError(
                f"Replicate refused the API token ({status}): set REPLICATE_API_TOKEN") from None
        if status == 404 or (status == 422 and not_found is ModelNotFoundError):
            raise not_found(f"{what}: {detail}") from None
        raise CacheLayerError(f"{what}: Replicate answered {status}: {detail}") from None
    except httpx.HTTPError as exc:
        raise ReplicateConfigError(f"cannot reach the Replicate API: {exc}") from None


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split a model reference into ``(kind, name, version)``.

    ``owner/name`` -> ``("model", "owner/name", None)``; ``owner/name:VERSION`` ->
    ``("version", "owner/name", VERSION)``; a bare 64-hex version id -> ``("version", None,
    id)``; ``deployments/owner/name`` -> ``("deployment", "owner/name", None)``. Raises
    :class:`ModelNotFoundError` for anything else.
    """
    ref = ref.strip()
    if _VERSION_RE.match(ref):
        return "version", None, ref
    if ref.startswith("deployments/"):
        name = ref.removeprefix("deployments/")
        if _NAME_RE.match(name):
            return "deployment", name, None
    name, sep, version = ref.partition(":")
    if _NAME_RE.match(name):
        if not sep:
            return "model", name, None
        if version:
            return "version", name, version
    raise ModelNotFoundError(
        f"bad model reference {ref!r}: expected owner/name, owner/name:version, "
        "a 64-character version id or deployments/owner/name"
    )


def create_and_wait(client: replicate.Client, ref: str, input: dict[str, Any],
                    **params: Any) -> dict[str, Any]:
    """Create a prediction as ``replicate.run`` would (``Prefer: wait``, then polling every
    ``client.poll_interval`` seconds, ``REPLICATE_POLL_INTERVAL``) and return its final JSON.

    Raises :class:`ModelNotFoundError`, :class:`ReplicateConfigError`.
    """
    kind, name, version = parse_ref(ref)
    params.setdefault("wait", True)
    with _errors(f"cannot run {ref}", not_found=ModelNotFoundError):
        if kind == "deployment":
            assert name
            pred = client.deployments.predictions.create(
                deployment=tuple(name.split("/", 1)), input=input, **params)  # type: ignore[arg-type]
        elif kind == "version":
            pred = client.predictions.create(version=version, input=input, **params)  # type: ignore[arg-type]
        else:
            assert name
            pred = client.models.predictions.create(
                model=tuple(name.split("/", 1)), input=input, **params)  # type: ignore[arg-type]
    return wait_for(client, pred.id)


def wait_for(client: replicate.Client, prediction_id: str) -> dict[str, Any]:
    """Poll ``GET /v1/predictions/{id}`` every ``client.poll_interval`` seconds until the
    prediction is ``succeeded``, ``failed`` or ``canceled``; returns its final JSON."""
    while True:
        data = get_prediction(client, prediction_id)
        if data.get("status") in TERMINAL:
            return data
        time.sleep(client.poll_interval)


def check_succeeded(data: dict[str, Any]) -> None:
    """Raise :class:`PredictionFailedError` unless ``data["status"]`` is ``succeeded``."""
    if data.get("status") != "succeeded":
        raise PredictionFailedError(data.get("id", "?"), data.get("status", "?"), data.get("error"))


def get_prediction(client: replicate.Client, prediction_id: str) -> dict[str, Any]:
    """``GET /v1/predictions/{id}`` as Replicate's JSON. Raises :class:`PredictionNotFoundError`.

    Read as raw JSON through the client's own transport (auth, retries): the client's
    ``Prediction`` model drops ``data_removed`` and ``source``, which expiry handling needs.
    """
    with _errors(f"cannot read prediction {prediction_id}", not_found=PredictionNotFoundError):
        return dict(client._request("GET", f"/v1/predictions/{prediction_id}").json())


def list_predictions(client: replicate.Client, cursor: str | None = None,
                     source: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of ``GET /v1/predictions`` (newest first, cursor pagination):
    ``(predictions as JSON, next cursor or None)``. ``source`` (``api``/``web``) filters
    server-side on the first page; later cursors carry it."""
    path = cursor or ("/v1/predictions" + (f"?source={source}" if source else ""))
    with _errors("cannot list predictions", not_found=PredictionNotFoundError):
        page = client._request("GET", path).json()
    return [dict(p) for p in page.get("results", [])], page.get("next")
