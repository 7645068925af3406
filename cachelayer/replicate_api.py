"""The calls cachelayer makes to Replicate, through one adapter whichever ``replicate``
client (1.x or 2.x) is installed (:mod:`cachelayer.replicate_clients`).

Everything returned is a typed :class:`~cachelayer.prediction.Prediction`. Replicate errors
become typed cachelayer errors: 401/403 -> :class:`ReplicateConfigError`, 404 on a
model/version/deployment -> :class:`ModelNotFoundError`, 404 on a prediction ->
:class:`PredictionNotFoundError`, an unreachable API -> :class:`ReplicateConfigError`.

Facts (shared/reference/replicate-api.md): a create is sent once by the adapter (the 1.x
client never retries ``POST``; the 2.x client would, so its retries are turned off for
creates: a retried create is a second, billed prediction) and retried here on 429 and 503
only (bounded, ``Retry-After`` honoured); reads keep the client's retries; pagination
``next`` links are absolute URLs on the API host, and the API token is sent only to the
configured API origin.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from cachelayer.errors import (
    CacheLayerError,
    ConfigError,
    ModelNotFoundError,
    PredictionFailedError,
    PredictionNotFoundError,
    ReplicateConfigError,
    WaitTimeoutError,
)
from cachelayer.prediction import Prediction, is_version_id
from cachelayer.replicate_clients import (
    CreateRequest,
    ReplicateAdapter,
    ReplicateHTTPError,
    ReplicateUnreachableError,
    make_client,
)
from cachelayer.retry_policy import API_CREATE

__all__ = [
    "MAX_PREFER_WAIT",
    "ModelRef",
    "ReplicateApi",
    "check_succeeded",
    "make_client",
    "parse_ref",
    "prefer_wait",
]

log = logging.getLogger("cachelayer")

#: POST attempts on 429/503 before the error is raised, and the longest wait between them
#: (s): :data:`cachelayer.retry_policy.API_CREATE`.
CREATE_ATTEMPTS: int = API_CREATE.attempts or 1
CREATE_MAX_DELAY = API_CREATE.max_delay_s
#: Longest ``Prefer: wait`` Replicate holds a create, in seconds: ``wait`` means up to 60 s,
#: ``wait=N`` takes N in 1..60 (replicate-openapi.json, "Prefer" header of the creates).
MAX_PREFER_WAIT = 60


def prefer_wait(wait: Any, left: float | None) -> bool | int | None:
    """What a create sends as ``Prefer`` when ``left`` seconds remain of the caller's wait
    (``None``: no limit): ``True`` (``Prefer: wait``) for an unbounded ``wait=True``;
    otherwise ``N`` (``Prefer: wait=N``) with ``N`` at most ``left`` (rounded down), the
    ``wait`` asked for and :data:`MAX_PREFER_WAIT`; ``None`` (no header) when ``wait`` is
    false or less than one second is left, since Replicate takes no ``wait=0``."""
    if not wait:
        return None
    if wait is True and left is None:
        return True
    n = MAX_PREFER_WAIT if wait is True else min(int(wait), MAX_PREFER_WAIT)
    if left is not None:
        n = min(n, int(left))
    return n if n >= 1 else None


#: Keyword parameters of a create besides ``wait`` (see :class:`CreateRequest`).
_CREATE_PARAMS = ("webhook", "webhook_events_filter", "stream", "file_encoding_strategy")


class ModelRef:
    """A parsed model reference: ``kind`` is ``model``, ``version`` or ``deployment``;
    ``name`` is ``owner/name`` (``None`` for a bare version id), ``version`` the version id."""

    __slots__ = ("kind", "name", "version")

    def __init__(self, kind: str, name: str | None, version: str | None) -> None:
        self.kind, self.name, self.version = kind, name, version

    def __iter__(self) -> Iterator[str | None]:
        return iter((self.kind, self.name, self.version))

    def __repr__(self) -> str:
        return f"ModelRef({self.kind!r}, {self.name!r}, {self.version!r})"


def parse_ref(ref: str) -> ModelRef:
    """Split a model reference.

    ``owner/name`` -> model; ``owner/name:VERSION`` -> version; a bare 64-hex version id ->
    version; ``deployments/owner/name`` -> deployment. Raises :class:`ModelNotFoundError`
    for anything else.
    """
    import re

    name_re = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    ref = ref.strip()
    if is_version_id(ref):
        return ModelRef("version", None, ref)
    if ref.startswith("deployments/"):
        name = ref.removeprefix("deployments/")
        if name_re.match(name):
            return ModelRef("deployment", name, None)
    name, sep, version = ref.partition(":")
    if name_re.match(name):
        if not sep:
            return ModelRef("model", name, None)
        if version:
            return ModelRef("version", name, version)
    raise ModelNotFoundError(
        f"bad model reference {ref!r}: expected owner/name, owner/name:version, "
        "a 64-character version id or deployments/owner/name"
    )


def check_succeeded(prediction: Prediction) -> None:
    """Raise :class:`PredictionFailedError` (naming the status) unless it ``succeeded``."""
    if not prediction.succeeded:
        raise PredictionFailedError(prediction.id, prediction.status.value, prediction.error)


def _translate(exc: Exception, what: str, not_found: type[CacheLayerError]) -> CacheLayerError:
    """The cachelayer error for a :class:`ReplicateHTTPError` or an unreachable API."""
    if isinstance(exc, ReplicateHTTPError):
        status, detail = exc.status, exc.detail
        if status in (401, 403):
            return ReplicateConfigError(
                f"Replicate refused the API token ({status}): set REPLICATE_API_TOKEN"
            )
        if status == 404:
            return not_found(f"{what}: {detail}")
        if status == 422:
            # Replicate answers 422 both for an unknown version and for an invalid request.
            about_model = any(w in detail.lower() for w in ("version", "model", "deployment"))
            if not_found is ModelNotFoundError and about_model:
                return not_found(f"{what}: {detail}")
            return ConfigError(f"{what}: Replicate refused the request (422): {detail}")
        return CacheLayerError(f"{what}: Replicate answered {status}: {detail}")
    return ReplicateConfigError(f"cannot reach the Replicate API: {exc}")


@contextmanager
def _errors(what: str, *, not_found: type[CacheLayerError]) -> Iterator[None]:
    try:
        yield
    except (ReplicateHTTPError, ReplicateUnreachableError) as exc:
        raise _translate(exc, what, not_found) from None


def _file_outputs_as_urls(value: Any) -> Any:
    """``value`` (a model input) with each ``FileOutput`` of either client (an object with a
    string ``url`` that is not a file or path) replaced by its URL, so an output can be fed
    to the next model; dicts, lists and tuples are walked, anything else is left for the
    client to encode (open files and paths are uploaded or sent as ``data:`` URIs)."""
    if isinstance(value, dict):
        return {k: _file_outputs_as_urls(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_file_outputs_as_urls(v) for v in value]
    if isinstance(value, (str, bytes, int, float, io.IOBase, os.PathLike)) or value is None:
        return value
    url = getattr(value, "url", None)
    return url if isinstance(url, str) else value


class ReplicateApi:
    """Replicate's HTTP API for cachelayer: create (retried), get, wait (bounded), list.

    ``adapter`` is a :class:`~cachelayer.replicate_clients.ReplicateAdapter` (the installed
    client behind it). ``wait_timeout``: seconds :meth:`wait` polls a prediction before
    raising :class:`WaitTimeoutError` (``0`` = no limit). Polling uses the adapter's
    ``poll_interval`` (``REPLICATE_POLL_INTERVAL``, seconds).
    """

    def __init__(self, adapter: ReplicateAdapter, *, wait_timeout: float = 0.0) -> None:
        self.adapter = adapter
        self.wait_timeout = wait_timeout
        self.origin = adapter.origin

    # ---- reading --------------------------------------------------------------------

    def get(self, prediction_id: str) -> Prediction:
        """``GET /v1/predictions/{id}``. Raises :class:`PredictionNotFoundError`.

        Read as Replicate's JSON (the clients' ``Prediction`` models drop ``data_removed``
        and ``source``, which expiry needs), with the client's read retries.
        """
        what = f"cannot read prediction {prediction_id}"
        with _errors(what, not_found=PredictionNotFoundError):
            data = self.adapter.get(prediction_id)
        return self._typed(data, what)

    def wait(self, prediction_id: str, timeout: float | None = None) -> Prediction:
        """Poll until the prediction is terminal (succeeded, failed, canceled, aborted);
        return it. ``timeout`` (seconds, default :attr:`wait_timeout`; ``0`` = none) bounds
        the whole wait: past it raises :class:`WaitTimeoutError` (nothing is recorded)."""
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit if limit and limit > 0 else None
        return self._wait_until(prediction_id, deadline, limit)

    def _wait_until(self, prediction_id: str, deadline: float | None, limit: float) -> Prediction:
        """:meth:`wait` until ``deadline`` (``time.monotonic()``; ``None``: none); the
        :class:`WaitTimeoutError` names ``limit`` seconds."""
        while True:
            prediction = self.get(prediction_id)
            if prediction.terminal:
                return prediction
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(prediction_id, prediction.status.value, limit)
            pause = float(self.adapter.poll_interval)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)

    def get_model(self, name: str) -> dict[str, Any]:
        """``GET /v1/models/{owner}/{name}``: the model as JSON (Replicate's API reference).
        Raises :class:`ModelNotFoundError` when Replicate does not know it (404)."""
        with _errors(f"unknown model {name}", not_found=ModelNotFoundError):
            owner, _, model = name.partition("/")
            return self.adapter.get_model(owner, model)

    def list_page(self, cursor: str | None = None) -> tuple[list[Prediction], str | None]:
        """One page of ``GET /v1/predictions`` (newest first): ``(predictions, next cursor)``.

        ``cursor`` is a ``next`` link of an earlier page (or ``None`` for the first page). A
        link to any origin other than the configured API's is refused with
        :class:`ReplicateConfigError` before a request is made: the API token goes nowhere
        else. Predictions without an id are skipped with a warning.
        """
        path = self._same_origin(cursor) if cursor else "/v1/predictions"
        with _errors("cannot list predictions", not_found=PredictionNotFoundError):
            page = self.adapter.list_page(path)
        out = []
        for item in page.get("results") or []:
            try:
                out.append(Prediction.from_json(dict(item)))
            except (TypeError, ValueError) as exc:
                log.warning("skipping a listed prediction Replicate sent without an id: %s", exc)
        nxt = page.get("next")
        return out, (str(nxt) if nxt else None)

    def _same_origin(self, link: str) -> str:
        """``link`` as a path on the API origin; raises if it names another origin."""
        parts = urlsplit(link)
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.hostname, parts.port) != self.origin:
            raise ReplicateConfigError(
                f"refusing a pagination link to {parts.scheme}://{parts.netloc}: "
                "the API token is sent only to the configured Replicate API"
            )
        if not parts.path.startswith("/"):
            raise ReplicateConfigError(f"refusing a malformed pagination link {link!r}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    # ---- creating -------------------------------------------------------------------

    def create(self, ref: str, input: dict[str, Any], **params: Any) -> Prediction:
        """Create a prediction as ``replicate.run`` would (version, model or deployment
        endpoint by the form of ``ref``; ``params`` such as ``wait`` (``True`` or seconds:
        ``Prefer: wait``), ``webhook``, ``webhook_events_filter`` go to the create call; the
        adapter sends one ``POST`` per attempt, never retried by the client). 429 and 503 answers are retried
        up to :data:`CREATE_ATTEMPTS` times, waiting ``Retry-After`` (else 1, 2, 4... s,
        at most :data:`CREATE_MAX_DELAY`). Raises :class:`ModelNotFoundError`,
        :class:`ReplicateConfigError`, :class:`CacheLayerError`."""
        request = self._create_request(parse_ref(ref), input, params)
        what = f"cannot run {ref}"
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                pred = self.adapter.create(request)
            except ReplicateHTTPError as exc:
                if exc.status not in API_CREATE.retry_on or API_CREATE.gives_up_after(attempt):
                    raise _translate(exc, what, ModelNotFoundError) from None
                delay = API_CREATE.delay(attempt, retry_after=exc.retry_after)
                log.info("create of %s answered %s; retry %d in %.1f s", ref, exc.status, attempt, delay)
                time.sleep(delay)
                continue
            except ReplicateUnreachableError as exc:
                raise _translate(exc, what, ModelNotFoundError) from None
            created = self._typed(pred, what)
            return created if created.source else replace(created, source="api")
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _create_request(ref: ModelRef, input: dict[str, Any], params: dict[str, Any]) -> CreateRequest:
        """The :class:`CreateRequest` for ``ref``: ``wait`` (``True`` or seconds) becomes
        ``Prefer: wait``/``wait=N``; ``webhook``, ``webhook_events_filter``, ``stream``,
        ``file_encoding_strategy`` pass through; anything else raises :class:`ConfigError`."""
        params = dict(params)
        wait = params.pop("wait", None)
        known = {k: params.pop(k) for k in _CREATE_PARAMS if k in params}
        if params:
            raise ConfigError(f"unknown prediction parameter(s): {', '.join(sorted(params))}")
        kind: Any = ref.kind
        return CreateRequest(kind, ref.name, ref.version, _file_outputs_as_urls(input), wait=wait, **known)

    def create_and_wait(
        self, ref: str, input: dict[str, Any], *, timeout: float | None = None, **params: Any
    ) -> Prediction:
        """:meth:`create` with ``Prefer: wait`` then :meth:`wait`; returns the terminal
        prediction (of any status: check it with :func:`check_succeeded`). A prediction that
        finished within the ``Prefer: wait`` window is returned as created, without a re-read
        (its URLs are fresh). ``timeout`` (seconds, default :attr:`wait_timeout`; ``0`` =
        none) bounds the whole wait, the create's included: it sends ``Prefer: wait=N`` with
        ``N`` no more than the timeout (:func:`prefer_wait`) and polls for what is left, then
        raises :class:`WaitTimeoutError`."""
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit if limit and limit > 0 else None
        params["wait"] = prefer_wait(params.get("wait", True), limit if deadline is not None else None)
        created = self.create(ref, input, **params)
        return created if created.terminal else self._wait_until(created.id, deadline, limit)

    @staticmethod
    def _typed(data: Any, what: str) -> Prediction:
        try:
            return Prediction.from_json(dict(data))
        except (TypeError, ValueError) as exc:
            raise CacheLayerError(f"{what}: Replicate sent a malformed prediction ({exc})") from None
