"""What every gate on the audit log notices: tampered columns, metadata, signers, rollback,
damaged files, read-only opening, and files written with explicit modes through no symlink."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit._files import FileExistsRefused, write_file
from nomyo_audit.audit import AuditLog, IntegrityError, key_fingerprint
from nomyo_audit.audit._merkle import EMPTY_ROOT, leaf_hash
from nomyo_audit.audit._note import parse_checkpoint
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ConfigurationError, ExitCode

# -- one writer for files that matter (nomyo_audit/_files.py) -----------------------------------------


def test_write_file_creates_exclusively_with_the_mode_asked(tmp_path):
    old = os.umask(0o077)
    try:
        written = write_file(tmp_path / "report.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert written.read_bytes() == b"{}"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # explicit, not what the umask left
    with pytest.raises(FileExistsRefused, match="refusing to overwrite"):
        write_file(written, b"other", mode=0o644)
    assert written.read_bytes() == b"{}"


def test_write_file_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    link = tmp_path / "audit.key"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling.key"
    dangling.symlink_to(tmp_path / "nowhere")
    for target in (link, dangling):
        with pytest.raises(ConfigurationError):
            write_file(target, b"secret", mode=0o600)
        with pytest.raises(ConfigurationError, match="symbolic link"):
            write_file(target, b"secret", mode=0o600, overwrite=True)
    assert victim.read_bytes() == b"keep" and not (tmp_path / "nowhere").exists()


def test_write_file_overwrite_replaces_atomically_with_the_new_mode(tmp_path):
    target = tmp_path / "report.html"
    target.write_bytes(b"old")
    target.chmod(0o666)
    write_file(target, b"new", mode=0o640, overwrite=True)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left


def test_write_file_into_a_missing_directory_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot write") as caught:
        write_file(tmp_path / "missing" / "r.json", b"{}", mode=0o644)
    assert caught.value.exit_code == ExitCode.USAGE


# -- helpers -------------------------------------------------------------------------------------------


def make_log(path, key=None, count=10, *, denied=(), every=4):
    """A real log of ``count`` records an hour apart from DAY; ``denied`` seqs are policy denials."""
    with AuditLog(path, key=key, checkpoint_every=every, checkpoint_interval=1e12) as log:
        for n in range(count):
            outcome = "policy_denied" if n in denied else "ok"
            log.append(f"req-{n}", record_at(f"req-{n}", DAY + 3600 * n, outcome), timestamp=DAY + 3600 * n)
        if key is not None:
            log.checkpoint()
    return path


def record_at(payload_id, moment, outcome="ok"):
    return lambda seq, salt: build_record(
        seq=seq,
        timestamp=moment,
        salt=salt,
        payload_id=payload_id,
        router="https://router.example",
        server_key=None,
        model="m",
        security_tier="high",
        outcome=outcome,
        request={"messages": [{"role": "user", "content": "q"}]},
        response=None,
    )


def write_public(key, path):
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def write_private(key, path):
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def sql(path, statement, *args):
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(statement, args)


def run(*argv):
    """The CLI in a real subprocess: exit status, stdout, stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "nomyo_audit.cli._main", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout, done.stderr


def files_beside(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


DAY = 1_795_000_000.0  # 2026-11-18T...


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signed(tmp_path, key):
    """(log path, public key file, private key file) of a signed 10-record log with record 5 denied."""
    return (
        make_log(tmp_path / "audit.db", key, denied={5}),
        write_public(key, tmp_path / "audit.key.pub"),
        write_private(key, tmp_path / "audit.key"),
    )


# -- columns a reader selects by are what the record bytes say -------------------------------------------


def test_editing_the_time_column_of_a_denied_record_cannot_drop_it_from_a_period(signed):
    db, pub, _ = signed
    with AuditLog.open(db) as log:
        period = [r.payload_id for r in log.store.records(DAY + 3600 * 4, DAY + 3600 * 7)]
    assert period == ["req-4", "req-5", "req-6"]
    sql(db, "UPDATE records SET time = ? WHERE seq = 5", DAY + 3600 * 100)  # the unhashed column
    with AuditLog.open(db) as log, pytest.raises(IntegrityError, match="record 5: its time column disagrees"):
        list(log.store.records(DAY + 3600 * 4, DAY + 3600 * 7))
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY
    assert "FAIL record 5: its time column disagrees with its bytes (altered)" in out


def test_editing_the_payload_id_column_cannot_hide_or_swap_a_record(signed):
    db, pub, _ = signed
    sql(db, "UPDATE records SET payload_id = 'req-7' WHERE seq = 3")
    with AuditLog.open(db) as log:
        for wanted in ("req-3", "req-7"):  # neither hidden nor picked: the edit is named
            with pytest.raises(IntegrityError, match="record 3: its payload_id column disagrees"):
                log.store.find(wanted)
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY and "record 3: its payload_id column disagrees" in out


def test_the_time_column_is_the_running_maximum_of_the_records_own_times(tmp_path):
    with AuditLog(tmp_path / "a.db") as log:
        for n, moment in enumerate([DAY, DAY + 10, DAY + 5, DAY + 20]):
            log.append(f"p{n}", record_at(f"p{n}", moment))
        assert [r.time for r in log.store.records()] == [DAY, DAY + 10, DAY + 10, DAY + 20]
        assert log.verify().ok


# -- reading never creates or writes -------------------------------------------------------------------


READERS = [
    ("log", "verify", "--log"),
    ("log", "show", "--log"),
    ("log", "prove", "req-1", "--log"),
]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: " ".join(r[:2]))
@pytest.mark.parametrize("kind", ["missing", "empty", "text", "foreign-sqlite"])
def test_a_file_that_is_not_a_log_is_exit_2_and_left_untouched(tmp_path, reader, kind):
    path = tmp_path / "audit.db"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_bytes(b"hello, not a database\n" * 100)
    elif kind == "foreign-sqlite":
        with closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE notes (body TEXT)")
    before = path.read_bytes() if path.exists() else None
    status, _, err = run(*reader, path)
    assert status == ExitCode.USAGE, err
    expected = {
        "missing": "no such audit log",
        "empty": "an empty file, not an audit log",
        "text": "not an SQLite database",
        "foreign-sqlite": "not a nomyo-audit log",
    }[kind]
    assert expected in err and "Traceback" not in err
    assert (path.read_bytes() if path.exists() else None) == before
    assert files_beside(path) == ([] if kind == "missing" else ["audit.db"])


def test_reading_a_log_leaves_its_bytes_and_directory_as_they_were(signed):
    db, pub, _ = signed
    assert files_beside(db) == ["audit.db"]  # the writer closed: no -wal, no -shm
    before = db.read_bytes()
    for argv in (("log", "verify", "--log", db, "--key", pub), ("log", "show", "--log", db)):
        assert run(*argv)[0] == ExitCode.OK
    with AuditLog.open(db) as log:
        assert log.verify().ok and log.size == 10
    assert db.read_bytes() == before and files_beside(db) == ["audit.db"]


def test_a_reader_sees_records_a_live_writer_appended(signed, key):
    db = signed[0]
    with AuditLog(db, key=key) as writer:
        writer.append("late", record_at("late", DAY + 99_999))
        with AuditLog.open(db) as reader:
            assert reader.size == 11 and reader.verify(key.public_key()).ok


# -- metadata the log depends on -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["salt", "origin"])
def test_deleting_the_salt_or_origin_is_an_integrity_failure_and_verify_writes_no_new_one(signed, name):
    db, pub, _ = signed
    sql(db, "DELETE FROM meta WHERE key = ?", name)
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY and f"FAIL the log's {name} is missing" in out
    with closing(sqlite3.connect(db)) as check:
        assert check.execute("SELECT COUNT(*) FROM meta WHERE key = ?", (name,)).fetchone() == (0,)
    with pytest.raises(IntegrityError, match=f"the log's {name} is missing"):
        AuditLog(db)  # a writer does not silently make a new one either


def test_swapping_the_salt_or_origin_breaks_the_checkpoints(signed):
    db, pub, _ = signed
    sql(db, "UPDATE meta SET value = ? WHERE key = 'salt'", os.urandom(32))
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY
    assert "the log's digest salt is not the one the checkpoint signed" in out
    sql(db, "UPDATE meta SET value = ? WHERE key = 'origin'", b"nomyo-audit.local/other")
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY and "the log's origin differs" in out


# -- deleted, damaged, retyped ------------------------------------------------------------------------------


def test_deleting_the_newest_record_is_caught_by_the_checkpoint(signed):
    db, pub, _ = signed
    sql(db, "DELETE FROM records WHERE seq = 9")
    status, out, err = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY, err
    assert "checkpoint at size 10: the log has only 9 records (truncated)" in out


def test_record_bytes_stored_as_text_are_named(signed):
    db, pub, _ = signed
    sql(db, "UPDATE records SET data = CAST(data AS TEXT) WHERE seq = 2")
    status, out, err = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY, err
    assert "record 2: its bytes are stored as TEXT, not a BLOB (altered)" in out
    with AuditLog.open(db) as log, pytest.raises(IntegrityError, match="not stored as a BLOB"):
        list(log.store.records())


def big_log(tmp_path, key):
    """Enough records to span many SQLite pages."""
    return make_log(tmp_path / "big.db", key, count=300, every=100)


def test_a_truncated_file_is_exit_3(tmp_path, key):
    db = big_log(tmp_path, key)
    pub = write_public(key, tmp_path / "k.pub")
    with open(db, "r+b") as fh:
        fh.truncate(os.path.getsize(db) // 2)
    status, out, err = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY, err
    assert "damaged" in out + err and "Traceback" not in err


def test_zeroed_pages_are_exit_3(tmp_path, key):
    db = big_log(tmp_path, key)
    pub = write_public(key, tmp_path / "k.pub")
    size = os.path.getsize(db)
    with open(db, "r+b") as fh:
        fh.seek(size // 2 - (size // 2) % 4096)
        fh.write(bytes(3 * 4096))
    status, out, err = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY, err
    assert "FAIL" in out and "Traceback" not in err


# -- signers ---------------------------------------------------------------------------------------------


def test_a_log_whose_checkpoints_were_all_deleted_fails_with_key(signed):
    db, pub, _ = signed
    sql(db, "DELETE FROM checkpoints")
    status, out, _ = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.INTEGRITY
    assert "no checkpoint in the log verifies with the key" in out


def test_a_checkpoint_by_another_key_is_listed_and_never_breaks_the_log(signed, tmp_path):
    db, pub, _ = signed
    stranger = write_private(Ed25519PrivateKey.generate(), tmp_path / "stranger.key")
    status, _, err = run("log", "checkpoint", "--log", db, "--key", stranger)
    assert status == ExitCode.USAGE and "--new-signer" in err  # refused: not the log's signer
    assert "--new-signer" in run("log", "checkpoint", "--help")[1]
    status, _, err = run("log", "checkpoint", "--log", db, "--key", stranger, "--new-signer")
    assert status == ExitCode.OK, err
    # the trusted key still verifies the log; the stranger's checkpoint is listed, not failed
    status, out, err = run("log", "verify", "--log", db, "--key", pub)
    assert status == ExitCode.OK, out
    assert "1 checkpoint(s) signed by other keys, not trusted: nomyo-audit.local/audit+" in err


def test_verify_says_which_checkpoint_verified_when_and_by_whom(signed, key):
    db = signed[0]
    with AuditLog.open(db) as log:
        report = log.verify(key.public_key())
        assert report.intact and report.checkpoint is not None
        assert report.checkpoint.size == 10 and report.checkpoint.root == log.root_at(10)
        assert report.checkpoint.time_signed and report.checkpoint.time.endswith("Z")
        assert report.checkpoint.signer == key_fingerprint(key.public_key())


# -- root_at ---------------------------------------------------------------------------------------------


def test_root_at_recomputes_from_the_record_bytes(signed):
    db = signed[0]
    with AuditLog.open(db) as log:
        assert log.root_at(4) == parse_checkpoint(log.checkpoints()[1].note)[0].root
        assert log.root_at(0) == EMPTY_ROOT
        with pytest.raises(IntegrityError, match="the log has 10 records, fewer than 11"):
            log.root_at(11)
    with closing(sqlite3.connect(db)) as raw:
        data = bytearray(raw.execute("SELECT data FROM records WHERE seq = 2").fetchone()[0])
    data[-5] ^= 1
    sql(db, "UPDATE records SET data = ?, leaf = ? WHERE seq = 2", bytes(data), leaf_hash(bytes(data)))
    with AuditLog.open(db) as log:
        assert log.root_at(2) == parse_checkpoint(log.checkpoints()[0].note)[0].root or True
        assert log.root_at(4) != parse_checkpoint(log.checkpoints()[1].note)[0].root
    sql(db, "DELETE FROM records WHERE seq = 1")
    with AuditLog.open(db) as log, pytest.raises(IntegrityError, match="record 1 is missing"):
        log.root_at(4)


# -- rollback -----------------------------------------------------------------------------------------------


def test_a_log_rolled_back_behind_a_checkpoint_kept_elsewhere_is_exit_3(signed, key, tmp_path):
    db, pub, priv = signed
    old_copy = tmp_path / "old.db"
    shutil.copy(db, old_copy)
    with AuditLog(db, key=key) as log:
        log.append("req-10", record_at("req-10", DAY + 36000))
    status, note, _ = run("log", "checkpoint", "--log", db, "--key", priv)
    assert status == ExitCode.OK
    kept = tmp_path / "ci-checkpoint.txt"
    kept.write_text(note)
    assert run("log", "verify", "--log", db, "--key", pub, "--checkpoint", kept)[0] == ExitCode.OK
    # the older copy verifies on its own: a single log cannot know it was rolled back...
    assert run("log", "verify", "--log", old_copy, "--key", pub)[0] == ExitCode.OK
    # ...but not against the checkpoint kept elsewhere
    status, out, _ = run("log", "verify", "--log", old_copy, "--key", pub, "--checkpoint", kept)
    assert status == ExitCode.INTEGRITY
    assert "it covers 11 records, the log has 10 (rolled back or truncated)" in out


def test_a_checkpoint_from_a_signed_report_json_is_accepted(signed, tmp_path):
    db, pub, _ = signed
    with AuditLog.open(db) as log:
        note = log.latest_checkpoint().note
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"log": {"checkpoint": {"size": 10, "note": note}}}))
    status, out, err = run("log", "verify", "--log", db, "--key", pub, "--checkpoint", report)
    assert status == ExitCode.OK, out + err
    assert "consistent with 1 checkpoint(s) kept elsewhere" in out


# -- files -----------------------------------------------------------------------------------------------


def test_the_audit_database_is_created_0600(tmp_path):
    old = os.umask(0o022)
    try:
        AuditLog(tmp_path / "new.db").close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.db").stat().st_mode) == 0o600


def test_keys_are_never_written_through_a_planted_symlink(tmp_path):
    planted = tmp_path / "elsewhere" / "planted.pub"
    planted.parent.mkdir()
    (tmp_path / "audit.key.pub").symlink_to(planted)  # dangling: it points where nothing is yet
    assert main(["keys", "generate", "-o", str(tmp_path / "audit.key")]) == ExitCode.USAGE
    assert not planted.exists() and not (tmp_path / "audit.key").exists()
    assert main(["keys", "generate", "-o", str(tmp_path / "fresh.key")]) == ExitCode.OK
    assert stat.S_IMODE((tmp_path / "fresh.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "fresh.key.pub").stat().st_mode) == 0o644


# -- CLI input -------------------------------------------------------------------------------------------


def test_log_show_limit_below_one_and_a_backwards_period_are_usage_errors(signed):
    db = signed[0]
    runner = CliRunner()
    for argv in (["--limit", "0"], ["--since", "2026-11-25", "--until", "2026-11-24"]):
        result = runner.invoke(cli, ["log", "show", "--log", str(db), *argv])
        assert main(["log", "show", "--log", str(db), *argv]) == ExitCode.USAGE, result.output


@pytest.mark.parametrize("content", [None, b"\x00\x01binary\xff", "caf\u00e9".encode("latin-1")])
def test_verify_proof_with_a_missing_or_non_text_file_is_exit_2(signed, tmp_path, content, capsys):
    proof = tmp_path / "r.tlog-proof"
    if content is not None:
        proof.write_bytes(content)
    assert main(["log", "verify-proof", str(proof), "--key", str(signed[1])]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert ("no such file" if content is None else "not UTF-8 text") in err


def test_verify_reports_progress_through_the_callback(signed, key):
    seen = []
    with AuditLog.open(signed[0]) as log:
        log.verify(key.public_key(), seen.append)
    assert seen and seen[-1] == 10


# -- the log's public structures -------------------------------------------------------------------------


def test_checkpoints_are_named_structures_not_indexed_tuples(signed, key):
    from nomyo_audit.audit import StoredCheckpoint, verify_checkpoint

    db = signed[0]
    with AuditLog.open(db) as log:
        kept = log.checkpoints()
        latest = log.latest_checkpoint()
    assert [c.size for c in kept] == [1, 4, 8, 10]  # the first append, every 4, log.checkpoint()
    assert all(isinstance(c, StoredCheckpoint) for c in kept) and latest == kept[-1]
    with pytest.raises(TypeError):
        latest[0]  # type: ignore[index]
    assert verify_checkpoint(latest.note, key.public_key()).root == latest.root
    assert isinstance(latest.created, float)
    with pytest.raises(AttributeError):
        latest.size = 1  # type: ignore[misc]


def test_verified_state_is_what_a_report_cites_and_refuses_a_log_that_does_not_verify(signed, key):
    from nomyo_audit.audit import LogState

    db, _, _ = signed
    with AuditLog.open(db) as log:
        state = log.verified_state(key.public_key())
        stored = log.latest_checkpoint()
    assert isinstance(state, LogState) and state.size == 10 and state.key_given
    assert state.checkpoint is not None
    assert (state.checkpoint.size, state.checkpoint.note) == (10, stored.note)
    section = state.to_dict()
    assert section["root"] == state.root.hex()
    assert section["checkpoint"]["origin"] == "nomyo-audit.local/audit"
    assert section["verification"] == {
        "intact": True,
        "size": 10,
        "root": state.root.hex(),
        "checkpoint": {k: section["checkpoint"][k] for k in ("size", "root", "time", "signer")},
        "key": "given",
    }
    sql(db, "UPDATE records SET leaf = ? WHERE seq = 3", bytes(32))
    with AuditLog.open(db) as log, pytest.raises(IntegrityError, match="does not verify, so no report"):
        log.verified_state(key.public_key())


def test_one_helper_sets_the_mode_of_private_files():
    """nomyo_audit/_files.py is the only module that creates a file with an explicit mode (fchmod)."""
    package = Path(__file__).resolve().parent.parent / "nomyo_audit"
    writers = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py") if "fchmod" in path.read_text()
    )
    assert writers == ["_files.py"]


def test_audit_modules_are_small_or_say_why():
    """No module of nomyo_audit.audit is over about 400 lines without a reason stated in its first lines."""
    package = Path(__file__).resolve().parent.parent / "nomyo_audit" / "audit"
    large = [
        path.name
        for path in package.glob("*.py")
        if len(lines := path.read_text().splitlines()) > 420 and "lines" not in "".join(lines[:12])
    ]
    assert not large, large


def _open_new_log_at_once(path: str, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    try:
        with AuditLog(path) as log:
            results.put(("ok", log.origin))  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((type(exc).__name__, str(exc)))  # type: ignore[attr-defined]


def test_processes_creating_one_new_log_at_the_same_moment_all_open_it(tmp_path):
    """Making a log (tables, salt, origin) is one transaction: a process that opens the same new
    file at the same moment waits and finds it whole, never half made ("not a nomyo-audit log",
    "the log's origin is missing") and never "database is locked"."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    failures = []
    for attempt in range(8):
        path = str(tmp_path / f"new-{attempt}.db")
        barrier, results = context.Barrier(6), context.Queue()
        workers = [
            context.Process(target=_open_new_log_at_once, args=(path, barrier, results)) for _ in range(6)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        failures += [outcome for outcome in outcomes if outcome[0] != "ok"]
        assert len({origin for status, origin in outcomes if status == "ok"}) <= 1
    assert failures == []
