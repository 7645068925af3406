"""Checks on what clients send, as strict as Replicate's published request schemas
(replicate-api.md: ``input`` required, ``additionalProperties: false``, ``webhook`` an
HTTPS URL, ``Prefer`` matching ``^wait(=([1-9]|[1-9][0-9]|60))?$``).

The schema names no status for a rejected request; the simulator answers 422 with
problem details, as Replicate does for an unknown version, and 400 only for a body that is
not JSON at all.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from werkzeug.wrappers import Request

from cachelayer.testing.simulator.clock import parse_rfc3339
from cachelayer.testing.simulator.problems import ProblemError
from cachelayer.testing.simulator.webhooks import DEFAULT_WEBHOOK_EVENTS, WEBHOOK_EVENTS

__all__ = [
    "MAX_WAIT",
    "CreateRequest",
    "ListQuery",
    "parse_cancel_after",
    "parse_create",
    "parse_list_query",
    "parse_prefer_wait",
]

MAX_WAIT = 60  # seconds; Replicate holds ``Prefer: wait`` requests at most this long
_PREFER = re.compile(r"^wait(=([1-9]|[1-9][0-9]|60))?$")  # the OpenAPI schema's pattern
_CANCEL_AFTER = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
MIN_CANCEL_AFTER = 5.0  # seconds, "The minimum allowed duration is 5 seconds"


def _invalid(detail: str) -> ProblemError:
    return ProblemError(422, "Unprocessable Entity", detail)


@dataclass(frozen=True)
class CreateRequest:
    """A validated create body."""

    input: dict[str, Any]
    version: str | None
    webhook: str | None
    webhook_events: tuple[str, ...]


def parse_create(request: Request, *, with_version: bool, allow_http_webhooks: bool) -> CreateRequest:
    """The body of ``POST /v1/predictions`` (``with_version``) or of a model or deployment
    create, checked against ``schemas_version_prediction_request`` /
    ``schemas_prediction_request``. Raises :class:`ProblemError` (400 not JSON, 422 invalid)."""
    raw = request.get_data(cache=False)
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        raise ProblemError(400, "Invalid JSON", "The request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object")
    allowed = {"input", "stream", "webhook", "webhook_events_filter"} | (
        {"version"} if with_version else set()
    )
    extra = sorted(set(body) - allowed)
    if extra:
        raise _invalid(f"Additional properties are not allowed: {', '.join(extra)}")
    version = body.get("version")
    if with_version and (not isinstance(version, str) or not version):
        raise _invalid("version is required")
    if "input" not in body:
        raise _invalid("input is required")
    inp = body["input"]
    if not isinstance(inp, dict):
        raise _invalid("input must be a JSON object")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream must be a boolean")
    webhook = body.get("webhook")
    if webhook is not None:
        parts = urlsplit(webhook) if isinstance(webhook, str) else None
        schemes = ("https", "http") if allow_http_webhooks else ("https",)
        if parts is None or parts.scheme not in schemes or not parts.netloc:
            raise _invalid(f"webhook must be an HTTPS URL, got {webhook!r}")
    events = body.get("webhook_events_filter")
    if events is not None and (not isinstance(events, list) or any(e not in WEBHOOK_EVENTS for e in events)):
        raise _invalid(f"webhook_events_filter must be a list drawn from {list(WEBHOOK_EVENTS)}")
    return CreateRequest(
        input=inp,
        version=version if with_version else None,
        webhook=webhook,
        webhook_events=tuple(dict.fromkeys(events)) if events else DEFAULT_WEBHOOK_EVENTS,
    )


def parse_prefer_wait(header: str | None) -> int | None:
    """Seconds to hold a create for ``Prefer: wait`` (60) or ``wait=N`` (1..60); None
    without the header; 422 problem for any other value. (The schema's pattern would let
    61..99 through; its text says "between 1 and 60", which is what is enforced.)"""
    if header is None:
        return None
    match = _PREFER.match(header.strip())
    if match is None or (match.group(2) and int(match.group(2)) > MAX_WAIT):
        raise _invalid(f"Prefer must be 'wait' or 'wait=N' with N from 1 to 60, got {header!r}")
    return int(match.group(2)) if match.group(2) else MAX_WAIT


def parse_cancel_after(header: str | None) -> float | None:
    """Seconds of a ``Cancel-After`` header (``30``, ``30s``, ``5m``, ``1h30m45s``); None
    without it; 422 problem when malformed or under 5 seconds."""
    if header is None:
        return None
    value = header.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        match = _CANCEL_AFTER.match(value)
        if not value or match is None:
            raise _invalid(f"Cancel-After must be a duration like 30s, 5m or 1h30m, got {header!r}")
        h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = float(h * 3600 + m * 60 + s)
    if seconds < MIN_CANCEL_AFTER:
        raise _invalid(f"Cancel-After must be at least {MIN_CANCEL_AFTER:g} seconds, got {header!r}")
    return seconds


@dataclass(frozen=True)
class ListQuery:
    """The filters of ``GET /v1/predictions``: times are Unix seconds; ``params`` repeats
    them as given, for the ``next``/``previous`` links."""

    source: str | None
    created_after: float | None
    created_before: float | None
    params: dict[str, str]


def parse_list_query(request: Request, *, accept_source_api: bool) -> ListQuery:
    """``source`` (only ``web``, as the API: "Currently only web is supported"; ``api``
    too when ``accept_source_api``), ``created_after`` and ``created_before`` (RFC 3339).
    422 problem for anything else."""
    source = request.args.get("source")
    allowed = ("web", "api") if accept_source_api else ("web",)
    if source is not None and source not in allowed:
        raise _invalid(
            f"source must be one of {list(allowed)} (currently only web is supported), got {source!r}"
        )
    times: dict[str, float | None] = {}
    params: dict[str, str] = {"source": source} if source else {}
    for name in ("created_after", "created_before"):
        value = request.args.get(name)
        try:
            times[name] = parse_rfc3339(value) if value is not None else None
        except ValueError:
            raise _invalid(f"{name} must be an RFC 3339 date-time, got {value!r}") from None
        if value is not None:
            params[name] = value
    return ListQuery(source, times["created_after"], times["created_before"], params)
