"""An adversarial review of the log and report gates (issue 10, sections 1, 2, 6, 7), on logs the real
client wrote against a real router: what an insider, a careless user or a CI job can do to them."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import pytest
from conftest import PRODUCTION_UNANCHORED

from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._keys import ed25519_private, generate_audit_key
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy._model import PolicyViolationError
from nomyo_audit.tpm._measurements import TAMPER_EVENT, measure_demo_boot


@pytest.fixture
def client_log(tmp_path, make_router, client_keys_dir):
    """Three replies the production policy passed and one it denied, written by the real client."""
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    key, pub = generate_audit_key(tmp_path / "audit.key")
    (tmp_path / "policies").mkdir()
    # the workspace's production policy for a software-attester router: production's other rules
    # with any AIK (production itself denies the software attester on aik_trust)
    shutil.copy(PRODUCTION_UNANCHORED, tmp_path / "policies" / "production.yaml")

    async def chats() -> list[str]:
        with AuditLog(tmp_path / "audit.db", key=ed25519_private(key)) as log:
            async with SecureChatCompletion(
                router.url,
                allow_http=True,
                key_dir=str(client_keys_dir),
                policy=PRODUCTION_UNANCHORED,
                audit_log=log,
            ) as client:
                ids = []
                for n in range(3):
                    reply = await client.create("echo", [{"role": "user", "content": f"q{n}"}])
                    ids.append(reply["_metadata"]["payload_id"])
                tpm.extend("sha256", *TAMPER_EVENT)
                with pytest.raises(PolicyViolationError):
                    await client.create("echo", [{"role": "user", "content": "after the change"}])
            log.checkpoint()
        return ids

    ids = asyncio.run(chats())
    return tmp_path / "audit.db", key, pub, ids


def cli(*args):
    """The real CLI's exit code for ``args``."""
    return main([str(a) for a in args])


# -- what a record's columns say is what its bytes say ----------------------------------------------------


def test_a_record_with_a_policy_result_is_found_by_its_payload_id(client_log, tmp_path, capsys):
    """The payload_id column mirrors the record's own top-level payload_id, even though the client's
    policy result holds a nested "policy" key (the policy's name)."""
    db, _, pub, ids = client_log
    with AuditLog.open(db) as log:
        stored = {record.seq: record.payload_id for record in log.store.records()}
        assert [stored[n] for n in range(3)] == ids
        for record in log.store.records():
            assert record.payload_id == json.loads(record.data)["payload_id"]
    capsys.readouterr()
    assert main(["log", "show", "--log", str(db), "--payload-id", ids[1], "--format", "json"]) == ExitCode.OK
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 1 and json.loads(shown[0])["payload_id"] == ids[1]
    proof = tmp_path / "r.tlog-proof"
    assert main(["log", "prove", ids[2], "--log", str(db), "-o", str(proof)]) == ExitCode.OK
    assert main(["log", "verify-proof", str(proof), "--key", str(pub)]) == ExitCode.OK
    assert "record 2 is in" in capsys.readouterr().out


@pytest.mark.parametrize("payload_id", ['a"b', "a\\", 'x","policy":{"y', "naïve", "\u2028", ""])
def test_the_payload_id_column_is_the_top_level_payload_id_whatever_it_holds(tmp_path, payload_id):
    from nomyo_audit.audit._fields import record_fields

    policy = {"outcome": "pass", "policy": "production", "rules": [{"rule": "r", "status": "pass"}]}
    with AuditLog(tmp_path / "a.db") as log:
        log.append(
            payload_id,
            lambda seq, salt: _plain_record(
                seq,
                salt,
                payload_id,
                1.0e9,
                policy=policy,
                metadata={"payload_id": "router-said", "policy": {"outcome": "pass"}},
            ),
        )
        (record,) = log.store.records()
        assert record.payload_id == payload_id and record_fields(record.data) == (payload_id, 1.0e9)
        assert log.store.find(payload_id) is not None and log.verify().ok


def test_deleting_the_time_column_rule_does_not_let_an_edited_time_drop_a_denied_record(client_log, tmp_path):
    """Logs from before the exact time column are read within a millisecond of each record's own time;
    deleting the meta row that marks a log as newer must not open a wider gap than that: an edited time
    column that moves the denied record back into the previous record's time is still named."""
    db, _, pub, _ = client_log
    with AuditLog.open(db) as log:
        denied = [json.loads(r.data) for r in log.store.records()][3]
    out = tmp_path / "before"
    assert cli("report", "--log", db, "--since", denied["time"], "--format", "json", "-o", out) == ExitCode.OK
    assert json.loads((out / "report.json").read_text())["summary"]["denied"] == 1
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM meta WHERE key = 'time_column'")
        con.execute("UPDATE records SET time = (SELECT time FROM records WHERE seq = 2) WHERE seq = 3")
    assert cli("log", "verify", "--log", db, "--key", pub) == ExitCode.INTEGRITY
    after = tmp_path / "after"
    assert cli("report", "--log", db, "--since", denied["time"], "-o", after) == ExitCode.INTEGRITY
    assert not after.exists()


def test_a_secret_salt_stored_as_text_is_named_damaged_without_printing_it(client_log, capsys):
    db, _, pub, _ = client_log
    with sqlite3.connect(db) as con:
        (salt,) = con.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        con.execute("UPDATE meta SET value = CAST(value AS TEXT) WHERE key = 'salt'")
    for argv in (
        ["log", "verify", "--log", db, "--key", pub],
        ["report", "--log", db, "-o", db.parent / "r"],
        ["verify", "--log", db],
        ["log", "show", "--log", db],
    ):
        capsys.readouterr()
        cli(*argv)
        captured = capsys.readouterr()
        text = captured.out + captured.err
        for fragment in (salt[i : i + 6] for i in range(0, 30, 6)):
            assert fragment.decode("utf-8", "replace") not in text, argv
            assert fragment.hex() not in text, argv


def test_a_log_from_before_the_exact_time_column_still_verifies_when_its_clock_went_back(tmp_path):
    """Such a log's column was the append clock, max(clock, previous column): checked, not refused."""
    moments = [1.8e9 + 0.0004, 1.8e9 + 0.5007, 1.8e9 + 0.2, 1.8e9 + 0.9]
    db = tmp_path / "old.db"
    with AuditLog(db) as log:
        for n, moment in enumerate(moments):
            log.append(
                f"p{n}",
                lambda seq, salt, moment=moment, n=n: _plain_record(seq, salt, f"p{n}", moment),
                timestamp=moment,
            )
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM meta WHERE key = 'time_column'")
        for seq, column in enumerate([moments[0], moments[1], moments[1], moments[3]]):
            con.execute("UPDATE records SET time = ? WHERE seq = ?", (column, seq))
    assert cli("log", "verify", "--log", db) == ExitCode.OK
    with sqlite3.connect(db) as con:  # record 3 pulled back to its predecessor's time: it is later
        con.execute("UPDATE records SET time = ? WHERE seq = 3", (moments[1],))
    assert cli("log", "verify", "--log", db) == ExitCode.INTEGRITY


def alter_and_rehash(db, seq, old, new):
    """An insider edits a record's bytes and rewrites its leaf hash and the saved frontier to match."""
    from nomyo_audit.audit._merkle import leaf_hash

    with sqlite3.connect(db) as con:
        (data,) = con.execute("SELECT data FROM records WHERE seq = ?", (seq,)).fetchone()
        assert old in data
        data = data.replace(old, new)
        con.execute("UPDATE records SET data = ?, leaf = ? WHERE seq = ?", (data, leaf_hash(data), seq))
        con.execute("DELETE FROM meta WHERE key = 'frontier'")


def test_verify_report_checks_every_record_the_report_counted_not_only_the_checkpointed_ones(
    client_log, tmp_path, capsys
):
    """A report signs the log's size and root as well as the checkpoint it cites: records written
    after that checkpoint and counted in the report are checked against the signed root too."""
    db, key, pub, _ = client_log
    with AuditLog(db) as log:  # one more record, after the last checkpoint
        log.append(
            "late",
            lambda seq, salt: _plain_record(seq, salt, "late", 2.0e9, outcome="http_error:ServerError"),
            timestamp=2.0e9,
        )
    out = tmp_path / "r"
    assert cli("report", "--log", db, "--log-key", pub, "--sign", key, "-o", out) == ExitCode.OK
    assert cli("verify-report", out, "--key", pub, "--log", db) == ExitCode.OK
    alter_and_rehash(db, 4, b'"outcome":"http_error:ServerError"', b'"outcome":"ok"')
    capsys.readouterr()
    assert cli("verify-report", out, "--key", pub, "--log", db) == ExitCode.INTEGRITY
    assert "5 records" in capsys.readouterr().err


def test_a_report_says_which_records_no_signed_checkpoint_covers(client_log, tmp_path, capsys):
    db, key, pub, _ = client_log
    with AuditLog(db) as log:
        log.append("late", lambda seq, salt: _plain_record(seq, salt, "late", 2.0e9), timestamp=2.0e9)
    out = tmp_path / "r"
    capsys.readouterr()
    assert cli("report", "--log", db, "--log-key", pub, "--format", "html,md", "-o", out) == ExitCode.OK
    assert "record 4 is after the latest checkpoint" in capsys.readouterr().err
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert "record 4 was written after this checkpoint: no signed checkpoint covers it yet" in text, name
    full = tmp_path / "full"
    with AuditLog(db, key=ed25519_private(key)) as log:
        log.checkpoint()
    assert cli("report", "--log", db, "--log-key", pub, "--format", "md", "-o", full) == ExitCode.OK
    assert "no signed checkpoint covers" not in (full / "report.md").read_text()


def _plain_record(seq, salt, payload_id, moment, **fields):
    """A record of an "ok" request to router "r", model "m", nothing else stated; ``fields`` are
    further build_record arguments or replace these."""
    from nomyo_audit.audit._records import build_record

    plain = {
        "router": "r",
        "server_key": None,
        "model": "m",
        "security_tier": None,
        "outcome": "ok",
        "request": {},
        "response": None,
    }
    return build_record(seq=seq, timestamp=moment, salt=salt, payload_id=payload_id, **{**plain, **fields})


# -- the demo, as a new user runs it ------------------------------------------------------------------------


def test_the_demos_look_further_commands_work_and_its_report_flags_swtpm_as_no_hardware(tmp_path):
    """The demo runs on swtpm (or the software attester): neither is TPM hardware, so the summary flags
    every record "no hardware"; every command it tells the user to run next does what it says."""
    import re
    import shlex
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "nomyo_audit.cli._main", "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(next(tmp_path.glob("nomyo-audit-demo/*/report/report.json")).read_text())
    kinds = {a["attester"] for a in report["attesters"]}
    assert kinds <= {"swtpm", "software"} and kinds
    assert report["summary"]["no_hardware"] == report["summary"]["requests"] == 4
    assert all(a["no_hardware"] for a in report["attesters"])
    md = next(tmp_path.glob("nomyo-audit-demo/*/report/report.md")).read_text()
    assert "**No hardware:** 4 of 4 records" in md and "(no hardware)" in md
    further = run.stdout.partition("Look further:")[2]
    commands = [shlex.split(line)[1:] for line in further.splitlines() if line.strip()]
    assert [argv[:2] for argv in commands] == [
        ["log", "show"],
        ["log", "verify"],
        ["verify", "--log"],
        ["verify-report", commands[3][1]],
        ["log", "prove"],
    ]
    expected = {"log": ExitCode.OK, "verify": ExitCode.FINDING, "verify-report": ExitCode.OK}
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "nomyo_audit.cli._main", *argv],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert done.returncode == expected[argv[0]], (argv, done.stderr)
    assert re.search(r"^c2sp.org/tlog-proof@v1$", done.stdout, re.M)


def test_a_writer_refuses_a_dangling_symlink_at_the_log_path_with_a_log_error(tmp_path):
    from nomyo_audit.audit import LogError

    link = tmp_path / "audit.db"
    link.symlink_to(tmp_path / "elsewhere" / "audit.db")
    with pytest.raises(LogError, match="symbolic link to a missing file"):
        AuditLog(link)
    assert not (tmp_path / "elsewhere").exists()


# -- the config file ------------------------------------------------------------------------------------


def test_a_date_in_the_config_file_means_what_the_same_flag_means(client_log, tmp_path, monkeypatch, capsys):
    """YAML reads an unquoted 2026-11-25 as a date object; the config file takes it as the flag's text
    (``verify: {at: 2026-11-25}`` is ``verify --at 2026-11-25``), never a Python repr in an error."""
    db, _, _, _ = client_log
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "nomyo-audit.yaml"
    config.write_text("verify:\n  policy: production\n  at: 2030-01-01T00:00:00Z\n")
    assert cli("verify", "--log", db) == ExitCode.FINDING
    late = capsys.readouterr()
    assert "datetime" not in late.err and "max_age" in late.out
    config.write_text("verify:\n  policy: production\n  at: 2030-01-01\n")
    assert cli("verify", "--log", db) == ExitCode.FINDING
    assert "datetime" not in capsys.readouterr().err


# -- re-appraisal binds the quote to the client's own request -------------------------------------------


def test_reappraisal_binds_the_quote_to_the_records_own_payload_id_not_the_routers(tmp_path, capsys):
    """A record whose stored metadata names another request (a replayed quote, written through the
    Python API with the router's _metadata as it came) re-appraises as a nonce failure: the quote is
    checked against the payload_id the record itself was written for, never the router's."""
    from nomyo_audit.tpm._binding import response_binding, response_content_digest
    from nomyo_audit.tpm._verify import verify_attestation

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    response = {"id": "c", "model": "echo", "choices": [{"message": {"content": "hi"}}]}
    digest = response_content_digest(response)
    replayed = TPMAttester(tpm).evidence(response_binding("an-old-request", digest))
    moment = 1.8e9
    response["_metadata"] = {
        "payload_id": "an-old-request",  # the router's word
        "processed_at": int(moment),
        "security_tier": "high",
        "tpm_attestation": replayed,
        "verification": verify_attestation(replayed, "this-request", content_digest=digest).to_dict(),
    }
    db = tmp_path / "audit.db"
    with AuditLog(db) as log:
        log.append(
            "this-request",
            lambda seq, salt: _plain_record(
                seq,
                salt,
                "this-request",
                moment,
                model="echo",
                security_tier="high",
                request={"messages": []},
                response=response,
            ),
            timestamp=moment,
        )
    assert cli("verify", "--log", db) == ExitCode.FINDING
    assert "nonce" in capsys.readouterr().out
    out = tmp_path / "r"
    assert cli("report", "--log", db, "--policy", "production", "--format", "json", "-o", out) == ExitCode.OK
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["passed"] == 0 and report["summary"]["verified"] == 0


def test_prove_on_a_log_whose_tail_was_deleted_is_an_integrity_failure(client_log, capsys):
    """The tail and the checkpoint over it deleted: prove names the truncation (exit 3), not a missing
    checkpoint (exit 2, 'run log checkpoint first')."""
    db, _, _, ids = client_log
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM records WHERE seq = 3")
        con.execute("DELETE FROM checkpoints WHERE size = 4")
    capsys.readouterr()
    assert cli("log", "prove", ids[1], "--log", db) == ExitCode.INTEGRITY
    assert "truncated" in capsys.readouterr().err
