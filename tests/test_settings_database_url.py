"""``setting_values.database_url_parts`` reads a database URL as SQLAlchemy's ``make_url``
does (backend, database, refusal), without importing SQLAlchemy: the settings check every
command runs first stays off a copy command's start-up (issue 21, item 5)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from cachelayer.errors import ConfigError
from cachelayer.setting_values import check_database_url, database_url_parts, sqlite_path

URLS = [
    "sqlite:///x.db",
    "sqlite://",
    "sqlite:///:memory:",
    "sqlite:////abs/p%20q.db",
    "sqlite:///file:x?mode=ro&uri=true",
    "sqlite:///~/c.db",
    "sqlite:///x#frag",
    "sqlite+pysqlite:///x.db",
    "postgresql://u:p@h:5432/db",
    "postgresql+psycopg://u:p%40x@[::1]:5432/d%2Fb?sslmode=require",
    "postgres://h/db",
    "postgresql://u@h:5432?x=1",
    "postgresql://h:/db",
    "postgresql://h:abc/db",
    "pg://h:99999999999/x",
    "mysql://h/db",
    "http://x",
    "+://x",
    "a+b+c://u@h",
    "nonsense",
    "sqlite:/x.db",
    "",
    " sqlite:///x",
    "x-y://h/d",
    "sqlite:///a?b?c",
    "postgresql://@/",
    "postgresql://u:@h/db",
    "postgresql://[::1/db",
]


@pytest.mark.parametrize("url", URLS)
def test_database_url_parts_agree_with_sqlalchemy(url):
    try:
        parsed = make_url(url)
        expected: object = (parsed.get_backend_name(), parsed.database)
    except Exception:  # ArgumentError or ValueError: refused
        expected = "refused"
    try:
        ours: object = database_url_parts(url)
    except ValueError:
        ours = "refused"
    assert ours == expected


def test_a_refused_url_is_a_config_error_naming_the_setting():
    with pytest.raises(ConfigError, match="--database-url is not a database URL"):
        sqlite_path("sqlite:/x.db", "--database-url")
    with pytest.raises(ConfigError, match="must be a SQLite or PostgreSQL URL"):
        check_database_url("mysql://h/db")


def test_checking_a_database_url_imports_no_sqlalchemy(tmp_path):
    code = (
        "import sys\n"
        "from cachelayer.setting_values import check_database_url\n"
        f"check_database_url('sqlite:///{tmp_path}/c.db')\n"
        "check_database_url('postgresql://u:p@127.0.0.1:5432/test')\n"
        "print('sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False"]
