"""A URL's own ``options`` (a schema chosen with search_path) hold for read-only opens too.

Read-only opens add ``default_transaction_read_only``; passing it as the ``options`` keyword
replaced the URL's, so ``log verify`` of a log kept in another schema read the default schema.
"""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest

from nomyo_audit.audit import AuditLog


def _build(i):
    record = b'{"payload_id":"p-%d","seq":%%d,"time":"2025-11-24T16:00:0%dZ","v":3}' % (i, i)
    return lambda seq, salt: record % seq


def test_read_only_open_keeps_the_urls_search_path(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA audit")
    url = postgres_url + ("&" if "?" in postgres_url else "?") + "options=" + quote("-csearch_path=audit")
    with AuditLog(url) as log:
        for i in range(3):
            log.append(f"p-{i}", _build(i))
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM audit.records").fetchone() == (3,)
    with AuditLog.open(url) as log:
        assert log.size == 3 and log.verify().ok
        assert [r.payload_id for r in log.store.records()] == ["p-0", "p-1", "p-2"]
    with AuditLog.open(url) as log:  # still a read-only session: the server refuses a write on it
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            log.store._db.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
