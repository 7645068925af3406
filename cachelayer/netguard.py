"""Connect-time enforcement of the address policy for ``requests`` sessions.

:class:`GuardedAdapter` is a ``requests`` ``HTTPAdapter`` whose urllib3 pools build
connections that, in ``_new_conn``, match the host they are about to reach against the
allow-list (:class:`~cachelayer.urls.AddressPolicy`), resolve it once with ``getaddrinfo``,
drop every resolved address the policy refuses (a wildcard pattern never reaches loopback,
private, link-local or metadata addresses) and connect to the address that was checked,
never re-resolving. So the address checked is the address connected: a URL that slips
past a parser, a redirect, or a DNS answer that changes between check and connect
(rebinding) still cannot reach a refused address. A refusal raises
:class:`~cachelayer.errors.DisallowedAddressError` before any ``socket.connect`` to it, and
urllib3 does not retry it.

With an egress proxy (``CACHELAYER_PROXY``, opt-in) the proxy opens the connection to the
target, so the check moves before it: the target's name must match the allow-list and every
address it resolves to here must pass the policy before the proxy is asked to ``CONNECT``
(or, for ``http`` targets, to forward the request). The trade-off: the address the proxy
then connects to is its own resolution, so protection against DNS rebinding (a name that
answers a public address to us and a private one to the proxy) rests on the proxy and its
resolver. The proxy itself is trusted (it is the operator's setting) and not checked.

:class:`DeadlineRetry` is the urllib3 ``Retry`` of these sessions: it stops at the download
deadline of the calling thread (:data:`request_deadline`), caps ``Retry-After`` and never
retries a certificate that does not verify (:func:`certificate_failure`).
"""

from __future__ import annotations

import socket
import ssl
import sys
import threading
import time
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import _set_socket_options, allowed_gai_family
from urllib3.util.retry import Retry
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from cachelayer.errors import DisallowedAddressError, DisallowedUrlError
from cachelayer.urls import AddressPolicy, canonical_host


def _resolve_checked(policy: AddressPolicy, raw_host: str, port: int) -> tuple[str, list[Any], list[str]]:
    """Match ``raw_host`` against ``policy``, resolve it once; returns its canonical name,
    the ``getaddrinfo`` entries the policy allows and the refused addresses (each with its
    reason). Raises :class:`DisallowedUrlError` for a host the allow-list does not name and
    ``socket.gaierror`` when it does not resolve."""
    host = raw_host.strip("[]").rstrip(".").lower()
    try:
        canon, _ = canonical_host(f"[{host}]" if ":" in host else host)
    except ValueError as exc:
        raise DisallowedUrlError(f"refusing to connect to {raw_host!r}: {exc}") from None
    pattern = policy.match(canon, port)
    if pattern is None:
        raise DisallowedUrlError(f"refusing to connect to {canon}:{port}: not allowed ({policy.setting})")
    allowed: list[Any] = []
    refused: list[str] = []
    for info in socket.getaddrinfo(host, port, allowed_gai_family(), socket.SOCK_STREAM):
        why = policy.refusal(pattern, str(info[4][0]))
        if why:
            refused.append(f"{info[4][0]} ({why})")
        else:
            allowed.append(info)
    return canon, allowed, refused


def _refused_only(canon: str, port: int, refused: list[str]) -> DisallowedAddressError:
    return DisallowedAddressError(
        f"refusing to connect to {canon}:{port}: it resolves only to refused addresses "
        f"{', '.join(refused)}; only a pattern naming it as an IP literal or as host:port allows them"
    )


def check_proxied_target(policy: AddressPolicy, host: str, port: int) -> None:
    """Before a proxy is asked to reach ``host:port``: the name must match ``policy`` and
    every address it resolves to here must pass it (the proxy resolves the name again and
    may pick any of them). Raises :class:`DisallowedUrlError` /
    :class:`~cachelayer.errors.DisallowedAddressError`, or ``OSError`` when the name does
    not resolve (a transient failure: retried like a failed connection)."""
    canon, allowed, refused = _resolve_checked(policy, host, port)
    if refused:
        if not allowed:
            raise _refused_only(canon, port, refused)
        raise DisallowedAddressError(
            f"refusing to send {canon}:{port} through the proxy: it also resolves to refused "
            f"addresses {', '.join(refused)}, which the proxy might connect to"
        )


def _guarded_new_conn(conn: Any, policy: AddressPolicy) -> socket.socket:
    """Resolve, filter by ``policy`` and connect; mirrors urllib3's ``create_connection``."""
    try:
        canon, infos, refused = _resolve_checked(policy, conn._dns_host, conn.port)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    err: Exception | None = None
    for family, socktype, proto, _, sockaddr in infos:
        sock = None
        try:
            sock = socket.socket(family, socktype, proto)
            _set_socket_options(sock, conn.socket_options)
            if conn.timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(conn.timeout)
            if conn.source_address:
                sock.bind(conn.source_address)
            sock.connect(sockaddr)
        except OSError as exc:
            if sock is not None:
                sock.close()
            err = exc
            continue
        sys.audit("http.client.connect", conn, conn.host, conn.port)
        return sock
    if err is None:
        raise _refused_only(canon, conn.port, refused)
    if isinstance(err, TimeoutError):
        raise ConnectTimeoutError(
            conn, f"Connection to {conn.host} timed out. (connect timeout={conn.timeout})"
        ) from err
    raise NewConnectionError(conn, f"Failed to establish a new connection: {err}") from err


class _GuardedPoolManager(PoolManager):
    """A pool manager whose pools' connections run :func:`_guarded_new_conn`."""

    def __init__(self, *args: Any, policy: AddressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

        def new_conn(self: Any) -> socket.socket:
            return _guarded_new_conn(self, policy)

        http_conn = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
        https_conn = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
        self.pool_classes_by_scheme = {
            "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type(
                "GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
            ),
        }


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that enforces ``policy`` on every connection it opens.

    ``proxy``: ``None`` (the default): direct connections only, the address checked is the
    address connected; mount it on a session with ``trust_env = False`` and pass no
    ``proxies`` (environment proxies are never used). An ``http(s)://`` proxy URL: every
    request goes through that proxy, its target checked by :func:`check_proxied_target`
    first (see the module docstring for what that does not cover).
    """

    def __init__(self, policy: AddressPolicy, *, proxy: str | None = None, **kwargs: Any) -> None:
        self.policy = policy
        self.proxy = proxy
        super().__init__(**kwargs)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if self.proxy is not None:
            parts = urlsplit(request.url)
            port = parts.port or (443 if parts.scheme == "https" else 80)
            try:
                check_proxied_target(self.policy, parts.hostname or "", port)
            except OSError as exc:
                raise requests.ConnectionError(
                    f"cannot resolve {parts.hostname} to check it against the allow-list "
                    f"before the proxy connects to it: {exc}",
                    request=request,
                ) from exc
            kwargs["proxies"] = {"http": self.proxy, "https": self.proxy}
        return super().send(request, *args, **kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self._pool_connections = connections
        self._pool_maxsize = maxsize
        self._pool_block = block
        self.poolmanager = _GuardedPoolManager(
            num_pools=connections, maxsize=maxsize, block=block, policy=self.policy, **pool_kwargs
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        if proxy != self.proxy:
            raise DisallowedUrlError(
                "downloads go through no proxy but CACHELAYER_PROXY (the connected address must be checked)"
            )
        return super().proxy_manager_for(proxy, **proxy_kwargs)


#: Longest wait urllib3 honours from one ``Retry-After`` header, in seconds.
RETRY_AFTER_CAP = 30.0

#: The deadline (``time.monotonic()``) of the request the current thread is sending, read
#: by :class:`_Retry` so urllib3's retries and waits stop at the download deadline.
request_deadline = threading.local()


def _time_left() -> float | None:
    deadline = getattr(request_deadline, "value", None)
    return None if deadline is None else deadline - time.monotonic()


def certificate_failure(exc: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error somewhere in ``exc``'s arguments, cause, context or
    ``reason`` (urllib3 and requests wrap it several times), else ``None``."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        seen.add(id(item))
        todo += [*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)]
    return None


class DeadlineRetry(Retry):
    """urllib3 ``Retry`` that stops at the download deadline of the calling thread and caps
    ``Retry-After`` waits at :data:`RETRY_AFTER_CAP` (a hostile ``Retry-After: 99999`` must not
    hold a worker); backoff and ``Retry-After`` waits never outlast the deadline. A
    certificate that does not verify is not retried (the same bundle fails the same way)."""

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> DeadlineRetry:
        if certificate_failure(error) is not None:
            raise MaxRetryError(_pool, url or "", error)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def is_exhausted(self) -> bool:
        left = _time_left()
        return (left is not None and left <= 0) or super().is_exhausted()

    def get_retry_after(self, response: Any) -> float | None:
        value = super().get_retry_after(response)
        if value is None:
            return None
        left = _time_left()
        return max(0.0, min(value, RETRY_AFTER_CAP, RETRY_AFTER_CAP if left is None else left))

    def get_backoff_time(self) -> float:
        left = _time_left()
        return max(0.0, min(super().get_backoff_time(), float("inf") if left is None else left))
