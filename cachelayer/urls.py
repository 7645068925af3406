"""One strict parser for source URLs, host patterns and the address policy.

Every decision about *where* a download goes is made here, from one parse:

* :func:`parse_source_url` accepts only ``http(s)://host[:port]/...`` with a plain
  authority: no userinfo (``user@``), no backslash anywhere, no whitespace or control
  characters, an ASCII host (IDNs in their ``xn--`` form), a port 1-65535, IPv6 only as a
  bracketed literal without a zone, IPv4 only in canonical dotted-decimal form. Numeric
  spellings that WHATWG URL parsers and ``inet_aton`` read as IPv4 (``2852039166``,
  ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``) are refused, not guessed.
  The URL is then prepared exactly as ``requests`` prepares it, and the host and port that
  ``requests`` (stdlib ``urlparse``, used by its adapter to pick the connection pool) and
  ``urllib3`` (``parse_url``) see must equal ours, or the URL is refused: the host checked
  is the host connected to. Anything refused raises :class:`~cachelayer.errors.MalformedUrlError`
  or :class:`~cachelayer.errors.DisallowedUrlError` with a one-line reason; no other
  exception escapes for any ``str`` input.
* :class:`HostPattern` / :func:`parse_host_patterns`: the allow-list syntax, ``host``,
  ``host:port``, ``*.domain[:port]``, ``[v6]:port`` or ``*`` (case-insensitive; ``*`` is the
  only wildcard). A pattern without ``*`` is *explicit*.
* :class:`AddressPolicy`: a host is allowed when a pattern matches it (and its port). The
  addresses it resolves to must be public (:func:`address_refusal`) unless the matching
  pattern names the host explicitly: an IP literal (``127.0.0.1``, ``[::1]:8080``) or a name
  with a port (``minio.internal:9000``). ``*``, ``*.domain`` and a bare name such as the
  default ``replicate.delivery`` never reach loopback, link-local, private, unspecified,
  CGNAT, multicast, reserved or cloud-metadata addresses, including their
  IPv4-mapped/compatible, 6to4 and NAT64 IPv6 forms. ``127.0.0.1:8080`` (what tests pass
  for the simulator) allows exactly that address and port.
  :mod:`cachelayer.netguard` applies the policy again to the resolved address at connect
  time, so DNS rebinding cannot bypass it.

Which of the allowed URLs may get the Replicate token, and that the API's own origin serves
no outputs, is decided in :mod:`cachelayer.token_scope`.
"""

from __future__ import annotations

import ipaddress
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs, unquote, urlparse, urlsplit

from cachelayer.errors import ConfigError, DisallowedUrlError, MalformedUrlError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Longest ``http(s)`` source URL accepted, in characters (signed URLs are ~2 KB).
MAX_URL_LENGTH = 65536
DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL_RE = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")
_PORT_RE = re.compile(r"[0-9]{1,5}")

#: Addresses refused under wildcard patterns besides what ``ipaddress`` calls non-global:
#: cloud metadata endpoints (AWS/GCP/Azure 169.254.169.254, AWS IPv6 fd00:ec2::254, Alibaba
#: 100.100.100.200) and the shared address space of RFC 6598 (CGNAT, 100.64.0.0/10).
_EXTRA_REFUSED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "cloud metadata"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata"),
    (ipaddress.ip_network("100.100.100.200/32"), "cloud metadata"),
    (ipaddress.ip_network("100.64.0.0/10"), "shared address space (CGNAT)"),
    (ipaddress.ip_network("0.0.0.0/8"), "unspecified"),
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _reason(url: str, why: str) -> MalformedUrlError:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return MalformedUrlError(f"malformed source URL {shown!r}: {why}", url=url)


@dataclass(frozen=True)
class SourceUrl:
    """A parsed ``http(s)`` source URL.

    ``url``: as given. ``prepared``: the exact URL ``requests`` sends (non-ASCII in the
    path percent-encoded). ``scheme``: ``http`` or ``https``. ``host``: lower-case name, or the
    canonical text of an IP literal (IPv6 without brackets). ``port``: explicit or the
    scheme's default. ``ip``: the literal's address, ``None`` for a name.
    """

    url: str
    prepared: str
    scheme: str
    host: str
    port: int
    ip: IPAddress | None

    @property
    def host_port(self) -> str:
        """``host:port`` (``[v6]:port`` for IPv6), as written in patterns."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _bad_char(ch: str) -> bool:
    if ch.isspace() or ch == "\\":
        return True
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _whatwg_ipv4(host: str) -> ipaddress.IPv4Address | None | bool:
    """``host`` read as WHATWG's IPv4 parser (and ``inet_aton``) would read it.

    Returns the address, ``None`` when the host does not end in a number (a name), or
    ``False`` when it ends in a number but is no valid IPv4 spelling.
    """
    labels = host.split(".")
    if labels and labels[-1] == "" and len(labels) > 1:
        labels = labels[:-1]
    if not labels or not _NUMERIC_LABEL_RE.fullmatch(labels[-1]):
        return None
    if len(labels) > 4:
        return False
    numbers = []
    for label in labels:
        if not _NUMERIC_LABEL_RE.fullmatch(label):
            return False
        if label[:2].lower() == "0x":
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label[0] == "0":
            if not set(label) <= set("01234567"):
                return False
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return False
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


def canonical_host(host: str) -> tuple[str, IPAddress | None]:
    """``(canonical host, ip or None)`` for an authority host (brackets allowed for IPv6).

    Raises :class:`ValueError` (internal; callers wrap it) with a reason when the host is
    not a plain DNS name, a canonical dotted-decimal IPv4 or an IPv6 literal.
    """
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("unclosed '[' in host")
        inner = host[1:-1]
        if "%" in inner:
            raise ValueError("IPv6 zone identifiers are not accepted")
        try:
            ip6 = ipaddress.IPv6Address(inner)
        except ValueError:
            raise ValueError(f"invalid IPv6 literal [{inner}]") from None
        return ip6.compressed, ip6
    if "[" in host or "]" in host:
        raise ValueError("'[' or ']' outside an IPv6 literal")
    if not host:
        raise ValueError("empty host")
    if not host.isascii():
        raise ValueError("non-ASCII host (write international names in their xn-- form)")
    host = host.lower()
    v4 = _whatwg_ipv4(host)
    if v4 is False:
        raise ValueError(f"host {host!r} ends in a number but is no IPv4 address")
    if isinstance(v4, ipaddress.IPv4Address):
        if str(v4) != host:
            raise ValueError(f"non-canonical IPv4 spelling {host!r} (it means {v4})")
        return host, v4
    if len(host) > 253:
        raise ValueError("host name longer than 253 characters")
    for label in host.split("."):
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"invalid host name {host!r}")
    return host, None


def _split(url: str) -> tuple[str, str, str, str]:
    """``(scheme, host, port text, rest)`` of ``url``; raises ``ValueError`` with a reason."""
    m = _SCHEME_RE.match(url)
    if not m:
        raise ValueError("no scheme")
    scheme = m.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise DisallowedUrlError(
            f"refusing to download {url[:200]!r}: not an http(s) URL on an allowed host (scheme {scheme!r})",
            url=url,
        )
    rest = url[m.end() :]
    if not rest.startswith("//"):
        raise ValueError("no '//' after the scheme")
    rest = rest[2:]
    end = len(rest)
    for delim in "/?#":
        i = rest.find(delim)
        if i != -1:
            end = min(end, i)
    authority, rest = rest[:end], rest[end:]
    if "@" in authority:
        raise ValueError("userinfo ('user@') in the authority")
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            raise ValueError("unclosed '[' in host")
        host, after = authority[: close + 1], authority[close + 1 :]
        if after and not after.startswith(":"):
            raise ValueError("junk after the IPv6 literal")
        port = after[1:] if after else ""
        has_port = bool(after)
    else:
        host, colon, port = authority.partition(":")
        has_port = bool(colon)
    if has_port and not _PORT_RE.fullmatch(port):
        raise ValueError(f"invalid port {port!r}")
    return scheme, host, port if has_port else "", rest


def parse_source_url(url: str) -> SourceUrl:
    """Parse an ``http(s)`` source URL strictly (see the module docstring).

    Raises :class:`~cachelayer.errors.MalformedUrlError` with a one-line reason for anything
    malformed or ambiguous and :class:`~cachelayer.errors.DisallowedUrlError` for another
    scheme. Nothing else escapes for any ``str``.
    """
    if not isinstance(url, str):
        raise MalformedUrlError(f"source URL must be a string, got {type(url).__name__}", url=None)
    if len(url) > MAX_URL_LENGTH:
        raise _reason(url, f"longer than {MAX_URL_LENGTH} characters")
    bad = next((ch for ch in url if _bad_char(ch)), None)
    if bad is not None:
        raise _reason(url, f"contains {bad!r} (whitespace, backslash or control character)")
    try:
        scheme, raw_host, port_text, _ = _split(url)
        host, ip = canonical_host(raw_host)
    except ValueError as exc:
        raise _reason(url, str(exc)) from None
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise _reason(url, f"port {port} out of range 1-65535")
    prepared = _agree_with_requests(url, scheme, host, port)
    return SourceUrl(url=url, prepared=prepared, scheme=scheme, host=host, port=port, ip=ip)


def _agree_with_requests(url: str, scheme: str, host: str, port: int) -> str:
    """The URL as ``requests`` prepares it, after checking that ``requests``' pool choice
    (``urlparse``) and ``urllib3.util.parse_url`` see the same scheme, host and port."""
    import requests
    from urllib3.util import parse_url

    try:
        prep = requests.PreparedRequest()
        prep.prepare_url(url, None)
        prepared = str(prep.url)
        views = []
        std = urlparse(prepared)
        views.append((std.scheme.lower(), std.hostname or "", std.port))
        u3 = parse_url(prepared)
        views.append(((u3.scheme or "").lower(), u3.host or "", u3.port))
        for v_scheme, v_host, v_port in views:
            v_canon, _ = canonical_host(
                f"[{v_host}]" if ":" in v_host and not v_host.startswith("[") else v_host
            )
            if (v_scheme, v_canon, v_port or DEFAULT_PORTS.get(v_scheme)) != (scheme, host, port):
                raise ValueError(f"parsers disagree on the host ({v_host!r}:{v_port} vs {host!r}:{port})")
    except (ValueError, requests.RequestException, UnicodeError) as exc:
        raise _reason(url, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    except Exception as exc:  # urllib3.exceptions.LocationParseError and friends
        raise _reason(url, f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    return prepared


# ---- patterns and the address policy ----------------------------------------------------


@dataclass(frozen=True)
class HostPattern:
    """One allow-list entry. ``host``: lower-case name, canonical IP text, or a pattern with
    ``*`` (``*`` alone, ``*.domain``). ``port``: ``None`` for any port. ``explicit``: no
    ``*``, i.e. the pattern names its host."""

    raw: str
    host: str
    port: int | None
    explicit: bool

    @property
    def names_address(self) -> bool:
        """Whether the pattern names its target so exactly that non-public addresses are
        allowed: an IP literal, or a name with a port."""
        if not self.explicit:
            return False
        if self.port is not None:
            return True
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (canonical, lower-case) and ``port`` fit this pattern."""
        if self.port is not None and port != self.port:
            return False
        if self.explicit:
            return host == self.host
        if self.host == "*":
            return True
        regex = "".join(".*" if c == "*" else re.escape(c) for c in self.host)
        return re.fullmatch(regex, host) is not None


def parse_host_pattern(raw: str, *, setting: str = "CACHELAYER_ALLOWED_HOSTS") -> HostPattern:
    """Parse one pattern; raises :class:`~cachelayer.errors.ConfigError` naming ``setting``."""
    text = raw.strip().lower()
    try:
        if not text:
            raise ValueError("empty pattern")
        if text.startswith("["):
            close = text.find("]")
            if close == -1:
                raise ValueError("unclosed '['")
            host_text, rest = text[: close + 1], text[close + 1 :]
        else:
            host_text, sep, port_part = text.rpartition(":")
            if not sep:
                host_text, rest = text, ""
            else:
                rest = ":" + port_part
        if rest and (not rest.startswith(":") or not _PORT_RE.fullmatch(rest[1:])):
            raise ValueError(f"invalid port in {raw!r}")
        port = int(rest[1:]) if rest else None
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        if "*" in host_text:
            if host_text != "*" and not (
                host_text.startswith("*.") and "*" not in host_text[2:] and canonical_host(host_text[2:])
            ):
                raise ValueError("'*' is allowed only as '*' or '*.domain'")
            return HostPattern(raw, host_text, port, explicit=False)
        host, _ = canonical_host(host_text)
        return HostPattern(raw, host, port, explicit=True)
    except ValueError as exc:
        raise ConfigError(f"{setting}: invalid host pattern {raw!r}: {exc}") from None


def parse_host_patterns(
    patterns: Iterable[str] | str, *, setting: str = "CACHELAYER_ALLOWED_HOSTS"
) -> tuple[HostPattern, ...]:
    """Parse a comma-separated string or a sequence of patterns (see :func:`parse_host_pattern`)."""
    items = patterns.split(",") if isinstance(patterns, str) else list(patterns)
    return tuple(parse_host_pattern(str(p), setting=setting) for p in items if str(p).strip())


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    value = int(ip)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (deprecated, RFC 4291)
        return ipaddress.IPv4Address(value)
    return None


def address_refusal(ip: IPAddress | str) -> str | None:
    """Why ``ip`` is not a public address (``"loopback"``, ``"link-local"``, ``"private"``,
    ``"cloud metadata"``...), or ``None`` when it is public. IPv6 forms that embed an IPv4
    address (mapped, compatible, 6to4, NAT64) are judged by the embedded address too."""
    if isinstance(ip, str):
        try:
            ip = ipaddress.ip_address(ip.split("%", 1)[0])
        except ValueError:
            return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            why = address_refusal(inner)
            if why:
                return f"{why} ({inner} inside {ip})"
    for net, why in _EXTRA_REFUSED:
        if ip.version == net.version and ip in net:
            return why
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    )
    for why, hit in checks:
        if hit:
            return why
    if not ip.is_global:
        return "not globally routable"
    return None


class AddressPolicy:
    """The allow-list applied to hosts (before any request) and to the addresses they
    resolve to (at connect time, by :mod:`cachelayer.netguard`).

    ``patterns``: strings or :class:`HostPattern`; raises :class:`ConfigError` for a bad one.
    """

    def __init__(
        self, patterns: Sequence[str | HostPattern] | str, *, setting: str = "CACHELAYER_ALLOWED_HOSTS"
    ):
        if isinstance(patterns, str):
            patterns = [patterns] if "," not in patterns else patterns.split(",")
        self.patterns = tuple(
            p if isinstance(p, HostPattern) else parse_host_pattern(p, setting=setting)
            for p in patterns
            if isinstance(p, HostPattern) or p.strip()
        )
        self.setting = setting

    def match(self, host: str, port: int) -> HostPattern | None:
        """The pattern that lets ``host:port`` in (the most exact one first), or ``None``."""
        hits = [p for p in self.patterns if p.matches(host, port)]
        hits.sort(key=lambda p: (not p.names_address, not p.explicit))
        return hits[0] if hits else None

    def refusal(self, pattern: HostPattern, ip: IPAddress | str) -> str | None:
        """Why connecting to ``ip`` under ``pattern`` is refused, or ``None`` if allowed."""
        if pattern.names_address:
            return None
        return address_refusal(ip)

    def check(self, parsed: SourceUrl) -> HostPattern:
        """The pattern that allows ``parsed``; raises :class:`DisallowedUrlError` when no
        pattern matches, or an IP-literal host is not public under a wildcard pattern."""
        pattern = self.match(parsed.host, parsed.port)
        if pattern is None:
            raise DisallowedUrlError(
                f"refusing to download {parsed.url[:200]}: {parsed.host_port} is not an allowed host "
                f"({self.setting}={','.join(p.raw for p in self.patterns)})",
                url=parsed.url,
            )
        if parsed.ip is not None:
            why = self.refusal(pattern, parsed.ip)
            if why:
                raise DisallowedUrlError(
                    f"refusing to download {parsed.url[:200]}: {parsed.host} is not a public address "
                    f"({why}), so not an allowed host unless a pattern names {parsed.host_port} "
                    f"explicitly ({self.setting}={','.join(p.raw for p in self.patterns)})",
                    url=parsed.url,
                )
        return pattern


def signed_url_expired(url: str, now: float | None = None) -> bool:
    """Whether ``url`` carries a signature expiry that has passed; never raises.

    Understands SigV4 query signing (``X-Amz-Date`` + ``X-Amz-Expires``, AWS docs
    "Authenticating Requests: Using Query Parameters") and the ``Expires=<unix seconds>``
    form used by SigV2 and CloudFront/GCS signed URLs.
    """
    now = time.time() if now is None else now
    try:
        q = {k.lower(): v[0] for k, v in parse_qs(urlsplit(url).query).items() if v}
        if "x-amz-date" in q and "x-amz-expires" in q:
            start = datetime.strptime(q["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            return start.timestamp() + int(q["x-amz-expires"]) < now
        if "expires" in q and q["expires"].isdigit():
            return int(q["expires"]) < now
    except (ValueError, OverflowError):
        return False
    return False


def filename_of(url: str) -> str:
    """The last path segment of ``url``, percent-decoded (``out-0.png``); ``""`` for ``data:``
    URIs and for anything without a path. Never raises for a ``str``."""
    if not isinstance(url, str) or url[:5].lower() == "data:":
        return ""
    rest = url
    m = _SCHEME_RE.match(rest)
    if m:
        rest = rest[m.end() :]
    if rest.startswith("//"):
        rest = rest[2:]
        cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i != -1), default=len(rest))
        rest = rest[cut:]
    for delim in "?#":
        rest = rest.split(delim, 1)[0]
    return unquote(rest.rsplit("/", 1)[-1], errors="replace")
