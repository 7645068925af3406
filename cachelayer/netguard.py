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
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import _set_socket_options, allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from cachelayer.errors import DisallowedAddressError, DisallowedUrlError
from cachelayer.urls import AddressPolicy, canonical_host


def _guarded_new_conn(conn: Any, policy: AddressPolicy) -> socket.socket:
    """Resolve, filter by ``policy`` and connect; mirrors urllib3's ``create_connection``."""
    raw_host = conn._dns_host
    host = raw_host.strip("[]").rstrip(".").lower()
    try:
        canon, _ = canonical_host(f"[{host}]" if ":" in host else host)
    except ValueError as exc:
        raise DisallowedUrlError(f"refusing to connect to {raw_host!r}: {exc}") from None
    pattern = policy.match(canon, conn.port)
    if pattern is None:
        raise DisallowedUrlError(
            f"refusing to connect to {canon}:{conn.port}: not allowed ({policy.setting})"
        )
    try:
        infos = socket.getaddrinfo(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise NameResolutionError(conn.host, conn, exc) from exc
    refused: list[str] = []
    err: Exception | None = None
    for family, socktype, proto, _, sockaddr in infos:
        why = policy.refusal(pattern, str(sockaddr[0]))
        if why:
            refused.append(f"{sockaddr[0]} ({why})")
            continue
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
        raise DisallowedAddressError(
            f"refusing to connect to {canon}:{conn.port}: it resolves only to refused addresses "
            f"{', '.join(refused)}; only a pattern naming it as an IP literal or as host:port allows them"
        )
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

    Proxies are not supported (the address checked would be the proxy's): mount it on a
    session with ``trust_env = False`` and pass no ``proxies``.
    """

    def __init__(self, policy: AddressPolicy, **kwargs: Any) -> None:
        self.policy = policy
        super().__init__(**kwargs)

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
        raise DisallowedUrlError("downloads never go through a proxy (the connected address must be checked)")
