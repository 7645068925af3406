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
    env = {"CACHELAYER_HOME": str(tmp_path), "CACHELAYER_STORAGE_URL": "s3://env-bucket",
           "CACHELAYER_PUBLIC_BASE_URL": "https://cdn.example.com/", "CACHELAYER_CONCURRENCY": "3"}
    s = Settings.from_env(env, storage_url="s3://kw-bucket/pre", concurrency=None)
    assert s.storage_url == "s3://kw-bucket/pre"
    assert s.concurrency == 3
    assert s.url_mode == "public" and s.public_base_url == "https://cdn.example.com"
    s2 = Settings.from_env({**env, "CACHELAYER_ALLOWED_HOSTS": "a.com, *.b.com ,c:8080"})
    assert s2.allowed_hosts == ("a.com", "*.b.com", "c:8080")


@pytest.mark.parametrize(("env", "match"), [
    ({"CACHELAYER_URL_MODE": "nope"}, "CACHELAYER_URL_MODE"),
    ({"CACHELAYER_URL_MODE": "public"}, "PUBLIC_BASE_URL"),
    ({"CACHELAYER_STORAGE_URL": "ftp://x"}, "CACHELAYER_STORAGE_URL"),
    ({"CACHELAYER_CONCURRENCY": "lots"}, "CACHELAYER_CONCURRENCY"),
    ({"CACHELAYER_CONCURRENCY": "0"}, "CACHELAYER_CONCURRENCY"),
    ({"CACHELAYER_MAX_FILE_BYTES": "-1"}, "CACHELAYER_MAX_FILE_BYTES"),
])
def test_bad_settings_are_config_errors(tmp_path, env, match):
    with pytest.raises(ConfigError, match=match):
        Settings.from_env({"CACHELAYER_HOME": str(tmp_path), **env})


def test_unknown_keyword():
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.from_env({}, bucket="x")
