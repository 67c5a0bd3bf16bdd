"""The audit log: RFC 6962 vectors, signed checkpoints, a tamper matrix on the real SQLite file,
threads, processes, SIGKILL, proofs that verify offline, and the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, PRODUCTION_UNANCHORED
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.audit import AuditLog, IntegrityError, VerifiedInclusion, verify_tlog_proof
from nomyo_audit.audit._merkle import (
    Frontier,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)
from nomyo_audit.audit._note import Checkpoint, NoteError, sign_checkpoint, verifier_key, verify_checkpoint
from nomyo_audit.audit._records import build_record, keyed_digest
from nomyo_audit.audit._sqlite import FRONTIER_SAVE_EVERY
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode

VECTORS = json.loads((FIXTURES / "vectors" / "merkle-and-dsse.json").read_text())
LEAVES = [leaf_hash(bytes.fromhex(d)) for d in VECTORS["leaves"]]


# -- RFC 6962 vectors ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(9))
def test_roots(size):
    assert root_of(LEAVES[:size]).hex() == VECTORS["roots"][size]


@pytest.mark.parametrize("case", VECTORS["inclusion"], ids=lambda c: f"{c['index']}-of-{c['size']}")
def test_inclusion_vectors(case):
    leaves = LEAVES[: case["size"]]
    assert [h.hex() for h in inclusion_proof(leaves, case["index"])] == case["path"]
    verify_inclusion(
        leaves[case["index"]],
        case["index"],
        case["size"],
        [bytes.fromhex(h) for h in case["path"]],
        bytes.fromhex(VECTORS["roots"][case["size"]]),
    )


@pytest.mark.parametrize("case", VECTORS["consistency"], ids=lambda c: f"{c['old']}-to-{c['new']}")
def test_consistency_vectors(case):
    proof = consistency_proof(LEAVES[: case["new"]], case["old"])
    assert [h.hex() for h in proof] == case["proof"]
    verify_consistency(
        case["old"],
        case["new"],
        bytes.fromhex(VECTORS["roots"][case["old"]]),
        bytes.fromhex(VECTORS["roots"][case["new"]]),
        proof,
    )


def test_the_seven_leaf_example_of_rfc_9162():
    """RFC 9162 2.1.5: in the 7-leaf tree, d0's path is [b, h, l], d3's [c, g, l], d4's [f, j, k],
    d6's [i, k]; the consistency proofs 3->7, 4->7 and 6->7 are [c, d, g, l], [l] and [i, j, k]."""
    d = LEAVES[:7]
    _a, b, c, dd, _e, f, j = d  # leaf hashes of d0..d6 (j is the RFC's leaf j = d6)
    g, h, i = root_of(d[0:2]), root_of(d[2:4]), root_of(d[4:6])
    k, ll = root_of(d[0:4]), root_of(d[4:7])
    assert inclusion_proof(d, 0) == [b, h, ll]
    assert inclusion_proof(d, 3) == [c, g, ll]
    assert inclusion_proof(d, 4) == [f, j, k]
    assert inclusion_proof(d, 6) == [i, k]
    assert consistency_proof(d, 3) == [c, dd, g, ll]
    assert consistency_proof(d, 4) == [ll]
    assert consistency_proof(d, 6) == [i, j, k]


def test_every_proof_up_to_20_leaves_and_tampering_fails():
    leaves = [leaf_hash(bytes([n])) for n in range(20)]
    for n in range(1, 21):
        root = root_of(leaves[:n])
        for index in range(n):
            proof = inclusion_proof(leaves[:n], index)
            verify_inclusion(leaves[index], index, n, proof, root)
            if proof:
                bad = [*proof[:-1], bytes(32)]
                with pytest.raises(ProofError):
                    verify_inclusion(leaves[index], index, n, bad, root)
        for m in range(1, n + 1):
            proof = consistency_proof(leaves[:n], m)
            verify_consistency(m, n, root_of(leaves[:m]), root, proof)
            if m < n:
                with pytest.raises(ProofError):
                    verify_consistency(m, n, root_of(leaves[:m]), leaf_hash(b"other"), proof)


def test_frontier_round_trip():
    frontier = Frontier()
    for leaf in LEAVES:
        frontier.append(leaf)
        assert (
            Frontier.from_bytes(frontier.to_bytes()).root()
            == frontier.root()
            == root_of(LEAVES[: frontier.size])
        )


# -- signed notes ----------------------------------------------------------------------------------


def test_signed_checkpoint():
    key = Ed25519PrivateKey.generate()
    note = sign_checkpoint(Checkpoint("example.com/log", 7, bytes(range(32))), key)
    body, _, signature = note.partition("\n\n")
    assert body == f"example.com/log\n7\n{base64.b64encode(bytes(range(32))).decode()}"
    assert signature.startswith("\u2014 example.com/log ")
    assert verify_checkpoint(note, key.public_key()) == Checkpoint("example.com/log", 7, bytes(range(32)))
    assert verifier_key("example.com/log", key.public_key()).startswith("example.com/log+")
    with pytest.raises(NoteError, match="no signature by this key"):
        verify_checkpoint(note, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(NoteError, match="does not verify"):
        verify_checkpoint(note.replace("\n7\n", "\n8\n"), key.public_key())
    for bad in ("", "x\n1\n", "o\n01\nAAAA\n\n\u2014 o AAAA\n"):
        with pytest.raises(NoteError):
            verify_checkpoint(bad, key.public_key())


# -- the log and its tamper matrix ------------------------------------------------------------------


def _key_id(key) -> str:
    from nomyo_audit.audit._note import key_id

    return key_id("nomyo-audit.local/audit", key.public_key()).hex()


def add(log: AuditLog, payload_id: str, outcome: str = "ok") -> int:
    return log.append(
        payload_id,
        lambda seq, salt: build_record(
            seq=seq,
            timestamp=time.time(),
            salt=salt,
            payload_id=payload_id,
            router="http://127.0.0.1:1",
            server_key="ab" * 32,
            model="echo",
            security_tier="high",
            outcome=outcome,
            request={"model": "echo", "messages": [{"role": "user", "content": "PROMPT " + payload_id}]},
            response={
                "choices": [{"message": {"content": "COMPLETION"}}],
                "_metadata": {"payload_id": payload_id},
            },
        ),
    )


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


@pytest.fixture
def filled(tmp_path, key):
    path = tmp_path / "audit.db"
    with AuditLog(path, key=key, checkpoint_every=4) as log:
        for n in range(10):
            add(log, f"req-{n}")
        log.checkpoint()
    return path


def problems_after(path, key, sql: str, *args):
    with sqlite3.connect(path) as db:
        db.execute(sql, args)
    with AuditLog(path) as log:
        return log.verify(key.public_key()).problems


def test_an_intact_log_verifies(filled, key):
    with AuditLog(filled) as log:
        report = log.verify(key.public_key())
    assert report.ok, report.problems
    assert report.size == 10 and report.checkpoints == 4  # sizes 1 (first), 4, 8 and the explicit 10


def test_flipped_byte_in_a_leaf(filled, key):
    with sqlite3.connect(filled) as db:
        data = bytearray(db.execute("SELECT data FROM records WHERE seq = 5").fetchone()[0])
    data[-10] ^= 1
    problems = problems_after(filled, key, "UPDATE records SET data = ? WHERE seq = 5", bytes(data))
    assert problems[0] == "record 5: its bytes do not match its leaf hash (altered)"
    # and rewriting the stored leaf hash too does not help: the checkpoints disagree
    problems = problems_after(
        filled, key, "UPDATE records SET leaf = ? WHERE seq = 5", leaf_hash(bytes(data))
    )
    assert any("checkpoint at size 8: its root does not match" in p for p in problems)


def test_deleted_row(filled, key):
    assert (
        problems_after(filled, key, "DELETE FROM records WHERE seq = 3")[0]
        == "record 3 is missing (next row is 4)"
    )


def test_reordered_rows(filled, key):
    with sqlite3.connect(filled) as db:
        rows = {r[0]: r[1:] for r in db.execute("SELECT seq, data, leaf FROM records WHERE seq IN (2, 6)")}
        db.execute("UPDATE records SET data = ?, leaf = ? WHERE seq = 2", rows[6])
        db.execute("UPDATE records SET data = ?, leaf = ? WHERE seq = 6", rows[2])
    with AuditLog(filled) as log:
        problems = log.verify(key.public_key()).problems
    assert problems[0] == "record 2: its bytes say another position (moved)"


def test_inserted_row(filled, key):
    with sqlite3.connect(filled) as db:
        db.execute("UPDATE records SET seq = seq + 100 WHERE seq >= 4")
        db.execute("UPDATE records SET seq = seq - 99 WHERE seq >= 104")
        forged = db.execute("SELECT data, leaf FROM records WHERE seq = 3").fetchone()
        db.execute("INSERT INTO records VALUES (4, 'forged', 0, ?, ?)", forged)
    with AuditLog(filled) as log:
        problems = log.verify(key.public_key()).problems
    assert problems[0] == "record 4: its bytes say another position (moved)"


def test_appended_forged_row(filled, key):
    with sqlite3.connect(filled) as db:
        forged = db.execute("SELECT data, leaf FROM records WHERE seq = 9").fetchone()
        db.execute("INSERT INTO records VALUES (10, 'forged', 0, ?, ?)", forged)
    with AuditLog(filled) as log:
        problems = log.verify(key.public_key()).problems
    assert problems[0] == "record 10: its bytes say another position (moved)"


def test_a_log_truncated_below_its_saved_state_is_named_and_refuses_appends(tmp_path):
    """Without a key there are no checkpoints; the saved frontier still witnesses the size."""
    path = tmp_path / "unsigned.db"
    with AuditLog(path) as log:
        for n in range(FRONTIER_SAVE_EVERY + 6):
            add(log, f"r{n}")
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM records WHERE seq >= ?", (FRONTIER_SAVE_EVERY - 4,))
    with AuditLog(path) as log:
        problems = log.verify().problems
        assert problems == [
            f"the log's saved state says {FRONTIER_SAVE_EVERY} records, the records make "
            f"{FRONTIER_SAVE_EVERY - 4} (truncated)"
        ]
        with pytest.raises(IntegrityError, match="saved state says 64 records, the records make 60"):
            add(log, "after")


def test_other_writers_appends_are_caught_up(tmp_path):
    path = tmp_path / "two.db"
    with AuditLog(path) as first, AuditLog(path) as second:
        for n in range(FRONTIER_SAVE_EVERY + 3):
            add(first if n % 3 else second, f"r{n}")
        assert first.size == second.size == FRONTIER_SAVE_EVERY + 3
        assert first.verify().ok


def test_truncated_log(filled, key):
    problems = problems_after(filled, key, "DELETE FROM records WHERE seq >= 7")
    assert any("checkpoint at size 8: the log has only 7 records (truncated)" in p for p in problems)


def test_two_checkpoints_of_one_size_with_different_roots(filled, key):
    note = sign_checkpoint(Checkpoint("nomyo-audit.local/audit", 8, bytes(32)), key)
    problems = problems_after(
        filled,
        key,
        "INSERT INTO checkpoints (size, root, note, created) VALUES (8, ?, ?, 0)",
        bytes(32),
        note,
    )
    assert "checkpoint at size 8: two checkpoints of this size with different roots" in problems
    assert "checkpoint at size 8: its root does not match records 0..7" in problems


def test_bad_checkpoint_signature(filled, key):
    with sqlite3.connect(filled) as db:
        note = db.execute("SELECT note FROM checkpoints WHERE size = 4").fetchone()[0]
    forged = note[:-6] + ("A" if note[-6] != "A" else "B") + note[-5:]
    problems = problems_after(filled, key, "UPDATE checkpoints SET note = ? WHERE size = 4", forged)
    assert problems == ["checkpoint at size 4: the signature on checkpoint 4 does not verify"]


def test_a_log_with_no_checkpoint_by_the_key_asked_for_is_not_intact(filled, key):
    with AuditLog.open(filled) as log:
        report = log.verify(Ed25519PrivateKey.generate().public_key())
    assert len(report.problems) == 1
    assert report.problems[0].startswith("no checkpoint in the log verifies with the key ")
    assert report.other_signers == {f"nomyo-audit.local/audit+{_key_id(key)}": 4}


# -- proofs ----------------------------------------------------------------------------------------------


def test_tlog_proof_verifies_offline_and_detects_tampering(filled, key):
    with AuditLog(filled) as log:
        proof = log.prove("req-6")
    assert proof.startswith("c2sp.org/tlog-proof@v1\nextra ")
    assert verify_tlog_proof(proof, key.public_key()) == VerifiedInclusion(
        index=6, size=10, origin="nomyo-audit.local/audit"
    )
    lines = proof.split("\n")
    lines[3] = base64.b64encode(bytes(32)).decode()
    with pytest.raises(IntegrityError):
        verify_tlog_proof("\n".join(lines), key.public_key())
    with pytest.raises(IntegrityError):
        verify_tlog_proof(proof, Ed25519PrivateKey.generate().public_key())


# -- what a record holds -----------------------------------------------------------------------------------


def test_records_hold_digests_not_prompts(filled):
    raw = (
        filled.read_bytes() + (filled.parent / "audit.db-wal").read_bytes()
        if (filled.parent / "audit.db-wal").exists()
        else filled.read_bytes()
    )
    assert b"PROMPT req-" not in raw and b"COMPLETION" not in raw
    with AuditLog(filled) as log:
        doc = json.loads(next(log.store.records()).data)
        request = {"model": "echo", "messages": [{"role": "user", "content": "PROMPT req-0"}]}
        assert doc["request_digest"] == keyed_digest(
            log.salt, request
        )  # an auditor with the plaintext can check
    assert doc["v"] == 3 and doc["seq"] == 0 and doc["time"].endswith("Z")


def test_the_verdict_is_kept_once_by_its_codes_and_facts():
    verification = {
        "result": "fail",
        "payload_id": "p",
        "findings": [
            {"check": "signature", "status": "pass", "code": "signature_valid", "detail": "PROSE ONE"},
            {"check": "nonce_binding", "status": "fail", "code": "nonce_mismatch", "detail": "PROSE TWO"},
        ],
        "facts": {"aik_fingerprint": "ab" * 32},
        "content_digest": "cd" * 32,
    }
    data = build_record(
        seq=0,
        timestamp=0.0,
        salt=bytes(32),
        payload_id="p",
        router="r",
        server_key=None,
        model="m",
        security_tier="high",
        outcome="ok",
        request=None,
        response={
            "_metadata": {
                "payload_id": "p",
                "tpm_attestation": {"is_available": False},
                "verification": verification,
            }
        },
    )
    doc = json.loads(data)
    assert "verification" not in doc["metadata"] and doc["metadata"]["tpm_attestation"] == {
        "is_available": False
    }
    assert doc["verdict"] == {
        "result": "fail",
        "failed": ["nonce_mismatch"],
        "findings": {"signature": ["pass", "signature_valid"], "nonce_binding": ["fail", "nonce_mismatch"]},
        "facts": {"aik_fingerprint": "ab" * 32},
        "content_digest": "cd" * 32,
    }
    assert b"PROSE" not in data


# -- concurrency and crashes ---------------------------------------------------------------------------------


def test_threads_append_without_losing_anything(tmp_path, key):
    path = tmp_path / "threads.db"
    with AuditLog(path, key=key, checkpoint_every=16) as log:

        def worker(n):
            for i in range(40):
                add(log, f"t{n}-{i}")

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report = log.verify(key.public_key())
    assert report.ok and report.size == 200


APPENDER = textwrap.dedent("""
    import sys, time
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    sys.path.insert(0, {tests!r})
    from test_audit_log import add
    from nomyo_audit.audit import AuditLog
    key = load_pem_private_key(open(sys.argv[2], "rb").read(), None)
    with AuditLog(sys.argv[1], key=key, checkpoint_every=7) as log:
        for i in range(int(sys.argv[3])):
            seq = add(log, sys.argv[4] + str(i))
            print(seq, flush=True)  # acknowledged: durable from here on
""")


@pytest.fixture
def appender(tmp_path, key):
    from cryptography.hazmat.primitives import serialization

    key_file = tmp_path / "k.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    script = tmp_path / "appender.py"
    script.write_text(APPENDER.format(tests=str(FIXTURES.parent)))
    return lambda db, count, prefix: subprocess.Popen(
        [sys.executable, str(script), str(db), str(key_file), str(count), prefix],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_processes_append_to_one_consistent_tree(tmp_path, key, appender):
    db = tmp_path / "procs.db"
    procs = [appender(db, 40, f"p{n}-") for n in range(3)]
    for proc in procs:
        _out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
    with AuditLog(db) as log:
        report = log.verify(key.public_key())
        payload_ids = {r.payload_id for r in log.store.records()}
    assert report.ok, report.problems
    assert report.size == 120 and len(payload_ids) == 120


def test_sigkill_never_loses_an_acknowledged_record(tmp_path, key, appender):
    db = tmp_path / "crash.db"
    rng = random.Random(20261125)
    acknowledged: set[int] = set()
    for round_ in range(12):
        proc = appender(db, 10_000, f"k{round_}-")
        first = proc.stdout.readline()  # appending has started (imports take a while)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        acknowledged |= {int(line) for line in (first + out).split()}
        with AuditLog(db) as log:
            present = {r.seq for r in log.store.records()}
            report = log.verify(key.public_key())
        assert acknowledged <= present, sorted(acknowledged - present)[:5]
        assert report.ok, (round_, report.problems)
    assert len(acknowledged) > 50


# -- the CLI -----------------------------------------------------------------------------------------


def test_log_cli(filled, key, tmp_path):
    from cryptography.hazmat.primitives import serialization

    pub = tmp_path / "log.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    runner = CliRunner()
    shown = runner.invoke(cli, ["log", "show", "--log", str(filled), "--format", "json", "--limit", "3"])
    assert shown.exit_code == 0 and len(shown.output.splitlines()) == 3
    ok = runner.invoke(cli, ["log", "verify", "--log", str(filled), "--key", str(pub)])
    assert ok.exit_code == 0 and ok.output.startswith("ok: 10 records, 4 checkpoints")
    proof = tmp_path / "r.tlog-proof"
    assert (
        runner.invoke(cli, ["log", "prove", "req-2", "--log", str(filled), "-o", str(proof)]).exit_code == 0
    )
    checked = runner.invoke(cli, ["log", "verify-proof", str(proof), "--key", str(pub)])
    assert checked.exit_code == 0 and "record 2" in checked.output
    with sqlite3.connect(filled) as db:
        db.execute("DELETE FROM records WHERE seq = 1")
    assert main(["log", "verify", "--log", str(filled), "--key", str(pub)]) == ExitCode.INTEGRITY
    assert main(["log", "verify", "--log", str(tmp_path / "missing.db")]) == ExitCode.USAGE


def test_log_digest_lets_an_auditor_check_a_plaintext(filled, tmp_path):
    request = {"model": "echo", "messages": [{"role": "user", "content": "PROMPT req-3"}]}
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = CliRunner().invoke(cli, ["log", "digest", str(tmp_path / "request.json"), "--log", str(filled)])
    with AuditLog(filled) as log:
        record = json.loads(log.record_bytes("req-3"))
    assert result.exit_code == 0 and result.output.strip() == record["request_digest"]


def test_keys_generate(tmp_path):
    assert main(["keys", "generate", "--kind", "audit", "-o", str(tmp_path / "a.key")]) == 0
    assert oct(os.stat(tmp_path / "a.key").st_mode & 0o777) == "0o600"
    assert main(["keys", "generate", "-o", str(tmp_path / "a.key")]) == ExitCode.USAGE  # never overwrites


# -- the client writes the records ---------------------------------------------------------------------


def test_client_records_every_outcome(make_router, client_keys_dir, tmp_path):
    from nomyo_audit import AuthenticationError, PolicyViolationError, SecureChatCompletion
    from nomyo_audit.attest._attester import TPMAttester
    from nomyo_audit.attest._software import SoftwareTPM
    from nomyo_audit.tpm._measurements import TAMPER_EVENT, measure_demo_boot

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm), api_keys=("k",))
    db = tmp_path / "client.db"

    async def go():
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            key_dir=str(client_keys_dir),
            api_key="k",
            audit_log=str(db),
            policy=PRODUCTION_UNANCHORED,
        ) as client:
            await client.create(
                "echo", [{"role": "user", "content": "SECRET-PROMPT-1"}], security_tier="high"
            )
            with pytest.raises(AuthenticationError):
                await client.create(
                    "echo", [{"role": "user", "content": "x"}], api_key="wrong", security_tier="high"
                )
            tpm.extend("sha256", *TAMPER_EVENT)
            client.client._key_attested_until.clear()
            with pytest.raises(PolicyViolationError):
                await client.create("echo", [{"role": "user", "content": "y"}], security_tier="high")

    asyncio.run(go())
    with AuditLog(db) as log:
        docs = [json.loads(r.data) for r in log.store.records()]
        assert log.verify().ok
    assert [d["outcome"] for d in docs] == ["ok", "http_error:AuthenticationError", "policy_denied"]
    assert docs[0]["metadata"]["tpm_attestation"]["is_available"] is True
    assert docs[0]["policy"]["outcome"] == "pass" and docs[2]["policy"]["outcome"] == "deny"
    # denied at key attestation, before sending: the record keeps the evidence the denial rests on
    denial = docs[2]["metadata"]["key_attestation"]
    assert denial["verification"]["result"] == "pass"  # the quote verified; PCR 0 is not golden
    assert any(r["rule"] == "pcrs" and r["status"] == "fail" for r in docs[2]["policy"]["rules"])
    assert docs[2]["response_digest"] is None
    assert b"SECRET-PROMPT-1" not in db.read_bytes()


def test_verify_log_reappraises_stored_evidence(make_router, client_keys_dir, tmp_path):
    from nomyo_audit import SecureChatCompletion
    from nomyo_audit.attest._attester import TPMAttester
    from nomyo_audit.attest._software import SoftwareTPM
    from nomyo_audit.tpm._measurements import measure_demo_boot

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    db = tmp_path / "re.db"

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), audit_log=str(db)
        ) as client:
            for _ in range(3):
                await client.create("echo", [{"role": "user", "content": "q"}], security_tier="high")

    asyncio.run(go())
    args = ["verify", "--log", str(db), "--policy", PRODUCTION_UNANCHORED, "--format", "json"]
    ok = CliRunner().invoke(cli, args)
    assert ok.exit_code == 0, ok.output
    assert [d["policy"]["outcome"] for d in json.loads(ok.stdout)] == ["pass"] * 3
    stricter = tmp_path / "new-golden.yaml"
    stricter.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: new}\n"
        f"spec:\n  pcrs:\n    sha256:\n      0: ['{'00' * 32}']\n"
    )
    failed = CliRunner().invoke(cli, ["verify", "--log", str(db), "--policy", str(stricter)])
    assert failed.exit_code == ExitCode.FINDING
    assert failed.output.count("deny") == 3


def record_at(payload_id: str, moment: float):
    return lambda seq, salt: build_record(
        seq=seq,
        timestamp=moment,
        salt=salt,
        payload_id=payload_id,
        router="r",
        server_key=None,
        model="m",
        security_tier="high",
        outcome="ok",
        request=None,
        response=None,
    )


def test_periods_select_records_by_time_even_when_the_clock_went_back(tmp_path):
    with AuditLog(tmp_path / "period.db") as log:
        for n, moment in enumerate([100.0, 200.0, 150.0, 300.0, 400.0, 400.0, 500.0]):
            log.append(f"p{n}", record_at(f"p{n}", moment))

        def period(since, until):
            return [r.seq for r in log.store.records(since, until)]

        assert period(None, None) == [0, 1, 2, 3, 4, 5, 6]
        assert period(150, 350) == [1, 2, 3]  # record 2 (150) is kept at 200: after record 1
        assert period(210, 450) == [3, 4, 5]
        assert period(None, 200) == [0]
        assert period(500, None) == [6]
        assert period(600, None) == [] and period(None, 50) == []
