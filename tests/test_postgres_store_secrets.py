"""A PostgreSQL URL's password never reaches a message, wherever the URL carries it.

libpq quotes parts of a URL it cannot read (a bad percent escape quotes the token, an unclosed
IPv6 bracket the whole URI), so every spelling of the password is removed from its errors: in
the user info, in ``?password=`` (raw and decoded), and ``PGPASSWORD``.
"""

from __future__ import annotations

import pytest

from nomyo_audit.audit import AuditLog, LogError
from nomyo_audit.cli._main import main
from nomyo_audit.errors import ExitCode

URLS = [
    "postgresql://u@127.0.0.1:1/db?password=pa55%zzSECRET",
    "postgresql://u:pa55-SECRET@[::1",
    "postgresql://u@[::1/db?password=pa55-SECRET",
    "postgresql://u@127.0.0.1:1/db?sslmode=require&password=pa55%2DSECRET&bogus=1%zz",
    "postgresql://u:pa55%2DSECRET@127.0.0.1:1/db?x=%zz",
    "postgres://u:pa55-SECRET@127.0.0.1:1/db?sslmode=bogus",
    "postgresql://u:pa55@SECRET@[::1",
]


@pytest.mark.parametrize("url", URLS)
def test_no_password_in_messages(url, capsys):
    with pytest.raises(LogError) as raised:
        AuditLog(url)
    assert "pa55" not in str(raised.value) and "SECRET" not in str(raised.value)
    assert main(["log", "verify", "--log", url]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "pa55" not in err and "SECRET" not in err and "Traceback" not in err


def test_no_pgpassword_in_messages(monkeypatch, capsys):
    monkeypatch.setenv("PGPASSWORD", "pa55-SECRET")
    url = "postgresql://u@[::1/db"
    assert main(["log", "verify", "--log", url]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "SECRET" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgres:///", "postgres:///"),
        ("postgresql:///audit?host=/run/postgresql", "postgresql:///audit"),
        ("postgresql://u:pw@db:5432/audit?password=pw", "postgresql://u@db:5432/audit"),
        ("postgresql://u:p@w@[::1]/audit", "postgresql://u@[::1]/audit"),
    ],
)
def test_messages_name_the_url_as_given_without_password(url, shown):
    from nomyo_audit.audit._stores import display_location

    assert display_location(url) == shown


def test_a_url_of_another_scheme_is_refused_without_its_password(tmp_path, monkeypatch, capsys):
    """``postgress://u:pw@h/db`` (a typo) was taken for a file path and echoed whole, password included."""
    monkeypatch.chdir(tmp_path)
    for url in ("postgress://u:pa55-SECRET@h/db", "mysql://u:pa55-SECRET@h/db"):
        assert main(["log", "verify", "--log", url]) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert "SECRET" not in err and "Traceback" not in err
        assert "postgresql://" in err  # says what is taken
    assert not list(tmp_path.iterdir())


def test_the_scheme_is_case_insensitive(postgres_url):
    """``POSTGRESQL://`` is a database URL to nomyo-audit; libpq takes only lower case."""
    shouted = "POSTGRESQL" + postgres_url[postgres_url.index("://"):]
    with AuditLog(shouted) as log:
        record = b'{"payload_id":"p-0","seq":%d,"time":"2025-11-24T16:00:00Z","v":3}'
        assert log.append("p-0", lambda seq, salt: record % seq) == 0
    with AuditLog.open(shouted) as log:
        assert log.size == 1
