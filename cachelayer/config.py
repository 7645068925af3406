"""Settings, read in one place: keyword arguments over environment over defaults.

Every value is validated when it is read: a malformed or out-of-range value raises
:class:`~cachelayer.errors.ConfigError` naming the variable (or keyword) and the value,
before anything is contacted or copied. Numbers must be finite and in the range given
below (``nan``, ``inf``, ``1e3`` for an integer, negatives are refused); an empty
variable means "not set".

Environment variables (all optional):

==============================  ==============================================================
``CACHELAYER_DATABASE_URL``     SQLAlchemy URL of the catalog (SQLite or PostgreSQL).
                                Default: ``sqlite:///{data_dir}/catalog.db``. A SQLite path
                                must not be a directory or an existing non-SQLite file.
``CACHELAYER_STORAGE_URL``      ``s3://bucket[/prefix]`` or ``file:///path`` (or an absolute
                                path). Default: ``file://{data_dir}/objects``.
``CACHELAYER_MIRROR_URLS``      comma-separated store URLs (as ``CACHELAYER_STORAGE_URL``): every
                                object is also copied to each mirror (:mod:`cachelayer.mirror`).
``CACHELAYER_S3_ADDRESSING_STYLE`` ``auto``, ``path`` or ``virtual`` (default ``auto``).
``CACHELAYER_PUBLIC_BASE_URL``  durable URL = ``{base}/{key}``; an ``http(s)`` URL with a
                                host and no query or fragment.
``CACHELAYER_URL_MODE``         ``public``, ``presigned``, ``s3`` or ``gateway`` (needs
                                ``CACHELAYER_GATEWAY_URL``). Default: ``public`` when a base
                                URL is set, else ``s3`` (``file://`` URIs for the local store).
``CACHELAYER_PRESIGN_TTL``      seconds a presigned URL stays valid, 1..604800 (default 3600;
                                S3 caps SigV4 presigned URLs at 604800 s, seven days).
``CACHELAYER_ALLOWED_HOSTS``    comma-separated ``host`` / ``host:port`` / ``*.domain`` patterns
                                downloads may come from (default
                                ``replicate.delivery,*.replicate.delivery``).
``CACHELAYER_MAX_FILE_BYTES``   size cap of one download in bytes, >= 1 (default 10 GiB).
``CACHELAYER_CONCURRENCY``      files downloaded at once (of one prediction; of the queue in a
                                worker pool), 1..256 (default 8).
``CACHELAYER_EXPIRY_MARGIN``    seconds before Replicate's one-hour removal under which a
                                persist logs a warning, 0..3600 (default 600).
``CACHELAYER_DOWNLOAD_RETRIES`` attempts per file for truncated/dropped downloads, 1..100
                                (default 4).
``CACHELAYER_MAX_ATTEMPTS``    claims of one file before a transient failure is final,
                                1..1000 (default 5).
``CACHELAYER_LEASE_SECONDS``   seconds a claim on a file lasts without renewal, 1..86400
                                (default 60); a crashed worker's files are taken over after this.
``CACHELAYER_CACHE_CONTROL``    ``Cache-Control`` written on objects (default
                                ``public, max-age=31536000, immutable``; printable ASCII, at
                                most 1024 characters; empty: none).
``CACHELAYER_CA_BUNDLE``        CA bundle (a PEM file) of the Replicate API and downloads; unset:
                                ``SSL_CERT_FILE``, else ``REQUESTS_CA_BUNDLE``, else certifi's.
``CACHELAYER_PROXY``            ``http(s)://[user:password@]host:port``: egress proxy for
                                downloads, opt-in (trade-off: :mod:`cachelayer.netguard`).
``CACHELAYER_DOWNLOAD_TIMEOUT`` seconds one attempt at one file may take in all, redirects
                                and retries included (default 21600, 6 h: 10 GiB, the default
                                size cap, passes at >= 4 Mbit/s on average; ``0`` disables).
``CACHELAYER_STALL_BYTES_PER_SECOND`` minimum body rate over each stall window (default 16384,
                                16 KiB/s: a 10 GiB file at that rate would need 182 h, so it
                                never cuts what the deadline would allow; ``0`` disables).
``CACHELAYER_STALL_WINDOW``     seconds of that window (default 120: a source sending 1 byte/s
                                is cut after 2 minutes with a retryable error); > 0 while the
                                stall rule is on.
``CACHELAYER_TOKEN_HOSTS``      comma-separated patterns of the hosts that serve files and get
                                the Replicate token as ``Authorization: Bearer`` on downloads
                                (https only, unless a pattern names host and port). Default:
                                ``replicate.delivery,*.replicate.delivery``. The API host of
                                ``REPLICATE_BASE_URL`` gets it only on the Files API's
                                ``/v1/files/{id}/download``; any other URL there is refused
                                (:mod:`cachelayer.token_scope`).
``CACHELAYER_WAIT_TIMEOUT``     seconds ``run``/``persist`` wait for a prediction to finish
                                (default 1800; ``0``: forever).
``CACHELAYER_DB_RETRY_SECONDS`` seconds a catalog transaction is retried after a transient
                                database error (lost connection, server restart, deadlock,
                                SQLite "database is locked", full disk) before the run stops
                                with one line (default 60; ``0``: no retry).
``CACHELAYER_WEBHOOK_SECRET``   the ``whsec_...`` secret Replicate signs webhooks with (Standard
                                Webhooks). Default: read once from Replicate's
                                ``GET /v1/webhooks/default/secret`` with the API token.
``CACHELAYER_RETENTION``        delete copies of predictions created longer ago than this
                                (``90d``, ``12w``; at least ``1h``) in every sweep of
                                ``cachelayer serve`` (:mod:`cachelayer.delete`). Default off.
``CACHELAYER_SWEEP_INTERVAL``   seconds between two sweeps of ``cachelayer serve`` (the catch-up
                                of missed webhooks, :mod:`cachelayer.sweep`), 0..86400
                                (default 300; ``0``: no sweep).
``CACHELAYER_WEBHOOK_URL``      public URL of ``serve``'s ``/webhooks/replicate`` route;
                                ``CacheLayer.create`` sends it as the prediction's ``webhook``.
``CACHELAYER_GATEWAY_URL``      base URL at which clients reach ``cachelayer serve``; durable URLs
                                in mode ``gateway`` are ``{base}/files/{signature}/{key}``.
``CACHELAYER_GATEWAY_SECRET``   HMAC key of gateway URLs (at least 16 characters). Default: 32
                                random bytes generated once and kept in the catalog, so every
                                process sharing the catalog agrees.
``CACHELAYER_GATEWAY_PROXY``    ``1``: the gateway streams the bytes itself (Range, ETag) instead of
                                redirecting to a presigned URL (always so for the local store).
``CACHELAYER_HOME``             the data directory of the defaults (must not be a file).
``REPLICATE_API_TOKEN``         read by the ``replicate`` client itself (no whitespace).
``REPLICATE_BASE_URL``          read by the ``replicate`` client itself (an ``http(s)`` URL).
==============================  ==============================================================

boto3 reads its own variables (``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``,
``AWS_PROFILE``...) when the S3 store is built; mistakes there are reported then, as
:class:`~cachelayer.errors.StorageConfigError`.
The default data directory is ``platformdirs.user_data_dir("cachelayer")``
(``~/.local/share/cachelayer`` on Linux), overridable with ``CACHELAYER_HOME``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from cachelayer.errors import ConfigError
from cachelayer.expiry import REPLICATE_RETENTION_SECONDS
from cachelayer.retry_policy import CATALOG, COPY_DOWNLOAD, COPY_REQUEUE
from cachelayer.setting_values import (
    check_database_url,
    check_proxy,
    check_storage_url,
    check_text,
    host_list,
    http_url,
    mirror_url_list,
    resolve_ca_bundle,
    retention_seconds,
    shown,
)

DEFAULT_ALLOWED_HOSTS = ("replicate.delivery", "*.replicate.delivery")
#: Replicate's delivery domains (shared/reference/replicate-api.md), which get the API token.
DELIVERY_TOKEN_HOSTS = ("replicate.delivery", "*.replicate.delivery")
DEFAULT_DOWNLOAD_TIMEOUT = 21600.0
DEFAULT_STALL_BYTES_PER_SECOND = 16384
DEFAULT_STALL_WINDOW = 120.0
#: Default of ``CACHELAYER_DB_RETRY_SECONDS``: long enough for a PostgreSQL restart or
#: fail-over (seconds to tens of seconds), short enough that a dead server is reported.
DEFAULT_DB_RETRY_SECONDS: float = CATALOG.deadline_s or 0.0
#: Seconds ``run``/``persist`` wait for a prediction to finish before giving up
#: (``CACHELAYER_WAIT_TIMEOUT``; ``0`` waits forever). Most image models finish in seconds
#: and video models in minutes; a prediction still queued after half an hour is reported
#: instead of holding the caller. It keeps running at Replicate: ``persist`` it later.
DEFAULT_WAIT_TIMEOUT = 1800.0
#: Seconds between two sweeps of ``cachelayer serve`` (``CACHELAYER_SWEEP_INTERVAL``; ``0``
#: turns the sweep off). Replicate's last webhook retry comes about a minute after a
#: prediction completes and its data goes an hour later: five minutes leaves eleven passes.
DEFAULT_SWEEP_INTERVAL = 300.0
#: How durable URLs are rendered (:mod:`cachelayer.durable_urls`); :data:`URL_MODES` is the
#: one list of them (``CACHELAYER_URL_MODE``, ``--url-mode``).
UrlMode = Literal["public", "presigned", "s3", "gateway"]
URL_MODES: tuple[UrlMode, ...] = get_args(UrlMode)
ADDRESSING_STYLES = ("auto", "path", "virtual")
#: Longest validity of a SigV4 presigned URL, in seconds (seven days; AWS S3 "Sharing
#: objects with presigned URLs").
MAX_PRESIGN_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class NumberRule:
    """How one numeric setting is read: its variable, ``int`` or ``float``, the inclusive
    range ``low..high`` (``high`` may be ``math.inf``: any finite value) and the unit."""

    var: str
    kind: type[int] | type[float]
    low: float
    high: float
    unit: str


#: Every numeric setting (field name -> rule).
NUMBERS: dict[str, NumberRule] = {
    "presign_ttl": NumberRule("CACHELAYER_PRESIGN_TTL", int, 1, MAX_PRESIGN_TTL, "seconds"),
    "max_file_bytes": NumberRule("CACHELAYER_MAX_FILE_BYTES", int, 1, 2**63 - 1, "bytes"),
    "concurrency": NumberRule("CACHELAYER_CONCURRENCY", int, 1, 256, "files downloaded at once"),
    "expiry_margin": NumberRule("CACHELAYER_EXPIRY_MARGIN", float, 0, REPLICATE_RETENTION_SECONDS, "seconds"),
    "download_retries": NumberRule("CACHELAYER_DOWNLOAD_RETRIES", int, 1, 100, "attempts"),
    "max_attempts": NumberRule("CACHELAYER_MAX_ATTEMPTS", int, 1, 1000, "attempts"),
    "lease_seconds": NumberRule("CACHELAYER_LEASE_SECONDS", float, 1, 86400, "seconds"),
    "download_timeout": NumberRule("CACHELAYER_DOWNLOAD_TIMEOUT", float, 0, math.inf, "seconds"),
    "stall_bytes_per_second": NumberRule(
        "CACHELAYER_STALL_BYTES_PER_SECOND", float, 0, math.inf, "bytes per second"
    ),
    "stall_window": NumberRule("CACHELAYER_STALL_WINDOW", float, 0, math.inf, "seconds"),
    "wait_timeout": NumberRule("CACHELAYER_WAIT_TIMEOUT", float, 0, math.inf, "seconds"),
    "db_retry_seconds": NumberRule("CACHELAYER_DB_RETRY_SECONDS", float, 0, 86400, "seconds"),
    "sweep_interval": NumberRule("CACHELAYER_SWEEP_INTERVAL", float, 0, 86400, "seconds"),
}


def parse_number(name: str, raw: object, rule: NumberRule) -> int | float:
    """``raw`` (text or a number) read as ``rule`` says; ``name`` is the variable or keyword
    named in the error. Raises :class:`ConfigError` for a malformed, non-finite or
    out-of-range value."""
    if rule.kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ConfigError(f"{name} must be an integer, got {shown(raw)}")
        try:
            value: int | float = int(raw) if isinstance(raw, (int, float)) else int(str(raw).strip())
        except (ValueError, OverflowError):
            raise ConfigError(f"{name} must be an integer, got {shown(raw)}") from None
    else:
        try:
            value = (
                float(raw) if isinstance(raw, (int, float, str)) and not isinstance(raw, bool) else math.nan
            )
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(f"{name} must be a number of {rule.unit}, got {shown(raw)}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number of {rule.unit}, got {shown(raw)}")
    if not rule.low <= value <= rule.high:
        high = "" if rule.high == math.inf else f" and at most {rule.high:g}"
        raise ConfigError(f"{name} must be at least {rule.low:g}{high} ({rule.unit}), got {shown(raw)}")
    return value


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: ``$CACHELAYER_HOME`` or ``user_data_dir("cachelayer")``.
    Raises :class:`ConfigError` when ``CACHELAYER_HOME`` names something that is not a
    directory."""
    home = (os.environ if env is None else env).get("CACHELAYER_HOME")
    if home:
        path = Path(home).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"CACHELAYER_HOME must be a directory, but {str(path)!r} is a file")
        return path
    import platformdirs

    return Path(platformdirs.user_data_dir("cachelayer", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`; every field is also a keyword.

    Sizes are bytes, durations seconds. Direct construction checks the numeric fields
    (:data:`NUMBERS`) and the choices too, raising :class:`ConfigError`.
    """

    database_url: str
    storage_url: str
    mirror_urls: tuple[str, ...] = ()
    public_base_url: str | None = None
    url_mode: str = "s3"
    presign_ttl: int = 3600
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    max_file_bytes: int = 10 * 1024**3
    concurrency: int = 8
    expiry_margin: float = 600.0
    download_retries: int = COPY_DOWNLOAD.attempts or 1
    max_attempts: int = COPY_REQUEUE.attempts or 1
    lease_seconds: float = 60.0
    cache_control: str | None = "public, max-age=31536000, immutable"
    ca_bundle: str | None = None
    proxy: str | None = None
    replicate_api_token: str | None = None
    replicate_base_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_addressing_style: str = "auto"
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    stall_bytes_per_second: float = DEFAULT_STALL_BYTES_PER_SECOND
    stall_window: float = DEFAULT_STALL_WINDOW
    token_hosts: tuple[str, ...] = DELIVERY_TOKEN_HOSTS
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT
    db_retry_seconds: float = DEFAULT_DB_RETRY_SECONDS
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    retention: float | None = None  # seconds; None: off
    # cachelayer serve: webhooks and the gateway (issue 10)
    webhook_secret: str | None = None
    webhook_url: str | None = None
    gateway_url: str | None = None
    gateway_secret: str | None = None
    gateway_proxy: bool = False

    def __post_init__(self) -> None:
        for name, rule in NUMBERS.items():
            parse_number(f"{name} ({rule.var})", getattr(self, name), rule)
        if self.url_mode not in URL_MODES:
            raise ConfigError(
                f"CACHELAYER_URL_MODE must be one of {', '.join(URL_MODES)}, got {self.url_mode!r}"
            )
        if self.url_mode == "public" and not self.public_base_url:
            raise ConfigError("CACHELAYER_URL_MODE=public needs CACHELAYER_PUBLIC_BASE_URL")
        if self.s3_addressing_style not in ADDRESSING_STYLES:
            raise ConfigError(
                f"CACHELAYER_S3_ADDRESSING_STYLE must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"got {self.s3_addressing_style!r}"
            )
        if self.retention is not None:
            retention_seconds(self.retention, "retention (CACHELAYER_RETENTION)")
        if self.stall_bytes_per_second > 0 and self.stall_window <= 0:
            raise ConfigError(
                "CACHELAYER_STALL_WINDOW must be more than 0 seconds while the stall rule is on "
                "(CACHELAYER_STALL_BYTES_PER_SECOND=0 turns it off)"
            )

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        override_names: Callable[[str], str] | None = None,
        **overrides: object,
    ) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) with ``overrides`` on top.

        ``None`` overrides are ignored, so CLI flags can be passed straight through; an
        empty variable counts as not set. An error about a value names where it came
        from: its environment variable, or ``override_names(keyword)`` for an override
        (the CLI passes its flag names, ``--storage-url``; default: the variable too).
        Raises :class:`ConfigError` for malformed or out-of-range values and unknown
        keywords. Reads files only to check them (the CA bundle, an existing SQLite
        catalog's header); contacts nothing.
        """
        env = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        # each value is checked where it is read below (ConfigError names it)
        ov: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}

        def name(key: str, var: str) -> str:
            return override_names(key) if override_names is not None and key in ov else var

        def pick(key: str, var: str) -> str | None:
            if key in ov:
                return str(ov[key]) or None
            return env.get(var) or None

        data_dir = default_data_dir(env) if env.get("CACHELAYER_HOME") else None
        database_url = pick("database_url", "CACHELAYER_DATABASE_URL")
        storage_url = pick("storage_url", "CACHELAYER_STORAGE_URL")
        if not database_url or not storage_url:
            data_dir = data_dir or default_data_dir(env)
        if not database_url:
            database_url = f"sqlite:///{data_dir}/catalog.db"
        if not storage_url:
            storage_url = (Path(str(data_dir)) / "objects").as_uri()
        check_database_url(database_url, name("database_url", "CACHELAYER_DATABASE_URL"))
        check_storage_url(storage_url, name("storage_url", "CACHELAYER_STORAGE_URL"))

        base_name = name("public_base_url", "CACHELAYER_PUBLIC_BASE_URL")
        public_base_url = pick("public_base_url", "CACHELAYER_PUBLIC_BASE_URL")
        if public_base_url:
            public_base_url = http_url(base_name, public_base_url).rstrip("/")
        url_mode = pick("url_mode", "CACHELAYER_URL_MODE") or ("public" if public_base_url else "s3")
        mode_name = name("url_mode", "CACHELAYER_URL_MODE")
        if url_mode == "public" and not public_base_url:
            raise ConfigError(f"{mode_name}=public needs {base_name}")

        def num(key: str) -> Any:
            rule = NUMBERS[key]
            if key in ov:
                return parse_number(key, ov[key], rule)
            raw = env.get(rule.var)
            if not raw:
                return getattr(cls, key)
            return parse_number(rule.var, raw, rule)

        numbers = {key: num(key) for key in NUMBERS}
        allowed_hosts = host_list(
            ov.get("allowed_hosts", env.get("CACHELAYER_ALLOWED_HOSTS")),
            name("allowed_hosts", "CACHELAYER_ALLOWED_HOSTS"),
        )
        cache_control = ov.get("cache_control", env.get("CACHELAYER_CACHE_CONTROL", cls.cache_control))
        if cache_control:
            cache_control = check_text("CACHELAYER_CACHE_CONTROL", str(cache_control), limit=1024)
        ca_bundle = resolve_ca_bundle(env, str(ov["ca_bundle"]) if ov.get("ca_bundle") else None)
        proxy = pick("proxy", "CACHELAYER_PROXY")
        if proxy:
            proxy = check_proxy(proxy)
        token = pick("replicate_api_token", "REPLICATE_API_TOKEN")
        if token:
            check_text("REPLICATE_API_TOKEN", token, limit=4096, secret=True)
            if " " in token:
                raise ConfigError("REPLICATE_API_TOKEN must not contain spaces")
        replicate_base_url = pick("replicate_base_url", "REPLICATE_BASE_URL")
        if replicate_base_url:
            http_url("REPLICATE_BASE_URL", replicate_base_url)
        s3_endpoint_url = ov.get("s3_endpoint_url")
        if s3_endpoint_url:
            http_url("s3_endpoint_url", str(s3_endpoint_url))
        s3_region = ov.get("s3_region")
        if s3_region is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,64}", str(s3_region)):
            raise ConfigError(
                f"s3_region must be a region name such as us-east-1 or auto, got {shown(s3_region)}"
            )
        token_hosts = (
            host_list(ov.get("token_hosts", env.get("CACHELAYER_TOKEN_HOSTS")), "CACHELAYER_TOKEN_HOSTS")
            or DELIVERY_TOKEN_HOSTS
        )
        mirror_urls = mirror_url_list(
            ov.get("mirror_urls", env.get("CACHELAYER_MIRROR_URLS")),
            name("mirror_urls", "CACHELAYER_MIRROR_URLS"),
            storage_url,
        )
        return cls(
            database_url=database_url,
            storage_url=storage_url,
            mirror_urls=mirror_urls,
            public_base_url=public_base_url,
            url_mode=url_mode,
            allowed_hosts=allowed_hosts or DEFAULT_ALLOWED_HOSTS,
            cache_control=cache_control or None,
            ca_bundle=ca_bundle,
            proxy=proxy,
            replicate_api_token=token,
            replicate_base_url=replicate_base_url,
            s3_endpoint_url=s3_endpoint_url,
            s3_region=s3_region,
            s3_addressing_style=pick("s3_addressing_style", "CACHELAYER_S3_ADDRESSING_STYLE") or "auto",
            token_hosts=token_hosts,
            **numbers,
            **_server_settings(env, ov, url_mode, mode_name),
        )


def _optional_url(name: str, raw: str | None) -> str | None:
    """``raw`` checked as an http(s) URL (:func:`http_url`), without a trailing ``/``."""
    return http_url(name, raw.strip()).rstrip("/") if raw and raw.strip() else None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def _server_settings(
    env: Mapping[str, str], ov: Mapping[str, Any], url_mode: str, mode_name: str = "CACHELAYER_URL_MODE"
) -> dict[str, Any]:
    """The settings of ``cachelayer serve`` (webhooks, gateway); see the module docstring.
    ``mode_name``: where ``url_mode`` came from (its variable or flag), for the error."""

    def pick(key: str, var: str) -> str | None:
        if key in ov:
            return str(ov[key])
        return env.get(var) or None

    webhook_secret = pick("webhook_secret", "CACHELAYER_WEBHOOK_SECRET")
    if webhook_secret:
        import base64
        import binascii

        body = webhook_secret.strip().removeprefix("whsec_")
        try:
            ok = bool(base64.b64decode(body + "=" * (-len(body) % 4), validate=True))
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise ConfigError("CACHELAYER_WEBHOOK_SECRET must be a whsec_<base64> secret (Replicate's)")
        webhook_secret = webhook_secret.strip()
    gateway_secret = pick("gateway_secret", "CACHELAYER_GATEWAY_SECRET")
    if gateway_secret is not None and len(gateway_secret) < 16:
        raise ConfigError("CACHELAYER_GATEWAY_SECRET must be at least 16 characters")
    gateway_url = _optional_url("CACHELAYER_GATEWAY_URL", pick("gateway_url", "CACHELAYER_GATEWAY_URL"))
    if url_mode == "gateway" and not gateway_url:
        raise ConfigError(f"{mode_name}=gateway needs CACHELAYER_GATEWAY_URL (where serve is reached)")
    proxy_raw = ov.get("gateway_proxy", env.get("CACHELAYER_GATEWAY_PROXY", ""))
    if isinstance(proxy_raw, bool):
        proxy = proxy_raw
    elif str(proxy_raw).strip().lower() in _TRUE:
        proxy = True
    elif str(proxy_raw).strip().lower() in _FALSE:
        proxy = False
    else:
        raise ConfigError(f"CACHELAYER_GATEWAY_PROXY must be 1 or 0, got {proxy_raw!r}")
    retention = ov.get("retention", env.get("CACHELAYER_RETENTION"))
    return {
        "retention": retention_seconds(
            retention, "retention" if "retention" in ov else "CACHELAYER_RETENTION"
        ),
        "webhook_secret": webhook_secret,
        "webhook_url": _optional_url("CACHELAYER_WEBHOOK_URL", pick("webhook_url", "CACHELAYER_WEBHOOK_URL")),
        "gateway_url": gateway_url,
        "gateway_secret": gateway_secret,
        "gateway_proxy": proxy,
    }
