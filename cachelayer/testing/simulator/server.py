"""``ReplicateSimulator``: the public face. It builds the parts, starts the listener
(:mod:`.serving`) and the webhook sender, and forwards the test controls to the part that
owns each concern."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import ssl
from typing import Any

import httpx

from cachelayer.testing.simulator.api import Api, RequestRecord
from cachelayer.testing.simulator.catalogue import Catalogue
from cachelayer.testing.simulator.faults import Fault, Faults
from cachelayer.testing.simulator.files import File
from cachelayer.testing.simulator.history import seed_prediction
from cachelayer.testing.simulator.predictions import Predictions
from cachelayer.testing.simulator.serving import Listener
from cachelayer.testing.simulator.state import Setting, Settings, SimState
from cachelayer.testing.simulator.webhooks import WebhookDelivery, WebhookSender, sign_webhook

__all__ = ["ReplicateSimulator"]


class ReplicateSimulator:
    """A Replicate API (``/v1``) and file-delivery server on two real sockets.

    Like Replicate (``api.replicate.com`` and ``replicate.delivery``), the API and file
    delivery are two origins: the API on :attr:`base_url` / :attr:`host_port`, files on
    :attr:`delivery_url` / :attr:`delivery_host_port` (another port of the same host). An
    allow-list for downloads names :attr:`delivery_host_port`, never :attr:`host_port`.

    Its defaults follow the real API (``shared/reference/replicate-api.md`` and the
    OpenAPI schema); the knobs that relax that say so. Arguments (times in seconds of the
    simulator's clock, see :class:`SimClock`); the ones marked *settable* are also
    attributes that can be changed while it runs:

    * ``token`` (settable): the bearer token every ``/v1`` request must carry; others get 401.
    * ``https``: serve HTTPS with a generated self-signed CA; :attr:`ca_file` is its PEM.
    * ``url_ttl`` (settable): seconds after a prediction completes that its delivery URLs
      answer (URLs minted later by :meth:`rotate_urls` live ``url_ttl`` from then); then 404.
    * ``data_removal_after`` (settable): seconds after completion when ``source="api"``
      predictions lose their data, as Replicate removes it after an hour:
      ``data_removed=true``, ``output=null``, ``logs=""``, their URLs answer 404, and the
      ``input`` reads ``{}``. ``source="web"`` predictions never lose data.
    * ``remove_input_on_data_removal`` (settable): default true (the real API); false keeps
      the input after removal (not what Replicate does: for tests of old behaviour only).
    * ``prediction_duration`` (settable): seconds a created prediction takes: ``starting``
      for the first half, ``processing`` for the second, then ``succeeded`` (or ``failed``
      when the model's ``outputs`` callable raised; ``aborted`` for a model added with
      ``aborts=True``). ``add_model(duration=...)`` overrides it. A ``Cancel-After`` request
      header sets a deadline: reached while ``starting`` it ends ``aborted``, while
      ``processing`` ``canceled`` (the API reference's meanings).
    * ``page_size`` (settable): predictions per ``GET /v1/predictions`` page.
    * ``host``/``port``: where the API listens (port 0: any free port);
      ``delivery_port``: where file delivery listens on the same host (0: any free port).
    * ``refresh_expired_urls`` (settable): when true, reading a prediction whose data is
      kept but whose URLs have died (TTL or :meth:`expire_urls`) mints fresh URLs, as
      re-reading a prediction on Replicate yields its current URLs. Default false: dead
      URLs stay in the prediction until :meth:`rotate_urls`.
    * ``webhook_secret`` (settable): the ``whsec_<base64>`` secret webhooks are signed with
      (random when ``None``); ``GET /v1/webhooks/default/secret`` returns it.
    * ``webhook_verify`` (settable): ``verify=`` for the webhook sender's ``httpx.Client``
      (a CA file path or a bool).
    * ``webhook_max_attempts`` (settable): POST attempts per webhook event (non-2xx or
      errors retry).
    * ``allow_http_webhooks`` (settable): accept ``http://`` webhook URLs. Default false:
      like the API, a create whose ``webhook`` is not an HTTPS URL answers 422.
    * ``latency`` (settable): real seconds every request (API and file delivery) waits
      before it is answered, i.e. the time to first byte a distant API or CDN adds (e.g.
      0.05); default 0. Requests wait in their own threads, so concurrent ones overlap.
    * ``delivery_requires_token`` (settable): file URLs answer 401 without
      ``Authorization: Bearer <token>`` (the schema says files need the header; whether
      Replicate's CDN enforces it is not verified, so the default is false).
    * ``accept_source_api`` (settable): let ``GET /v1/predictions?source=api`` filter to API
      predictions. Default false: like the API ("Currently only web is supported") it
      answers 422.
    * ``wait_timeout_status`` (settable): what a ``Prefer: wait`` create answers when the
      wait passes first: ``"starting"`` (default: 201, ``starting``, no output, as the
      OpenAPI text says and ``replicate.run()`` expects) or ``"current"`` (its real status:
      202 and the output so far while ``processing``). Both send a ``Location`` header.

    Requests are checked as strictly as the published schema: creates need ``input`` (an
    object) and reject unknown keys; ``Prefer`` must be ``wait`` or ``wait=1..60``;
    ``Cancel-After`` at least 5 s; list filters ``source``, ``created_after`` and
    ``created_before`` are honoured (``source=web`` covers the last 14 days). Violations
    answer 422 with problem details. Official models added with ``hidden_version=True``
    report ``version: "hidden"`` and run only by name.

    Use as a context manager or call :meth:`start` / :meth:`stop`. All methods are
    thread-safe.
    """

    token = Setting[str]()
    webhook_secret = Setting[str]()
    url_ttl = Setting[float]()
    data_removal_after = Setting[float]()
    prediction_duration = Setting[float]()
    page_size = Setting[int]()
    refresh_expired_urls = Setting[bool]()
    remove_input_on_data_removal = Setting[bool]()
    webhook_verify = Setting[bool | str]()
    webhook_max_attempts = Setting[int]()
    latency = Setting[float]()
    delivery_requires_token = Setting[bool]()
    allow_http_webhooks = Setting[bool]()
    accept_source_api = Setting[bool]()
    wait_timeout_status = Setting[str]()

    def __init__(
        self,
        token: str = "test-token",
        *,
        https: bool = False,
        url_ttl: float = 3600.0,
        data_removal_after: float = 3600.0,
        prediction_duration: float = 0.0,
        page_size: int = 100,
        host: str = "127.0.0.1",
        port: int = 0,
        delivery_port: int = 0,
        refresh_expired_urls: bool = False,
        remove_input_on_data_removal: bool = True,
        webhook_secret: str | None = None,
        webhook_verify: bool | str = True,
        webhook_max_attempts: int = 3,
        latency: float = 0.0,
        delivery_requires_token: bool = False,
        allow_http_webhooks: bool = False,
        accept_source_api: bool = False,
        wait_timeout_status: str = "starting",
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if wait_timeout_status not in ("starting", "current"):
            raise ValueError("wait_timeout_status must be 'starting' or 'current'")
        self.settings = Settings(
            token=token,
            url_ttl=float(url_ttl),
            data_removal_after=float(data_removal_after),
            prediction_duration=float(prediction_duration),
            page_size=page_size,
            refresh_expired_urls=refresh_expired_urls,
            remove_input_on_data_removal=remove_input_on_data_removal,
            webhook_secret=webhook_secret or ("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()),
            webhook_verify=webhook_verify,
            webhook_max_attempts=max(1, webhook_max_attempts),
            latency=float(latency),
            delivery_requires_token=delivery_requires_token,
            allow_http_webhooks=allow_http_webhooks,
            accept_source_api=accept_source_api,
            wait_timeout_status=wait_timeout_status,
        )
        """Every knob (:class:`Settings`); the settable ones are also attributes of the simulator."""
        self.https = https
        self.host = host
        self.port = port
        self.delivery_port = delivery_port
        self._state = SimState(self.settings)
        self.clock = self._state.clock
        """The simulator's clock (:class:`SimClock`); ``sim.clock()`` is now as a datetime."""
        self._catalogue = Catalogue(self._state)
        self._predictions = Predictions(self._state)
        self._faults = Faults()
        self._webhooks = WebhookSender(self._state, self._predictions)
        self._api = Api(self._state, self._catalogue, self._predictions, self._faults, self._webhooks)

        self._listener: Listener | None = None
        self._delivery: Listener | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ReplicateSimulator:
        """Bind both sockets (API, delivery) and serve in background threads. Returns ``self``. Raises
        :class:`OSError` when the address is taken, :class:`RuntimeError` if started."""
        if self._listener is not None:
            raise RuntimeError("simulator already started")
        self._state.stopping.clear()
        self._listener = Listener(self._api, self.host, self.port, self.https)
        try:
            self._delivery = Listener(
                self._api.delivery_app, self.host, self.delivery_port, self.https, certs=self._listener.certs
            )
        except BaseException:
            self._listener.close()
            self._listener = None
            raise
        self._state.base_url = self._listener.base_url
        self._state.delivery_url = self._delivery.base_url
        self._webhooks.start(name=f"replicate-sim-webhooks-{self._listener.port}")
        return self

    def stop(self) -> None:
        """Stop serving, release held requests, close the sockets, delete the certificate."""
        self._state.stopping.set()
        self._state.notify()
        if self._delivery is not None:
            self._delivery.close()
        if self._listener is not None:
            self._listener.close()  # after delivery: it owns the certificate both use
        self._webhooks.join(timeout=5)
        self._listener = self._delivery = None

    def __enter__(self) -> ReplicateSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>``: the API origin, what ``replicate.Client(base_url=...)``
        takes (``REPLICATE_BASE_URL``)."""
        return self._state.base_url

    @property
    def host_port(self) -> str:
        """``127.0.0.1:<port>`` of the API origin (not where files are: see
        :attr:`delivery_host_port`)."""
        if self._listener is None:
            raise RuntimeError("simulator not started")
        return self._listener.host_port

    @property
    def delivery_url(self) -> str:
        """``http(s)://127.0.0.1:<delivery port>``: the file-delivery origin, this simulator's
        ``https://replicate.delivery``; every output file URL starts with it."""
        return self._state.delivery_url

    @property
    def delivery_host_port(self) -> str:
        """``127.0.0.1:<delivery port>``: the file-delivery host for an allow-list
        (``CACHELAYER_ALLOWED_HOSTS``) and for the hosts that get the token
        (``CACHELAYER_TOKEN_HOSTS``), as ``replicate.delivery`` is for Replicate."""
        if self._delivery is None:
            raise RuntimeError("simulator not started")
        return self._delivery.host_port

    @property
    def ca_file(self) -> str | None:
        """Path of the CA certificate PEM to trust when ``https`` (else ``None``)."""
        certs = self._listener.certs if self._listener is not None else None
        return certs.ca_file if certs is not None else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client :class:`ssl.SSLContext` trusting :attr:`ca_file` (``None`` over HTTP).
        Pass it as httpx's ``verify=`` (httpx 0.28 deprecates ``verify=<path>``)."""
        ca_file = self.ca_file
        return ssl.create_default_context(cafile=ca_file) if ca_file else None

    def replicate_client(self, token: str | None = None, **kwargs: Any) -> Any:
        """A ``replicate.Client`` for this simulator: ``token`` (default :attr:`token`),
        ``base_url``, and over HTTPS a transport trusting the CA. ``kwargs`` go to the
        client (e.g. ``transport=``, ``timeout=``). ``poll_interval`` is set to 0.05 s."""
        from replicate.client import Client

        if self.ca_file and "transport" not in kwargs:
            kwargs["transport"] = httpx.HTTPTransport(verify=self.ssl_context() or True)
        client = Client(api_token=token or self.token, base_url=self.base_url, **kwargs)
        client.poll_interval = 0.05
        return client

    def now(self) -> dt.datetime:
        """The simulator's now as an aware UTC datetime (same as ``sim.clock()``)."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward ``seconds`` (timers, TTLs, removal) at once."""
        self.clock.advance(seconds)
        self._state.notify()

    # -- configuration -------------------------------------------------------------------

    def add_model(
        self,
        name: str,
        outputs: Any = None,
        version_id: str | None = None,
        output_schema: dict[str, Any] | None = None,
        official: bool = True,
        *,
        input_schema: dict[str, Any] | None = None,
        description: str | None = None,
        duration: float | None = None,
        hidden_version: bool = False,
        aborts: bool = False,
    ) -> str:
        """Register model ``name`` (``owner/name``) or add a version to it; returns the
        version id (64 hex characters; deterministic from the name and version count when
        ``version_id`` is ``None``).

        ``outputs`` is the output of every prediction of this version: a JSON-like value
        (str, int, float, bool, None, list, tuple, dict) whose leaves may be :class:`File`
        (rendered as a delivery URL) or :class:`DataURI` (rendered as a ``data:`` URI), or
        a callable ``outputs(input: dict) -> value`` called once per created prediction; if
        it raises, the prediction ends ``failed`` with ``error=str(exc)``.
        ``output_schema`` defaults to :data:`DEFAULT_OUTPUT_SCHEMA`; pass
        :data:`ITERATOR_OUTPUT_SCHEMA` for text models. The newest version is the one
        model-level and deployment creates use. ``official`` allows
        ``POST /v1/models/{owner}/{name}/predictions``. ``duration`` overrides
        ``prediction_duration`` (seconds) for this version.

        ``hidden_version=True`` (an official model, as Replicate's newer official models
        are): its predictions report ``version: "hidden"``; it runs only through
        ``POST /v1/models/{owner}/{name}/predictions`` (or ``"version": "owner/name"``, as
        the schema allows): ``POST /v1/predictions`` with ``"hidden"`` or its version id
        answers 422, and its versions are not listed (``latest_version`` is null).
        ``aborts=True``: predictions of this version stay ``starting`` for their duration,
        then end ``aborted`` (never run, no output). Raises :class:`ValueError` for a bad
        name, a duplicate version id, or ``hidden_version`` on a non-official model.
        """
        return self._catalogue.add_model(
            name,
            outputs,
            version_id,
            output_schema,
            official,
            input_schema=input_schema,
            description=description,
            duration=duration,
            hidden_version=hidden_version,
            aborts=aborts,
        )

    def add_file(self, file: File, *, owner: str = "acme") -> str:
        """Keep ``file`` as if uploaded through the Files API; returns its download URL,
        ``{base_url}/v1/files/{id}/download?owner=..&expiry=..&signature=..`` (the form of
        the OpenAPI ``files.download`` example). Downloading it needs the API token, as
        every ``/v1`` request does; the signature is not checked."""
        file_id = self._api.add_upload(file)
        expiry = int(self.clock.time()) + 3600
        query = f"owner={owner}&expiry={expiry}&signature=c2ltdWxhdG9y"
        return f"{self.base_url}/v1/files/{file_id}/download?{query}"

    def add_deployment(self, name: str, model: str, version_id: str | None = None) -> None:
        """Register deployment ``name`` (``owner/name``) running ``model`` (``owner/name``
        or ``owner/name:version``). Without a version it runs the model's newest version.
        Raises :class:`KeyError` for an unknown model or version."""
        self._catalogue.add_deployment(name, model, version_id)

    def seed_prediction(
        self,
        model: str,
        input: dict[str, Any] | None = None,
        output: Any = None,
        *,
        source: str = "api",
        status: str = "succeeded",
        created_at: dt.datetime | float | None = None,
        completed_at: dt.datetime | float | None = None,
        error: str | None = None,
        data_removed: bool = False,
        version_id: str | None = None,
        logs: str | None = None,
        prediction_id: str | None = None,
    ) -> str:
        """Insert a prediction into the history as if it had already run; returns its id.

        ``model`` is ``owner/name`` or ``owner/name:version`` (registered on the fly if
        unknown, as a version older than the registered ones, with no ``outputs``).
        ``output`` is shown as given (for any status), with :class:`File` leaves as delivery
        URLs and :class:`DataURI` leaves as ``data:`` URIs. ``created_at`` /
        ``completed_at`` are datetimes (naive means UTC) or Unix seconds; defaults: completed
        now, created one second before completion (or completion one second after a given
        creation). The status never changes, except that a seeded ``starting`` /
        ``processing`` prediction can be canceled. URL expiry (``url_ttl``) and data removal
        (``data_removal_after``, ``source="api"`` only) count from ``completed_at`` on the
        simulator's clock, so a past ``completed_at`` can mean the data is already gone.
        Raises :class:`ValueError` for a bad ``source``/``status`` or a duplicate id.
        """
        return seed_prediction(
            self._state,
            self._catalogue,
            self._predictions,
            model,
            input,
            output,
            source=source,
            status=status,
            created_at=created_at,
            completed_at=completed_at,
            error=error,
            data_removed=data_removed,
            version_id=version_id,
            logs=logs,
            prediction_id=prediction_id,
        )

    # -- test controls -------------------------------------------------------------------

    def expire_urls(self, pid: str | None = None) -> None:
        """Make the current delivery URLs of prediction ``pid`` (or of every prediction)
        answer 404 from now on. The prediction keeps showing them (unless
        ``refresh_expired_urls``); :meth:`rotate_urls` hands out fresh ones."""
        with self._state.lock:
            everyone = list(self._predictions.by_id.values())
            for p in everyone if pid is None else [self._predictions.get(pid)]:
                self._predictions.expire(p)

    def remove_data(self, pid: str) -> None:
        """Remove prediction ``pid``'s data now, as Replicate does to API predictions after
        an hour: ``data_removed=true``, ``output=null``, ``logs=""``, its URLs answer 404
        and (``remove_input_on_data_removal``, the default) ``input`` reads ``{}``."""
        with self._state.lock:
            self._predictions.remove(self._predictions.get(pid))

    def abort(self, pid: str) -> None:
        """End prediction ``pid`` as ``aborted`` now (terminated before it started, e.g. its
        deadline passed first). Raises :class:`KeyError` for an unknown id and
        :class:`ValueError` unless it is still ``starting``."""
        self._predictions.abort(self._predictions.get(pid))

    def rotate_urls(self, pid: str) -> list[str]:
        """Give prediction ``pid`` fresh delivery URLs at the same output paths (live for
        ``url_ttl`` seconds from now, or from completion if that is later); the old ones
        answer 404. Returns the new URLs in output order. Raises :class:`ValueError` if
        its data was removed."""
        with self._state.lock:
            p = self._predictions.get(pid)
            if p.data_removed:
                raise ValueError(f"prediction {pid} has no data left")
            self._predictions.rotate(p)
            return [self._predictions.url(slot) for slot in p.slots]

    def delivery_urls(self, pid: str) -> list[str]:
        """Prediction ``pid``'s current delivery URLs in output order (dead or alive,
        shown or not yet shown)."""
        with self._state.lock:
            return [self._predictions.url(slot) for slot in self._predictions.get(pid).slots]

    def prediction(self, pid: str) -> dict[str, Any]:
        """The prediction's JSON as ``GET /v1/predictions/{id}`` returns it now. Raises
        :class:`KeyError` for an unknown id."""
        with self._state.lock:
            return self._predictions.render(self._predictions.get(pid))

    @property
    def prediction_ids(self) -> list[str]:
        """Ids of every prediction, newest first (the list endpoint's order)."""
        with self._state.lock:
            return [p.id for p in self._predictions.newest_first()]

    def inject_fault(
        self,
        kind: str,
        times: int = 1,
        path_prefix: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        *,
        method: str | None = None,
    ) -> Fault:
        """Make the next ``times`` matching requests misbehave; returns the pending fault.

        Kinds:

        * ``"status"``: answer ``status`` (default 429 when ``retry_after`` is given, else
          500) with a problem-details body and, if given, ``Retry-After: <retry_after>``
          (seconds; whole numbers are sent without a fraction, as the client only parses
          digits). Matches API and delivery requests.
        * ``"truncate"``: a delivery ``GET`` sends the full ``Content-Length`` but only half
          the body, then closes the connection.
        * ``"drop"``: send the headers and at most 8 bytes of the body, then close.

        ``path_prefix`` (e.g. ``"/v1/predictions"`` or ``"/delivery/"``) and ``method``
        (e.g. ``"GET"``) restrict which requests match. Faults are checked in the order
        they were injected; each request triggers at most one. Raises :class:`ValueError`
        for an unknown kind or ``times < 1``.
        """
        return self._faults.inject(kind, times, path_prefix, status, retry_after, method=method)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        self._faults.clear()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request served so far, in order (path
        without query string)."""
        return [(r.method, r.path, r.status) for r in self._api.log]

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request served so far as :class:`RequestRecord` (with query and time)."""
        return self._api.log

    def download_count(self, url: str) -> int:
        """How many ``GET`` requests for delivery URL ``url`` (absolute or a path) were
        answered 200/206 (a truncated or dropped download counts: it started)."""
        return self._api.download_count(url)

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST attempt so far, in order."""
        return self._webhooks.deliveries

    def sign_webhook(
        self, body: str | bytes, *, webhook_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """Headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) signing
        ``body`` with :attr:`webhook_secret` the way Replicate does; ``timestamp`` is Unix
        seconds (default: the real now)."""
        return sign_webhook(self.webhook_secret, body, webhook_id=webhook_id, timestamp=timestamp)
