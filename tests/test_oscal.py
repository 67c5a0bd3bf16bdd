"""`report --format oscal`: an OSCAL 1.1.3 assessment-results document, proved against code we did not
write: NIST's published JSON Schema (vendored, tests/fixtures/oscal/PROVENANCE.md) through jsonschema,
and compliance-trestle's OSCAL models. The report comes from a real audit log that a real router and
the real client wrote, with a reply the policy denied."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from datetime import datetime

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, PRODUCTION_UNANCHORED
from oscal_schema import oscal_validator_class, schema_errors

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._keys import generate_audit_key, load_private_key
from nomyo_audit.audit._render import render_report
from nomyo_audit.cli import cli, main
from nomyo_audit.client import SecureChatCompletion
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import PolicyViolationError, load_policy
from nomyo_audit.tpm._measurements import TAMPER_EVENT, measure_demo_boot

SCHEMA_PATH = FIXTURES / "oscal" / "oscal_assessment-results_schema.json"
#: SHA-256 of NIST's v1.1.3 release asset (PROVENANCE.md)
SCHEMA_SHA256 = "d9e34757f0c12aff61f52b821f0b8f83ba0ba75b3a149a202b08ba82f82bc4c3"
GENERATED_AT = "2026-11-25T12:00:00Z"
HIGH = {"security_tier": "high"}


# -- a real log: the real client through a real router, one reply denied ---------------------------


@pytest.fixture(scope="module")
def audit_log(tmp_path_factory, router_keys):
    from nomyo_audit.router import EchoBackend, RouterConfig, RouterThread

    tmp = tmp_path_factory.mktemp("oscal-log")
    key_path, pub_path = generate_audit_key(tmp / "audit.key")
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    policy = load_policy(PRODUCTION_UNANCHORED)
    router = RouterThread(
        RouterConfig(private_key=router_keys.private_key, attester=TPMAttester(tpm), backend=EchoBackend())
    ).start()
    denied = []
    try:
        with AuditLog(tmp / "audit.db", key=load_private_key(key_path)) as log:

            async def chats():
                async with SecureChatCompletion(
                    router.url, allow_http=True, policy=policy, audit_log=log, protocol="1.0"
                ) as client:
                    for n in range(3):
                        await client.create(
                            "echo", [{"role": "user", "content": f"q{n}"}], security_tier="high"
                        )
                    tpm.extend("sha256", *TAMPER_EVENT)  # the router's machine changed: PCR 0 differs
                    try:
                        await client.create(
                            "echo", [{"role": "user", "content": "after"}], security_tier="high"
                        )
                    except PolicyViolationError as refused:
                        denied.append(refused)

            asyncio.run(chats())
            log.checkpoint()
    finally:
        router.stop()
    assert len(denied) == 1
    return tmp / "audit.db", key_path, pub_path


def make_report(audit_log, out, formats="json,oscal", *extra):
    db, key, _ = audit_log
    args = ["report", "--log", str(db), "--policy", PRODUCTION_UNANCHORED, "--format", formats]
    args += ["--generated-at", GENERATED_AT, "--sign", str(key), "-o", str(out), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text()), json.loads((out / "report.oscal.json").read_text())


@pytest.fixture(scope="module")
def rendered(audit_log, tmp_path_factory):
    out = tmp_path_factory.mktemp("oscal-report")
    report, oscal = make_report(audit_log, out)
    return out, report, oscal


def the_result(oscal):
    (result,) = oscal["assessment-results"]["results"]
    return result


# -- the vendored schema and the validator ---------------------------------------------------------


def test_vendored_schema_is_nists_release_asset():
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert (
        json.loads(SCHEMA_PATH.read_text())["$id"]
        == "http://csrc.nist.gov/ns/oscal/1.1.3/oscal-ar-schema.json"
    )


def test_the_validator_applies_the_unicode_token_pattern():
    """The schema's \\p{L} token pattern is enforced, not skipped: a control id with a space fails."""
    token = {"$ref": "#/definitions/TokenDatatype"}
    schema = {**json.loads(SCHEMA_PATH.read_text()), **token}
    validator = oscal_validator_class()(schema)
    assert validator.is_valid("ökonomie_cc6.1")  # \p{L} takes any letter
    assert not validator.is_valid("Art. 12")
    assert not validator.is_valid("1st")


# -- the report's OSCAL file -----------------------------------------------------------------------


def test_oscal_validates_against_nists_schema(rendered):
    _, _, oscal = rendered
    assert schema_errors(oscal) == []
    assert oscal["assessment-results"]["metadata"]["oscal-version"] == "1.1.3"


def test_oscal_loads_in_compliance_trestle(rendered):
    from trestle.oscal.assessment_results import AssessmentResults

    out, report, oscal = rendered
    loaded = AssessmentResults.oscal_read(out / "report.oscal.json")
    assert str(loaded.uuid) == oscal["assessment-results"]["uuid"]
    (result,) = loaded.results
    assert len(result.observations) == len(the_result(oscal)["observations"])
    assert {m for o in result.observations for m in o.methods} == {"TEST"}
    assert [f.target.status.state.value for f in result.findings] == [
        f["target"]["status"]["state"] for f in the_result(oscal)["findings"]
    ]
    assert len(result.risks) == report["summary"]["denied"] == 1
    # nothing was dropped or changed on the way through trestle's models (times come back in its own spelling)
    assert same_but_times(json.loads(loaded.oscal_serialize_json()), oscal)


def _moment(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def same_but_times(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_but_times(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(same_but_times, a, b))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            return datetime.fromisoformat(a.replace("Z", "+00:00")) == datetime.fromisoformat(
                b.replace("Z", "+00:00")
            )
        except ValueError:
            return False
    return a == b


def test_one_result_for_the_report_period(rendered):
    _, report, oscal = rendered
    result = the_result(oscal)
    assert (result["start"], result["end"]) == (report["period"]["since"], report["period"]["until"])
    assert oscal["assessment-results"]["metadata"]["last-modified"] == GENERATED_AT


def test_observations_are_tests_of_the_router_key_and_the_aik(rendered):
    _, report, oscal = rendered
    result = the_result(oscal)
    items = {
        i["uuid"]: {p["name"]: p["value"] for p in i.get("props", [])}
        for i in result["local-definitions"]["inventory-items"]
    }
    (aik,) = report["aiks"]
    attestation = next(o for o in result["observations"] if o["title"] == "Check attestation")
    assert attestation["methods"] == ["TEST"]
    subjects = [items[s["subject-uuid"]] for s in attestation["subjects"]]
    assert {"aik-fingerprint": aik["fingerprint"], "anchored": "not anchored"} in subjects
    router = next(s for s in subjects if "router-url" in s)
    assert router["router-url"] in report["by_router"] and router["aik-fingerprint"] == aik["fingerprint"]
    assert f"{report['summary']['verified']} verified" in attestation["description"]


def test_relevant_evidence_links_the_signed_files_and_the_checkpoint(rendered):
    out, report, oscal = rendered
    observations = the_result(oscal)["observations"]
    hrefs = {e.get("href") for o in observations for e in o["relevant-evidence"]}
    assert "report.dsse.json" in hrefs and "report.json#/log/checkpoint/note" in hrefs
    for href in hrefs - {None}:  # every link resolves in the report directory (and its JSON pointer)
        name, _, pointer = href.partition("#")
        node = json.loads((out / name).read_text())
        for part in filter(None, pointer.split("/")):
            node = node[part]
    checkpoint = next(o for o in observations if o["title"] == "Check log_checkpoint")
    assert any("inclusion proof" in e["description"].lower() for e in checkpoint["relevant-evidence"])
    assert str(report["log"]["checkpoint"]["size"]) in checkpoint["description"]


def test_a_denial_is_a_risk(rendered):
    _, report, oscal = rendered
    (denied,) = [f for f in report["failures"] if f["status"] == "denied"]
    (risk,) = the_result(oscal)["risks"]
    props = {p["name"]: p["value"] for p in risk["props"]}
    assert props["payload-id"] == denied["payload_id"] and props["record-seq"] == str(denied["seq"])
    assert risk["status"] == "open" and "PCR 0" in risk["statement"]
    policy = next(o for o in the_result(oscal)["observations"] if o["title"] == "Check policy")
    assert risk["related-observations"] == [{"observation-uuid": policy["uuid"]}]


def test_findings_per_control_match_the_report(rendered):
    from nomyo_audit.audit._controls import controls_evidenced

    _, report, oscal = rendered
    judged = controls_evidenced({**report, "signer": None})
    findings = {
        f["props"][0]["value"] + " " + f["props"][1]["value"]: f for f in the_result(oscal)["findings"]
    }
    decided = {
        f"{c.control.framework} {c.control.control_id}": c.status
        for c in judged
        if c.status != "not-evidenced"
    }
    assert decided and {name: f["target"]["status"]["state"] for name, f in findings.items()} == decided
    for status in judged:
        if status.status == "not-evidenced":
            assert f"{status.control.framework} {status.control.control_id}" in the_result(oscal)["remarks"]
    selected = the_result(oscal)["reviewed-controls"]["control-selections"][0]["include-controls"]
    assert len(selected) == len(judged)


def test_rendering_is_deterministic(rendered, audit_log, tmp_path):
    out, report, _ = rendered
    again = render_report(report, ["oscal"], report["signer"])["report.oscal.json"]
    assert again == (out / "report.oscal.json").read_bytes()
    _, other = make_report(audit_log, tmp_path / "later", "json,oscal", "--until", report["period"]["since"])
    assert other["assessment-results"]["uuid"] != json.loads(again)["assessment-results"]["uuid"]


def test_signed_with_the_report(rendered, audit_log, capsys):
    out, _, _ = rendered
    db, _, pub = audit_log
    assert main(["verify-report", str(out), "--key", str(pub), "--log", str(db)]) == ExitCode.OK
    envelope = json.loads((out / "report.dsse.json").read_text())
    subjects = {s["name"] for s in json.loads(base64.b64decode(envelope["payload"]))["subject"]}
    assert "report.oscal.json" in subjects
    path = out / "report.oscal.json"
    original = path.read_bytes()
    path.write_bytes(original.replace(b'"not-satisfied"', b'"satisfied"').replace(b'"open"', b'"closed"'))
    try:
        assert main(["verify-report", str(out), "--key", str(pub)]) == ExitCode.INTEGRITY
        assert "report.oscal.json: modified after it was signed" in capsys.readouterr().err
    finally:
        path.write_bytes(original)


def test_offline_bundles_the_report_wrote_are_linked(audit_log, tmp_path):
    out = tmp_path / "r"
    report, oscal = make_report(audit_log, out, "json,oscal", "--bundles", str(out / "bundles"))
    assert schema_errors(oscal) == []
    (bundle,) = report["bundles"]  # one per failure: the denied reply
    (risk,) = the_result(oscal)["risks"]
    assert risk["links"][0]["href"] == bundle["file"] and (out / bundle["file"]).is_file()
    checkpoint = next(o for o in the_result(oscal)["observations"] if o["title"] == "Check log_checkpoint")
    assert bundle["file"] in {e.get("href") for e in checkpoint["relevant-evidence"]}
