"""Settings: environment, keyword overrides, defaults and typed errors."""

from __future__ import annotations

import pytest

from cachelayer.config import DEFAULT_ALLOWED_HOSTS, Settings
from cachelayer.errors import ConfigError


def test_defaults_live_in_the_data_dir(tmp_path):
    s = Settings.from_env({"CACHELAYER_HOME": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path}/catalog.db"
    assert s.storage_url == (tmp_path / "objects").as_uri()
    assert s.url_mode == "s3"
    assert s.allowed_hosts == DEFAULT_ALLOWED_HOSTS


def test_keywords_override_environment(tmp_path):
    env = {
        "CACHELAYER_HOME": str(tmp_path),
        "CACHELAYER_STORAGE_URL": "s3://env-bucket",
        "CACHELAYER_PUBLIC_BASE_URL": "https://cdn.example.com/",
        "CACHELAYER_CONCURRENCY": "3",
    }
    s = Settings.from_env(env, storage_url="s3://kw-bucket/pre", concurrency=None)
    assert s.storage_url == "s3://kw-bucket/pre"
    assert s.concurrency == 3
    assert s.url_mode == "public" and s.public_base_url == "https://cdn.example.com"
    s2 = Settings.from_env({**env, "CACHELAYER_ALLOWED_HOSTS": "a.com, *.b.com ,c:8080"})
    assert s2.allowed_hosts == ("a.com", "*.b.com", "c:8080")


#: Every setting with the bad values tried for it (issue 8.11): each must be a one-line
#: ConfigError naming the variable, never a traceback and never silently accepted.
#: ``{tmp}`` is the test's temporary directory, holding ``afile`` (a small text file).
BAD_SETTINGS = [
    ("CACHELAYER_DATABASE_URL", "not a url"),
    ("CACHELAYER_DATABASE_URL", "mysql://x/y"),
    ("CACHELAYER_DATABASE_URL", "foo://x"),
    # a file that is not SQLite is refused when the catalog opens, by SQLite itself
    # (test_catalog_sqlite_locks.py, and the CLI's one line in test_cli_mistakes.py)
    ("CACHELAYER_DATABASE_URL", "sqlite:///{tmp}"),
    ("CACHELAYER_DATABASE_URL", "sqlite:///{tmp}/afile/catalog.db"),
    ("CACHELAYER_STORAGE_URL", "ftp://x"),
    ("CACHELAYER_STORAGE_URL", "s3://"),
    ("CACHELAYER_STORAGE_URL", "s3://bad bucket"),
    ("CACHELAYER_STORAGE_URL", "s3://b?x=1"),
    ("CACHELAYER_STORAGE_URL", "file://host/x"),
    ("CACHELAYER_STORAGE_URL", "relative/dir"),
    ("CACHELAYER_STORAGE_URL", "file://{tmp}/afile"),
    ("CACHELAYER_STORAGE_URL", "{tmp}/afile/objects"),
    ("CACHELAYER_S3_ADDRESSING_STYLE", "bogus"),
    ("CACHELAYER_PUBLIC_BASE_URL", "cdn.example.com"),
    ("CACHELAYER_PUBLIC_BASE_URL", "ftp://x"),
    ("CACHELAYER_PUBLIC_BASE_URL", "https://x/?q=1"),
    ("CACHELAYER_PUBLIC_BASE_URL", "https://"),
    ("CACHELAYER_PUBLIC_BASE_URL", "http://x:99999"),
    ("CACHELAYER_PUBLIC_BASE_URL", "https://cdn.example.com/a b"),
    ("CACHELAYER_URL_MODE", "nope"),
    ("CACHELAYER_URL_MODE", "PUBLIC"),
    ("CACHELAYER_PRESIGN_TTL", "abc"),
    ("CACHELAYER_PRESIGN_TTL", "-1"),
    ("CACHELAYER_PRESIGN_TTL", "0"),
    ("CACHELAYER_PRESIGN_TTL", "604801"),
    ("CACHELAYER_PRESIGN_TTL", "nan"),
    ("CACHELAYER_PRESIGN_TTL", "1e3"),
    ("CACHELAYER_PRESIGN_TTL", "3600.5"),
    ("CACHELAYER_ALLOWED_HOSTS", "http://x"),
    ("CACHELAYER_ALLOWED_HOSTS", "a b"),
    ("CACHELAYER_ALLOWED_HOSTS", "host:99999"),
    ("CACHELAYER_ALLOWED_HOSTS", "[::1"),
    ("CACHELAYER_ALLOWED_HOSTS", "*evil"),
    ("CACHELAYER_MAX_FILE_BYTES", "-1"),
    ("CACHELAYER_MAX_FILE_BYTES", "0"),
    ("CACHELAYER_MAX_FILE_BYTES", "abc"),
    ("CACHELAYER_MAX_FILE_BYTES", "1.5"),
    ("CACHELAYER_MAX_FILE_BYTES", "nan"),
    ("CACHELAYER_MAX_FILE_BYTES", "1e999"),
    ("CACHELAYER_MAX_FILE_BYTES", str(2**64)),
    ("CACHELAYER_CONCURRENCY", "lots"),
    ("CACHELAYER_CONCURRENCY", "0"),
    ("CACHELAYER_CONCURRENCY", "-3"),
    ("CACHELAYER_CONCURRENCY", "100000"),
    ("CACHELAYER_CONCURRENCY", "nan"),
    ("CACHELAYER_EXPIRY_MARGIN", "nan"),
    ("CACHELAYER_EXPIRY_MARGIN", "inf"),
    ("CACHELAYER_EXPIRY_MARGIN", "-1"),
    ("CACHELAYER_EXPIRY_MARGIN", "abc"),
    ("CACHELAYER_EXPIRY_MARGIN", "99999"),
    ("CACHELAYER_DOWNLOAD_RETRIES", "0"),
    ("CACHELAYER_DOWNLOAD_RETRIES", "-1"),
    ("CACHELAYER_DOWNLOAD_RETRIES", "abc"),
    ("CACHELAYER_DOWNLOAD_RETRIES", "1000000"),
    ("CACHELAYER_MAX_ATTEMPTS", "0"),
    ("CACHELAYER_MAX_ATTEMPTS", "-1"),
    ("CACHELAYER_MAX_ATTEMPTS", "abc"),
    ("CACHELAYER_MAX_ATTEMPTS", "nan"),
    ("CACHELAYER_LEASE_SECONDS", "nan"),
    ("CACHELAYER_LEASE_SECONDS", "inf"),
    ("CACHELAYER_LEASE_SECONDS", "-inf"),
    ("CACHELAYER_LEASE_SECONDS", "-1"),
    ("CACHELAYER_LEASE_SECONDS", "0"),
    ("CACHELAYER_LEASE_SECONDS", "0.5"),
    ("CACHELAYER_LEASE_SECONDS", "abc"),
    ("CACHELAYER_LEASE_SECONDS", "1e12"),
    ("CACHELAYER_CACHE_CONTROL", "max-age=1\r\nX-Evil: 1"),
    ("CACHELAYER_CACHE_CONTROL", "caf\u00e9"),
    ("CACHELAYER_CACHE_CONTROL", "x" * 5000),
    ("CACHELAYER_CA_BUNDLE", "{tmp}/missing.pem"),
    ("CACHELAYER_CA_BUNDLE", "{tmp}/afile"),
    ("CACHELAYER_CA_BUNDLE", "{tmp}"),
    ("CACHELAYER_DOWNLOAD_TIMEOUT", "nan"),
    ("CACHELAYER_DOWNLOAD_TIMEOUT", "inf"),
    ("CACHELAYER_DOWNLOAD_TIMEOUT", "-1"),
    ("CACHELAYER_DOWNLOAD_TIMEOUT", "6h"),
    ("CACHELAYER_STALL_BYTES_PER_SECOND", "lots"),
    ("CACHELAYER_STALL_BYTES_PER_SECOND", "nan"),
    ("CACHELAYER_STALL_BYTES_PER_SECOND", "-5"),
    ("CACHELAYER_STALL_WINDOW", "-0.5"),
    ("CACHELAYER_STALL_WINDOW", "0"),
    ("CACHELAYER_STALL_WINDOW", "nan"),
    ("CACHELAYER_TOKEN_HOSTS", "api.replicate.com:https"),
    ("CACHELAYER_TOKEN_HOSTS", "*evil"),
    ("CACHELAYER_HOME", "{tmp}/afile"),
    ("REPLICATE_API_TOKEN", "abc def"),
    ("REPLICATE_API_TOKEN", "tok\nen"),
    ("REPLICATE_BASE_URL", "http://[::1/"),
    ("REPLICATE_BASE_URL", "ftp://x"),
    ("REPLICATE_BASE_URL", "not a url"),
    ("REPLICATE_BASE_URL", "http://x:99999"),
]


def bad_env(tmp_path, var: str, value: str) -> dict[str, str]:
    """A valid environment under ``tmp_path`` with ``var`` set to ``value``."""
    (tmp_path / "afile").write_text("not a catalog, not a certificate\n" * 4)
    env = {
        "CACHELAYER_HOME": str(tmp_path / "home"),
        "CACHELAYER_DATABASE_URL": f"sqlite:///{tmp_path}/catalog.db",
        "CACHELAYER_STORAGE_URL": (tmp_path / "objects").as_uri(),
    }
    if var == "CACHELAYER_HOME":
        del env["CACHELAYER_DATABASE_URL"], env["CACHELAYER_STORAGE_URL"]
    env[var] = value.replace("{tmp}", str(tmp_path))
    return env


@pytest.mark.parametrize(("var", "value"), BAD_SETTINGS)
def test_every_bad_setting_is_a_config_error_naming_it(tmp_path, var, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(bad_env(tmp_path, var, value))
    message = str(caught.value)
    assert var in message and "\n" not in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lease_seconds", float("nan")),
        ("lease_seconds", 0),
        ("presign_ttl", 604801),
        ("presign_ttl", True),
        ("concurrency", 2.5),
        ("max_attempts", 0),
        ("expiry_margin", float("inf")),
        ("allowed_hosts", 5),
        ("s3_region", "us east"),
        ("s3_endpoint_url", "localhost:9000"),
    ],
)
def test_bad_keywords_are_config_errors(tmp_path, key, value):
    with pytest.raises(ConfigError, match=f"(?i){key}"):
        Settings.from_env(bad_env(tmp_path, "CACHELAYER_HOME", str(tmp_path)), **{key: value})


def test_settings_built_directly_are_checked_too(tmp_path):
    with pytest.raises(ConfigError, match="CACHELAYER_LEASE_SECONDS"):
        Settings(database_url="sqlite://", storage_url=str(tmp_path), lease_seconds=float("nan"))
    with pytest.raises(ConfigError, match="CACHELAYER_PRESIGN_TTL"):
        Settings(database_url="sqlite://", storage_url=str(tmp_path), presign_ttl=0)


def test_edge_values_that_are_fine(tmp_path):
    env = bad_env(tmp_path, "CACHELAYER_PRESIGN_TTL", "604800")
    env.update(
        CACHELAYER_LEASE_SECONDS="1",
        CACHELAYER_EXPIRY_MARGIN="0",
        CACHELAYER_DOWNLOAD_TIMEOUT="0",
        CACHELAYER_STALL_BYTES_PER_SECOND="0",
        CACHELAYER_STALL_WINDOW="0",
        CACHELAYER_CONCURRENCY="256",
        CACHELAYER_ALLOWED_HOSTS=" ",
        CACHELAYER_CACHE_CONTROL="",
        CACHELAYER_URL_MODE="",
        REPLICATE_API_TOKEN="",
    )
    s = Settings.from_env(env)
    assert (s.presign_ttl, s.lease_seconds, s.expiry_margin, s.concurrency) == (604800, 1.0, 0.0, 256)
    assert s.allowed_hosts == DEFAULT_ALLOWED_HOSTS and s.cache_control is None and s.url_mode == "s3"
    assert s.replicate_api_token is None
    (tmp_path / "empty.db").write_bytes(b"")  # an empty file is a new SQLite database
    assert Settings.from_env({**env, "CACHELAYER_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"})


def test_unknown_keyword():
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, bucket="x")
    with pytest.raises(ConfigError, match="unknown setting"):  # nothing read it (issue 20)
        Settings.from_env({}, extra={"a": 1})
