"""The download settings added for issue 8.7 and 9.5: validated when read, documented defaults."""

from __future__ import annotations

import pytest

from cachelayer.config import Settings
from cachelayer.errors import ConfigError

BASE = {"CACHELAYER_DATABASE_URL": "sqlite:///x.db", "CACHELAYER_STORAGE_URL": "file:///tmp/x"}


def test_defaults_let_a_10_gib_file_pass_on_a_slow_link():
    s = Settings.from_env(BASE)
    assert (s.download_timeout, s.stall_bytes_per_second, s.stall_window) == (21600.0, 16384, 120.0)
    ten_gib = 10 * 2**30
    assert ten_gib / s.download_timeout * 8 < 4.0e6  # passes at an average of 4 Mbit/s
    assert s.stall_bytes_per_second * s.stall_window > 120  # a 1 byte/s source is cut
    assert s.token_hosts == ("replicate.delivery", "*.replicate.delivery")


def test_values_from_env_and_overrides():
    env = dict(
        BASE,
        CACHELAYER_DOWNLOAD_TIMEOUT="90",
        CACHELAYER_STALL_BYTES_PER_SECOND="0",
        CACHELAYER_STALL_WINDOW="5.5",
        CACHELAYER_TOKEN_HOSTS="api.example.com, *.cdn.example.com",
    )
    s = Settings.from_env(env)
    assert (s.download_timeout, s.stall_bytes_per_second, s.stall_window) == (90.0, 0.0, 5.5)
    assert s.token_hosts == ("api.example.com", "*.cdn.example.com")
    assert Settings.from_env(env, download_timeout=3, token_hosts=["a.b"]).token_hosts == ("a.b",)


def test_token_hosts_are_file_hosts_whatever_the_api_base_url():
    """The API host is no file host (only its download path gets the token, decided by
    cachelayer.token_scope), so the base URL does not add it."""
    s = Settings.from_env(dict(BASE, REPLICATE_BASE_URL="http://127.0.0.1:8123/"))
    assert s.token_hosts == ("replicate.delivery", "*.replicate.delivery")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CACHELAYER_DOWNLOAD_TIMEOUT", "nan"),
        ("CACHELAYER_DOWNLOAD_TIMEOUT", "inf"),
        ("CACHELAYER_DOWNLOAD_TIMEOUT", "-1"),
        ("CACHELAYER_DOWNLOAD_TIMEOUT", "6h"),
        ("CACHELAYER_STALL_BYTES_PER_SECOND", "lots"),
        ("CACHELAYER_STALL_WINDOW", "-0.5"),
        ("CACHELAYER_TOKEN_HOSTS", "api.replicate.com:https"),
        ("CACHELAYER_TOKEN_HOSTS", "*evil"),
        ("REPLICATE_BASE_URL", "http://[::1/"),
    ],
)
def test_bad_values_are_config_errors(var, value):
    with pytest.raises(
        ConfigError, match=var.split("_", 1)[1][:8] if var != "REPLICATE_BASE_URL" else "REPLICATE"
    ):
        Settings.from_env(dict(BASE, **{var: value}))
