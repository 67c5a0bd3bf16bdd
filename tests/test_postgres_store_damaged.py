"""A PostgreSQL log whose storage check fails is not called "the SQLite file" in verify's problems."""

from __future__ import annotations

from nomyo_audit.audit import AuditLog


def test_a_damaged_postgres_log_is_not_named_an_sqlite_file(postgres_url, monkeypatch):
    with AuditLog(postgres_url) as log:
        record = b'{"payload_id":"p-0","seq":%d,"time":"2025-11-24T16:00:00Z","v":3}'
        log.append("p-0", lambda seq, salt: record % seq)
    with AuditLog.open(postgres_url) as log:
        # what PostgresStore.integrity_check answers when a table lost a column (no real page damage to make)
        monkeypatch.setattr(log.store, "integrity_check", lambda: "a database, but not a nomyo-audit log")
        problems = log.verify().problems
    assert any("a database, but not a nomyo-audit log" in p for p in problems)
    assert not any("SQLite" in p for p in problems)
    assert any(p.startswith("the PostgreSQL database is damaged") for p in problems)
