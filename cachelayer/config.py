"""Settings, read in one place: keyword arguments over environment over defaults.

Environment variables (all optional):

==============================  ==============================================================
``CACHELAYER_DATABASE_URL``     SQLAlchemy URL of the catalog (SQLite or PostgreSQL).
                                Default: ``sqlite:///{data_dir}/catalog.db``.
``CACHELAYER_STORAGE_URL``      ``s3://bucket[/prefix]`` or ``file:///path``.
                                Default: ``file://{data_dir}/objects``.
``CACHELAYER_S3_ADDRESSING_STYLE`` ``auto``, ``path`` or ``virtual`` (default ``auto``).
``CACHELAYER_PUBLIC_BASE_URL``  durable URL = ``{base}/{key}``.
``CACHELAYER_URL_MODE``         ``public``, ``presigned`` or ``s3``. Default: ``public`` when a base
                                URL is set, else ``s3`` (``file://`` URIs for the local store).
``CACHELAYER_PRESIGN_TTL``      seconds a presigned URL stays valid (default 3600; S3 caps
                                SigV4 presigned URLs at 604800 s, seven days).
``CACHELAYER_ALLOWED_HOSTS``    comma-separated ``host`` / ``host:port`` / ``*.domain`` patterns
                                downloads may come from (default
                                ``replicate.delivery,*.replicate.delivery``).
``CACHELAYER_MAX_FILE_BYTES``   size cap of one download in bytes (default 10 GiB).
``CACHELAYER_CONCURRENCY``      files of one prediction transferred at once (default 8).
``CACHELAYER_EXPIRY_MARGIN``    seconds before Replicate's one-hour removal under which a
                                persist logs a warning (default 600).
``CACHELAYER_DOWNLOAD_RETRIES`` attempts per file for truncated/dropped downloads (default 4).
``CACHELAYER_MAX_ATTEMPTS``    claims of one file before a transient failure is final (default 5).
``CACHELAYER_LEASE_SECONDS``   seconds a claim on a file lasts without renewal (default 60); a
                                crashed worker's files are taken over after this.
``CACHELAYER_CACHE_CONTROL``    ``Cache-Control`` written on objects (default
                                ``public, max-age=31536000, immutable``).
``CACHELAYER_CA_BUNDLE``        CA bundle for downloads (default: system/certifi).
``REPLICATE_API_TOKEN``         read by the ``replicate`` client itself.
``REPLICATE_BASE_URL``          read by the ``replicate`` client itself.
==============================  ==============================================================

boto3 reads its own variables (``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID``, ``AWS_REGION``...).
The default data directory is ``platformdirs.user_data_dir("cachelayer")``
(``~/.local/share/cachelayer`` on Linux), overridable with ``CACHELAYER_HOME``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachelayer.errors import ConfigError

DEFAULT_ALLOWED_HOSTS = ("replicate.delivery", "*.replicate.delivery")
URL_MODES = ("public", "presigned", "s3")
#: Replicate removes input, output and files of API predictions one hour after they finish
#: (Replicate data-retention docs, summarised in shared/reference/replicate-api.md).
REPLICATE_RETENTION_SECONDS = 3600.0


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user data directory: ``$CACHELAYER_HOME`` or ``user_data_dir("cachelayer")``."""
    home = (os.environ if env is None else env).get("CACHELAYER_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("cachelayer", appauthor=False))


def _number(name: str, raw: str, kind: type[int] | type[float], what: str) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {value}")
    return value


def _int(name: str, raw: str) -> int:
    return int(_number(name, raw, int, "an integer"))


def _float(name: str, raw: str) -> float:
    return float(_number(name, raw, float, "a number of seconds"))


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build with :meth:`from_env`; every field is also a keyword.

    Sizes are bytes, durations seconds.
    """

    database_url: str
    storage_url: str
    public_base_url: str | None = None
    url_mode: str = "s3"
    presign_ttl: int = 3600
    allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
    max_file_bytes: int = 10 * 1024**3
    concurrency: int = 8
    expiry_margin: float = 600.0
    download_retries: int = 4
    max_attempts: int = 5
    lease_seconds: float = 60.0
    cache_control: str | None = "public, max-age=31536000, immutable"
    ca_bundle: str | None = None
    replicate_api_token: str | None = None
    replicate_base_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_addressing_style: str = "auto"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default ``os.environ``) with ``overrides`` on top.

        ``None`` overrides are ignored, so CLI flags can be passed straight through.
        Raises :class:`ConfigError` for malformed values or unknown keywords.
        """
        env = os.environ if env is None else env
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        ov = {k: v for k, v in overrides.items() if v is not None}

        def pick(key: str, var: str) -> str | None:
            if key in ov:
                return str(ov[key])
            return env.get(var) or None

        data_dir = None
        database_url = pick("database_url", "CACHELAYER_DATABASE_URL")
        storage_url = pick("storage_url", "CACHELAYER_STORAGE_URL")
        if not database_url or not storage_url:
            data_dir = default_data_dir(env)
        if not database_url:
            database_url = f"sqlite:///{data_dir}/catalog.db"
        if not storage_url:
            storage_url = (Path(str(data_dir)) / "objects").as_uri()
        if not (storage_url.startswith(("s3://", "file://")) or storage_url.startswith("/")):
            raise ConfigError(
                f"CACHELAYER_STORAGE_URL must be s3://bucket[/prefix] or file:///path, got {storage_url!r}"
            )
        public_base_url = pick("public_base_url", "CACHELAYER_PUBLIC_BASE_URL")
        if public_base_url:
            public_base_url = public_base_url.rstrip("/")
        url_mode = pick("url_mode", "CACHELAYER_URL_MODE") or ("public" if public_base_url else "s3")
        if url_mode not in URL_MODES:
            raise ConfigError(f"CACHELAYER_URL_MODE must be one of {', '.join(URL_MODES)}, got {url_mode!r}")
        if url_mode == "public" and not public_base_url:
            raise ConfigError("CACHELAYER_URL_MODE=public needs CACHELAYER_PUBLIC_BASE_URL")

        hosts_raw = ov.get("allowed_hosts", env.get("CACHELAYER_ALLOWED_HOSTS"))
        if hosts_raw is None:
            allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED_HOSTS
        elif isinstance(hosts_raw, str):
            allowed_hosts = tuple(h.strip().lower() for h in hosts_raw.split(",") if h.strip())
        else:
            allowed_hosts = tuple(str(h).lower() for h in hosts_raw)

        def num(key: str, var: str, default: Any, conv: Any) -> Any:
            if key in ov:
                return conv(key, str(ov[key]))
            raw = env.get(var)
            return conv(var, raw) if raw else default

        concurrency = num("concurrency", "CACHELAYER_CONCURRENCY", 8, _int)
        if concurrency < 1:
            raise ConfigError("CACHELAYER_CONCURRENCY must be at least 1")
        cache_control = ov.get("cache_control", env.get("CACHELAYER_CACHE_CONTROL", cls.cache_control))
        return cls(
            database_url=database_url,
            storage_url=storage_url,
            public_base_url=public_base_url,
            url_mode=url_mode,
            presign_ttl=num("presign_ttl", "CACHELAYER_PRESIGN_TTL", 3600, _int),
            allowed_hosts=allowed_hosts,
            max_file_bytes=num("max_file_bytes", "CACHELAYER_MAX_FILE_BYTES", 10 * 1024**3, _int),
            concurrency=concurrency,
            expiry_margin=num("expiry_margin", "CACHELAYER_EXPIRY_MARGIN", 600.0, _float),
            download_retries=max(1, num("download_retries", "CACHELAYER_DOWNLOAD_RETRIES", 4, _int)),
            max_attempts=max(1, num("max_attempts", "CACHELAYER_MAX_ATTEMPTS", 5, _int)),
            lease_seconds=max(1.0, num("lease_seconds", "CACHELAYER_LEASE_SECONDS", 60.0, _float)),
            cache_control=cache_control or None,
            ca_bundle=pick("ca_bundle", "CACHELAYER_CA_BUNDLE"),
            replicate_api_token=pick("replicate_api_token", "REPLICATE_API_TOKEN"),
            replicate_base_url=pick("replicate_base_url", "REPLICATE_BASE_URL"),
            s3_endpoint_url=ov.get("s3_endpoint_url"),
            s3_region=ov.get("s3_region"),
            s3_addressing_style=ov.get("s3_addressing_style",
                                       env.get("CACHELAYER_S3_ADDRESSING_STYLE", "auto")),
            extra=ov.get("extra", {}),
        )
