"""The HTTP side: routing, auth, request log, and the ``/v1`` endpoints as a WSGI app.

Two origins, as Replicate has two hosts: :class:`Api` itself is the API app (``/v1``,
like ``api.replicate.com``) and :attr:`Api.delivery_app` the file-delivery app
(``/delivery/...``, like ``replicate.delivery``), each served on its own socket; a path of
one answers 404 on the other. Both share one request log."""

from __future__ import annotations

import base64
import hmac
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from cachelayer.testing.simulator.catalogue import Catalogue, Version
from cachelayer.testing.simulator.delivery import file_response, serve_file
from cachelayer.testing.simulator.faults import Faults, damage, fault_response
from cachelayer.testing.simulator.files import File
from cachelayer.testing.simulator.lifecycle import Prediction
from cachelayer.testing.simulator.predictions import Predictions, order_key
from cachelayer.testing.simulator.problems import ProblemError, json_response, problem
from cachelayer.testing.simulator.state import SimState, new_id
from cachelayer.testing.simulator.validation import (
    CreateRequest,
    ListQuery,
    parse_cancel_after,
    parse_create,
    parse_list_query,
    parse_prefer_wait,
)
from cachelayer.testing.simulator.webhooks import WebhookSender

__all__ = ["WEB_LIST_WINDOW", "Api", "RequestRecord"]

#: Seconds back that ``GET /v1/predictions?source=web`` reaches (14 days).
WEB_LIST_WINDOW = 14 * 24 * 3600.0

_URL_MAP = Map(
    [
        Rule("/v1/predictions", methods=["GET"], endpoint="list_predictions"),
        Rule("/v1/predictions", methods=["POST"], endpoint="create_prediction"),
        Rule("/v1/predictions/<pid>", methods=["GET"], endpoint="get_prediction"),
        Rule("/v1/predictions/<pid>/cancel", methods=["POST"], endpoint="cancel"),
        Rule("/v1/models/<owner>/<name>", methods=["GET"], endpoint="get_model"),
        Rule("/v1/models/<owner>/<name>/versions", methods=["GET"], endpoint="list_versions"),
        Rule("/v1/models/<owner>/<name>/versions/<vid>", methods=["GET"], endpoint="get_version"),
        Rule("/v1/models/<owner>/<name>/predictions", methods=["POST"], endpoint="create_model_prediction"),
        Rule("/v1/deployments/<owner>/<name>", methods=["GET"], endpoint="get_deployment"),
        Rule(
            "/v1/deployments/<owner>/<name>/predictions",
            methods=["POST"],
            endpoint="create_deployment_prediction",
        ),
        Rule("/v1/webhooks/default/secret", methods=["GET"], endpoint="webhook_secret"),
        Rule("/v1/account", methods=["GET"], endpoint="account"),
        Rule("/v1/files/<file_id>/download", methods=["GET"], endpoint="file_download"),
    ],
    strict_slashes=False,
)
_DELIVERY_MAP = Map(
    [Rule("/delivery/<prefix>/<token>/<path:filename>", methods=["GET", "HEAD"], endpoint="delivery")],
    strict_slashes=False,
)


class RequestRecord(NamedTuple):
    """One request served: method, path (no query), status, query string, Unix time of the
    simulator's clock, the request headers it carried (names lower-cased; e.g.
    ``headers.get("authorization")``, ``headers.get("prefer")``) and the ``origin`` that
    answered it: ``"api"`` (``sim.base_url``) or ``"delivery"`` (``sim.delivery_url``)."""

    method: str
    path: str
    status: int
    query: str
    time: float
    headers: dict[str, str] = {}
    origin: str = "api"


class Api:
    """The WSGI application: every request is checked against the pending faults, routed,
    answered (problem details on errors) and logged."""

    def __init__(
        self,
        state: SimState,
        catalogue: Catalogue,
        predictions: Predictions,
        faults: Faults,
        webhooks: WebhookSender,
    ) -> None:
        self._state = state
        self._catalogue = catalogue
        self._predictions = predictions
        self._faults = faults
        self._webhooks = webhooks
        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []
        self._uploads: dict[str, File] = {}

    def add_upload(self, file: File) -> str:
        """Keep ``file`` as an uploaded file; returns its id (``/v1/files/{id}/download``)."""
        file_id = new_id()
        with self._log_lock:
            self._uploads[file_id] = file
        return file_id

    @property
    def log(self) -> list[RequestRecord]:
        """Every request served so far, in order."""
        with self._log_lock:
            return list(self._log)

    def download_count(self, url: str) -> int:
        """See :meth:`ReplicateSimulator.download_count`."""
        path = urlsplit(url).path
        with self._log_lock:
            return sum(
                1 for r in self._log if r.method == "GET" and r.path == path and r.status in (200, 206)
            )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The API origin's WSGI entry (``/v1``)."""
        return self._serve(environ, start_response, "api")

    def delivery_app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """The delivery origin's WSGI entry (``/delivery/...``)."""
        return self._serve(environ, start_response, "delivery")

    def _serve(self, environ: dict[str, Any], start_response: Any, origin: str) -> Iterable[bytes]:
        latency = self._state.settings.latency
        if latency > 0:
            # Time to first byte, as a distant API or CDN adds it: every request waits before
            # it is answered (in its own connection thread, so concurrent requests overlap).
            self._state.stopping.wait(latency)
        request = Request(environ)
        method = request.method
        path = request.path
        fault = self._faults.take(method, path)
        response: Response
        if fault is not None and fault.kind == "status":
            response = fault_response(fault)
        else:
            try:
                response = self._dispatch(request, origin)
            except ProblemError as exc:
                response = problem(exc.status, exc.title, exc.detail, exc.headers)
            except HTTPException as exc:
                code = exc.code or 500
                response = problem(code, exc.name, exc.description or exc.name)
            if fault is not None:
                response = damage(response, fault)
        record = RequestRecord(
            method,
            path,
            response.status_code,
            request.query_string.decode("latin-1"),
            self._state.clock.time(),
            {k.lower(): v for k, v in request.headers.items()},
            origin,
        )
        with self._log_lock:
            self._log.append(record)
        return response(environ, start_response)

    def _dispatch(self, request: Request, origin: str) -> Response:
        url_map = _DELIVERY_MAP if origin == "delivery" else _URL_MAP
        adapter = url_map.bind_to_environ(request.environ)
        endpoint, args = adapter.match()
        if endpoint == "delivery":
            if self._state.settings.delivery_requires_token:
                self._check_auth(request)
            return serve_file(request, self._predictions, **args)
        self._check_auth(request)
        handler: Callable[..., Response] = getattr(self, f"_ep_{endpoint}")
        return handler(request, **args)

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
            value.strip().encode(), self._state.settings.token.encode()
        ):
            raise ProblemError(
                401,
                "Unauthenticated",
                "You did not pass a valid authentication token",
                {"WWW-Authenticate": "Bearer"},
            )

    # -- creates -----------------------------------------------------------------------------

    def _ep_create_prediction(self, request: Request) -> Response:
        body = self._parse_create(request, with_version=True)
        assert body.version is not None
        with self._state.lock:
            version = self._catalogue.resolve_version_ref(body.version)
        return self._create(request, body, version)

    def _ep_create_model_prediction(self, request: Request, owner: str, name: str) -> Response:
        with self._state.lock:
            version = self._catalogue.official_version(owner, name)
        return self._create(request, self._parse_create(request, with_version=False), version)

    def _ep_create_deployment_prediction(self, request: Request, owner: str, name: str) -> Response:
        with self._state.lock:
            _, version = self._catalogue.deployment(owner, name)
        body = self._parse_create(request, with_version=False)
        return self._create(request, body, version, deployment=f"{owner}/{name}")

    def _parse_create(self, request: Request, *, with_version: bool) -> CreateRequest:
        allow_http = self._state.settings.allow_http_webhooks
        return parse_create(request, with_version=with_version, allow_http_webhooks=allow_http)

    def _create(
        self, request: Request, body: CreateRequest, version: Version, deployment: str | None = None
    ) -> Response:
        """Create; with ``Prefer: wait`` hold until terminal or the wait passes. A held
        create that times out answers 201 ``starting`` with no output (the OpenAPI text:
        "returned in a starting state"; what ``replicate.run()`` expects), or, with
        ``wait_timeout_status="current"``, 202 with its real status and the output so far
        (replicate-api.md: the API can return ``processing`` with outputs filled). Either
        way with a ``Location`` header naming the prediction's ``urls.get``."""
        wait = parse_prefer_wait(request.headers.get("Prefer"))
        cancel_after = parse_cancel_after(request.headers.get("Cancel-After"))
        p = self._predictions.create(
            version,
            body.input,
            reported_version=self._catalogue.reported_version(version),
            aborts=version.aborts,
            deployment=deployment,
            webhook=body.webhook,
            webhook_events=body.webhook_events,
            cancel_after=cancel_after,
        )
        if body.webhook:
            self._webhooks.track(p)
        timed_out = wait is not None and not self._predictions.wait_terminal(p, wait)
        current = self._state.settings.wait_timeout_status == "current"
        with self._state.lock:
            obj = self._predictions.render(p, report_starting=timed_out and not current)
        if not timed_out:
            return json_response(obj, 201)
        status = 202 if current and obj["status"] == "processing" else 201
        return json_response(obj, status, headers={"Location": obj["urls"]["get"]})

    # -- predictions -------------------------------------------------------------------------

    def _ep_get_prediction(self, request: Request, pid: str) -> Response:
        with self._state.lock:
            p = self._predictions.by_id.get(pid)
            if p is None:
                raise ProblemError(404, "Not found", f"Prediction {pid} not found")
            return json_response(self._predictions.render(p))

    def _ep_cancel(self, request: Request, pid: str) -> Response:
        with self._state.lock:
            p = self._predictions.by_id.get(pid)
            if p is None:
                raise ProblemError(404, "Not found", f"Prediction {pid} not found")
            self._predictions.cancel(p)
            return json_response(self._predictions.render(p))

    def _ep_list_predictions(self, request: Request) -> Response:
        """Newest first, ``page_size`` per page, cursor links that repeat the filters.
        ``source=web`` covers the last :data:`WEB_LIST_WINDOW` seconds only (the OpenAPI
        text: "results are limited to predictions created in the last 14 days");
        ``created_after`` is inclusive, ``created_before`` exclusive."""
        settings = self._state.settings
        query = parse_list_query(request, accept_source_api=settings.accept_source_api)
        cursor = request.args.get("cursor")
        direction, key = "next", None
        if cursor:
            direction, key = _decode_cursor(cursor)
        with self._state.lock:
            now = self._state.clock.time()
            items = [p for p in self._predictions.newest_first() if _listed(p, query, now)]
            if key is None:
                page = items[: settings.page_size]
            elif direction == "next":
                page = [p for p in items if order_key(p) < key][: settings.page_size]
            else:
                page = [p for p in items if order_key(p) > key][-settings.page_size :]
            results = [self._predictions.render(p) for p in page]
            nxt = prev = None
            if page:
                last, first = order_key(page[-1]), order_key(page[0])
                if any(order_key(p) < last for p in items):
                    nxt = self._list_url(_encode_cursor("next", last), query)
                if any(order_key(p) > first for p in items):
                    prev = self._list_url(_encode_cursor("prev", first), query)
        return json_response({"next": nxt, "previous": prev, "results": results})

    def _list_url(self, cursor: str, query: ListQuery) -> str:
        params = {"cursor": cursor, **query.params}
        return f"{self._state.base_url}/v1/predictions?{urlencode(params)}"

    # -- models, deployments, account --------------------------------------------------------

    def _ep_get_model(self, request: Request, owner: str, name: str) -> Response:
        with self._state.lock:
            model = self._catalogue.model(owner, name)
            return json_response(
                self._catalogue.model_json(model, self._predictions.run_count(model.full_name))
            )

    def _ep_list_versions(self, request: Request, owner: str, name: str) -> Response:
        with self._state.lock:
            model = self._catalogue.model(owner, name)
            results = [self._catalogue.version_json(v) for v in self._catalogue.visible_versions(model)]
        return json_response({"next": None, "previous": None, "results": results})

    def _ep_get_version(self, request: Request, owner: str, name: str, vid: str) -> Response:
        with self._state.lock:
            version = self._catalogue.visible_version(owner, name, vid)
            return json_response(self._catalogue.version_json(version))

    def _ep_get_deployment(self, request: Request, owner: str, name: str) -> Response:
        with self._state.lock:
            dep, _ = self._catalogue.deployment(owner, name)
            return json_response(self._catalogue.deployment_json(dep))

    def _ep_file_download(self, request: Request, file_id: str) -> Response:
        """``GET /v1/files/{file_id}/download`` (the Files API's download, OpenAPI
        ``files.download``): the bytes of an uploaded file; 404 problem for an unknown id.
        The query's ``owner``/``expiry``/``signature`` are not checked; the token is."""
        with self._log_lock:
            file = self._uploads.get(file_id)
        if file is None:
            raise ProblemError(404, "Not found", "File not found")
        return file_response(request, file, etag=file_id)

    def _ep_webhook_secret(self, request: Request) -> Response:
        return json_response({"key": self._state.settings.webhook_secret})

    def _ep_account(self, request: Request) -> Response:
        return json_response({"type": "organization", "username": "acme", "name": "Acme"})


def _listed(p: Prediction, query: ListQuery, now: float) -> bool:
    if query.source is not None and p.source != query.source:
        return False
    if query.source == "web" and p.created_at < now - WEB_LIST_WINDOW:
        return False
    if query.created_after is not None and p.created_at < query.created_after:
        return False
    return query.created_before is None or p.created_at < query.created_before


def _encode_cursor(direction: str, key: tuple[float, int]) -> str:
    raw = json.dumps([direction, key[0], key[1]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, tuple[float, int]]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        direction, created, seq = json.loads(raw)
        if direction not in ("next", "prev"):
            raise ValueError(direction)
        return direction, (float(created), int(seq))
    except (ValueError, TypeError):
        raise ProblemError(400, "Invalid cursor", f"cursor {cursor!r} is not valid") from None
