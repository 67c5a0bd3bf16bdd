"""The PostgreSQL log through the CLI: tampering is exit 3 as with SQLite, bad locations exit 2.

The tampering is real SQL (UPDATE, DELETE) on a real server's tables; the errors never show a
password or a traceback, and a read-only open never creates a table.
"""

from __future__ import annotations

import sys

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nomyo_audit.audit import AuditLog, LogError
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def _build(i: int):
    return lambda seq, salt: build_record(
        seq=seq, timestamp=1_764_000_000.0 + i, salt=salt, payload_id=f"p-{i}", router="r",
        server_key=None, model=None, security_tier=None, outcome="ok", request={"i": i}, response=None,
    )


@pytest.fixture
def filled(postgres_url, tmp_path):
    with AuditLog(postgres_url, key=KEY, checkpoint_every=4) as log:
        for i in range(10):
            log.append(f"p-{i}", _build(i))
        log.checkpoint()
    public = tmp_path / "audit.key.pub"
    public.write_bytes(KEY.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return postgres_url, public


def _tables(url):
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]


TAMPERING = {
    "altered bytes": "UPDATE records SET data = overlay(data placing 'X' from 30 for 1) WHERE seq = 3",
    "deleted row": "DELETE FROM records WHERE seq = 4",
    "reordered rows": "UPDATE records SET seq = -1 WHERE seq = 5; UPDATE records SET seq = 5 WHERE seq = 6; "
    "UPDATE records SET seq = 6 WHERE seq = -1",
    "time column": "UPDATE records SET time = time + 7200 WHERE seq = 2",
    "payload_id column": "UPDATE records SET payload_id = 'someone-else' WHERE seq = 2",
    "leaf column": "UPDATE records SET leaf = sha256(leaf) WHERE seq = 8",
    "truncated": "DELETE FROM records WHERE seq >= 8",
    "checkpoint root": "UPDATE checkpoints SET root = sha256(root) WHERE size = 8",
    "salt deleted": "DELETE FROM meta WHERE key = 'salt'",
    "saved state": "UPDATE meta SET value = overlay(value placing '\\xff'::bytea from 9 for 1) "
    "WHERE key = 'frontier'",
}


@pytest.mark.parametrize("what", TAMPERING)
def test_tampering_is_an_integrity_failure(filled, what, capsys):
    url, public = filled
    assert main(["log", "verify", "--log", url, "--key", str(public)]) == ExitCode.OK
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TAMPERING[what])
    capsys.readouterr()
    assert main(["log", "verify", "--log", url, "--key", str(public)]) == ExitCode.INTEGRITY
    out = capsys.readouterr()
    assert "FAIL" in out.out and "Traceback" not in out.err


def test_show_prove_and_report_read_a_postgres_log(filled, tmp_path, capsys):
    url, public = filled
    assert main(["log", "show", "--log", url, "--format", "json", "--limit", "2"]) == ExitCode.OK
    assert main(["log", "prove", "p-3", "--log", url, "-o", str(tmp_path / "p.proof")]) == ExitCode.OK
    assert main(["log", "verify-proof", str(tmp_path / "p.proof"), "--key", str(public)]) == ExitCode.OK
    assert main(["log", "checkpoint", "--log", url, "--key", str(_private(tmp_path))]) == ExitCode.OK
    out = tmp_path / "report"
    signing = ["--sign", str(_private(tmp_path))]
    argv = ["report", "--log", url, "--log-key", str(public), "-o", str(out), "--format", "json", *signing]
    assert main(argv) == ExitCode.OK
    assert main(["verify-report", str(out), "--key", str(public), "--log", url]) == ExitCode.OK


def _private(tmp_path):
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    path = tmp_path / "audit.key"
    path.write_bytes(KEY.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    return path


def test_read_only_open_of_an_empty_database_creates_nothing(postgres_url, capsys):
    assert main(["log", "verify", "--log", postgres_url]) == ExitCode.USAGE
    assert "an empty database, not an audit log" in capsys.readouterr().err
    assert _tables(postgres_url) == 0
    with pytest.raises(LogError, match="empty database"):
        AuditLog.open(postgres_url)
    assert _tables(postgres_url) == 0


def test_a_database_that_is_not_a_log(postgres_url, capsys):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int)")
    assert main(["log", "verify", "--log", postgres_url]) == ExitCode.USAGE
    assert "not a nomyo-audit log" in capsys.readouterr().err
    with pytest.raises(LogError, match="not a nomyo-audit log"):
        AuditLog(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TABLE customers")
        conn.execute("CREATE TABLE records (seq int)")
    assert main(["log", "verify", "--log", postgres_url]) == ExitCode.USAGE
    assert "not a nomyo-audit log" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["no database", "no role", "no server"])
def test_unreachable_logs_are_usage_errors_without_the_password(postgres_server, where, capsys):
    url = {
        "no database": postgres_server.url("missing_db").replace("://", "://nomyo_test:pa55-SECRET@"),
        "no role": postgres_server.url("postgres").replace("nomyo_test@", "ghost:pa55-SECRET@"),
        "no server": "postgresql://u:pa55-SECRET@127.0.0.1:1/db?password=pa55-SECRET",
    }[where]
    for argv in (["log", "verify", "--log", url], ["log", "checkpoint", "--log", url, "--key", "k"]):
        assert main(argv) == ExitCode.USAGE
        err = capsys.readouterr().err
        assert "cannot connect" in err and "pa55-SECRET" not in err and "Traceback" not in err
    with pytest.raises(LogError) as raised:
        AuditLog(url)
    assert "pa55-SECRET" not in str(raised.value)


def test_without_psycopg_a_url_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(LogError, match=r"nomyo-audit\[postgres\]"):
        AuditLog.open("postgresql://u@127.0.0.1/db")
    with AuditLog(tmp_path / "still.db") as log:  # SQLite needs no psycopg
        assert log.append("p-0", _build(0)) == 0


def test_env_and_audit_log_argument_take_a_url(filled, monkeypatch, capsys):
    url, public = filled
    monkeypatch.setenv("NOMYO_AUDIT_LOG", url)
    assert main(["log", "verify", "--key", str(public)]) == ExitCode.OK
    assert "ok: 10 records" in capsys.readouterr().out


def test_the_client_records_into_a_postgres_url(router, postgres_url, monkeypatch):
    """``audit_log=`` and ``NOMYO_AUDIT_LOG`` take a URL: each request leaves its record there."""
    import asyncio

    from nomyo_audit import SecureChatCompletion

    async def chat(**kwargs):
        async with SecureChatCompletion(router.url, allow_http=True, **kwargs) as client:
            await client.create("qwen3", [{"role": "user", "content": "hello"}], security_tier="high")

    asyncio.run(chat(audit_log=postgres_url))
    monkeypatch.setenv("NOMYO_AUDIT_LOG", postgres_url)
    asyncio.run(chat())
    with AuditLog.open(postgres_url) as log:
        assert log.size == 2 and log.verify().ok
        assert [r.seq for r in log.store.records()] == [0, 1]
