"""Each control's status follows from the report's facts: the demo's real log reported three ways
(as is, with the log key given, under a policy that warns instead of denying), then single facts
changed, one at a time, to show which controls each one flips. Never more than the facts give."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nomyo_audit.audit import build_report
from nomyo_audit.audit._controls import MAX_REASON, controls_evidenced, load_mapping
from nomyo_audit.cli import cli


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("controls") / "demo"
    result = CliRunner().invoke(cli, ["demo", "--attester", "software", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    (directory / "warn.yaml").write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nextends: policy.yaml\n"
        "metadata: {name: demo-warn}\nspec: {on_failure: warn, kernel_cmdline: {forbid: [' quiet ']}}\n"
    )
    return directory


def report_of(demo: Path, *extra: str, policy: str = "policy.yaml") -> dict[str, Any]:
    out = demo.parent / f"out-{len(list(demo.parent.iterdir()))}"
    args = ["report", "--log", str(demo / "audit.db"), "--policy", str(demo / policy), "--format", "json"]
    result = CliRunner().invoke(cli, [*args, *extra, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {s.control.control_id: s.status for s in controls_evidenced(report)}


def reasons(report: dict[str, Any]) -> dict[str, str]:
    return {s.control.control_id: s.reason for s in controls_evidenced(report)}


@pytest.fixture(scope="module")
def trusted(demo: Path) -> dict[str, Any]:
    """The demo's log reported with its checkpoint key given from a trusted place (--log-key)."""
    return report_of(demo, "--log-key", str(demo / "audit.key.pub"))


def anchored(report: dict[str, Any]) -> dict[str, Any]:
    """The same report had every quote's attestation key been anchored (the swtpm EK path)."""
    changed = copy.deepcopy(report)
    for aik in changed["aiks"]:
        aik["not_anchored"] = 0
    return changed


def test_the_demo_report_claims_only_what_a_software_attester_and_the_logs_own_key_show(demo):
    report = report_of(demo)
    assert report["log"]["verification"]["key"] == "log"
    assert statuses(report) == {
        "CC6.1": "not-evidenced",  # the AIK is not anchored: a software key could have quoted
        "CC6.7": "not-evidenced",
        "CC7.2": "satisfied",  # the denial was detected and recorded with its reason
        "CC8.1": "not-evidenced",
        "Art. 12": "satisfied",
        "Art. 19": "not-evidenced",  # minutes of records, no trusted checkpoint
        "Art. 26(6)": "not-evidenced",
        "A.6.2.8": "satisfied",
        "AU-9": "not-evidenced",  # checked with the key the log names
        "AU-10": "not-evidenced",
        "SC-8": "not-evidenced",
        "SC-13": "satisfied",  # key binding and quote verification held for every released reply
        "SI-7": "not-evidenced",
    }
    why = reasons(report)
    assert "not anchored" in why["CC6.1"] and "4 records" in why["CC6.1"]
    assert "key the log names" in why["AU-9"]
    assert "1 denied" in why["CC7.2"] and "recorded with its reason" in why["CC7.2"]
    assert "0 days before the report" in why["Art. 19"]


def test_a_trusted_checkpoint_key_makes_the_log_controls_satisfied(trusted):
    assert trusted["log"]["verification"]["key"] == "given"
    got = statuses(trusted)
    assert got["AU-9"] == "satisfied"
    assert "covers all 4 records" in reasons(trusted)["AU-9"]
    assert got["AU-10"] == "not-evidenced"  # still: the quotes' key is not anchored
    assert got["Art. 19"] == got["Art. 26(6)"] == "not-evidenced"  # still: no record six months old


def test_anchored_keys_turn_the_quote_controls_satisfied_and_the_denial_counts_as_withheld(trusted):
    got = statuses(anchored(trusted))
    assert {got[c] for c in ("CC6.1", "CC6.7", "CC8.1", "AU-10", "SC-8", "SI-7")} == {"satisfied"}
    assert "ima" in reasons(anchored(trusted))["SI-7"] and "withheld" in reasons(anchored(trusted))["SI-7"]


def test_a_reply_released_after_its_policy_failed_flips_the_gate_controls(demo):
    """The demo's replies appraised again under a policy that forbids their kernel command line but
    only warns: the three replies the client received are released with a failed measured rule."""
    warned = anchored(report_of(demo, "--log-key", str(demo / "audit.key.pub"), policy="warn.yaml"))
    assert warned["summary"]["warned"] == 3 and warned["summary"]["denied"] == 1  # the denial stands
    got = statuses(warned)
    assert got["CC6.1"] == "not-satisfied"  # replies were released with their policy failed
    assert got["CC8.1"] == got["SI-7"] == "not-satisfied"  # ... and the failing rule was a measured one
    assert got["CC7.2"] == "satisfied"  # the anomalies were still detected and recorded
    assert got["SC-8"] == got["SC-13"] == got["AU-10"] == "satisfied"  # quotes and binding held
    assert "3 replies were released although" in reasons(warned)["SI-7"]
    assert "kernel_cmdline" in reasons(warned)["SI-7"]


def test_a_log_that_did_not_verify_flips_the_record_keeping_controls(trusted):
    broken = copy.deepcopy(trusted)
    broken["log"]["verification"]["intact"] = False
    got = statuses(broken)
    for control in ("AU-9", "CC7.2", "Art. 12", "Art. 19", "Art. 26(6)", "A.6.2.8"):
        assert got[control] == "not-satisfied", control
    for control in ("CC6.1", "CC6.7", "CC8.1", "SC-8", "SC-13", "SI-7"):  # its records prove nothing
        assert got[control] == "not-evidenced", control
    assert "cannot be relied on" in reasons(broken)["SC-13"]


def test_records_beyond_the_last_checkpoint_are_not_evidence_of_protection(trusted):
    late = copy.deepcopy(trusted)
    late["log"]["size"] = 6
    assert statuses(late)["AU-9"] == "not-evidenced"
    assert "records 4 to 5 lie beyond the last signed checkpoint" in reasons(late)["AU-9"]


def test_retention_needs_records_six_months_old_under_a_trusted_checkpoint(trusted):
    kept = copy.deepcopy(trusted)
    kept["by_day"] = {"2026-05-01": {"passed": 1}, **kept["by_day"]}
    assert statuses(kept)["Art. 19"] == statuses(kept)["Art. 26(6)"] == "satisfied"
    assert "records from 2026-05-01" in reasons(kept)["Art. 19"]
    kept["by_day"] = {"2026-06-01": {"passed": 1}, **trusted["by_day"]}  # 178 days: short of six months
    assert statuses(kept)["Art. 19"] == "not-evidenced"
    kept["by_day"]["2026-05-01"] = {"passed": 1}
    kept["log"]["verification"]["key"] = "log"
    assert statuses(kept)["Art. 19"] == "not-evidenced"


def test_a_released_reply_whose_evidence_failed_without_a_policy_flips_attestation(trusted):
    unverified = anchored(trusted)
    unverified["failures"].append(
        {
            "status": "failed",
            "outcome": "ok",
            "reason": "the evidence did not verify (pcr_digest)",
            "rules": [],
        }
    )
    got = statuses(unverified)
    assert got["SC-13"] == got["AU-10"] == got["CC6.1"] == "not-satisfied"
    assert got["AU-9"] == "satisfied"


def test_a_rule_that_did_not_judge_every_released_reply_is_not_evidence(trusted):
    partial = anchored(trusted)
    partial["rules"]["require_key_binding"] = {"pass": 2, "skip": 1}
    got = statuses(partial)
    assert got["SC-8"] == got["SC-13"] == got["CC6.7"] == "not-evidenced"
    assert "did not judge every one of the 3 released replies" in reasons(partial)["SC-8"]


EMPTY_LOG = {"size": 0, "root": "00" * 32, "checkpoint": None, "verification": {"intact": True, "key": "log"}}


def test_a_report_with_no_records_evidences_nothing_about_replies():
    empty = build_report([], generated_at="2026-11-26T00:00:00Z", log_state=EMPTY_LOG)
    got = statuses(empty)
    assert got["CC7.2"] == got["SC-13"] == got["Art. 12"] == "not-evidenced"
    assert "covers no records" in reasons(empty)["Art. 12"]


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        {"log": "x", "summary": [], "rules": 3, "failures": "many", "aiks": {}},
        {"by_day": {"not a day": 1}, "generated_at": 5, "period": None},
        {
            "log": {"verification": {"intact": True}, "size": -1, "checkpoint": "x"},
            "summary": {"requests": 1, "warned": True, "passed": "3"},
            "rules": {"ima": {"fail": 1, "pass": None}, "x": 2},
            "failures": [{"status": "warned", "rules": 7}, 3, {"status": "failed", "outcome": "ok"}],
            "aiks": 5,
            "aik_count": "1",
        },
    ],
)
def test_a_malformed_report_is_read_defensively(garbage):
    got = controls_evidenced(garbage)
    assert len(got) == len(load_mapping())
    assert {s.status for s in got} <= {"satisfied", "not-satisfied", "not-evidenced"}
    if not isinstance(garbage.get("log"), dict):  # no verified log: nothing is satisfied
        assert {s.status for s in got} <= {"not-satisfied", "not-evidenced"}


def test_every_reason_is_bounded(trusted):
    long = anchored(trusted)
    long["policy"]["name"] = "p" * 10_000
    long["period"]["since"] = "s" * 10_000
    assert all(len(s.reason) <= MAX_REASON for s in controls_evidenced(long))
