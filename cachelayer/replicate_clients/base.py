"""The one interface cachelayer talks to Replicate through, whichever ``replicate`` client
is installed (1.x: :mod:`.v1`, 2.x: :mod:`.v2`).

An adapter sends one request per call and hands back Replicate's JSON as it came (a
``dict``): the clients' own ``Prediction`` models drop fields cachelayer needs
(``data_removed``, ``source``, ``deployment``) or, in 1.0.x, refuse ``status: "aborted"``.
:mod:`cachelayer.replicate_api` types that JSON into a
:class:`~cachelayer.prediction.Prediction` and holds the policy (create retries on 429/503,
the bounded wait, the same-origin rule of pagination links).

Errors are the two below, whatever the client raised, so nothing above this package
imports a client's exception classes.

Facts (shared/reference/replicate-api.md, replicate-openapi.json): the endpoints are
``POST /v1/predictions`` (by version), ``POST /v1/models/{owner}/{name}/predictions``
(official models), ``POST /v1/deployments/{owner}/{name}/predictions``, ``GET
/v1/predictions/{id}``, ``GET /v1/predictions`` (cursor pages), ``POST
/v1/predictions/{id}/cancel``, ``GET /v1/webhooks/default/secret``; ``Prefer: wait`` (up to
60 s) or ``wait=N`` (N in 1..60 s) holds a create until the prediction finishes or N passes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

__all__ = [
    "API_ORIGIN",
    "CreateRequest",
    "Origin",
    "ReplicateAdapter",
    "ReplicateHTTPError",
    "ReplicateUnreachableError",
    "api_origin",
]

#: Replicate's API origin when ``REPLICATE_BASE_URL`` is unset.
API_ORIGIN = "https://api.replicate.com"

#: ``(scheme, host, port)`` of the API: the only place the token is sent.
Origin = tuple[str, str | None, int | None]


def api_origin(base_url: str | None) -> str:
    """The API origin of a ``REPLICATE_BASE_URL`` in either client's convention: 1.x takes
    ``https://api.replicate.com``, 2.x ``https://api.replicate.com/v1``; both give
    ``https://api.replicate.com`` (no trailing ``/v1`` or slash)."""
    text = (base_url or API_ORIGIN).rstrip("/")
    return text[: -len("/v1")] if text.endswith("/v1") else text


def origin_of(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url``."""
    parts = urlsplit(url)
    return (parts.scheme, parts.hostname, parts.port)


class ReplicateHTTPError(Exception):
    """Replicate answered an error status. ``status``: the HTTP status; ``detail``: the
    problem-details ``detail`` (else ``title``, else the body); ``retry_after``: seconds
    from a ``Retry-After`` header, or ``None``."""

    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"Replicate answered {status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after

    @classmethod
    def of(cls, response: httpx.Response, body: Any) -> ReplicateHTTPError:
        """From an error ``response`` and its parsed JSON ``body`` (``None`` if not JSON)."""
        detail = problem_detail(body, response.text[:200] or response.reason_phrase)
        return cls(response.status_code, detail, retry_after_seconds(response.headers.get("retry-after")))


class ReplicateUnreachableError(Exception):
    """No answer from the API (connection refused, TLS failure, timeout)."""


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (the delay form; ``None`` if absent or a date)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def problem_detail(body: Any, fallback: str) -> str:
    """The ``detail`` (else ``title``) of an RFC 7807 problem-details body, else ``fallback``."""
    if isinstance(body, dict):
        for key in ("detail", "title"):
            if body.get(key):
                return str(body[key])
    return fallback


@dataclass(frozen=True)
class CreateRequest:
    """One create, as the documented API takes it.

    ``kind``: ``version`` (``POST /v1/predictions`` with ``version``), ``model`` (an
    official model's endpoint) or ``deployment``; ``name``: ``owner/name`` (``None`` for a
    bare version id); ``version``: the 64-hex id for ``kind="version"``. ``input``: the model
    input (file objects in it are encoded by the client: uploaded, or sent as ``data:``
    URIs per ``file_encoding_strategy``). ``wait``: ``True`` sends ``Prefer: wait`` (60 s),
    an int N (1..60) ``Prefer: wait=N``; the read timeout is then N + 5 s. ``webhook``,
    ``webhook_events_filter``, ``stream`` go into the body when set.
    """

    kind: Literal["version", "model", "deployment"]
    name: str | None
    version: str | None
    input: dict[str, Any] = field(default_factory=dict)
    wait: int | bool | None = None
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None
    stream: bool | None = None
    file_encoding_strategy: str | None = None

    @property
    def path(self) -> str:
        """The endpoint's path on the API origin (``/v1/...``)."""
        if self.kind == "deployment":
            return f"/v1/deployments/{self.name}/predictions"
        if self.kind == "model":
            return f"/v1/models/{self.name}/predictions"
        return "/v1/predictions"

    @property
    def prefer(self) -> str | None:
        """The ``Prefer`` header, or ``None`` when not waiting."""
        if not self.wait:
            return None
        return "wait" if self.wait is True else f"wait={int(self.wait)}"

    @property
    def read_timeout(self) -> float | None:
        """Seconds to wait for the answer of a held create (``Prefer`` window + 5 s)."""
        if not self.wait:
            return None
        return (60.0 if self.wait is True else float(self.wait)) + 5.0

    def body_fields(self) -> dict[str, Any]:
        """``webhook``, ``webhook_events_filter``, ``stream`` (those set) and, for a
        version, ``version``: the body beside ``input``."""
        body: dict[str, Any] = {}
        if self.kind == "version":
            body["version"] = str(self.version)
        for key in ("webhook", "webhook_events_filter", "stream"):
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        return body


class ReplicateAdapter(ABC):
    """What cachelayer needs from Replicate, one request per call (no retry of a create by
    the client: a retried ``POST`` is a second, billed prediction).

    Each method returns Replicate's JSON as sent and raises :class:`ReplicateHTTPError` for
    an error status or :class:`ReplicateUnreachableError` when no answer came. Attributes:
    ``origin`` (the API's ``(scheme, host, port)``), ``poll_interval`` (seconds between
    polls, the client's ``REPLICATE_POLL_INTERVAL``), ``client`` (the ``replicate`` client
    object behind it, for callers' own use).
    """

    origin: Origin
    poll_interval: float
    client: Any

    @abstractmethod
    def create(self, request: CreateRequest) -> dict[str, Any]:
        """Send one create (never retried here); the prediction JSON (201/202)."""

    @abstractmethod
    def get(self, prediction_id: str) -> dict[str, Any]:
        """``GET /v1/predictions/{id}`` (a read: the client may retry it on 429/503)."""

    @abstractmethod
    def list_page(self, path: str) -> dict[str, Any]:
        """``GET`` one listing page: ``path`` is ``/v1/predictions`` with its query
        (``created_after``, ``created_before``, ``source``, ``cursor``) on :attr:`origin`.
        Returns ``{"results": [...], "next": url-or-None, ...}``."""

    @abstractmethod
    def cancel(self, prediction_id: str) -> dict[str, Any]:
        """``POST /v1/predictions/{id}/cancel``; the prediction JSON."""

    @abstractmethod
    def webhook_secret(self) -> str:
        """The account's ``whsec_...`` signing secret (``GET /v1/webhooks/default/secret``)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connections this adapter opened."""
