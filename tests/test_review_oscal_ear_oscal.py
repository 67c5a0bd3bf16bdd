"""Review R4: the OSCAL document says no more than the report, carries no control characters a router
chose, says it is to be trusted only with its signature, and the schema check in the tests really
checks what NIST's schema asks (its hrefs are URI references)."""

from __future__ import annotations

import copy
import json

from oscal_schema import schema_errors

from nomyo_audit.audit import build_report
from nomyo_audit.audit._controls import controls_evidenced
from nomyo_audit.audit._oscal import build_assessment_results

LOG = {
    "size": 6,
    "root": "ab" * 32,
    "checkpoint": {"size": 4, "root": "cd" * 32, "signer": "ef" * 32, "origin": "example/log"},
    "verification": {"intact": True, "key": "given"},
}


def _document(report):
    return build_assessment_results(report, controls_evidenced(report), catalog_uuid=None)


def _report(**changes):
    return {**build_report([], generated_at="2026-11-25T12:00:00Z", log_state=LOG), **changes}


def _texts(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from _texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _texts(value)
    elif isinstance(node, str):
        yield node


def _observation(document, check):
    (result,) = document["assessment-results"]["results"]
    return next(o for o in result["observations"] if o["title"] == f"Check {check}")


def test_a_log_the_report_does_not_show_verified_is_not_called_verified():
    report = copy.deepcopy(_report())
    report["log"]["verification"]["intact"] = False
    document = _document(report)
    assert schema_errors(document) == []
    integrity = _observation(document, "audit_log_integrity")["description"]
    assert "The audit log verified" not in integrity and "does not show" in integrity, integrity
    (result,) = document["assessment-results"]["results"]
    assert "from the verified log" not in result["description"]


def test_a_checkpoint_that_covers_part_of_the_log_is_not_said_to_prove_every_record():
    document = _document(_report())
    checkpoint = _observation(document, "log_checkpoint")["description"]
    assert "4 of the log's 6 records" in checkpoint
    assert "every record's inclusion proof" not in checkpoint, checkpoint


def test_control_characters_a_router_chose_never_reach_the_document():
    hostile = "evil\x00\x1b[31m\u202eevent\x7f"  # NUL, an ANSI escape, a bidi override, DEL
    report = _report(
        by_router={f"http://r.example/{hostile}": 1},
        failures=[
            {
                "seq": 3,
                "payload_id": hostile,
                "status": "denied",
                "reason": hostile,
                "rules": [f"boot_events: denied by boot_events.deny: {hostile}"],
            }
        ],
    )
    document = _document(report)
    assert schema_errors(document) == []
    bad = [text for text in _texts(document) if not all(c.isprintable() or c in "\n\t" for c in text)]
    assert bad == []


def test_the_document_says_it_is_trustworthy_only_with_its_signature():
    signed = _document(_report(signer="12" * 32))
    (result,) = signed["assessment-results"]["results"]
    assert "verify-report" in result["description"]
    unsigned = _document(_report())
    (result,) = unsigned["assessment-results"]["results"]
    assert "unsigned" in result["description"]


def test_the_schema_check_refuses_an_href_that_is_no_uri_reference():
    """NIST's schema types every href as format uri-reference, with no pattern: a validator without a
    format check accepted anything there."""
    document = _document(_report(signer="12" * 32))
    assert schema_errors(document) == []
    broken = json.loads(json.dumps(document))
    observation = broken["assessment-results"]["results"][0]["observations"][0]
    for href in ("report.json#/a b", "bundle\x00.json", "a#b#c", "%zz"):
        observation["relevant-evidence"][0]["href"] = href
        assert schema_errors(broken), href
    for href in (
        "report.json#/rules/require_key_binding",
        "record-3.bundle.json",
        "#uuid",
        "https://x.example/a?b=c",
    ):
        observation["relevant-evidence"][0]["href"] = href
        assert schema_errors(broken) == [], href
