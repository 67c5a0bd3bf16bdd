"""``verify --log --policy NEW`` and ``report --policy`` re-appraise the event logs a log keeps by digest.

Real evidence: the software TPM's measuring API writes a TCG log (boot and serving stack) and an
IMA list, quotes cover them, the client's ``record_call`` writes the records; new rules then judge
the stored logs, so the verdict's event_log / ima_log checks run on the bytes put back.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing

import pytest
from test_audit_blobs import record

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode
from nomyo_audit.eventlog import EV_EVENT_TAG, serving_stack_event
from nomyo_audit.tpm._binding import response_binding, response_content_digest
from nomyo_audit.tpm._verify import verify_attestation

ROUTER = {"name": "nomyo-audit", "version": "0.9.0", "code_sha256": "ab" * 32}
MODEL = {"name": "echo", "source": "echo", "weights_sha256": None, "upstream_identity": None}
GOOD, EVIL = hashlib.sha256(b"python3").digest(), hashlib.sha256(b"evil.ko").digest()


def policy(spec: str) -> str:
    return f"apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {{name: new}}\nspec:\n{spec}"


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    attester = TPMAttester(SoftwareTPM(), "sha256:10,23")
    attester.measurements.reset(23)
    attester.measurements.extend_event(23, EV_EVENT_TAG, serving_stack_event("router", ROUTER))
    attester.measurements.extend_event(23, EV_EVENT_TAG, serving_stack_event("model", MODEL))
    attester.measurements.extend_ima_file("/usr/bin/python3", GOOD)
    path = tmp_path_factory.mktemp("reappraise") / "audit.db"
    with AuditLog(path) as log:
        for n in range(3):
            if n == 2:  # the "unexpected kernel module", loaded after two replies
                attester.measurements.extend_ima_file("/lib/modules/6.8.0/extra/evil.ko", EVIL)
            response = {"id": "c", "object": "chat.completion", "model": "echo", "choices": []}
            digest = response_content_digest(response)
            block = attester.evidence(response_binding(f"p{n}", digest))
            verdict = verify_attestation(block, f"p{n}", content_digest=digest)
            assert verdict.passed, verdict.failures
            response["_metadata"] = {
                "payload_id": f"p{n}",
                "tpm_attestation": block,
                "verification": verdict.to_dict(),
            }
            record(log, f"p{n}", response)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 3  # one TCG log, two IMA lists
    return path


def test_new_serving_stack_rules_judge_the_stored_logs(logged, tmp_path, capsys):
    allow = tmp_path / "allow.yaml"
    allow.write_text(policy('  serving_stack: {router_versions: ["0.9.*"], models: {echo: any}}\n'))
    assert main(["verify", "--log", str(logged), "--policy", str(allow), "--format", "json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert [v["policy"]["outcome"] for v in verdicts] == ["pass"] * 3
    checks = {f["check"]: f["code"] for f in verdicts[0]["findings"]}
    assert checks["event_log"] == "event_log_matches" and checks["ima_log"] == "ima_log_matches"
    deny = tmp_path / "deny.yaml"
    deny.write_text(policy('  serving_stack: {router_versions: ["1.*"]}\n'))
    assert main(["verify", "--log", str(logged), "--policy", str(deny)]) == ExitCode.FINDING
    assert "0.9.0" in capsys.readouterr().out


def test_an_ima_rule_names_the_unexpected_module_in_verify_and_in_the_report(logged, tmp_path, capsys):
    rule = tmp_path / "ima.yaml"
    rule.write_text(policy(f"  ima: {{digests: {{/usr/bin/python3: [{GOOD.hex()}]}}}}\n"))
    assert main(["verify", "--log", str(logged), "--policy", str(rule)]) == ExitCode.FINDING
    out = capsys.readouterr().out
    assert "p2" in out and "/lib/modules/6.8.0/extra/evil.ko" in out
    assert (
        main(
            [
                "report",
                "--log",
                str(logged),
                "--policy",
                str(rule),
                "--format",
                "md,json",
                "-o",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    (failure,) = report["failures"]
    assert failure["payload_id"] == "p2" and any("evil.ko" in r for r in failure["rules"])
    assert "/lib/modules/6.8.0/extra/evil.ko" in (tmp_path / "r" / "report.md").read_text()
    ima = report["measured"][0]["ima"]
    assert ima["entries"] == [1, 2] and ima["records"] == 3
