"""HTTP responses shared by the routes: RFC 7807 problem details and JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Response

__all__ = ["ProblemError", "json_response", "problem"]


class ProblemError(Exception):
    """Raised by a route to answer ``status`` with a problem-details body."""

    def __init__(self, status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """An ``application/problem+json`` response ``{"title", "detail", "status"}``, as the API sends."""
    body = json.dumps({"title": title, "detail": detail, "status": status})
    return Response(body, status=status, content_type="application/problem+json", headers=headers)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``obj`` as an ``application/json`` response."""
    return Response(json.dumps(obj), status=status, content_type="application/json", headers=headers)
