"""Positions come from the sequencer, not from whoever can NOTIFY.

Any session of the database may ``NOTIFY nomyo_audit_sequenced`` (NOTIFY needs no privilege),
and a writer believed every payload: with a token read from pending, another session made an
append return a position its record never got, before anything was durable.
"""

from __future__ import annotations

import threading
import time

import psycopg

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._postgres_schema import SEQUENCED_CHANNEL, SEQUENCER_LOCK


def _build(i):
    record = b'{"payload_id":"p-%d","seq":%%d,"time":"2025-11-24T16:00:00Z","v":3}' % i
    return lambda seq, salt: record % seq


def test_a_forged_notification_is_not_an_ack(postgres_url):
    with AuditLog(postgres_url):
        pass  # the tables
    with psycopg.connect(postgres_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (SEQUENCER_LOCK,))  # no sequencer runs meanwhile
        with AuditLog(postgres_url) as log:
            got: list[int] = []
            thread = threading.Thread(target=lambda: got.append(log.append("p-0", _build(0))), daemon=True)
            thread.start()
            deadline = time.monotonic() + 10
            while (row := lock.execute("SELECT token FROM pending").fetchone()) is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with psycopg.connect(postgres_url, autocommit=True) as forger:  # a session without the lock
                forger.execute("SELECT pg_notify(%s, %s)", (SEQUENCED_CHANNEL, f"41 {bytes(row[0]).hex()}"))
            thread.join(2.0)
            assert got == [], "an append returned a position no sequencer gave"
            lock.execute("SELECT pg_advisory_unlock(%s)", (SEQUENCER_LOCK,))
            thread.join(20)
            assert got == [0]
            assert log.verify().ok
