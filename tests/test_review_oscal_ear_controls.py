"""Review R4: a control status never says more than the report's facts give.

Built from the demo's real log (software attester), reported from the records' own policy results
(no --policy), as an auditor reports a log whose policy changed during the period.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from click.testing import CliRunner

from nomyo_audit.audit import AuditLog, build_report, controls_evidenced, ed25519_public
from nomyo_audit.cli import cli

MEASURED = ("pcrs", "secure_boot", "boot_events", "kernel_cmdline", "ima", "serving_stack")


@pytest.fixture(scope="module")
def demo_records(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    directory = tmp_path_factory.mktemp("review-controls") / "demo"
    result = CliRunner().invoke(cli, ["demo", "--attester", "software", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    with AuditLog.open(str(directory / "audit.db")) as log:
        state = log.verified_state(ed25519_public(str(directory / "audit.key.pub")))
        records = [json.loads(stored.data) for stored in log.store.records()]
    return records, state.to_dict()


def _report(records: list[dict[str, Any]], log_state: dict[str, Any]) -> dict[str, Any]:
    report = build_report(records, generated_at="2026-11-26T12:00:00Z", log_state=log_state)
    for aik in report["aiks"]:  # as if every quote's key had been anchored: only the rules decide
        aik["not_anchored"] = 0
    return report


def _statuses(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {s.control.control_id: (s.status, s.reason) for s in controls_evidenced(report)}


def test_measured_rules_that_judged_only_withheld_replies_do_not_evidence_the_released_ones(demo_records):
    """The released replies were recorded under a policy with no measured rule; later replies, under
    one with measured rules, were all denied. The measured rules judged no released reply, yet their
    counts (made up of the withheld replies) equalled the number of released replies: SI-7 and CC8.1
    were 'satisfied' with 'pcrs ... judged all 3 released replies'."""
    records, log_state = demo_records
    passed = [r for r in records if r["outcome"] == "ok"]
    denied = [r for r in records if r["outcome"] != "ok"]
    assert len(passed) == 3 and len(denied) == 1
    earlier = copy.deepcopy(passed)
    for record in earlier:  # recorded under an earlier policy with no measured rule
        record["policy"]["rules"] = [r for r in record["policy"]["rules"] if r["rule"] not in MEASURED]
    later = [copy.deepcopy(denied[0]) for _ in range(3)]
    for n, record in enumerate(later):
        record["payload_id"] = f"{record['payload_id']}-{n}"
    report = _report(earlier + later, log_state)
    assert report["summary"]["passed"] == 3 and report["summary"]["denied"] == 3
    assert report["rules"]["pcrs"] == {"pass": 3}  # judged the three withheld replies only
    got = _statuses(report)
    for control in ("SI-7", "CC8.1"):
        assert got[control][0] == "not-evidenced", got[control]
        assert "did not judge every one of the 3 released replies" in got[control][1]


def test_the_demo_records_reported_as_recorded_still_evidence_the_measured_controls(demo_records):
    """The same bound keeps what a uniform policy shows: every record judged by every measured rule."""
    records, log_state = demo_records
    got = _statuses(_report(records, log_state))
    assert got["SI-7"][0] == got["CC8.1"][0] == "satisfied", got
