"""A Replicate API simulator: a real HTTP(S) server the real ``replicate`` client talks to.

Point a client at it with ``replicate.Client(api_token=sim.token, base_url=sim.base_url)``
(over HTTPS also pass ``transport=httpx.HTTPTransport(verify=sim.ssl_context())``: the
client builds its own transport and ignores ``verify=``), or take
``sim.replicate_client()``. The contract it follows is
``shared/reference/replicate-api.md`` plus the ``replicate`` 1.0.7 client source:

* ``/v1`` JSON endpoints with Bearer auth and RFC 7807 problem-details errors:
  create (by version, official model, deployment), get, list (newest first, cursor
  pagination, ``?source=web|api``), cancel, model, versions, deployment, account and the
  default webhook secret.
* Predictions move ``starting`` -> ``processing`` -> ``succeeded``/``failed`` lazily, from
  the simulator's clock (:class:`SimClock`), over ``prediction_duration`` seconds.
  ``sim.advance(seconds)`` moves that clock forward without sleeping.
* Output files (:class:`File`) are served from ``{base_url}/delivery/pbxt/{token}/{filename}``
  (mimicking ``https://replicate.delivery/pbxt/<token>/out-0.png``), streamed in 1 MiB
  chunks, with ``Content-Length``, ``HEAD`` and single ``Range`` support, no auth.
  They answer 404 ``url_ttl`` seconds after the prediction completes, once its data is
  removed (API predictions, ``data_removal_after`` seconds after completion, as Replicate
  does after one hour), or after :meth:`ReplicateSimulator.expire_urls` /
  :meth:`~ReplicateSimulator.rotate_urls`.
* Faults (:meth:`ReplicateSimulator.inject_fault`): error statuses (e.g. 429 with
  ``Retry-After``), truncated downloads and dropped connections.
* Webhooks: predictions created with ``webhook`` get signed POSTs (Standard Webhooks
  scheme, the secret from ``GET /v1/webhooks/default/secret``) for ``start``, ``output``
  and ``completed`` (``logs`` events are not sent).

Example::

    with ReplicateSimulator() as sim:
        sim.add_model("acme/painter", outputs=File(b"png bytes"))
        client = replicate.Client(api_token=sim.token, base_url=sim.base_url)
        url = client.run("acme/painter", input={"prompt": "a cat"})
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import secrets
import shutil
import ssl
import string
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import httpx
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from cachelayer.testing.tls import CertificateFiles, generate_certificate, server_ssl_context

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_OUTPUT_SCHEMA",
    "ITERATOR_OUTPUT_SCHEMA",
    "DataURI",
    "Fault",
    "File",
    "ReplicateSimulator",
    "RequestRecord",
    "SimClock",
    "WebhookDelivery",
]

#: Bytes per streamed chunk, and the size of the pseudo-random block generated files repeat.
CHUNK_SIZE = 1 << 20

#: Output schema of a model whose output is one file URL (the ``add_model`` default).
DEFAULT_OUTPUT_SCHEMA: dict[str, Any] = {"type": "string", "format": "uri"}

#: Output schema of a model whose output is an iterator of strings (text models).
ITERATOR_OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "array",
    "items": {"type": "string"},
    "x-cog-array-type": "iterator",
}

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
STATUSES = frozenset({"starting", "processing"}) | TERMINAL_STATUSES

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_TOKEN_ALPHABET = string.ascii_letters + string.digits
_MAX_WAIT = 60.0  # seconds; Replicate holds ``Prefer: wait`` requests at most this long


# ---------------------------------------------------------------------------------------
# Output leaves


@lru_cache(maxsize=32)
def _random_block(seed: int) -> bytes:
    """The 1 MiB block a generated :class:`File` with this ``seed`` repeats."""
    return random.Random(seed).randbytes(CHUNK_SIZE)


class File:
    """An output file: literal ``content``, or ``size`` bytes generated from ``seed``.

    Generated content is one 1 MiB block of ``random.Random(seed).randbytes`` repeated and
    cut to ``size`` bytes, so files of hundreds of MB are streamed with flat memory.
    ``content_type`` is sent as ``Content-Type``; ``filename`` is the last segment of its
    delivery URL (``/delivery/pbxt/<token>/<filename>``) and may not contain ``/``.

    Raises :class:`ValueError` when neither ``content`` nor ``size`` is given, when both are
    given and disagree, or when ``size`` is negative.
    """

    def __init__(
        self,
        content: bytes | None = None,
        *,
        size: int | None = None,
        seed: int = 0,
        content_type: str = "image/png",
        filename: str = "out-0.png",
    ) -> None:
        if content is None and size is None:
            raise ValueError("File needs content or size")
        if content is not None:
            content = bytes(content)
            if size is not None and size != len(content):
                raise ValueError(f"size={size} but content has {len(content)} bytes")
            size = len(content)
        assert size is not None
        if size < 0:
            raise ValueError("size must be >= 0")
        if not filename or "/" in filename:
            raise ValueError(f"bad filename {filename!r}")
        self._content = content
        self.size: int = size
        """Length in bytes."""
        self.seed = seed
        self.content_type = content_type
        self.filename = filename
        self._sha256: str | None = None

    @property
    def generated(self) -> bool:
        """True when the bytes come from ``seed`` rather than literal content."""
        return self._content is None

    def iter_range(self, start: int, stop: int, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield bytes ``[start, stop)`` in chunks of at most ``chunk_size`` bytes.

        Generated files never yield a chunk crossing a 1 MiB block boundary, so with the
        default ``chunk_size`` and an aligned ``start`` every full chunk is the cached block
        itself (no copy).
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        start = max(0, start)
        stop = min(self.size, stop)
        pos = start
        content = self._content
        if content is not None:
            while pos < stop:
                n = min(chunk_size, stop - pos)
                yield content[pos : pos + n]
                pos += n
            return
        block = _random_block(self.seed)
        while pos < stop:
            offset = pos % CHUNK_SIZE
            n = min(chunk_size, stop - pos, CHUNK_SIZE - offset)
            yield block if (offset == 0 and n == CHUNK_SIZE) else block[offset : offset + n]
            pos += n

    def iter_bytes(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the whole file in chunks of at most ``chunk_size`` bytes."""
        return self.iter_range(0, self.size, chunk_size)

    def read(self) -> bytes:
        """The whole file in memory (only for small files)."""
        if self._content is not None:
            return self._content
        return b"".join(self.iter_bytes())

    def sha256(self) -> str:
        """Hex SHA-256 of the content, computed by streaming (cached after the first call)."""
        if self._sha256 is None:
            h = hashlib.sha256()
            for chunk in self.iter_bytes():
                h.update(chunk)
            self._sha256 = h.hexdigest()
        return self._sha256

    def __repr__(self) -> str:
        kind = f"seed={self.seed}" if self.generated else "literal"
        return f"File({self.filename!r}, size={self.size}, {kind}, {self.content_type!r})"


class DataURI:
    """An output leaf rendered inline as ``data:<content_type>;base64,<content>``.

    Replicate returns small files this way in sync mode (``Prefer: wait``).
    """

    def __init__(self, content: bytes, content_type: str = "image/webp") -> None:
        self.content = bytes(content)
        self.content_type = content_type

    @property
    def size(self) -> int:
        """Length of the decoded content in bytes."""
        return len(self.content)

    @property
    def uri(self) -> str:
        """The ``data:`` URI string."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.content).decode()}"

    def sha256(self) -> str:
        """Hex SHA-256 of the decoded content."""
        return hashlib.sha256(self.content).hexdigest()

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"DataURI({self.content_type!r}, size={self.size})"


# ---------------------------------------------------------------------------------------
# Clock


class SimClock:
    """The simulator's notion of now: the real clock (monotonic) plus a manual offset.

    ``time()`` is Unix time in seconds (float), ``now()`` the same as an aware UTC
    ``datetime``; calling the clock returns ``now()``. ``advance(seconds)`` moves it forward.
    Use :meth:`ReplicateSimulator.advance` rather than this method so held requests notice.
    """

    def __init__(self) -> None:
        self._wall0 = time.time()
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        """Seconds added by :meth:`advance` so far."""
        return self._offset

    def time(self) -> float:
        """Now, as Unix seconds."""
        return self._wall0 + (time.monotonic() - self._mono0) + self._offset

    def now(self) -> dt.datetime:
        """Now, as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.time(), dt.timezone.utc)

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._offset += seconds

    def __call__(self) -> dt.datetime:
        return self.now()


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_epoch(value: dt.datetime | float | int) -> float:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.timestamp()
    return float(value)


# ---------------------------------------------------------------------------------------
# Records


class RequestRecord(NamedTuple):
    """One request served: method, path (no query), status, query string, Unix time."""

    method: str
    path: str
    status: int
    query: str
    time: float


@dataclass
class Fault:
    """A pending injected fault (see :meth:`ReplicateSimulator.inject_fault`).

    ``remaining`` counts down as matching requests are hit.
    """

    kind: str
    remaining: int
    path_prefix: str | None = None
    status: int | None = None
    retry_after: float | None = None
    method: str | None = None


@dataclass(frozen=True)
class WebhookDelivery:
    """One webhook POST attempt: prediction id, event, target URL, attempt number (1-based),
    ``webhook-id`` header, HTTP status (``None`` when the request failed) and error text."""

    prediction_id: str
    event: str
    url: str
    attempt: int
    webhook_id: str
    status: int | None
    error: str | None


# ---------------------------------------------------------------------------------------
# Internal state


@dataclass
class _Version:
    id: str
    model: str
    created_at: float
    outputs: Any
    output_schema: dict[str, Any]
    input_schema: dict[str, Any]
    duration: float | None

    @property
    def iterator(self) -> bool:
        return (
            self.output_schema.get("type") == "array"
            and self.output_schema.get("x-cog-array-type") == "iterator"
        )


@dataclass
class _Model:
    owner: str
    name: str
    official: bool
    description: str | None
    versions: list[_Version] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class _Deployment:
    owner: str
    name: str
    model: str
    version_id: str | None
    created_at: float


@dataclass
class _SlotRef:
    index: int


@dataclass
class _Slot:
    path: str
    file: File
    token: str


@dataclass
class _Token:
    pid: str
    slot: _Slot
    expires_at: float
    revoked: bool = False


@dataclass
class _Prediction:
    id: str
    seq: int
    model: str
    version: str
    input: Any
    source: str
    created_at: float
    duration: float
    tree: Any
    slots: list[_Slot]
    final_status: str
    error: str | None
    iterator: bool
    logs: str | None = None
    fixed_status: str | None = None  # seeded or canceled predictions do not move
    started_at: float | None = None
    completed_at: float | None = None
    data_removed: bool = False
    deployment: str | None = None
    webhook: str | None = None
    webhook_events: tuple[str, ...] = ()
    webhook_events_filter: list[str] | None = None
    events_sent: set[str] = field(default_factory=set)


class _ProblemError(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail


def _json_pointer(parent: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def _problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps({"title": title, "detail": detail, "status": status})
    return Response(body, status=status, content_type="application/problem+json", headers=headers)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json")


class _QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the per-request access log line, with a socket timeout,
    speaking HTTP/1.1 so clients keep connections alive as they do with Replicate's API
    and CDN (werkzeug's default HTTP/1.0 closes every connection)."""

    timeout = 60
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


# ---------------------------------------------------------------------------------------
# The simulator


class ReplicateSimulator:
    """A Replicate API (``/v1``) and file-delivery server on a real socket.

    Arguments (times in seconds of the simulator's clock, see :class:`SimClock`):

    * ``token``: the bearer token every ``/v1`` request must carry; others get 401.
    * ``https``: serve HTTPS with a generated self-signed CA; :attr:`ca_file` is its PEM.
    * ``url_ttl``: seconds after a prediction completes that its delivery URLs answer
      (URLs minted later by :meth:`rotate_urls` live ``url_ttl`` from then); then 404.
    * ``data_removal_after``: seconds after completion when ``source="api"`` predictions get
      ``data_removed=true`` and ``output=null`` and their URLs answer 404. The ``input`` is
      kept unless ``remove_input_on_data_removal``, then it becomes ``null``. ``logs``
      become ``""``. ``source="web"`` predictions never lose data.
    * ``prediction_duration``: seconds a created prediction takes: ``starting`` for the
      first half, ``processing`` for the second, then ``succeeded`` (or ``failed`` when the
      model's ``outputs`` callable raised). ``add_model(duration=...)`` overrides it.
    * ``page_size``: predictions per ``GET /v1/predictions`` page.
    * ``host``/``port``: where to listen (port 0: any free port).
    * ``refresh_expired_urls``: when true, reading a prediction whose data is kept but whose
      URLs have died (TTL or :meth:`expire_urls`) mints fresh URLs, as re-reading a
      prediction on Replicate yields its current URLs. Default false: dead URLs stay in the
      prediction until :meth:`rotate_urls`.
    * ``webhook_secret``: the ``whsec_...`` signing secret (random when ``None``).
    * ``webhook_verify``: ``verify=`` for the webhook sender's ``httpx.Client``.
    * ``webhook_max_attempts``: POST attempts per webhook event (non-2xx or errors retry).

    Creates answer 201 with the prediction. With ``Prefer: wait`` (or ``wait=N``, N clamped
    to 1..60) the request is held up to N real seconds (60 by default) or until the
    prediction finishes; one still running then comes back ``starting`` with no output,
    which is what ``replicate.run()`` expects before it polls ``GET /v1/predictions/{id}``.

    Use as a context manager or call :meth:`start` / :meth:`stop`. All methods are
    thread-safe.
    """

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
        refresh_expired_urls: bool = False,
        remove_input_on_data_removal: bool = False,
        webhook_secret: str | None = None,
        webhook_verify: bool | str = True,
        webhook_max_attempts: int = 3,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        self.token = token
        self.https = https
        self.url_ttl = float(url_ttl)
        self.data_removal_after = float(data_removal_after)
        self.prediction_duration = float(prediction_duration)
        self.page_size = page_size
        self.host = host
        self.port = port
        self.refresh_expired_urls = refresh_expired_urls
        self.remove_input_on_data_removal = remove_input_on_data_removal
        self.webhook_secret: str = webhook_secret or (
            "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        )
        """The ``whsec_<base64>`` secret webhooks are signed with."""
        self.webhook_verify = webhook_verify
        self.webhook_max_attempts = max(1, webhook_max_attempts)

        self.clock = SimClock()
        """The simulator's clock (:class:`SimClock`); ``sim.clock()`` is now as a datetime."""

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._models: dict[str, _Model] = {}
        self._versions: dict[str, _Version] = {}
        self._deployments: dict[str, _Deployment] = {}
        self._predictions: dict[str, _Prediction] = {}
        self._tokens: dict[str, _Token] = {}
        self._faults: list[Fault] = []
        self._seq = 0
        self._webhook_pending: list[_Prediction] = []
        self._webhook_deliveries: list[WebhookDelivery] = []

        self._log_lock = threading.Lock()
        self._log: list[RequestRecord] = []

        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._webhook_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._certs: CertificateFiles | None = None
        self._base_url: str | None = None
        self._host_port: str | None = None

        self._url_map = Map(
            [
                Rule("/v1/predictions", methods=["GET"], endpoint="list_predictions"),
                Rule("/v1/predictions", methods=["POST"], endpoint="create_prediction"),
                Rule("/v1/predictions/<pid>", methods=["GET"], endpoint="get_prediction"),
                Rule("/v1/predictions/<pid>/cancel", methods=["POST"], endpoint="cancel"),
                Rule("/v1/models/<owner>/<name>", methods=["GET"], endpoint="get_model"),
                Rule(
                    "/v1/models/<owner>/<name>/versions",
                    methods=["GET"],
                    endpoint="list_versions",
                ),
                Rule(
                    "/v1/models/<owner>/<name>/versions/<vid>",
                    methods=["GET"],
                    endpoint="get_version",
                ),
                Rule(
                    "/v1/models/<owner>/<name>/predictions",
                    methods=["POST"],
                    endpoint="create_model_prediction",
                ),
                Rule("/v1/deployments/<owner>/<name>", methods=["GET"], endpoint="get_deployment"),
                Rule(
                    "/v1/deployments/<owner>/<name>/predictions",
                    methods=["POST"],
                    endpoint="create_deployment_prediction",
                ),
                Rule("/v1/webhooks/default/secret", methods=["GET"], endpoint="webhook_secret"),
                Rule("/v1/account", methods=["GET"], endpoint="account"),
                Rule(
                    "/delivery/<prefix>/<token>/<path:filename>",
                    methods=["GET", "HEAD"],
                    endpoint="delivery",
                ),
            ],
            strict_slashes=False,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ReplicateSimulator:
        """Bind the socket and serve in a background thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        ctx: ssl.SSLContext | None = None
        if self.https:
            self._certs = generate_certificate()
            ctx = server_ssl_context(self._certs)
        server = make_server(
            self.host, self.port, self._wsgi, threaded=True, request_handler=_QuietHandler
        )
        if ctx is not None:
            # Handshake lazily in the per-connection thread, not in the accept loop.
            server.socket = ctx.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
            server.ssl_context = ctx
        self._server = server
        port = server.server_port
        url_host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in url_host:
            url_host = f"[{url_host}]"
        self._host_port = f"{url_host}:{port}"
        self._base_url = f"{'https' if self.https else 'http'}://{self._host_port}"
        self._stopping.clear()
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"replicate-sim-{port}",
            daemon=True,
        )
        self._thread.start()
        self._webhook_thread = threading.Thread(
            target=self._webhook_loop, name=f"replicate-sim-webhooks-{port}", daemon=True
        )
        self._webhook_thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release held requests, close the socket, delete the certificate."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._webhook_thread is not None:
            self._webhook_thread.join(timeout=5)
        self._server = self._thread = self._webhook_thread = None
        if self._certs is not None:
            shutil.rmtree(self._certs.directory, ignore_errors=True)
            self._certs = None

    def __enter__(self) -> ReplicateSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http(s)://127.0.0.1:<port>``: what ``replicate.Client(base_url=...)`` takes."""
        if self._base_url is None:
            raise RuntimeError("simulator not started")
        return self._base_url

    @property
    def host_port(self) -> str:
        """``127.0.0.1:<port>``: the delivery host, e.g. for an allow-list."""
        if self._host_port is None:
            raise RuntimeError("simulator not started")
        return self._host_port

    @property
    def ca_file(self) -> str | None:
        """Path of the CA certificate PEM to trust when ``https`` (else ``None``)."""
        return self._certs.ca_file if self._certs else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client :class:`ssl.SSLContext` trusting :attr:`ca_file` (``None`` over HTTP).
        Pass it as httpx's ``verify=`` (httpx 0.28 deprecates ``verify=<path>``)."""
        if self._certs is None:
            return None
        return ssl.create_default_context(cafile=self._certs.ca_file)

    def replicate_client(self, token: str | None = None, **kwargs: Any) -> Any:
        """A ``replicate.Client`` for this simulator: ``token`` (default :attr:`token`),
        ``base_url``, and over HTTPS a transport trusting the CA. ``kwargs`` go to the
        client (e.g. ``transport=``, ``timeout=``). ``poll_interval`` is set to 0.05 s."""
        import replicate

        if self._certs is not None and "transport" not in kwargs:
            kwargs["transport"] = httpx.HTTPTransport(verify=self.ssl_context() or True)
        client = replicate.Client(api_token=token or self.token, base_url=self.base_url, **kwargs)
        client.poll_interval = 0.05
        return client

    def now(self) -> dt.datetime:
        """The simulator's now as an aware UTC datetime (same as ``sim.clock()``)."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the simulator's clock forward ``seconds`` (timers, TTLs, removal) at once."""
        self.clock.advance(seconds)
        with self._cond:
            self._cond.notify_all()

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
        """
        owner, model_name = _split_name(name)
        with self._lock:
            model = self._models.get(name)
            if model is None:
                model = _Model(owner, model_name, official, description)
                self._models[name] = model
            else:
                model.official = official
                if description is not None:
                    model.description = description
            vid = version_id or hashlib.sha256(f"{name}#{len(model.versions)}".encode()).hexdigest()
            if vid in self._versions:
                raise ValueError(f"version {vid} already exists")
            version = _Version(
                id=vid,
                model=name,
                created_at=self.clock.time(),
                outputs=outputs,
                output_schema=dict(output_schema or DEFAULT_OUTPUT_SCHEMA),
                input_schema=dict(
                    input_schema or {"type": "object", "title": "Input", "properties": {}}
                ),
                duration=duration,
            )
            model.versions.append(version)
            self._versions[vid] = version
            return vid

    def add_deployment(self, name: str, model: str, version_id: str | None = None) -> None:
        """Register deployment ``name`` (``owner/name``) running ``model`` (``owner/name``
        or ``owner/name:version``). Without a version it runs the model's newest version."""
        owner, dep_name = _split_name(name)
        model_name, _, vid = model.partition(":")
        vid = vid or version_id or ""
        with self._lock:
            if model_name not in self._models:
                raise KeyError(f"unknown model {model_name}")
            if vid and vid not in self._versions:
                raise KeyError(f"unknown version {vid}")
            self._deployments[name] = _Deployment(
                owner, dep_name, model_name, vid or None, self.clock.time()
            )

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
        """
        if source not in ("api", "web"):
            raise ValueError("source must be 'api' or 'web'")
        if status not in STATUSES:
            raise ValueError(f"bad status {status!r}")
        model_name, _, vid = model.partition(":")
        vid = vid or version_id or ""
        with self._lock:
            if model_name not in self._models or (vid and vid not in self._versions):
                existing = self._models.get(model_name)
                official = existing.official if existing is not None else True
                vid = self.add_model(model_name, None, version_id=vid or None, official=official)
                model_versions = self._models[model_name].versions
                # A version made up for history is older than the registered ones, so
                # model-level creates keep using the newest registered version.
                model_versions.insert(0, model_versions.pop())
            version = self._versions[vid] if vid else self._models[model_name].versions[-1]
            now = self.clock.time()
            created = _to_epoch(created_at) if created_at is not None else None
            completed = _to_epoch(completed_at) if completed_at is not None else None
            if status in TERMINAL_STATUSES:
                if created is None:
                    completed = now if completed is None else completed
                    created = completed - 1.0
                elif completed is None:
                    completed = created + 1.0
            elif created is None:
                created = now
            assert created is not None
            tree, files = _build_tree(output)
            p = _Prediction(
                id=prediction_id or _new_id(),
                seq=self._next_seq(),
                model=model_name,
                version=version.id,
                input=dict(input or {}),
                source=source,
                created_at=created,
                duration=0.0,
                tree=tree,
                slots=[],
                final_status=status,
                error=error,
                iterator=version.iterator,
                logs=logs,
                fixed_status=status,
                started_at=(
                    created + min(0.1, (completed - created) / 2)
                    if completed is not None
                    else created
                ),
                completed_at=completed,
            )
            if p.id in self._predictions:
                raise ValueError(f"prediction {p.id} already exists")
            expires = (completed if completed is not None else now) + self.url_ttl
            self._attach_slots(p, files, expires)
            self._predictions[p.id] = p
            if data_removed:
                self._remove(p)
            return p.id

    # -- test controls -------------------------------------------------------------------

    def expire_urls(self, pid: str | None = None) -> None:
        """Make the current delivery URLs of prediction ``pid`` (or of every prediction)
        answer 404 from now on. The prediction keeps showing them (unless
        ``refresh_expired_urls``); :meth:`rotate_urls` hands out fresh ones."""
        with self._lock:
            preds = [self._get(pid)] if pid is not None else list(self._predictions.values())
            for p in preds:
                for slot in p.slots:
                    self._tokens[slot.token].revoked = True

    def remove_data(self, pid: str) -> None:
        """Remove prediction ``pid``'s data now, as Replicate does to API predictions after
        an hour: ``data_removed=true``, ``output=null``, its URLs answer 404."""
        with self._lock:
            self._remove(self._get(pid))

    def rotate_urls(self, pid: str) -> list[str]:
        """Give prediction ``pid`` fresh delivery URLs at the same output paths (live for
        ``url_ttl`` seconds from now, or from completion if that is later); the old ones
        answer 404. Returns the new URLs in output order. Raises :class:`ValueError` if
        its data was removed."""
        with self._lock:
            p = self._get(pid)
            if p.data_removed:
                raise ValueError(f"prediction {pid} has no data left")
            self._rotate(p)
            return [self._url(slot) for slot in p.slots]

    def delivery_urls(self, pid: str) -> list[str]:
        """Prediction ``pid``'s current delivery URLs in output order (dead or alive,
        shown or not yet shown)."""
        with self._lock:
            return [self._url(slot) for slot in self._get(pid).slots]

    def prediction(self, pid: str) -> dict[str, Any]:
        """The prediction's JSON as ``GET /v1/predictions/{id}`` returns it now. Raises
        :class:`KeyError` for an unknown id."""
        with self._lock:
            return self._render(self._get(pid))

    @property
    def prediction_ids(self) -> list[str]:
        """Ids of every prediction, newest first (the list endpoint's order)."""
        with self._lock:
            ordered = sorted(self._predictions.values(), key=_order_key, reverse=True)
            return [p.id for p in ordered]

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
        they were injected; each request triggers at most one.
        """
        if kind not in ("status", "truncate", "drop"):
            raise ValueError(f"unknown fault kind {kind!r}")
        if times < 1:
            raise ValueError("times must be >= 1")
        if kind == "status" and status is None:
            status = 429 if retry_after is not None else 500
        fault = Fault(
            kind, times, path_prefix, status, retry_after, method.upper() if method else None
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        """``(method, path, status)`` of every request served so far, in order (path
        without query string)."""
        with self._log_lock:
            return [(r.method, r.path, r.status) for r in self._log]

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request served so far as :class:`RequestRecord` (with query and time)."""
        with self._log_lock:
            return list(self._log)

    def download_count(self, url: str) -> int:
        """How many ``GET`` requests for delivery URL ``url`` (absolute or a path) were
        answered 200/206 (a truncated or dropped download counts: it started)."""
        path = urlsplit(url).path
        with self._log_lock:
            return sum(
                1
                for r in self._log
                if r.method == "GET" and r.path == path and r.status in (200, 206)
            )

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every webhook POST attempt so far, in order."""
        with self._lock:
            return list(self._webhook_deliveries)

    def sign_webhook(
        self, body: str | bytes, *, webhook_id: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """Headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) signing
        ``body`` with :attr:`webhook_secret` the way Replicate does; ``timestamp`` is Unix
        seconds (default: the real now)."""
        raw = body.encode() if isinstance(body, str) else body
        wid = webhook_id or f"msg_{_token(27)}"
        ts = str(int(time.time()) if timestamp is None else timestamp)
        key = base64.b64decode(self.webhook_secret.split("_", 1)[1])
        mac = hmac.new(key, f"{wid}.{ts}.".encode() + raw, hashlib.sha256).digest()
        return {
            "webhook-id": wid,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }

    # -- state helpers (call with self._lock held) --------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _get(self, pid: str) -> _Prediction:
        try:
            return self._predictions[pid]
        except KeyError:
            raise KeyError(f"unknown prediction {pid}") from None

    def _attach_slots(
        self, p: _Prediction, files: list[tuple[str, File]], expires_at: float
    ) -> None:
        for path, file in files:
            slot = _Slot(path, file, _token(32))
            p.slots.append(slot)
            self._tokens[slot.token] = _Token(p.id, slot, expires_at)

    def _rotate(self, p: _Prediction, only_dead: bool = False) -> None:
        now = self.clock.time()
        expires = max(now, p.completed_at or (p.created_at + p.duration)) + self.url_ttl
        for slot in p.slots:
            old = self._tokens[slot.token]
            if only_dead and self._token_alive(old, now):
                continue
            old.revoked = True
            slot.token = _token(32)
            self._tokens[slot.token] = _Token(p.id, slot, expires)

    def _remove(self, p: _Prediction) -> None:
        p.data_removed = True
        for slot in p.slots:
            self._tokens[slot.token].revoked = True
        if self.remove_input_on_data_removal:
            p.input = None

    def _token_alive(self, tok: _Token, now: float) -> bool:
        return not tok.revoked and now < tok.expires_at

    def _state(self, p: _Prediction, now: float) -> tuple[str, float | None, float | None]:
        """(status, started_at, completed_at) at ``now``."""
        if p.fixed_status is not None:
            return p.fixed_status, p.started_at, p.completed_at
        started = p.created_at + p.duration / 2
        done = p.created_at + p.duration
        if now >= done:
            return p.final_status, started, done
        if now >= started:
            return "processing", started, None
        return "starting", None, None

    def _settle(self, p: _Prediction, now: float) -> tuple[str, float | None, float | None]:
        """Apply lazy transitions (data removal) and return the state."""
        status, started, completed = self._state(p, now)
        if (
            not p.data_removed
            and p.source == "api"
            and status in TERMINAL_STATUSES
            and completed is not None
            and now >= completed + self.data_removal_after
        ):
            self._remove(p)
        return status, started, completed

    def _url(self, slot: _Slot) -> str:
        return f"{self.base_url}/delivery/pbxt/{slot.token}/{slot.file.filename}"

    def _materialize(self, p: _Prediction, tree: Any) -> Any:
        if isinstance(tree, _SlotRef):
            return self._url(p.slots[tree.index])
        if isinstance(tree, dict):
            return {k: self._materialize(p, v) for k, v in tree.items()}
        if isinstance(tree, list):
            return [self._materialize(p, v) for v in tree]
        return tree

    def _render(self, p: _Prediction, *, report_starting: bool = False) -> dict[str, Any]:
        now = self.clock.time()
        status, started, completed = self._settle(p, now)
        if report_starting and status not in TERMINAL_STATUSES:
            # A held create that times out comes back "starting" (the client's run() treats
            # anything else as finished).
            status, started, completed = "starting", None, None
        output: Any = None
        if not p.data_removed:
            if self.refresh_expired_urls and status in TERMINAL_STATUSES:
                self._rotate(p, only_dead=True)
            if p.fixed_status is not None or status == "succeeded":
                output = self._materialize(p, p.tree)
            elif status == "processing" and p.iterator and isinstance(p.tree, list):
                frac = (now - (started or now)) / max(p.duration / 2, 1e-9)
                output = self._materialize(p, p.tree[: int(len(p.tree) * min(frac, 1.0))])
        if p.data_removed:
            logs = ""
        elif p.logs is not None:
            logs = p.logs
        elif status == "starting":
            logs = ""
        elif status == "processing":
            logs = "Running predict()...\n"
        elif status == "failed":
            logs = f"Running predict()...\nTraceback (most recent call last):\n{p.error}\n"
        else:
            logs = "Running predict()...\nDone.\n"
        metrics: dict[str, Any] = {}
        if completed is not None and status == "succeeded":
            metrics = {
                "predict_time": round(completed - (started or p.created_at), 6),
                "total_time": round(completed - p.created_at, 6),
            }
        base = self.base_url
        obj: dict[str, Any] = {
            "id": p.id,
            "model": p.model,
            "version": p.version,
            "input": p.input,
            "logs": logs,
            "output": output,
            "data_removed": p.data_removed,
            "error": p.error if status == "failed" else None,
            "status": status,
            "source": p.source,
            "created_at": _iso(p.created_at),
            "started_at": _iso(started),
            "completed_at": _iso(completed),
            "metrics": metrics,
            "urls": {
                "get": f"{base}/v1/predictions/{p.id}",
                "cancel": f"{base}/v1/predictions/{p.id}/cancel",
                "web": f"https://replicate.com/p/{p.id}",
            },
        }
        if p.deployment:
            obj["deployment"] = p.deployment
        if p.webhook:
            obj["webhook"] = p.webhook
            obj["webhook_events_filter"] = list(p.webhook_events)
        return obj

    def _version_json(self, v: _Version) -> dict[str, Any]:
        return {
            "id": v.id,
            "created_at": _iso(v.created_at),
            "cog_version": "0.9.4",
            "openapi_schema": {
                "openapi": "3.0.2",
                "info": {"title": "Cog", "version": "0.1.0"},
                "paths": {},
                "components": {"schemas": {"Input": v.input_schema, "Output": v.output_schema}},
            },
        }

    def _model_json(self, m: _Model) -> dict[str, Any]:
        runs = sum(1 for p in self._predictions.values() if p.model == m.full_name)
        return {
            "url": f"https://replicate.com/{m.full_name}",
            "owner": m.owner,
            "name": m.name,
            "description": m.description,
            "visibility": "public",
            "github_url": None,
            "paper_url": None,
            "license_url": None,
            "run_count": runs,
            "cover_image_url": None,
            "default_example": None,
            "is_official": m.official,
            "latest_version": self._version_json(m.versions[-1]) if m.versions else None,
        }

    # -- WSGI ------------------------------------------------------------------------------

    def _wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        method = request.method
        path = request.path
        fault = self._take_fault(method, path)
        response: Response
        if fault is not None and fault.kind == "status":
            status = fault.status or 500
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            response = _problem(status, "Injected fault", f"simulated HTTP {status}", headers)
        else:
            try:
                response = self._dispatch(request)
            except _ProblemError as exc:
                response = _problem(exc.status, exc.title, exc.detail)
            except HTTPException as exc:
                code = exc.code or 500
                response = _problem(code, exc.name, exc.description or exc.name)
            if fault is not None:
                response = _damage(response, fault)
        with self._log_lock:
            self._log.append(
                RequestRecord(
                    method,
                    path,
                    response.status_code,
                    request.query_string.decode("latin-1"),
                    self.clock.time(),
                )
            )
        return response(environ, start_response)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining <= 0:
                    continue
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if fault.kind == "truncate" and not (
                    method == "GET" and path.startswith("/delivery/")
                ):
                    continue
                if fault.kind == "drop" and method == "HEAD":
                    continue
                fault.remaining -= 1
                self._faults = [f for f in self._faults if f.remaining > 0]
                return fault
        return None

    def _dispatch(self, request: Request) -> Response:
        adapter = self._url_map.bind_to_environ(request.environ)
        endpoint, args = adapter.match()
        if endpoint == "delivery":
            return self._delivery(request, **args)
        self._check_auth(request)
        handler: Callable[..., Response] = getattr(self, f"_ep_{endpoint}")
        return handler(request, **args)

    def _check_auth(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        ):
            raise _ProblemError(
                401,
                "Unauthenticated",
                "You did not pass a valid authentication token",
            )

    def _body(self, request: Request) -> dict[str, Any]:
        raw = request.get_data(cache=False)
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise _ProblemError(400, "Invalid JSON", "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _ProblemError(400, "Invalid JSON", "The request body must be a JSON object")
        return body

    # -- endpoints ---------------------------------------------------------------------

    def _ep_create_prediction(self, request: Request) -> Response:
        body = self._body(request)
        ref = body.get("version")
        if not isinstance(ref, str) or not ref:
            raise _ProblemError(422, "Invalid version", "version is required")
        with self._lock:
            version = self._resolve_version_ref(ref)
        return self._create(request, body, version)

    def _ep_create_model_prediction(self, request: Request, owner: str, name: str) -> Response:
        body = self._body(request)
        with self._lock:
            model = self._models.get(f"{owner}/{name}")
            if model is None or not model.versions:
                raise _ProblemError(404, "Not found", f"Model {owner}/{name} not found")
            if not model.official:
                raise _ProblemError(
                    404,
                    "Not found",
                    f"Model {owner}/{name} is not an official model; "
                    "create the prediction with a version",
                )
            version = model.versions[-1]
        return self._create(request, body, version)

    def _ep_create_deployment_prediction(self, request: Request, owner: str, name: str) -> Response:
        body = self._body(request)
        with self._lock:
            dep = self._deployments.get(f"{owner}/{name}")
            if dep is None:
                raise _ProblemError(404, "Not found", f"Deployment {owner}/{name} not found")
            version = (
                self._versions[dep.version_id]
                if dep.version_id
                else self._models[dep.model].versions[-1]
            )
        return self._create(request, body, version, deployment=f"{owner}/{name}")

    def _resolve_version_ref(self, ref: str) -> _Version:
        name, colon, vid = ref.rpartition(":")
        if not colon:
            name, vid = "", ref
        if vid in self._versions and (not name or self._versions[vid].model == name):
            return self._versions[vid]
        if "/" in ref and not colon:
            model = self._models.get(ref)
            if model is not None and model.versions and model.official:
                return model.versions[-1]
        raise _ProblemError(
            422,
            "Invalid version or not permitted",
            f"The specified version {ref} does not exist (or perhaps you don't have access to it?)",
        )

    def _create(
        self,
        request: Request,
        body: dict[str, Any],
        version: _Version,
        deployment: str | None = None,
    ) -> Response:
        inp = body.get("input", {})
        if inp is None:
            inp = {}
        if not isinstance(inp, dict):
            raise _ProblemError(422, "Invalid input", "input must be a JSON object")
        webhook = body.get("webhook")
        if webhook is not None and not isinstance(webhook, str):
            raise _ProblemError(422, "Invalid webhook", "webhook must be a URL string")
        events_filter = body.get("webhook_events_filter")
        allowed_events = ("start", "output", "logs", "completed")
        if events_filter is not None and (
            not isinstance(events_filter, list)
            or any(e not in allowed_events for e in events_filter)
        ):
            raise _ProblemError(
                422,
                "Invalid webhook_events_filter",
                f"webhook_events_filter must be a list drawn from {list(allowed_events)}",
            )
        wait = _parse_prefer_wait(request.headers.get("Prefer"))

        # Run the model's "outputs" outside the lock (it is user code).
        error: str | None = None
        tree: Any = None
        files: list[tuple[str, File]] = []
        try:
            value = version.outputs(dict(inp)) if callable(version.outputs) else version.outputs
            tree, files = _build_tree(value)
        except Exception as exc:  # noqa: BLE001 - a model failure is data, not a crash
            error = str(exc)
        duration = self.prediction_duration if version.duration is None else version.duration

        with self._cond:
            now = self.clock.time()
            p = _Prediction(
                id=_new_id(),
                seq=self._next_seq(),
                model=version.model,
                version=version.id,
                input=inp,
                source="api",
                created_at=now,
                duration=max(0.0, duration),
                tree=tree,
                slots=[],
                final_status="failed" if error is not None else "succeeded",
                error=error,
                iterator=version.iterator,
                deployment=deployment,
                webhook=webhook,
                webhook_events=tuple(events_filter or allowed_events),
            )
            self._attach_slots(p, files, now + p.duration + self.url_ttl)
            self._predictions[p.id] = p
            if webhook:
                self._webhook_pending.append(p)
            self._cond.notify_all()

        timed_out = False
        if wait is not None:
            timed_out = not self._wait_terminal(p, wait)
        with self._lock:
            obj = self._render(p, report_starting=timed_out)
        return _json(obj, 201)

    def _wait_terminal(self, p: _Prediction, seconds: float) -> bool:
        """Block up to ``seconds`` real seconds until ``p`` is terminal; True if it is."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while True:
                now = self.clock.time()
                status = self._state(p, now)[0]
                if status in TERMINAL_STATUSES:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stopping.is_set():
                    return False
                due = p.created_at + p.duration - now
                self._cond.wait(max(0.001, min(remaining, due, 0.25)))

    def _ep_get_prediction(self, request: Request, pid: str) -> Response:
        with self._lock:
            p = self._predictions.get(pid)
            if p is None:
                raise _ProblemError(404, "Not found", f"Prediction {pid} not found")
            return _json(self._render(p))

    def _ep_cancel(self, request: Request, pid: str) -> Response:
        with self._cond:
            p = self._predictions.get(pid)
            if p is None:
                raise _ProblemError(404, "Not found", f"Prediction {pid} not found")
            now = self.clock.time()
            status, started, _ = self._settle(p, now)
            if status not in TERMINAL_STATUSES:
                p.fixed_status = "canceled"
                p.started_at = started
                p.completed_at = now
                p.tree = None
                for slot in p.slots:
                    self._tokens[slot.token].revoked = True
                p.slots = []
                self._cond.notify_all()
            return _json(self._render(p))

    def _ep_list_predictions(self, request: Request) -> Response:
        source = request.args.get("source")
        if source not in (None, "web", "api"):
            raise _ProblemError(400, "Invalid source", "source must be 'web' or 'api'")
        cursor = request.args.get("cursor")
        direction, key = "next", None
        if cursor:
            direction, key = _decode_cursor(cursor)
        with self._lock:
            items = sorted(
                (p for p in self._predictions.values() if source is None or p.source == source),
                key=_order_key,
                reverse=True,
            )
            if key is None:
                page = items[: self.page_size]
            elif direction == "next":
                page = [p for p in items if _order_key(p) < key][: self.page_size]
            else:
                page = [p for p in items if _order_key(p) > key][-self.page_size :]
            results = [self._render(p) for p in page]
            nxt = prev = None
            if page:
                last, first = _order_key(page[-1]), _order_key(page[0])
                if any(_order_key(p) < last for p in items):
                    nxt = self._list_url(_encode_cursor("next", last), source)
                if any(_order_key(p) > first for p in items):
                    prev = self._list_url(_encode_cursor("prev", first), source)
        return _json({"next": nxt, "previous": prev, "results": results})

    def _list_url(self, cursor: str, source: str | None) -> str:
        params = {"cursor": cursor}
        if source:
            params["source"] = source
        return f"{self.base_url}/v1/predictions?{urlencode(params)}"

    def _ep_get_model(self, request: Request, owner: str, name: str) -> Response:
        with self._lock:
            model = self._models.get(f"{owner}/{name}")
            if model is None:
                raise _ProblemError(404, "Not found", f"Model {owner}/{name} not found")
            return _json(self._model_json(model))

    def _ep_list_versions(self, request: Request, owner: str, name: str) -> Response:
        with self._lock:
            model = self._models.get(f"{owner}/{name}")
            if model is None:
                raise _ProblemError(404, "Not found", f"Model {owner}/{name} not found")
            results = [self._version_json(v) for v in reversed(model.versions)]
        return _json({"next": None, "previous": None, "results": results})

    def _ep_get_version(self, request: Request, owner: str, name: str, vid: str) -> Response:
        with self._lock:
            version = self._versions.get(vid)
            if version is None or version.model != f"{owner}/{name}":
                raise _ProblemError(
                    404, "Not found", f"Version {vid} of model {owner}/{name} not found"
                )
            return _json(self._version_json(version))

    def _ep_get_deployment(self, request: Request, owner: str, name: str) -> Response:
        with self._lock:
            dep = self._deployments.get(f"{owner}/{name}")
            if dep is None:
                raise _ProblemError(404, "Not found", f"Deployment {owner}/{name} not found")
            vid = dep.version_id or self._models[dep.model].versions[-1].id
            return _json(
                {
                    "owner": dep.owner,
                    "name": dep.name,
                    "current_release": {
                        "number": 1,
                        "model": dep.model,
                        "version": vid,
                        "created_at": _iso(dep.created_at),
                        "created_by": {
                            "type": "organization",
                            "username": dep.owner,
                            "name": dep.owner,
                            "github_url": None,
                        },
                        "configuration": {
                            "hardware": "gpu-t4",
                            "min_instances": 0,
                            "max_instances": 1,
                        },
                    },
                }
            )

    def _ep_webhook_secret(self, request: Request) -> Response:
        return _json({"key": self.webhook_secret})

    def _ep_account(self, request: Request) -> Response:
        return _json(
            {"type": "organization", "username": "acme", "name": "Acme", "github_url": None}
        )

    def _delivery(self, request: Request, prefix: str, token: str, filename: str) -> Response:
        with self._lock:
            tok = self._tokens.get(token)
            alive = False
            if tok is not None and prefix == "pbxt" and tok.slot.file.filename == filename:
                p = self._predictions[tok.pid]
                self._settle(p, self.clock.time())
                alive = not p.data_removed and self._token_alive(tok, self.clock.time())
        if not alive or tok is None:
            raise _ProblemError(404, "Not found", "The file does not exist or has expired")
        file = tok.slot.file
        size = file.size
        headers = {
            "Content-Type": file.content_type,
            "Accept-Ranges": "bytes",
            "Cache-Control": "private, max-age=3600",
            "ETag": f'"{tok.slot.token}"',
        }
        start, stop, status = 0, size, 200
        range_header = request.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if isinstance(parsed, str):
                return _problem(
                    416,
                    "Range Not Satisfiable",
                    f"{range_header} is outside 0-{size}",
                    {"Content-Range": f"bytes */{size}"},
                )
            if parsed is not None:
                start, stop = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response = Response(
            file.iter_range(start, stop), status=status, headers=headers, direct_passthrough=True
        )
        response.content_length = stop - start
        return response

    # -- webhooks --------------------------------------------------------------------------

    def _webhook_loop(self) -> None:
        verify: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=self.webhook_verify)
            if isinstance(self.webhook_verify, str)
            else self.webhook_verify
        )
        client = httpx.Client(verify=verify, timeout=10.0, follow_redirects=False)
        try:
            while not self._stopping.is_set():
                jobs: list[tuple[_Prediction, str, str]] = []
                with self._cond:
                    now = self.clock.time()
                    wait = 0.25
                    for p in list(self._webhook_pending):
                        status = self._settle(p, now)[0]
                        if "start" not in p.events_sent:
                            p.events_sent.add("start")
                            if "start" in p.webhook_events:
                                jobs.append((p, "start", json.dumps(self._render(p))))
                        if status in TERMINAL_STATUSES:
                            body = json.dumps(self._render(p))
                            if status == "succeeded" and "output" in p.webhook_events:
                                jobs.append((p, "output", body))
                            jobs.append((p, "completed", body))
                            p.events_sent.add("completed")
                            self._webhook_pending.remove(p)
                        else:
                            wait = min(wait, max(0.001, p.created_at + p.duration - now))
                    if not jobs:
                        self._cond.wait(wait)
                        continue
                for p, event, body in jobs:
                    if self._stopping.is_set():
                        break
                    self._send_webhook(client, p, event, body)
        finally:
            client.close()

    def _send_webhook(self, client: httpx.Client, p: _Prediction, event: str, body: str) -> None:
        assert p.webhook is not None
        wid = f"msg_{_token(27)}"
        for attempt in range(1, self.webhook_max_attempts + 1):
            headers = {"Content-Type": "application/json", "User-Agent": "Replicate-Simulator"}
            headers.update(self.sign_webhook(body, webhook_id=wid))
            status: int | None = None
            error: str | None = None
            try:
                resp = client.post(p.webhook, content=body.encode(), headers=headers)
                status = resp.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._webhook_deliveries.append(
                    WebhookDelivery(p.id, event, p.webhook, attempt, wid, status, error)
                )
            if status is not None and 200 <= status < 300:
                return
            if self._stopping.wait(0.1 * 2 ** (attempt - 1)):
                return


# ---------------------------------------------------------------------------------------
# Module helpers


def _split_name(name: str) -> tuple[str, str]:
    owner, slash, rest = name.partition("/")
    if not slash or not owner or not rest or "/" in rest or ":" in name:
        raise ValueError(f"expected 'owner/name', got {name!r}")
    return owner, rest


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(26))


def _token(n: int) -> str:
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))


def _order_key(p: _Prediction) -> tuple[float, int]:
    return (p.created_at, p.seq)


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
        raise _ProblemError(400, "Invalid cursor", f"cursor {cursor!r} is not valid") from None


def _build_tree(value: Any, path: str = "") -> tuple[Any, list[tuple[str, File]]]:
    """Copy an output value into the internal tree: File leaves become slot references
    (numbered in order), DataURI leaves strings. Raises TypeError on other objects."""
    files: list[tuple[str, File]] = []

    def walk(v: Any, at: str) -> Any:
        if isinstance(v, File):
            files.append((at, v))
            return _SlotRef(len(files) - 1)
        if isinstance(v, DataURI):
            return v.uri
        if v is None or isinstance(v, (str, bool, int, float)):
            return v
        if isinstance(v, dict):
            out = {}
            for k, item in v.items():
                if not isinstance(k, str):
                    raise TypeError(f"output object keys must be strings, got {k!r} at {at!r}")
                out[k] = walk(item, _json_pointer(at, k))
            return out
        if isinstance(v, (list, tuple)):
            return [walk(item, _json_pointer(at, i)) for i, item in enumerate(v)]
        raise TypeError(f"unsupported output value {type(v).__name__} at {at!r}")

    return walk(value, path), files


def _parse_prefer_wait(header: str | None) -> float | None:
    """Seconds to hold for ``Prefer: wait`` / ``wait=N`` (N clamped to 1..60), else None."""
    if not header:
        return None
    for part in header.split(","):
        token = part.strip().lower()
        if token == "wait":
            return _MAX_WAIT
        if token.startswith("wait="):
            try:
                n = float(token[5:].strip())
            except ValueError:
                raise _ProblemError(
                    400, "Invalid Prefer header", f"cannot parse {part.strip()!r}"
                ) from None
            return min(max(n, 1.0), _MAX_WAIT)
    return None


def _parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """Parse a single ``bytes=`` range into ``(start, stop)``; ``None`` to ignore it (multi
    or malformed), ``"unsatisfiable"`` when it lies outside the file."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size)
        start = int(first)
        stop = size if last == "" else min(size, int(last) + 1)
    except ValueError:
        return None
    if start >= size or stop <= start:
        return "unsatisfiable"
    return (start, stop)


def _damage(response: Response, fault: Fault) -> Response:
    """Wrap ``response`` so it sends its full Content-Length but only part of the body."""
    body_iter: Iterable[bytes]
    if response.direct_passthrough:
        body_iter = response.response  # type: ignore[assignment]
        length = response.content_length or 0
    else:
        data = response.get_data()
        body_iter = [data]
        length = len(data)
    limit = length // 2 if fault.kind == "truncate" else min(8, length // 2)

    def partial() -> Iterator[bytes]:
        sent = 0
        it = iter(body_iter)
        try:
            for chunk in it:
                if sent >= limit:
                    break
                piece = chunk[: limit - sent]
                sent += len(piece)
                yield piece
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    damaged = Response(
        partial(),
        status=response.status_code,
        headers=list(response.headers.items()),
        direct_passthrough=True,
    )
    damaged.content_length = length
    return damaged
