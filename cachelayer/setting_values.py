"""Checks of single setting values, for :mod:`cachelayer.config`: URLs (http(s), the
catalog's, the store's, the egress proxy's), the CA bundle, host lists and header text.
Every error is a :class:`~cachelayer.errors.ConfigError` naming the setting, with any
credential in the value masked (:func:`cachelayer.masking.mask_secrets`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from cachelayer.errors import ConfigError
from cachelayer.masking import mask_secrets
from cachelayer.timeparse import parse_duration
from cachelayer.urls import parse_host_patterns

#: The shortest retention ``CACHELAYER_RETENTION`` takes, seconds (one hour: Replicate
#: itself keeps API predictions' data that long; anything shorter is taken for a typo).
MIN_RETENTION_SECONDS = 3600.0

__all__ = [
    "CA_BUNDLE_VARIABLES",
    "check_database_url",
    "check_proxy",
    "check_storage_url",
    "mirror_url_list",
    "check_text",
    "database_url_parts",
    "retention_seconds",
    "host_list",
    "http_url",
    "resolve_ca_bundle",
    "shown",
    "sqlite_path",
]


def shown(raw: object) -> str:
    """``raw`` as the value of an error message: credentials masked (:func:`mask_secrets`),
    ``repr``-quoted, at most 80 characters."""
    text = repr(mask_secrets(raw) if isinstance(raw, str) else raw)
    return text if len(text) <= 80 else text[:77] + "..."


def http_url(name: str, url: str, *, path_ok: bool = True) -> str:
    """``url`` if it is ``http(s)://host[:port][/path]`` without query or fragment."""
    bad = f"{name} must be an http(s) URL with a host"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(f"{bad}, got {shown(url)} (whitespace or control characters)")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{bad}, got {shown(url)} ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{bad}, got {shown(url)}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"{bad} and no user, query or fragment, got {shown(url)}")
    if not path_ok and parts.path not in ("", "/"):
        raise ConfigError(f"{bad} and no path, got {shown(url)}")
    return url


#: SQLAlchemy's own pattern of a database URL (``sqlalchemy.engine.url._parse_url``, 2.x),
#: so a URL is checked as the engine will read it without importing SQLAlchemy (100 ms or
#: more of a copy command's start-up, before its first request: docs/BENCHMARKS.md).
#: ``tests/test_settings_database_url.py`` holds it equal to ``make_url`` on many URLs.
_DATABASE_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def database_url_parts(database_url: str) -> tuple[str, str | None]:
    """``(backend, database)`` of a database URL as SQLAlchemy's ``make_url`` reads it
    (backend: the name before any ``+driver``; database: percent-decoded, ``None`` when
    absent). Raises ``ValueError`` for a URL ``make_url`` refuses (no ``name://``, a port
    that is not a number)."""
    m = _DATABASE_URL.match(database_url)
    if m is None:
        raise ValueError("not a database URL")
    if m["port"] is not None:
        int(m["port"])  # ValueError (also for an empty port), as make_url
    database = m["database"]
    return m["name"].split("+")[0], None if database is None else unquote(database)


def sqlite_path(database_url: str, name: str = "CACHELAYER_DATABASE_URL") -> Path | None:
    """The file of a SQLite catalog URL (``~`` expanded), ``None`` for other databases and
    in-memory SQLite. Raises :class:`ConfigError` naming ``name`` (the variable or flag the
    URL came from) for a URL SQLAlchemy cannot parse."""
    try:
        backend, db = database_url_parts(database_url)
    except ValueError:
        raise ConfigError(f"{name} is not a database URL: {shown(database_url)}") from None
    if backend != "sqlite":
        return None
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser()


def check_database_url(url: str, name: str = "CACHELAYER_DATABASE_URL") -> None:
    path = sqlite_path(url, name)  # also checks that the URL parses
    backend, _ = database_url_parts(url)
    if backend not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(f"{name} must be a SQLite or PostgreSQL URL, got {backend!r} ({shown(url)})")
    if path is None:
        return
    if path.is_dir():
        raise ConfigError(f"{name} names a directory, not a SQLite file: {str(path)!r}")
    if path.exists():
        # Whether it holds a SQLite database is left to SQLite (at the first connection,
        # cachelayer.catalog.db): reading the file here would drop this process's POSIX
        # locks on it when the descriptor closes, under any catalog already open.
        return
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{name}: {str(parent)!r} is a file, so {str(path)!r} cannot be created")
            break


_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def check_storage_url(url: str, name: str = "CACHELAYER_STORAGE_URL") -> None:
    expected = f"{name} must be s3://bucket[/prefix] or file:///path"
    if not (url.startswith(("s3://", "file://")) or url.startswith("/")):
        raise ConfigError(f"{expected}, got {shown(url)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(f"{expected}, got {shown(url)} (control characters)")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"{expected} (no query or fragment), got {shown(url)}")
    if url.startswith("s3://") and not _BUCKET.fullmatch(parts.netloc):
        raise ConfigError(f"{expected} with a valid bucket name, got {shown(url)}")
    if url.startswith("s3://"):
        return
    if url.startswith("file://") and parts.netloc not in ("", "localhost"):
        raise ConfigError(f"{expected} (a local path), got {shown(url)}")
    root = Path(unquote(parts.path) if url.startswith("file://") else url).expanduser()
    for path in (root, *root.parents):
        if path.exists():
            if not path.is_dir():
                raise ConfigError(f"{name}: {str(path)!r} is a file, not a directory")
            break


def mirror_url_list(raw: Any, name: str, storage_url: str) -> tuple[str, ...]:
    """Mirror store URLs from a comma-separated string or a sequence, each checked as a
    store URL (:func:`check_storage_url`: ``s3://bucket[/prefix]`` or ``file:///path``);
    ``()`` when empty. Raises :class:`ConfigError` (credentials masked) for a bad URL, a
    repeated one, or one equal to ``storage_url`` (the primary store)."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)):
        items = [str(u) for u in raw]
    else:
        raise ConfigError(f"{name} must be a comma-separated string or a list of store URLs")
    urls = tuple(u.strip() for u in items if u.strip())
    for url in urls:
        check_storage_url(url, name)
        if url.rstrip("/") == storage_url.rstrip("/"):
            raise ConfigError(f"{name}: {shown(url)} is the primary store (CACHELAYER_STORAGE_URL)")
    if len({u.rstrip("/") for u in urls}) != len(urls):
        raise ConfigError(f"{name} names a store twice: {shown(','.join(urls))}")
    return urls


def check_text(name: str, value: str, *, limit: int, secret: bool = False) -> str:
    """Printable ASCII of at most ``limit`` characters (an HTTP header value); a ``secret``
    is never shown in the error, only its length."""
    if len(value) > limit or any(not (32 <= ord(c) < 127) for c in value):
        got = f"a value of {len(value)} characters" if secret else shown(value)
        raise ConfigError(f"{name} must be printable ASCII of at most {limit} characters, got {got}")
    return value


CA_BUNDLE_VARIABLES = ("CACHELAYER_CA_BUNDLE", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


def resolve_ca_bundle(env: Mapping[str, str], override: str | None = None) -> str | None:
    """The CA bundle (PEM path) of the Replicate API and the downloads: ``override`` (the
    ``ca_bundle`` keyword), else the first of :data:`CA_BUNDLE_VARIABLES` set in ``env``;
    ``None``: certifi's. :class:`ConfigError` names the variable of a bad file."""
    if override:
        return _check_ca_bundle(override, "CACHELAYER_CA_BUNDLE")
    for var in CA_BUNDLE_VARIABLES:
        if env.get(var):
            return _check_ca_bundle(env[var], var)
    return None


def _check_ca_bundle(path_text: str, var: str) -> str:
    path = Path(path_text).expanduser()
    if path.is_dir():
        raise ConfigError(f"{var} must be a PEM file, but {path_text!r} is a directory")
    if not path.is_file():
        raise ConfigError(f"{var} names {path_text!r}, which does not exist")
    import ssl

    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"{var} {path_text!r} is not a PEM CA bundle: {exc}") from None
    return str(path)


def check_proxy(url: str) -> str:
    """``CACHELAYER_PROXY``: ``http(s)://[user:password@]host:port``; errors hide the password."""
    parts = urlsplit(url.strip())
    if parts.query or parts.fragment:
        raise ConfigError("CACHELAYER_PROXY must be http(s)://[user:password@]host:port (no query)")
    host_only = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    http_url("CACHELAYER_PROXY", host_only, path_ok=False)
    return url.strip()


def host_list(raw: Any, setting: str) -> tuple[str, ...] | None:
    """Host patterns from a comma-separated string or a sequence; ``None`` when empty."""
    if raw is None:
        return None
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple, set, frozenset)):
        items = [str(h) for h in raw]
    else:
        raise ConfigError(f"{setting} must be a comma-separated string or a list of host patterns")
    hosts = tuple(h.strip().lower() for h in items if h.strip())
    if not hosts:
        return None
    parse_host_patterns(hosts, setting=setting)
    return hosts


def retention_seconds(raw: object, name: str = "CACHELAYER_RETENTION") -> float | None:
    """``CACHELAYER_RETENTION`` in seconds, or ``None`` (off: ``None``, empty, ``off``,
    ``0``). Text is a duration (``90d``, ``12w``, ``36h``; :func:`cachelayer.timeparse.parse_duration`),
    a number is seconds. Raises :class:`ConfigError` naming ``name`` for anything else and
    for less than :data:`MIN_RETENTION_SECONDS`."""
    if raw is None or isinstance(raw, bool):
        if raw is None:
            return None
        raise ConfigError(f"{name} must be a duration such as 90d, got {shown(raw)}")
    if isinstance(raw, (int, float)):
        seconds = float(raw)
    else:
        text = str(raw).strip().lower()
        if text in ("", "off", "0"):
            return None
        try:
            seconds = parse_duration(text).total_seconds()
        except ValueError:
            raise ConfigError(
                f"{name} must be a duration such as 90d, 12w or 36h (or off), got {shown(raw)}"
            ) from None
    if seconds == 0:
        return None
    if not seconds >= MIN_RETENTION_SECONDS or seconds != seconds or seconds == float("inf"):
        raise ConfigError(f"{name} must be at least 1h (or off), got {shown(raw)}")
    return seconds
