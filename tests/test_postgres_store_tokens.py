"""A pending row whose token was already sequenced (a resubmission that raced the first commit, or a
row anyone with INSERT on pending wrote with a token read from acks) is that record again.

Sequencing it again would double the record; inserting its ack again violates the acks key and
rolls the whole batch back, over and over, so the log would take no append anymore.
"""

from __future__ import annotations

import threading

import psycopg

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._records import build_record


def _build(i):
    return lambda seq, salt: build_record(
        seq=seq, timestamp=1_764_000_000.0 + i, salt=salt, payload_id=f"p-{i}", router="https://r.test",
        server_key=None, model="m", security_tier="standard", outcome="ok", request={"i": i},
        response={"choices": []},
    )


def test_a_token_already_sequenced_is_neither_doubled_nor_a_wedge(postgres_url):
    with AuditLog(postgres_url) as log:
        assert log.append("p-0", _build(0)) == 0
        first = log.store.records().__next__()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            token = conn.execute("SELECT token FROM acks WHERE seq = 0").fetchone()[0]
            conn.execute(  # the same record and token again, as a racing resubmission would
                "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'p-0', 0, %s)",
                (token, first.data.replace(b'"seq":0,', b'"seq":0,', 1)),
            )
        got: list[int] = []
        thread = threading.Thread(target=lambda: got.append(log.append("p-1", _build(1))), daemon=True)
        thread.start()
        thread.join(20)
        assert got == [1], "the log took no append after a pending row with a sequenced token"
        assert [r.payload_id for r in log.store.records()] == ["p-0", "p-1"]
        assert log.verify().ok
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            assert conn.execute("SELECT count(*) FROM pending").fetchone() == (0,)
            assert conn.execute("SELECT seq FROM acks WHERE token = %s", (token,)).fetchone() == (0,)
