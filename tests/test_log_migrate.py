"""``nomyo-audit log migrate SRC DST``: an exact, verified copy of a log, SQLite and PostgreSQL.

The copy must be the same log: every row byte for byte (records, columns, leaves, checkpoints and
their stored times, blobs, the salt and origin), ``log verify`` saying the same, proofs from the
copy verifying as the original's do, and the copy accepting appends afterwards. A source that
does not verify, or a destination that is not empty, is refused before anything is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from nomyo_audit.audit import AuditLog, IntegrityError, LogError, SQLiteStore, verify_tlog_proof
from nomyo_audit.audit._migrate import migrate
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode

EVENT_LOG = b"\x00" * 32 + b"an event log kept by digest"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(payload_id: str, moment: float, **extra: Any):
    def build(seq: int, salt: bytes) -> bytes:
        return build_record(seq=seq, timestamp=moment, salt=salt, payload_id=payload_id, router="https://r",
                            server_key=None, model="m", security_tier="high", outcome="ok",
                            request={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                            response=None, **extra)
    return build


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def key_files(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    public = tmp_path / "audit.key.pub"
    public.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    return public


@pytest.fixture
def source(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    """A log of 23 records (times going back once), a checkpoint every 5, a blob, and a manual checkpoint."""
    path = tmp_path / "source.db"
    with AuditLog(path, key=key, checkpoint_every=5, origin="example.com/fleet") as log:
        for n in range(23):
            blobs = {sha(EVENT_LOG): EVENT_LOG} if n == 3 else None
            log.append(f"p{n}", record(f"p{n}", 1_700_000_000.0 + n - (5 if n == 7 else 0)), blobs=blobs)
        log.checkpoint()
    return path


def rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as SQLite holds it."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        queries = {
            "records": "SELECT seq, payload_id, time, data, leaf FROM records ORDER BY seq",
            "checkpoints": "SELECT id, size, root, note, created FROM checkpoints ORDER BY id",
            "meta": "SELECT key, value FROM meta ORDER BY key",
            "blobs": "SELECT sha256, data FROM blobs ORDER BY sha256",
        }
        return {table: db.execute(query).fetchall() for table, query in queries.items()}


@dataclass
class Result:
    exit_code: int
    stdout: str
    output: str  # stdout and stderr


def run(*args: Any) -> Result:
    """``nomyo-audit ARGS`` through :func:`nomyo_audit.cli.main` (its exit codes and messages)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, out.getvalue(), out.getvalue() + err.getvalue())


def verify_output(location: str | Path, key_file: Path) -> str:
    result = run("log", "verify", "--log", location, "--key", key_file)
    assert result.exit_code == 0, result.output
    return result.stdout


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- SQLite -> SQLite --------------------------------------------------------------------------


def test_a_migrated_log_is_the_same_log_row_for_row(source: Path, tmp_path: Path, key_files: Path) -> None:
    before = file_digest(source)
    copy = tmp_path / "copy.db"
    result = run("log", "migrate", source, copy, "--key", key_files)
    assert result.exit_code == 0, result.output
    assert "migrated 23 records, 6 checkpoints, 1 blobs" in result.stdout
    assert file_digest(source) == before  # the source is only read
    assert rows(copy) == rows(source)
    assert verify_output(copy, key_files) == verify_output(source, key_files)


def test_proofs_from_the_copy_verify_and_equal_the_originals(source: Path, tmp_path: Path, key: Any) -> None:
    copy = tmp_path / "copy.db"
    assert run("log", "migrate", source, copy).exit_code == 0
    with AuditLog.open(source) as original, AuditLog.open(copy) as migrated:
        for payload_id in ("p0", "p7", "p22"):
            proof = migrated.prove(payload_id)
            assert proof == original.prove(payload_id)
            verified = verify_tlog_proof(proof, key.public_key())
            assert (verified.index, verified.origin) == (int(payload_id[1:]), "example.com/fleet")


def test_a_migrated_log_keeps_accepting_appends(
    source: Path, tmp_path: Path, key: Any, key_files: Path
) -> None:
    copy = tmp_path / "copy.db"
    assert run("log", "migrate", source, copy).exit_code == 0
    with AuditLog(copy, key=key, checkpoint_every=5) as log:
        for n in range(23, 30):
            assert log.append(f"p{n}", record(f"p{n}", 1_700_000_100.0 + n)) == n
        log.checkpoint()
        assert json.loads(log.record_bytes("p29") or b"{}")["seq"] == 29
    assert "ok: 30 records" in verify_output(copy, key_files)


def test_an_empty_log_migrates(tmp_path: Path, key_files: Path) -> None:
    AuditLog(tmp_path / "empty.db").close()
    result = run("log", "migrate", tmp_path / "empty.db", tmp_path / "copy.db")
    assert result.exit_code == 0, result.output
    assert rows(tmp_path / "copy.db")["meta"] == rows(tmp_path / "empty.db")["meta"]


def test_a_destination_that_is_not_empty_is_refused_untouched(source: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with AuditLog(other) as log:
        log.append("x", record("x", 1.0))
    before = file_digest(other)
    result = run("log", "migrate", source, other)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "not empty" in result.output and "Traceback" not in result.output
    assert file_digest(other) == before
    # a log with metadata only (made, never appended to) is not empty either
    AuditLog(tmp_path / "made.db").close()
    assert run("log", "migrate", source, tmp_path / "made.db").exit_code == ExitCode.USAGE


@pytest.mark.parametrize("damage", [
    "UPDATE records SET data = CAST(replace(CAST(data AS TEXT), 'p4', 'p9') AS BLOB) WHERE seq = 4",
    "DELETE FROM records WHERE seq = 11",
    "UPDATE checkpoints SET note = replace(note, 'nomyo-audit-time 2', 'nomyo-audit-time 1') WHERE id = 2",
    "UPDATE blobs SET data = X'00'",
])
def test_a_source_that_does_not_verify_is_refused_and_nothing_is_copied(
    source: Path, tmp_path: Path, damage: str
) -> None:
    with contextlib.closing(sqlite3.connect(source)) as db, db:
        db.execute(damage)
    copy = tmp_path / "copy.db"
    result = run("log", "migrate", source, copy)
    assert result.exit_code == ExitCode.INTEGRITY, result.output
    assert "source log does not verify" in result.output and "nothing was copied" in result.output
    store = SQLiteStore(copy, readonly=True)
    try:
        assert store.count() == 0 and not store.checkpoint_rows() and store.meta("salt") is None
    finally:
        store.close()


def test_a_missing_source_is_a_usage_error(tmp_path: Path) -> None:
    result = run("log", "migrate", tmp_path / "absent.db", tmp_path / "copy.db")
    assert result.exit_code == ExitCode.USAGE
    assert "no such audit log" in result.output


class _AlteringStore(SQLiteStore):
    """A destination that stores one record differently: what a faulty backend would do."""

    def bulk_load(self, meta: Any, records: Any, checkpoints: Any, blobs: Any) -> None:
        def altered() -> Any:
            for item in records:
                if item.seq == 2:
                    data = item.data.replace(b"p2", b"q2")
                    item = type(item)(item.seq, item.payload_id, item.time, data, item.leaf)
                yield item
        super().bulk_load(meta, altered(), checkpoints, blobs)


def test_a_destination_that_does_not_verify_to_the_same_log_is_an_integrity_failure(
    source: Path, tmp_path: Path
) -> None:
    src = SQLiteStore(source, readonly=True)
    dst = _AlteringStore(tmp_path / "copy.db")
    try:
        with pytest.raises(IntegrityError, match="destination log does not verify"):
            migrate(src, dst)
    finally:
        src.close()
        dst.close()


def test_bulk_load_refuses_a_log_that_is_not_empty_and_positions_that_skip(
    source: Path, tmp_path: Path
) -> None:
    with AuditLog.open(source) as log:
        recs = list(log.store.records())
    store = SQLiteStore(tmp_path / "copy.db")
    try:
        with pytest.raises(IntegrityError, match="record 1 is missing"):
            store.bulk_load({}, [recs[0], recs[2]], [], [])
        assert store.count() == 0  # all or nothing
        store.bulk_load({"origin": b"o"}, recs[:1], [], [])
        with pytest.raises(LogError, match="not empty"):
            store.bulk_load({}, [], [], [])
    finally:
        store.close()


# -- SQLite -> PostgreSQL -> SQLite ------------------------------------------------------------


@pytest.mark.postgres
def test_sqlite_to_postgresql_and_back_is_the_same_log(
    source: Path, tmp_path: Path, key: Any, key_files: Path, postgres_url: str
) -> None:
    to_pg = run("log", "migrate", source, postgres_url, "--key", key_files)
    assert to_pg.exit_code == 0, to_pg.output
    assert "migrated 23 records, 6 checkpoints, 1 blobs" in to_pg.stdout
    back = tmp_path / "back.db"
    from_pg = run("log", "migrate", postgres_url, back, "--key", key_files)
    assert from_pg.exit_code == 0, from_pg.output
    assert rows(back) == rows(source)  # byte for byte, checkpoints' stored times included
    expected = verify_output(source, key_files)
    assert verify_output(postgres_url, key_files) == expected == verify_output(back, key_files)
    with AuditLog.open(source) as original, AuditLog.open(postgres_url) as on_pg:
        for payload_id in ("p0", "p3", "p22"):
            proof = on_pg.prove(payload_id)
            assert proof == original.prove(payload_id)
            verified = verify_tlog_proof(proof, key.public_key())
            assert (verified.index, verified.size) == (int(payload_id[1:]), 23)
            proof_file = write(tmp_path / f"{payload_id}.proof", proof)
            checked = run("log", "verify-proof", proof_file, "--key", key_files)
            assert checked.exit_code == 0, checked.output


@pytest.mark.postgres
def test_a_log_migrated_to_postgresql_keeps_accepting_appends(
    source: Path, key: Any, key_files: Path, postgres_url: str
) -> None:
    assert run("log", "migrate", source, postgres_url).exit_code == 0
    with AuditLog(postgres_url, key=key, checkpoint_every=5) as log:
        seqs = [log.append(f"p{n}", record(f"p{n}", 1_700_000_100.0 + n)) for n in range(23, 31)]
        assert seqs == list(range(23, 31))
        log.checkpoint()
        proof = log.prove("p30")
    assert verify_tlog_proof(proof, key.public_key()).index == 30
    assert verify_output(postgres_url, key_files).startswith("ok: 31 records")


@pytest.mark.postgres
def test_migrating_into_a_postgresql_log_that_is_not_empty_is_refused(
    source: Path, postgres_url: str
) -> None:
    with AuditLog(postgres_url) as log:
        log.append("x", record("x", 1.0))
    result = run("log", "migrate", source, postgres_url)
    assert result.exit_code == ExitCode.USAGE and "not empty" in result.output
    with AuditLog.open(postgres_url) as log:
        assert log.size == 1


@pytest.mark.postgres
def test_a_tampered_postgresql_source_is_refused(source: Path, tmp_path: Path, postgres_url: str) -> None:
    import psycopg

    assert run("log", "migrate", source, postgres_url).exit_code == 0
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE records SET time = time + 1 WHERE seq = 9")
    result = run("log", "migrate", postgres_url, tmp_path / "back.db")
    assert result.exit_code == ExitCode.INTEGRITY and "nothing was copied" in result.output


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
