"""Credentials in settings never reach a message (issue 17 item 4): a malformed value of
any URL-valued setting (or the token) is reported in one line, exit status 2, with its
password, token or secret query parameter masked."""

from __future__ import annotations

import os

import pytest
from conftest import run_cli
from hypothesis import given
from hypothesis import strategies as st

from cachelayer.masking import mask_secrets

SECRET = "hunter2pass"

# (variable, a malformed value carrying SECRET)
BAD_SETTINGS = [
    ("CACHELAYER_STORAGE_URL", f"s3://user:{SECRET}@bucket/x"),
    ("CACHELAYER_STORAGE_URL", f"s3://user:{SECRET}@bucket/x?y=1"),
    ("CACHELAYER_STORAGE_URL", f"user:{SECRET}@bucket/x"),
    ("CACHELAYER_DATABASE_URL", f"mysql://user:{SECRET}@db.example/catalog"),
    ("CACHELAYER_DATABASE_URL", f"postgresql://user:{SECRET}@db.example:99999999/catalog"),
    ("CACHELAYER_DATABASE_URL", f"postgresql://db.example/catalog?password={SECRET}&x=\x01"),
    ("CACHELAYER_PUBLIC_BASE_URL", f"https://user:{SECRET}@cdn.example"),
    ("CACHELAYER_PUBLIC_BASE_URL", f"https://cdn.example/?token={SECRET}"),
    ("REPLICATE_BASE_URL", f"https://user:{SECRET}@api.example/v1"),
    ("CACHELAYER_GATEWAY_URL", f"https://user:{SECRET}@files.example"),
    ("CACHELAYER_WEBHOOK_URL", f"https://:{SECRET}@hooks.example/replicate"),
    ("REPLICATE_API_TOKEN", f"r8_{SECRET}\x01"),
    ("REPLICATE_API_TOKEN", f"r8_{SECRET}" + "x" * 5000),
]


@pytest.mark.parametrize(("variable", "value"), BAD_SETTINGS)
def test_a_bad_setting_is_reported_in_one_line_without_its_credentials(tmp_path, variable, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CACHELAYER_", "REPLICATE_"))}
    env["CACHELAYER_HOME"] = str(tmp_path)
    env[variable] = value
    done = run_cli(env, "ls")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cachelayer: error:"), done.stderr
    assert SECRET not in done.stderr and "hunter" not in done.stderr


def test_mask_secrets_keeps_what_helps_and_hides_what_does_not():
    assert mask_secrets(f"s3://user:{SECRET}@bucket/x") == "s3://user:***@bucket/x"
    assert (
        mask_secrets(f"postgresql+psycopg://u:{SECRET}@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    )
    assert mask_secrets(f"https://{SECRET}@h/p") == "https://***@h/p"
    assert mask_secrets(f"https://u:pa/ss{SECRET}@h/p") == "https://u:***@h/p"  # "/" in a password
    assert mask_secrets(f"https://h/p?a=1&password={SECRET}#f") == "https://h/p?a=1&password=***#f"
    assert mask_secrets(f"https://h/p?X-Amz-Signature={SECRET}") == "https://h/p?X-Amz-Signature=***"
    assert mask_secrets("sqlite:////home/me@example/catalog.db") == "sqlite:////home/me@example/catalog.db"
    assert mask_secrets("/srv/objects") == "/srv/objects"
    assert mask_secrets("s3://bucket/prefix") == "s3://bucket/prefix"


# passwords made of characters no other part of the value holds, so "not in" is exact
_PASSWORDS = st.text(
    st.characters(blacklist_characters=":/.+*=?&@#", blacklist_categories=("Cs", "L", "N")), min_size=4
)


@given(
    st.sampled_from(["s3", "https", "postgresql+psycopg", "sqlite", ""]),
    _PASSWORDS,
    st.sampled_from(["", "/", "/p/q", "?a=1", "/x?token=1"]),
)
def test_no_password_survives_masking(scheme, password, tail):
    value = f"{scheme}://user:{password}@host{tail}" if scheme else f"user:{password}@host{tail}"
    assert password not in mask_secrets(value)
