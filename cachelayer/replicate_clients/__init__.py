"""Replicate's API behind one interface, with the installed ``replicate`` client (1.x or
2.x) underneath: :class:`~cachelayer.replicate_clients.base.ReplicateAdapter`.

:func:`open_adapter` picks the adapter for a client object (or for the installed client
when none is given); :func:`make_client` builds the installed client's own object. Each
client's module is imported only when used, so ``import cachelayer`` loads neither.
"""

from __future__ import annotations

from typing import Any

from cachelayer.replicate_clients.base import (
    CreateRequest,
    ReplicateAdapter,
    ReplicateHTTPError,
    ReplicateUnreachableError,
)

__all__ = [
    "CreateRequest",
    "ReplicateAdapter",
    "ReplicateHTTPError",
    "ReplicateUnreachableError",
    "client_major",
    "make_client",
    "open_adapter",
]


def client_major() -> int:
    """The major version of the installed ``replicate`` package (1 or 2)."""
    from importlib.metadata import version

    return int(version("replicate").split(".", 1)[0])


def make_client(api_token: str | None, base_url: str | None, ca_bundle: str | None) -> Any:
    """The installed client's own object on ``base_url`` (either client's convention:
    ``https://host`` or ``https://host/v1``) with ``api_token``; ``ca_bundle`` (a PEM path)
    verifies a private TLS server. 1.x: ``replicate.Client``; 2.x: ``replicate.Replicate``."""
    if client_major() >= 2:
        from cachelayer.replicate_clients.v2 import make_v2_client

        return make_v2_client(api_token, base_url, ca_bundle)
    from cachelayer.replicate_clients.v1 import make_v1_client

    return make_v1_client(api_token, base_url, ca_bundle)


def open_adapter(
    client: Any = None, *, api_token: str | None, base_url: str | None, ca_bundle: str | None
) -> ReplicateAdapter:
    """The adapter for ``client``: an adapter is returned as it is; a 2.x
    ``replicate.Replicate`` gets :class:`~.v2.V2Adapter`; a 1.x ``replicate.Client`` gets
    :class:`~.v1.V1Adapter` (its plain requests use ``api_token``/``base_url``/``ca_bundle``:
    1.x keeps the client's own private). ``None`` builds the installed client from the
    arguments."""
    if isinstance(client, ReplicateAdapter):
        return client
    if client_major() >= 2:
        from cachelayer.replicate_clients.v2 import V2Adapter, make_v2_client

        if client is None:
            return V2Adapter(make_v2_client(api_token, base_url, ca_bundle), owns_client=True)
        return V2Adapter(client)
    from cachelayer.replicate_clients.v1 import V1Adapter

    return V1Adapter(client, api_token=api_token, base_url=base_url, ca_bundle=ca_bundle)
