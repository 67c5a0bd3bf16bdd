"""Event logs kept once, by digest: the record keeps ``*_log_sha256``, the log's blobs table the bytes.

Real SQLite files throughout: records written the way the client writes them (``record_call``),
re-appraised through ``verify --log``, checked by ``log verify``, an old log migrated, and SIGKILL
in the middle of appends that carry new blobs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog, IntegrityError
from nomyo_audit.audit._blobs import BlobReader, attach_logs, detach_logs
from nomyo_audit.cli import cli, main
from nomyo_audit.client._audit import record_call
from nomyo_audit.client._call import CompletionCall
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import stored_records
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._verify import verify_attestation

EVENT_LOG = os.urandom(40_000)
IMA_LOG = os.urandom(300_000)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def attester() -> TPMAttester:
    return TPMAttester(SoftwareTPM())


def reply(payload_id: str, **fields: object) -> dict:
    """A reply with real evidence from the software TPM, carrying the given log fields."""
    response = {"id": "c", "object": "chat.completion", "model": "echo", "choices": []}
    digest = response_content_digest(response)
    block = attester().evidence(response_binding(payload_id, digest))
    block.update(fields)
    verdict = verify_attestation(block, payload_id, content_digest=digest)  # as the client keeps it
    response["_metadata"] = {
        "payload_id": payload_id,
        "tpm_attestation": block,
        "verification": verdict.to_dict(),
    }
    return response


def record(log: AuditLog, payload_id: str, response: dict, outcome: str = "ok") -> None:
    call = CompletionCall(payload={"model": "echo", "messages": []}, payload_id=payload_id)
    asyncio.run(
        record_call(
            log,
            call,
            router="https://r",
            server_key=None,
            outcome=outcome,
            request=call.payload,
            response=response,
        )
    )


def stored(path, seq: int) -> dict:
    with AuditLog.open(path) as log:
        return json.loads(next(r for r in log.store.records() if r.seq == seq).data)


def blob_rows(path) -> dict[str, bytes]:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return dict(db.execute("SELECT sha256, data FROM blobs"))


@pytest.fixture
def logged(tmp_path):
    """A log of three replies that carry the same two logs, and one without logs."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for n in range(3):
            record(log, f"p{n}", reply(f"p{n}", event_log_b64=b64(EVENT_LOG), ima_log_b64=b64(IMA_LOG)))
        record(log, "p3", reply("p3"))
    return path


def test_a_record_keeps_digests_and_the_log_keeps_each_log_once(logged):
    evidence = stored(logged, 0)["metadata"]["tpm_attestation"]
    assert evidence["event_log_sha256"] == sha(EVENT_LOG) and evidence["ima_log_sha256"] == sha(IMA_LOG)
    assert "event_log_b64" not in evidence and "ima_log_b64" not in evidence
    assert blob_rows(logged) == {sha(EVENT_LOG): EVENT_LOG, sha(IMA_LOG): IMA_LOG}
    assert all(len(r.data) < 20_000 for r in AuditLog.open(logged).store.records())
    assert "event_log_sha256" not in stored(logged, 3)["metadata"]["tpm_attestation"]


def test_re_appraisal_gets_back_exactly_what_the_reply_carried(logged):
    with AuditLog.open(logged) as log:
        rows = [r.data for r in log.store.records()]
        records = list(stored_records(rows, "audit.db", log.store.blob))
    evidence = records[1].metadata["tpm_attestation"]
    assert evidence["event_log_b64"] == b64(EVENT_LOG) and evidence["ima_log_b64"] == b64(IMA_LOG)
    assert "event_log_sha256" not in evidence
    # the re-appraisal reaches the verdict the client reached on the reply (random bytes are no
    # event log: both fail event_log / ima_log with the same codes; the record without logs passes)
    result = CliRunner().invoke(cli, ["verify", "--log", str(logged), "--format", "json"])
    again = [{f["check"]: [f["status"], f["code"]] for f in v["findings"]} for v in json.loads(result.stdout)]
    recorded = [stored(logged, seq)["verdict"]["findings"] for seq in range(4)]
    assert again == recorded and result.exit_code == ExitCode.FINDING
    assert again[0]["event_log"][0] == "fail" and again[3]["event_log"][0] == "skip"


@pytest.mark.parametrize("damage", ["delete", "alter", "retype"])
def test_a_missing_or_altered_blob_is_an_integrity_failure(logged, damage, capsys):
    with contextlib.closing(sqlite3.connect(logged)) as db, db:
        if damage == "delete":
            db.execute("DELETE FROM blobs WHERE sha256 = ?", (sha(IMA_LOG),))
        elif damage == "alter":
            db.execute("UPDATE blobs SET data = ? WHERE sha256 = ?", (b"x" + IMA_LOG[1:], sha(IMA_LOG)))
        else:
            db.execute("UPDATE blobs SET data = CAST(data AS TEXT) WHERE sha256 = ?", (sha(EVENT_LOG),))
    assert main(["verify", "--log", str(logged)]) == ExitCode.INTEGRITY
    said = capsys.readouterr().err
    assert ("is missing" if damage == "delete" else "altered") in said, said
    assert "audit.db#0" in said or damage == "retype"  # a retyped column: SQLite cannot even read it
    assert "Traceback" not in said and "Exception ignored" not in said
    assert main(["log", "verify", "--log", str(logged)]) == ExitCode.INTEGRITY
    said = capsys.readouterr().out
    assert {"delete": "is missing", "alter": "do not hash to its key", "retype": "altered"}[damage] in said
    with AuditLog.open(logged) as log:
        assert not log.verify().ok


def test_a_reference_without_a_blob_store_is_never_a_silent_pass(logged):
    with AuditLog.open(logged) as log:
        rows = [r.data for r in log.store.records()]
    with pytest.raises(IntegrityError, match="missing from the log's blobs"):
        list(stored_records(rows, "audit.db"))


def test_malformed_base64_is_kept_as_it_came_and_the_record_is_written(tmp_path):
    path = tmp_path / "audit.db"
    odd = ["not base64!", "QUJD", "QUI=\n", "QUJ", 12, None, "QUI"]  # "QUJ", "QUI": no padding
    with AuditLog(path) as log:
        for n, value in enumerate(odd):
            record(log, f"m{n}", reply(f"m{n}", event_log_b64=value), outcome="ok")
    for n, value in enumerate(odd):
        evidence = stored(path, n)["metadata"]["tpm_attestation"]
        if value == "QUJD":  # canonical: kept by digest
            assert evidence["event_log_sha256"] == sha(b"ABC")
        else:
            assert evidence["event_log_b64"] == value and "event_log_sha256" not in evidence
    with AuditLog.open(path) as log:
        assert log.verify().ok
        records = list(stored_records([r.data for r in log.store.records()], "a", log.store.blob))
    assert [r.metadata["tpm_attestation"]["event_log_b64"] for r in records] == odd


def test_the_routers_own_digest_field_never_poses_as_a_blob_reference(tmp_path):
    path = tmp_path / "audit.db"
    forged = "ab" * 32
    with AuditLog(path) as log:
        record(log, "f0", reply("f0", event_log_sha256=forged))
        record(log, "f1", reply("f1", ima_log_sha256=forged, ima_log_b64=b64(b"IMA")))
        record(log, "f2", {"_metadata": {"elsewhere": {"event_log_sha256": forged}}})
    assert "event_log_sha256" not in stored(path, 0)["metadata"]["tpm_attestation"]
    assert stored(path, 1)["metadata"]["tpm_attestation"]["ima_log_sha256"] == sha(b"IMA")
    assert CliRunner().invoke(cli, ["log", "verify", "--log", str(path)]).exit_code == 0


def test_key_attestation_logs_are_kept_by_digest_too():
    metadata = {"key_attestation": {"tpm_attestation": {"event_log_b64": b64(b"KEY"), "x": 1}}, "y": 2}
    kept, blobs = detach_logs(metadata)
    assert kept == {"key_attestation": {"tpm_attestation": {"event_log_sha256": sha(b"KEY"), "x": 1}}, "y": 2}
    assert blobs == {sha(b"KEY"): b"KEY"}
    assert metadata["key_attestation"]["tpm_attestation"]["event_log_b64"] == b64(b"KEY")  # unchanged
    assert attach_logs(kept, BlobReader(blobs.get), "r") == metadata


def test_an_old_log_without_the_blobs_table_opens_and_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with AuditLog(path) as log:
        record(log, "o0", reply("o0"))
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DROP TABLE blobs")
    with AuditLog.open(path) as log:  # a reader: nothing created, everything reads
        assert log.verify().ok and log.store.blob(sha(b"x")) is None and list(log.store.blobs()) == []
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'blobs'").fetchone() is None
    assert CliRunner().invoke(cli, ["verify", "--log", str(path)]).exit_code == 0
    with AuditLog(path) as log:  # a writer creates the table
        record(log, "o1", reply("o1", event_log_b64=b64(EVENT_LOG)))
        assert log.verify().ok
    assert blob_rows(path) == {sha(EVENT_LOG): EVENT_LOG}


def test_a_blob_whose_key_is_not_its_digest_is_refused_with_its_record(tmp_path):
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        with pytest.raises(ValueError, match="SHA-256"):
            log.append("x", lambda seq, salt: b'{"seq":0}', blobs={sha(b"a"): b"b"})
        assert log.size == 0
    assert blob_rows(path) == {}


APPENDER = textwrap.dedent("""
    import asyncio, base64, os, sys
    sys.path.insert(0, {tests!r})
    from test_audit_blobs import record, reply
    from nomyo_audit.audit import AuditLog
    with AuditLog(sys.argv[1], checkpoint_every=7) as log:
        for i in range(int(sys.argv[2])):
            log_bytes = os.urandom(50_000 + i)  # a new blob in every record's transaction
            pid = sys.argv[3] + str(i)
            record(log, pid, reply(pid, event_log_b64=base64.b64encode(log_bytes).decode()))
            print(log.size - 1, flush=True)  # acknowledged: durable from here on
""")


def test_sigkill_mid_append_loses_neither_a_record_nor_its_blob(tmp_path):
    script = tmp_path / "appender.py"
    script.write_text(APPENDER.format(tests=os.path.dirname(__file__)))
    path = tmp_path / "crash.db"
    rng = random.Random(20261126)
    acknowledged: set[int] = set()
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), "10000", f"k{round_}-"],
            stdout=subprocess.PIPE,
            text=True,
        )
        first = proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged |= {int(line) for line in (first + out).split()}
        with AuditLog(path) as log:
            present = {r.seq for r in log.store.records()}
            report = log.verify()
        assert acknowledged <= present, sorted(acknowledged - present)[:5]
        assert report.ok, (round_, report.problems)
        assert len(blob_rows(path)) == len(present)  # every record's own blob, none without its record
    assert len(acknowledged) > 20
