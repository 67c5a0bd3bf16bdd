"""``with_seq`` on bytes no writer of ours built: a pending row anyone with INSERT on ``pending`` wrote.

``log verify`` checks a record's position by finding ``"seq":N,`` in its bytes, so the sequencer
must never give a record its position by rewriting a NESTED ``seq`` while the record's own
(top-level) key, spelled another way, keeps 0: such a record would verify at a position its own
``seq`` does not name. Whatever the fast path does, the result must be the careful path's.
"""

from __future__ import annotations

import json

import pytest

from nomyo_audit.audit._records import _with_seq_parsed, with_seq

FORGED = {
    # the top-level key spelled with an escape, a nested seq the fast path would rewrite
    "escaped-top-level": b'{"a":{"seq":0,"x":1},"\\u0073eq":0,"v":3}',
    # the top-level key with a space before the colon
    "spaced-top-level": b'{"a":{"x":1,"seq":0},"seq" :0,"v":3}',
    # a string holding a brace before the nested key
    "brace-in-string": b'{"a":{"b":"}","seq":0},"se\\u0071":0,"v":3}',
}


@pytest.mark.parametrize("name", FORGED)
def test_forged_pending_row_gets_its_own_seq(name):
    data = FORGED[name]
    stored = with_seq(data, 5)
    assert stored == _with_seq_parsed(data, 5)
    assert json.loads(stored)["seq"] == 5


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":{"seq":0,"v":3}}',  # no top-level seq nor v: not a record
        b'{"a":{"seq":0},"v":3}',  # a nested seq only
        b'{"seq":0,"a":{"v":3}}',  # a nested v only
        b'{"v":3,"seq":0,"\\u0073eq":1}',  # a repeated key, one spelled with an escape
        b'{"v":3,"seq":0, "seq" :1}',  # a repeated key, one spaced
    ],
)
def test_not_a_record_either_way(data):
    with pytest.raises(ValueError, match="record"):
        with_seq(data, 5)


def test_forged_pending_rows_never_break_the_log(postgres_url):
    """Rows written straight into pending: a record that parses gets its own position, the rest are refused.

    A row whose bytes name no payload_id or time would be stored with the columns pending claims
    (which nothing checks), and ``log verify`` would then fail at it forever.
    """
    import psycopg

    from nomyo_audit.audit import AuditLog

    forged = [
        FORGED["escaped-top-level"],  # a record (the careful path gives it seq 1 at position 1)
        b'{"a":{"seq":0,"v":3}}',  # no seq of its own: refused
        b'{"seq":0,"v":3}',  # no payload_id nor time: refused, not stored under pending's columns
    ]
    with AuditLog(postgres_url) as log:
        assert log.append("p-0", _build(0)) == 0
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for i, data in enumerate(forged):
                conn.execute(
                    "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'forged', 1e9, %s)",
                    (bytes([i + 1]) * 16, data),
                )
        assert log.append("p-1", _build(1)) >= 1
        records = list(log.store.records())
        for record in records:
            assert json.loads(record.data)["seq"] == record.seq
        assert all(record.payload_id != "forged" for record in records)
        assert log.verify().ok


def _build(i):
    from nomyo_audit.audit._records import build_record

    return lambda seq, salt: build_record(
        seq=seq, timestamp=1_764_000_000.0 + i, salt=salt, payload_id=f"p-{i}", router="https://r.test",
        server_key=None, model="m", security_tier="standard", outcome="ok", request={"i": i},
        response={"choices": []},
    )
