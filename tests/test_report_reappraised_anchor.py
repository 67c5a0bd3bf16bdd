"""A report re-appraises each record as ``verify --log`` does (issue 12 section 5): one record builder
(:func:`nomyo_audit.policy.stored_records`), so the anchor the client kept in the record is re-checked
against the policy's roots, and an ``ek`` policy passes the anchored records it passed when they were
received, after the router and its TPM are gone."""

from __future__ import annotations

import json

import pytest
from test_anchor_offline import ek_log  # noqa: F401  (the fixture: an anchored log)

from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.policy import Policy

pytestmark = pytest.mark.swtpm


def test_a_report_passes_anchored_records_under_an_ek_policy_as_verify_log_does(ek_log):  # noqa: F811
    log, roots, _ = ek_log  # test_anchor_offline: verify --log passes these under this policy
    policy = Policy.from_document(
        {"metadata": {"name": "anchored"}, "spec": {"aik_trust": {"mode": "ek", "roots": [str(roots)]}}}
    )
    with AuditLog.open(log) as opened:
        documents = [json.loads(row.data) for row in opened.store.records()]
        report = build_report(
            documents, generated_at="2026-01-01T00:00:00Z", log_state=opened.verified_state(), policy=policy
        )
    assert report["summary"]["passed"] == 2, report["summary"]
