"""The PostgreSQL log store against a real PostgreSQL server (tests/postgres_server.py).

The same records appended to SQLite and to PostgreSQL give the same bytes, root and checkpoint
notes; many threads get distinct consecutive positions; a stopped sequencer is taken over by
another process; pending rows a dead writer left are sequenced by the next writer; a whole log
loads (``bulk_load``) with its bytes unchanged.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import time
import types

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit import AuditLog, LogError
from nomyo_audit.audit._postgres import PostgresStore
from nomyo_audit.audit._records import build_record
from nomyo_audit.audit._sqlite import SQLiteStore
from nomyo_audit.audit._stores import display_location, is_database_url, open_store

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SALT = bytes(range(100, 132))
ORIGIN = "nomyo-audit.test/same"


def build(i: int, **extra):
    return lambda seq, salt: build_record(
        seq=seq,
        timestamp=1_764_000_000.0 + i * 0.5,
        salt=salt,
        payload_id=f"p-{i}",
        router="https://router.test",
        server_key=None,
        model="m",
        security_tier="standard",
        outcome="ok",
        request={"i": i},
        response={"choices": [{"n": i}], "_metadata": {"seq": 0}},
        **extra,
    )


def _seed(store, salt=SALT, origin=ORIGIN):
    store.set_meta("salt", salt)
    store.set_meta("origin", origin.encode())
    store.set_meta("time_column", b"record")


def _count(url, table):
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _wait(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_same_bytes_root_and_checkpoints_as_sqlite(tmp_path, postgres_url, monkeypatch):
    """Fixed key, salt and signing time: SQLite and PostgreSQL keep byte-identical logs."""
    monkeypatch.setattr("nomyo_audit.audit._log.time", types.SimpleNamespace(time=lambda: 1_764_100_000.0))
    logs = []
    for location in (tmp_path / "same.db", postgres_url):
        store = open_store(location)
        _seed(store)
        store.close()
        log = AuditLog(location, key=KEY, checkpoint_every=3)
        for i in range(10):
            blob = b"event log %d" % (i % 2)
            blobs = {hashlib.sha256(blob).hexdigest(): blob}
            assert log.append(f"p-{i}", build(i, service="svc"), blobs=blobs) == i
        log.checkpoint()
        logs.append(log)
    sqlite, postgres = logs
    try:
        assert [r.data for r in postgres.store.records()] == [r.data for r in sqlite.store.records()]
        assert [(r.seq, r.payload_id, r.time, r.leaf) for r in postgres.store.records()] == [
            (r.seq, r.payload_id, r.time, r.leaf) for r in sqlite.store.records()
        ]
        assert [c.note for c in postgres.checkpoints()] == [c.note for c in sqlite.checkpoints()]
        assert [c.size for c in postgres.checkpoints()] == [1, 3, 6, 9, 10]
        assert postgres.root_at(10) == sqlite.root_at(10)
        assert postgres.prove("p-4") == sqlite.prove("p-4")
        assert sorted(postgres.store.blobs()) == sorted(sqlite.store.blobs())
        report = postgres.verify(KEY.public_key())
        assert report.ok, report.problems
        assert report.root == sqlite.verify(KEY.public_key()).root
    finally:
        for log in logs:
            log.close()


def test_threads_get_distinct_consecutive_positions(postgres_url):
    log = AuditLog(postgres_url, key=KEY, checkpoint_every=50)
    got: list[int] = []
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                got.append(log.append(f"p-{k}-{i}", build(k * 100 + i)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert not errors
        assert sorted(got) == list(range(640))
        for record in log.store.records():
            assert b'"seq":%d,' % record.seq in record.data
        report = log.verify(KEY.public_key())
        assert report.ok, report.problems
        assert report.size == 640
        assert [c.size for c in log.checkpoints()][:3] == [1, 50, 100]
    finally:
        log.close()


TAKEOVER = textwrap.dedent(
    """
    import sys
    from nomyo_audit.audit import AuditLog
    from nomyo_audit.audit._records import build_record
    log = AuditLog(sys.argv[1])
    print("ready", log.store._sequencer.holding.is_set(), flush=True)
    sys.stdin.readline()
    seqs = [
        log.append(f"q-{i}", lambda seq, salt, i=i: build_record(
            seq=seq, timestamp=1.8e9 + i, salt=salt, payload_id=f"q-{i}", router="r", server_key=None,
            model=None, security_tier=None, outcome="ok", request=None, response=None))
        for i in range(5)
    ]
    print("done", log.store._sequencer.holding.is_set(), *seqs, flush=True)
    log.close()
    """
)


def test_a_stopped_sequencer_is_taken_over_by_another_process(postgres_url):
    holder = AuditLog(postgres_url)
    holder.store._sequencer.holding.wait(10)  # type: ignore[attr-defined]
    assert holder.store._sequencer.holding.is_set()  # type: ignore[attr-defined]
    holder.append("p-0", build(0))
    other = subprocess.Popen(
        [sys.executable, "-c", TAKEOVER, postgres_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        assert other.stdout.readline().split() == ["ready", "False"]  # the lock is held here
        holder.close()  # the holder stops: its lock goes with its connection
        other.stdin.write("go\n")
        other.stdin.flush()
        assert other.stdout.readline().split() == ["done", "True", "1", "2", "3", "4", "5"]
        assert other.wait(30) == 0
    finally:
        other.kill()
    with AuditLog.open(postgres_url) as log:
        assert log.verify().ok and log.size == 6


def test_pending_rows_left_behind_are_sequenced_by_the_next_writer(postgres_url):
    """A writer committed its records into pending and died: the next writable open sequences them."""
    store = PostgresStore(postgres_url)
    _seed(store)
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for i in range(7):
            data = build(i)(0, SALT)
            conn.execute(
                "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, %s, %s, %s)",
                (bytes([i]) * 16, f"p-{i}", 0.0, data),
            )
        assert conn.execute("SELECT count(*) FROM records").fetchone() == (0,)
    with AuditLog(postgres_url) as log:
        _wait(lambda: log.size == 7)
        assert [r.data for r in log.store.records()] == [build(i)(i, SALT) for i in range(7)]
        assert log.append("p-7", build(7)) == 7
        assert log.verify().ok
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM pending").fetchone() == (0,)
        acks = dict(conn.execute("SELECT token, seq FROM acks").fetchall())
        assert {acks[bytes([i]) * 16] for i in range(7)} == set(range(7))


def test_a_pending_row_that_is_not_a_record_is_refused_not_sequenced(postgres_url):
    with AuditLog(postgres_url) as log:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO pending (token, payload_id, time, data) VALUES (%s, 'x', 0, %s)",
                (b"\x01" * 16, b'{"v":3,"seq":"zero"}'),
            )
        assert log.append("p-0", build(0)) == 0
        _wait(lambda: _count(postgres_url, "pending") == 0)
        assert log.size == 1 and log.verify().ok
        with pytest.raises(LogError, match="refused"):
            log.store.append("x", 0.0, lambda seq: b"not a record", None)


def test_bulk_load_copies_a_log_unchanged(tmp_path, postgres_url):
    source = AuditLog(tmp_path / "src.db", key=KEY, checkpoint_every=4)
    blob = b"an event log"
    for i in range(9):
        source.append(f"p-{i}", build(i), blobs={hashlib.sha256(blob).hexdigest(): blob})
    source.checkpoint()
    store = SQLiteStore(tmp_path / "src.db", readonly=True)
    meta = {k: v for k in ("salt", "origin", "public_key", "time_column") if (v := store.meta(k)) is not None}
    target = PostgresStore(postgres_url)
    target.bulk_load(meta, store.records(), store.checkpoints(), store.blobs())
    with pytest.raises(LogError, match="not empty"):
        target.bulk_load(meta, store.records(), store.checkpoints(), store.blobs())
    target.close()
    with AuditLog.open(postgres_url) as migrated:
        report = migrated.verify(KEY.public_key())
        assert report.ok, report.problems
        assert report.root == source.verify(KEY.public_key()).root
        assert [c.note for c in migrated.checkpoints()] == [c.note for c in source.checkpoints()]
        assert [c.created for c in migrated.checkpoints()] == [c.created for c in source.checkpoints()]
        assert [r.data for r in migrated.store.records()] == [r.data for r in source.store.records()]
        assert migrated.origin == source.origin
    with AuditLog(postgres_url, key=KEY) as appended:  # and the migrated log goes on growing
        assert appended.append("p-9", build(9)) == 9
        assert appended.verify(KEY.public_key()).ok
    store.close()
    source.close()


def test_default_origin_names_the_database(postgres_url):
    with AuditLog(postgres_url) as log:
        assert log.origin == f"nomyo-audit.local/{postgres_url.rsplit('/', 1)[1]}"


def test_locations():
    assert is_database_url("postgresql://u@h/db") and is_database_url("POSTGRES://h/db")
    assert not is_database_url("audit.db") and not is_database_url("postgresql:/x")
    assert display_location("postgresql://alice:s3cret@db.example:5432/audit?password=x&sslmode=require") == (
        "postgresql://alice@db.example:5432/audit"
    )
    assert display_location("postgres://:pw@h/db") == "postgres://@h/db"
    assert display_location("a//b.db") == "a//b.db"


def test_ack_payloads_round_trip_and_fit_a_notify():
    from nomyo_audit.audit._postgres_sequencer import ack_payloads, parse_acks

    acks = {f"{i:032x}": (-1 if i % 7 == 3 else None) for i in range(1000)}
    seq = 5000
    for token, value in acks.items():
        if value is None:
            acks[token], seq = seq, seq + 1
    payloads = ack_payloads(acks)  # type: ignore[arg-type]
    assert all(len(p.encode()) < 8000 for p in payloads) and len(payloads) > 1
    parsed: dict[str, int] = {}
    for payload in payloads:
        parsed.update(parse_acks(payload))
    assert parsed == acks
    assert parse_acks("garbage") == {} and parse_acks("") == {}


def test_connections_terminated_mid_append_lose_and_double_nothing(postgres_server, postgres_url):
    """Every backend of the database is terminated, twice, while 8 threads append: each append
    returns once, positions are distinct and consecutive, and the log verifies."""
    dbname = postgres_url.rsplit("/", 1)[1]
    log = AuditLog(postgres_url, key=KEY, checkpoint_every=25)
    got: list[int] = []
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        for i in range(60):
            try:
                got.append(log.append(f"p-{k}-{i}", build(k * 100 + i)))
            except LogError as exc:  # a failed append must say so, never half-happen
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(2):
        time.sleep(0.3)
        assert postgres_server.terminate(dbname) > 0
    for thread in threads:
        thread.join()
    try:
        assert not errors
        assert sorted(got) == list(range(480))
        report = log.verify(KEY.public_key())  # the main connection was dropped too: opened again
        assert report.ok, report.problems
        assert report.size == 480
    finally:
        log.close()


NOT_HOLDING = textwrap.dedent(
    """
    import sys, time
    from nomyo_audit.audit import AuditLog
    from nomyo_audit.audit._records import build_record
    import threading
    with AuditLog(sys.argv[1]) as log:
        assert not log.store._sequencer.holding.is_set()
        def work(k):
            for i in range(40):
                log.append(f"q-{k}-{i}", lambda seq, salt, i=i: build_record(
                    seq=seq, timestamp=1.8e9 + i, salt=salt, payload_id=f"q-{k}-{i}", router="r",
                    server_key=None, model=None, security_tier=None, outcome="ok", request=None,
                    response=None))
                time.sleep(0.005 * (i % 3))  # at times nothing awaits: the ack thread must wake again
        threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("done", log.store._sequencer.holding.is_set(), flush=True)
    """
)


def test_a_writer_that_does_not_hold_the_sequencer_learns_its_positions(postgres_url):
    """Positions reach a process without the sequencer only through its ack thread, append after append."""
    holder = AuditLog(postgres_url)
    try:
        holder.store._sequencer.holding.wait(10)  # type: ignore[attr-defined]
        done = subprocess.run(
            [sys.executable, "-c", NOT_HOLDING, postgres_url], capture_output=True, text=True, timeout=60
        )
        assert done.stdout.split() == ["done", "False"], done.stderr[-2000:]
        assert holder.size == 120 and holder.verify().ok
    finally:
        holder.close()
