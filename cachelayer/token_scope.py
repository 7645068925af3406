"""Where the Replicate API token may go, and why the API's own origin serves no outputs.

The one home of the rule (issue 17, item 5: "the token stays with the API"):

* The token (``Authorization: Bearer``) is sent with a download only to a place that serves
  files: a host matching a *file host* pattern (``CACHELAYER_TOKEN_HOSTS``; default
  Replicate's delivery domains ``replicate.delivery`` and ``*.replicate.delivery``,
  shared/reference/replicate-api.md "Outputs and files") over ``https``, or over ``http`` when
  the pattern names host and port (a local simulator), and to the API's documented file
  download path ``{namespace}/files/{file_id}/download`` (OpenAPI ``files.download``) on the
  API origin itself, over the API's own scheme. Nowhere else, allow-listed or not.
* Every other URL on the API origin (``REPLICATE_BASE_URL``'s host and port; for a base URL
  on port 80 or 443, both of those ports) is refused as a source before any request, with
  :class:`~cachelayer.errors.ApiHostUrlError`, whatever ``CACHELAYER_ALLOWED_HOSTS`` allows
  (``*`` included): Replicate serves output files from ``replicate.delivery``, never from
  ``api.replicate.com``, so such an "output" is an API call (``/v1/predictions``: the
  account's prediction list) or nothing. A file host pattern that also names the API host
  does not change that.

:class:`~cachelayer.fetch.Fetcher` asks :meth:`TokenScope.refusal` before every request
(redirect hops included) and :meth:`TokenScope.sends_token` for each request's header.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from cachelayer.config import DELIVERY_TOKEN_HOSTS
from cachelayer.errors import ApiHostUrlError, ConfigError, DisallowedUrlError, MalformedUrlError
from cachelayer.urls import DEFAULT_PORTS, AddressPolicy, HostPattern, SourceUrl, parse_source_url

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_FILE_HOSTS", "ApiOrigin", "TokenScope"]

#: The one file-serving path in the API's namespace: ``GET /v1/files/{file_id}/download``
#: (OpenAPI ``files.download``, "Download a file by providing the file owner, access expiry,
#: and a valid signature"; shared/reference/replicate-openapi.json). Ids are plain tokens.
_API_DOWNLOAD_RE = re.compile(r"/files/[A-Za-z0-9_-]{1,256}/download")
DEFAULT_API_BASE_URL = "https://api.replicate.com"
#: Hosts that serve Replicate's output files and get the token by default: "Any files will be
#: represented as HTTPS URLs. You'll need to pass the Authorization header to request them"
#: (OpenAPI schema, GET /predictions/{id}); the files live on these domains.
DEFAULT_FILE_HOSTS = DELIVERY_TOKEN_HOSTS
_WEB_PORTS = frozenset(DEFAULT_PORTS.values())


@dataclass(frozen=True)
class ApiOrigin:
    """Replicate's API as configured (``REPLICATE_BASE_URL``, default
    ``https://api.replicate.com``): its ``scheme``, ``host`` and ``port`` and its
    ``namespace``, the path under which every documented endpoint lives (``/v1``, the OpenAPI
    ``servers`` URL ``https://api.replicate.com/v1``; a base URL's own path is kept in front,
    and a base URL ending in ``/v1``, as the 2.x client takes it, is not doubled).
    """

    scheme: str
    host: str
    port: int
    namespace: str

    @classmethod
    def from_base_url(cls, base_url: str | None) -> ApiOrigin:
        """The origin of ``base_url`` (``None``: :data:`DEFAULT_API_BASE_URL`). Raises
        :class:`~cachelayer.errors.ConfigError` when it is no plain ``http(s)`` URL."""
        try:
            parsed = parse_source_url(base_url or DEFAULT_API_BASE_URL)
        except (MalformedUrlError, DisallowedUrlError) as exc:
            raise ConfigError(f"REPLICATE_BASE_URL: {exc}") from None
        path = urlsplit(parsed.prepared).path.rstrip("/")
        if path.lower().split("/")[-1] != "v1":
            path += "/v1"
        return cls(parsed.scheme, parsed.host, parsed.port, path)

    @property
    def host_port(self) -> str:
        """``host:port`` (``[v6]:port`` for IPv6)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def holds(self, parsed: SourceUrl) -> bool:
        """Whether ``parsed`` is on the API's host and port, any scheme (on a web port, 80
        or 443, the other web port counts too: ``http://api.replicate.com/...`` is the API
        host as much as ``https://`` is)."""
        if parsed.host != self.host:
            return False
        return parsed.port == self.port or {parsed.port, self.port} <= _WEB_PORTS

    def serves_files(self, parsed: SourceUrl) -> bool:
        """Whether ``parsed`` is the API's file download path, spelled exactly, on the API's
        own scheme and port."""
        path = urlsplit(parsed.prepared).path
        return (
            (parsed.scheme, parsed.host, parsed.port) == (self.scheme, self.host, self.port)
            and path.startswith(self.namespace)
            and _API_DOWNLOAD_RE.fullmatch(path[len(self.namespace) :]) is not None
        )


class TokenScope:
    """The token rule (module docstring): ``api_base_url`` (``REPLICATE_BASE_URL``; ``None``:
    api.replicate.com) and ``file_hosts``, the host patterns that serve files
    (``CACHELAYER_TOKEN_HOSTS``; ``None``: :data:`DEFAULT_FILE_HOSTS`). Raises
    :class:`~cachelayer.errors.ConfigError` for a bad base URL or pattern."""

    def __init__(self, api_base_url: str | None = None, file_hosts: Sequence[str] | None = None) -> None:
        self.api = ApiOrigin.from_base_url(api_base_url)
        self.file_hosts = AddressPolicy(
            DEFAULT_FILE_HOSTS if file_hosts is None else tuple(file_hosts),
            setting="CACHELAYER_TOKEN_HOSTS",
        )

    def refusal(self, parsed: SourceUrl) -> ApiHostUrlError | None:
        """The error refusing ``parsed`` as a source (on the API origin, not its download
        path), or ``None`` when the token rule lets it be requested."""
        if not self.api.holds(parsed) or self.api.serves_files(parsed):
            return None
        return ApiHostUrlError(
            f"refusing to download {parsed.url[:200]}: it is on the Replicate API's own host "
            f"{self.api.host_port}, which serves no output files (Replicate serves them from "
            "replicate.delivery); the only file-serving path there is "
            f"{self.api.namespace}/files/{{file_id}}/download. Refused whatever "
            "CACHELAYER_ALLOWED_HOSTS allows: the API token must not fetch account data",
            url=parsed.url,
        )

    def sends_token(self, parsed: SourceUrl) -> bool:
        """Whether a request to ``parsed`` may carry the token: the API's download path, or a
        file host (``https``, or ``http`` under a pattern naming host and port) that is not on
        the API origin."""
        if self.api.holds(parsed):
            return self.api.serves_files(parsed)
        pattern: HostPattern | None = self.file_hosts.match(parsed.host, parsed.port)
        if pattern is None:
            return False
        return parsed.scheme == "https" or (pattern.explicit and pattern.port is not None)
