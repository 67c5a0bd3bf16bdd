"""A scoped report's OSCAL document and control reasons say which records were judged (reviewer of
issue 16): the result said "found in 2 audit-log records of this period" while its findings were
judged on the one record of service billing, and an empty scope's controls said "the report
covers no records"."""

from __future__ import annotations

import json

from oscal_schema import schema_errors
from test_fleet_report_labels import COMMON

from nomyo_audit.audit import build_report
from nomyo_audit.audit._controls import controls_evidenced
from nomyo_audit.audit._oscal import oscal_report
from nomyo_audit.audit._records import build_record

STATE = {
    "size": 3,
    "root": "00" * 32,
    "checkpoint": None,
    "verification": {"intact": True, "size": 3, "root": "00" * 32, "key": "given"},
}
#: checks on the log itself, judged on every record whatever the scope
LOG_WIDE = {"audit_log_integrity", "log_checkpoint"}


def _doc(seq, **fields):
    return {**json.loads(build_record(**{**COMMON, "seq": seq, "payload_id": f"p{seq}"})), **fields}


DOCS = [
    _doc(0, service="billing", tenant="acme"),
    _doc(1, outcome="http_error:500", service="search"),
    _doc(2, service="search", tenant="acme"),
]


def _report(scope):
    return build_report(DOCS, generated_at="2026-11-26T00:00:00Z", log_state=STATE, scope=scope)


def _result(report):
    document = json.loads(oscal_report(report))
    assert schema_errors(document) == []
    return document["assessment-results"]["results"][0]


def test_a_scoped_oscal_result_states_its_scope():
    result = _result(_report({"service": "billing", "router": "https://r.example"}))
    scope = "service billing, router https://r.example"
    assert "found in 3 audit-log records" not in result["description"]
    assert "found in the 1 audit-log records of " + scope in result["description"]
    assert "the period holds 3" in result["description"]
    assert scope in result["remarks"]
    for finding in result["findings"]:
        assert scope in finding["description"], finding["description"]
    observations = {o["title"]: o["description"] for o in result["observations"]}
    assert scope in observations["Check policy"] and scope in observations["Check attestation"]
    assert scope not in observations["Check audit_log_integrity"]  # the log's check is of the whole log


def test_each_scoped_control_reason_names_the_scope_it_was_judged_on():
    for judged in controls_evidenced(_report({"tenant": "acme"})):
        if set(judged.control.checks) - LOG_WIDE:
            assert judged.reason.startswith("on the records of tenant acme only"), judged.reason
    record_keeping = [
        j
        for j in controls_evidenced(_report({"tenant": "acme"}))
        if "record_keeping" in j.control.checks and j.status == "satisfied"
    ]
    assert record_keeping and all("2 requests" in j.reason for j in record_keeping)


def test_an_empty_scope_is_not_called_a_report_that_covers_no_records():
    report = _report({"service": "nobody"})
    reasons = [judged.reason for judged in controls_evidenced(report)]
    assert not any("the report covers no records" in reason for reason in reasons)
    assert any("none of the period's 3 records is in the report's scope" in reason for reason in reasons)
    result = _result(report)
    assert "service nobody" in result["description"] and "service nobody" in result["remarks"]


def test_an_unscoped_report_says_nothing_of_a_scope():
    report = _report(None)
    result = _result(report)
    assert "found in 3 audit-log records of this period" in result["description"]
    assert "scope" not in json.dumps(result)
    empty = build_report([], generated_at="2026-11-26T00:00:00Z", log_state=STATE)
    assert "the report covers no records" in {judged.reason for judged in controls_evidenced(empty)}
