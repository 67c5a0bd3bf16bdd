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


def test_a_record_whose_payload_id_postgresql_cannot_store_is_refused_not_a_wedge(postgres_url):
    """A payload_id with NUL or a lone surrogate (valid JSON escapes) cannot go into a text column:
    the batch holding it failed on every retry, so one such pending row stopped the whole log."""
    with AuditLog(postgres_url) as log:
        assert log.append("p-0", _build(0)) == 0
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for i, bad in enumerate(("a\\u0000b", "\\ud800")):
                data = _build(9)(0, log.store.meta("salt")).replace(b'"p-9"', b'"%s"' % bad.encode())
                conn.execute(
                    "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'x', 0, %s)",
                    (bytes([i + 1]) * 16, data),
                )
        got: list[int] = []
        thread = threading.Thread(target=lambda: got.append(log.append("p-1", _build(1))), daemon=True)
        thread.start()
        thread.join(20)
        assert got == [1], "the log took no append after a pending row it cannot store"
        assert log.verify().ok


def test_an_append_postgresql_cannot_store_fails_alone_and_at_once(postgres_url):
    """A caller's payload_id with NUL failed the submit of its whole group, retried for 30 s, so the
    other threads' appends of the same group failed with it."""
    import time

    from nomyo_audit.audit import LogError

    with AuditLog(postgres_url) as log:
        assert log.append("p-0", _build(0)) == 0
        errors: list[Exception] = []

        def bad() -> None:
            try:
                log.append("a\x00b", _build(5))
            except (LogError, ValueError) as exc:
                errors.append(exc)

        started = time.monotonic()
        threads = [threading.Thread(target=bad)]
        threads += [threading.Thread(target=log.append, args=(f"p-{i}", _build(i))) for i in (1, 2, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(errors) == 1 and time.monotonic() - started < 10
        assert sorted(r.payload_id for r in log.store.records()) == ["p-0", "p-1", "p-2", "p-3"]
        assert log.verify().ok


def test_a_pending_row_with_an_oversized_token_is_not_a_wedge(postgres_url):
    """Tokens are 16 bytes; a longer one (pending's column takes any) overflowed the batch's NOTIFY
    payload (8000 bytes), so the batch failed on every retry and the log took no append."""
    with AuditLog(postgres_url) as log:
        assert log.append("p-0", _build(0)) == 0
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'x', 0, %s)",
                (b"t" * 5000, _build(7)(0, log.store.meta("salt"))),
            )
        got: list[int] = []
        thread = threading.Thread(target=lambda: got.append(log.append("p-1", _build(1))), daemon=True)
        thread.start()
        thread.join(20)
        assert got and got[0] >= 1, "the log took no append after a pending row with a long token"
        assert log.verify().ok
