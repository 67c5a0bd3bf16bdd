"""Anchors re-checked offline (issue 12 section 5): `nomyo-audit verify --tpm-roots DIR` anchors saved
replies and audit-log records against that store, each record judged at the time its anchor was
validated (kept in the record), after the router and its TPM are gone; a record whose anchor
evidence was edited is an integrity failure."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import pytest
from click.testing import CliRunner

from nomyo_audit import SecureChatCompletion
from nomyo_audit.ca import enroll_router, init_authority
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import Policy
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm import TrustStore

pytestmark = pytest.mark.swtpm
ADMIN = "admin-key-for-tests"
HELLO = [{"role": "user", "content": "kept for years"}]


def _chat(router, keys_dir, trust, log):
    policy = Policy.from_document({"metadata": {"name": "anchored"}, "spec": {"aik_trust": trust}})

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(keys_dir), policy=policy, audit_log=str(log)
        ) as client:
            return [await client.create("echo", HELLO, security_tier="high") for _ in range(2)]

    return asyncio.run(go())


@pytest.fixture
def ek_log(swtpm, make_router, client_keys_dir, tmp_path):
    """An audit log of two replies anchored by a credential activation; the router then stopped."""
    router = make_router(attester=make_attester(swtpm.spec), activation_burst=100)
    roots = tmp_path / "roots"
    roots.mkdir()
    shutil.copy(swtpm.ca_root_path, roots / "swtpm-root.pem")
    log = tmp_path / "ek.db"
    replies = _chat(router, client_keys_dir, {"mode": "ek", "roots": [str(roots)]}, log)
    router.stop()
    return log, roots, replies


@pytest.fixture
def ca_log(swtpm, make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester(swtpm.spec), admin_keys=(ADMIN,))
    authority = init_authority(tmp_path / "ca", "test enrollment CA")
    maker = TrustStore.from_pem(swtpm.ca_root_path.read_bytes())
    enroll_router(router.url, authority, maker, admin_key=ADMIN)
    log = tmp_path / "ca.db"
    replies = _chat(router, client_keys_dir, {"mode": "ca", "roots": [str(tmp_path / "ca" / "ca.pem")]}, log)
    router.stop()
    return log, tmp_path / "ca", replies


def verify(*args):
    result = CliRunner().invoke(cli, ["verify", "--format", "json", *map(str, args)])
    verdicts = json.loads(result.stdout) if result.stdout.startswith("[") else None
    return result.exit_code, verdicts, result


def anchors(verdicts):
    return [next(f for f in v["findings"] if f["check"] == "aik_anchor") for v in verdicts]


def test_verify_log_reanchors_an_activation_with_only_the_manufacturer_root(ek_log):
    log, roots, _ = ek_log
    code, verdicts, result = verify("--log", log, "--tpm-roots", roots)
    assert code == 0, result.output
    assert [(a["status"], a["code"]) for a in anchors(verdicts)] == [("pass", "aik_anchored_ek")] * 2
    assert verdicts[0]["facts"]["manufacturer"] == "id:00001014"
    # offline, the activation cannot be run again: the finding says it rests on the record
    assert all("not run again" in a["detail"] for a in anchors(verdicts))


def test_a_saved_reply_of_an_ek_anchor_is_not_anchored_from_its_own_metadata(ek_log, tmp_path):
    """A file's _metadata.verification.anchor is anyone's to write: only an audit log's intact
    record carries an activation an offline re-check believes."""
    _, roots, replies = ek_log
    saved = tmp_path / "reply.json"
    saved.write_text(json.dumps(replies[0]))
    _, verdicts, result = verify(saved, "--tpm-roots", roots)
    assert anchors(verdicts)[0]["status"] != "pass", result.output


def test_verify_log_without_roots_says_not_anchored(ek_log):
    code, verdicts, _ = verify("--log", ek_log[0])
    assert code == 0
    assert {a["code"] for a in anchors(verdicts)} == {"aik_not_anchored"}


def test_verify_log_with_other_roots_fails_the_anchor(ek_log, tmp_path):
    other = tmp_path / "other"
    init_authority(other, "someone else")
    code, verdicts, _ = verify("--log", ek_log[0], "--tpm-roots", other)
    assert code == 1
    assert {a["status"] for a in anchors(verdicts)} == {"fail"}


def test_verify_log_with_an_ek_policy_reads_its_roots(ek_log, tmp_path):
    log, roots, _ = ek_log
    policy = tmp_path / "anchored.yaml"
    policy.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: anchored}\n"
        f"spec:\n  aik_trust: {{mode: ek, roots: [{roots}]}}\n"
    )
    code, verdicts, result = verify("--log", log, "--policy", policy)
    assert code == 0, result.output
    assert {v["policy"]["outcome"] for v in verdicts} == {"pass"}


def test_verify_log_reanchors_ak_certificates_with_only_the_ca_root(ca_log):
    log, ca_dir, _ = ca_log
    code, verdicts, result = verify("--log", log, "--tpm-roots", ca_dir)
    assert code == 0, result.output
    assert [(a["status"], a["code"]) for a in anchors(verdicts)] == [("pass", "aik_anchored_ca")] * 2


def test_verify_saved_reply_with_tpm_roots(ca_log, tmp_path):
    _, ca_dir, replies = ca_log
    saved = tmp_path / "reply.json"
    saved.write_text(json.dumps(replies[0]))
    code, verdicts, result = verify(saved, "--tpm-roots", ca_dir)
    assert code == 0, result.output
    assert anchors(verdicts)[0]["code"] == "aik_anchored_ca"


def test_a_record_whose_anchor_evidence_was_edited_is_an_integrity_failure(ek_log, tmp_path, capsys):
    log, roots, _ = ek_log
    with sqlite3.connect(log) as db:
        data = db.execute("SELECT data FROM records WHERE seq = 0").fetchone()[0]
        record = json.loads(data)
        record["verdict"]["anchor"]["validated_at"] = "2020-01-01T00:00:00Z"
        edited = json.dumps(record, separators=(",", ":"), sort_keys=True).encode()
        db.execute("UPDATE records SET data = ? WHERE seq = 0", (edited,))
    out = tmp_path / "out.json"
    status = main(["verify", "--log", str(log), "--tpm-roots", str(roots), "-o", str(out)])
    assert status == ExitCode.INTEGRITY
    assert "record 0: its bytes do not match its leaf hash (altered)" in capsys.readouterr().err


def test_tpm_roots_must_be_a_directory_of_certificates(ek_log, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["verify", "--log", str(ek_log[0]), "--tpm-roots", str(missing)]) == ExitCode.USAGE
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["verify", "--log", str(ek_log[0]), "--tpm-roots", str(empty)]) == ExitCode.USAGE
    assert "Traceback" not in capsys.readouterr().err


# -- reports: the anchor per AIK ---------------------------------------------------------------------


def _report(log_path, fmt="md"):
    from nomyo_audit.audit import AuditLog, build_report
    from nomyo_audit.audit._render import render_report

    with AuditLog.open(log_path) as log:
        documents = [json.loads(row.data) for row in log.store.records()]
        report = build_report(documents, generated_at="2026-01-01T00:00:00Z", log_state=log.verified_state())
    files = render_report(report, [fmt])
    return report, next(iter(files.values())).decode()


def test_report_shows_the_anchor_of_each_aik(ek_log, ca_log):
    for log, kind in ((ek_log[0], "ek"), (ca_log[0], "ca")):
        report, markdown = _report(log)
        (aik,) = report["aiks"]
        (anchor,) = aik["anchors"]
        assert (anchor["kind"], anchor["manufacturer"], anchor["records"]) == (kind, "id:00001014", 2)
        assert anchor["tpm_model"] and anchor["tpm_firmware_version"] and len(anchor["chain_subjects"]) >= 2
        assert aik["not_anchored"] == 0
        assert f"anchored ({kind})" in markdown and "id:00001014" in markdown


def test_report_never_anchors_a_software_aik(make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester("software"))
    log = tmp_path / "software.db"

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), audit_log=str(log)
        ) as client:
            return await client.create("echo", HELLO, security_tier="high")

    asyncio.run(go())
    report, markdown = _report(log)
    (aik,) = report["aiks"]
    assert (aik["anchors"], aik["not_anchored"]) == ([], 1)
    assert "not anchored" in markdown and "anchored (" not in markdown
