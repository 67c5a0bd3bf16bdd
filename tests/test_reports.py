"""Compliance reports: content, formats (validated), determinism, DSSE signing, tamper detection,
and the HTML in a real headless browser."""

from __future__ import annotations

import base64
import csv
import io
import json
import shutil
import subprocess
import time

import html5lib
import pytest
import xmlschema
from click.testing import CliRunner
from conftest import FIXTURES, PRODUCTION_UNANCHORED, REPO, require
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.audit._dsse import EnvelopeError, pae, sign_envelope, verify_envelope
from nomyo_audit.audit._keys import generate_audit_key, load_private_key, load_public_key
from nomyo_audit.audit._records import build_record
from nomyo_audit.audit._render import render_report
from nomyo_audit.audit._report import MAX_FAILURES
from nomyo_audit.cli import cli, main
from nomyo_audit.errors import ExitCode
from nomyo_audit.tpm._binding import client_key_binding, response_content_digest
from nomyo_audit.tpm._measurements import TAMPER_EVENT, measure_demo_boot
from nomyo_audit.tpm._verify import verify_attestation

DSSE = json.loads((FIXTURES / "vectors" / "merkle-and-dsse.json").read_text())["dsse"]
JUNIT = xmlschema.XMLSchema(str(FIXTURES / "junit.xsd"))
ARTIFACTS = REPO / "test-artifacts"
#: SHA-256 of the DER SPKI of the client's protocol 1.0 key, as the router names it in _metadata
CLIENT_KEY = bytes(range(32))


# -- DSSE ------------------------------------------------------------------------------------------


def test_pae_vector():
    assert pae(DSSE["payload_type"], DSSE["payload"].encode()) == DSSE["pae"].encode()


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256", "rsa-pss"])
def test_envelopes_with_every_key_kind(tmp_path, algorithm):
    private, public = generate_audit_key(tmp_path / "k", algorithm)
    envelope = sign_envelope(b'{"hello": 1}', load_private_key(private))
    assert verify_envelope(envelope, load_public_key(public)) == b'{"hello": 1}'
    forged = {**envelope, "payload": base64.b64encode(b'{"hello": 2}').decode()}
    with pytest.raises(EnvelopeError):
        verify_envelope(forged, load_public_key(public))
    retyped = {**envelope, "payloadType": "text/plain"}  # PAE binds the type too
    with pytest.raises(EnvelopeError):
        verify_envelope(retyped, load_public_key(public))
    with pytest.raises(EnvelopeError):
        verify_envelope(envelope, Ed25519PrivateKey.generate().public_key())
    with pytest.raises(EnvelopeError, match="not a DSSE envelope"):
        verify_envelope({"payload": "%%%"}, load_public_key(public))


# -- a log with passes, a denial and an error ------------------------------------------------------


def record_for(tpm, payload_id, outcome="ok", policy=None):
    response = {"id": "c", "model": "echo", "choices": [{"message": {"content": "SECRET-COMPLETION"}}]}
    digest = response_content_digest(response)
    block = TPMAttester(tpm).evidence(client_key_binding(payload_id, digest, CLIENT_KEY))
    verdict = verify_attestation(block, payload_id, content_digest=digest, client_key_sha256=CLIENT_KEY)
    response["_metadata"] = {
        "payload_id": payload_id,
        "client_key_sha256": CLIENT_KEY.hex(),  # what the client keeps of a reply it accepted
        "processed_at": int(time.time()),
        "security_tier": "high",
        "memory_protection": {"memory_locking": True, "secure_zeroing": True, "core_dump_prevention": True},
        "cuda_device": {"available": False},
        "tpm_attestation": block,
        "verification": verdict.to_dict(),
    }
    return lambda seq, salt: build_record(
        seq=seq,
        timestamp=time.time(),
        salt=salt,
        payload_id=payload_id,
        router="http://127.0.0.1:9",
        server_key="ab" * 32,
        model="echo",
        security_tier="high",
        outcome=outcome,
        request={"messages": [{"role": "user", "content": "SECRET-PROMPT"}]},
        response=response,
        policy=policy,
    )


@pytest.fixture
def audit_log(tmp_path):
    key_path, pub_path = generate_audit_key(tmp_path / "audit.key")
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    with AuditLog(tmp_path / "audit.db", key=load_private_key(key_path)) as log:
        for n in range(4):
            log.append(f"ok-{n}", record_for(tpm, f"ok-{n}"))
        tpm.extend("sha256", *TAMPER_EVENT)
        log.append("changed-0", record_for(tpm, "changed-0"))
        log.append(
            "err-0",
            lambda seq, salt: build_record(
                seq=seq,
                timestamp=time.time(),
                salt=salt,
                payload_id="err-0",
                router="http://127.0.0.1:9",
                server_key=None,
                model="echo",
                security_tier="high",
                outcome="http_error:ServerError",
                request={"x": 1},
                response=None,
                error={"code": "server_error"},
            ),
        )
        log.checkpoint()
    return tmp_path / "audit.db", key_path, pub_path


def make_report(audit_log, out, *extra):
    db, _key, _ = audit_log
    args = [
        "report",
        "--log",
        str(db),
        "--policy",
        PRODUCTION_UNANCHORED,
        "--format",
        "html,md,json,junit,csv",
        "--generated-at",
        "2026-11-25T12:00:00Z",
        "-o",
        str(out),
        *extra,
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def test_report_content(audit_log, tmp_path):
    out = make_report(audit_log, tmp_path / "r", "--sign", str(audit_log[1]))
    report = json.loads((out / "report.json").read_text())
    assert report["schema"].endswith("compliance-report/v1")
    # the changed machine is denied by the policy; the HTTP error has no evidence and counts as failed
    assert report["summary"] == {
        "requests": 6,
        "attested": 5,
        "verified": 5,
        "passed": 4,
        "warned": 0,
        "denied": 1,
        "denied_before_sending": 0,
        "failed": 1,
        "no_hardware": 5,  # the software attester's quotes: no TPM hardware behind them
    }
    assert report["policy"]["name"] == "production-unanchored" and len(report["policy"]["digest"]) == 64
    assert report["log"]["checkpoint"]["size"] == 6
    assert report["rules"]["pcrs"] == {"pass": 4, "fail": 1}
    changed = next(f for f in report["failures"] if f["payload_id"] == "changed-0")
    assert any("sha256 PCR 0" in rule for rule in changed["rules"])
    assert report["aik_count"] == 1
    assert [p["pcr"] for p in report["pcr_values"]] == ["sha256:0", "sha256:7", "sha256:10"]
    assert report["signer"] and report["signer"] in (out / "report.html").read_text()
    for name in ("report.html", "report.md", "report.json", "report.csv", "report.junit.xml"):
        text = (out / name).read_text()
        assert "SECRET-PROMPT" not in text and "SECRET-COMPLETION" not in text
        assert report["log"]["checkpoint"]["root"] in text or name in ("report.csv", "report.junit.xml")


def test_formats_are_valid(audit_log, tmp_path):
    out = make_report(audit_log, tmp_path / "r")
    JUNIT.validate(str(out / "report.junit.xml"))
    html5lib.HTMLParser(strict=True).parse((out / "report.html").read_text())
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert {"section": "summary", "key": "requests", "status": "", "count": "6"} in rows
    document = html5lib.parse((out / "report.html").read_text(), namespaceHTMLElements=False)
    assert any(str(e.tag).endswith("}svg") for e in document.iter())  # the timeline, inline SVG
    # self-contained: nothing runs and nothing is fetched
    assert not [
        e.tag for e in document.iter() if e.tag in ("script", "link", "iframe", "img", "object", "embed")
    ]
    assert not [e.tag for e in document.iter() if "src" in e.attrib or "href" in e.attrib]


def test_verify_junit_output_validates(audit_log, tmp_path):
    """Each run writes its own file and is judged by its exit code: no half can pass on the other's file."""
    db = str(audit_log[0])
    with_policy, without_policy = tmp_path / "policy.xml", tmp_path / "verifier.xml"
    # the log holds a changed PCR and an error record: both runs find something (exit 1), and still write
    policy = ["--policy", PRODUCTION_UNANCHORED]
    args = ["verify", "--log", db, *policy, "--format", "junit", "-o", str(with_policy)]
    assert main(args) == ExitCode.FINDING
    assert main(["verify", "--log", db, "--format", "junit", "-o", str(without_policy)]) == ExitCode.FINDING
    for report, classname in ((with_policy, "production-unanchored"), (without_policy, "verifier")):
        JUNIT.validate(str(report))
        text = report.read_text()
        assert text.count("<testsuite ") == 6 and f'classname="{classname}"' in text, report


def test_rerendering_is_byte_identical(audit_log, tmp_path):
    a = make_report(audit_log, tmp_path / "a")
    b = make_report(audit_log, tmp_path / "b")
    for name in ("report.html", "report.md", "report.json", "report.csv", "report.junit.xml"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_html_autoescapes_hostile_values(tmp_path):
    report = build_report(
        [
            {
                "seq": 0,
                "time": "2026-11-25T00:00:00.000Z",
                "payload_id": "<script>alert(1)</script>",
                "model": "<b>m</b>",
                "outcome": "http_error:X",
                "metadata": None,
            }
        ],
        generated_at="t",
        log_state={"size": 1, "root": "00", "checkpoint": None},
    )
    html = render_report(report, ["html"])["report.html"].decode()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html


def test_large_logs_are_capped(tmp_path):
    docs = (
        {
            "seq": n,
            "time": "2026-11-25T00:00:00.000Z",
            "payload_id": f"p{n}",
            "outcome": "http_error:X",
            "metadata": None,
            "model": "m",
        }
        for n in range(MAX_FAILURES + 50)
    )
    report = build_report(docs, generated_at="t", log_state={"size": 0, "root": "", "checkpoint": None})
    assert len(report["failures"]) == MAX_FAILURES and report["failures_omitted"] == 50


# -- signing and verify-report -----------------------------------------------------------------------


def test_signed_report_verifies_and_tampering_is_detected(audit_log, tmp_path, capsys):
    db, key, pub = audit_log
    out = make_report(audit_log, tmp_path / "r", "--sign", str(key))
    ok = CliRunner().invoke(cli, ["verify-report", str(out), "--key", str(pub), "--log", str(db)])
    assert ok.exit_code == 0, ok.output
    assert "matches" in ok.output
    envelope = json.loads((out / "report.dsse.json").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert {s["name"] for s in statement["subject"]} == {
        "report.html",
        "report.md",
        "report.json",
        "report.csv",
        "report.junit.xml",
    }
    assert statement["predicate"]["checkpoint"]["size"] == 6

    # a modified rendered file
    html = out / "report.html"
    original = html.read_bytes()
    html.write_bytes(original.replace(b"denied", b"passed"))
    assert main(["verify-report", str(out), "--key", str(pub)]) == ExitCode.INTEGRITY
    assert "report.html: modified after it was signed" in capsys.readouterr().err
    html.write_bytes(original)

    # a modified envelope
    statement["predicate"]["summary"]["denied"] = 0
    forged = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    (out / "report.dsse.json").write_text(json.dumps(forged))
    assert main(["verify-report", str(out), "--key", str(pub)]) == ExitCode.INTEGRITY
    assert "no signature in the envelope verifies" in capsys.readouterr().err
    (out / "report.dsse.json").write_text(json.dumps(envelope))

    # a log the checkpoint does not describe
    other = tmp_path / "other.db"
    with AuditLog(other) as log:
        log.append("x", lambda seq, salt: b'{"seq":%d,"x":1}' % seq)
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(other)]) == ExitCode.INTEGRITY
    assert main(["verify-report", str(out), "--key", str(pub)]) == ExitCode.OK


def test_unsigned_report_has_no_envelope(audit_log, tmp_path, capsys):
    out = make_report(audit_log, tmp_path / "r")
    assert main(["verify-report", str(out), "--key", str(audit_log[2])]) == ExitCode.INTEGRITY
    assert "no signed envelope" in capsys.readouterr().err


# -- the HTML in a real browser ---------------------------------------------------------------------


def test_html_report_in_headless_chromium(audit_log, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    require(browser is not None, "chromium is not installed (apt-get install chromium)")
    out = make_report(audit_log, tmp_path / "r")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'ud'}",
    ]
    url = (out / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "Compliance report" in dom.stdout and "<svg" in dom.stdout
    shot = subprocess.run(
        [*flags, "--window-size=1280,2000", f"--screenshot={screenshot}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-500:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000


def test_report_cli_errors(tmp_path):
    assert main(["report", "--log", str(tmp_path / "none.db"), "-o", str(tmp_path / "o")]) == ExitCode.USAGE
    db = tmp_path / "x.db"
    AuditLog(db).close()
    assert main(["report", "--log", str(db), "--format", "pdf", "-o", str(tmp_path / "o")]) == ExitCode.USAGE
