"""The OSCAL builder on the edges a real log rarely shows: an empty log, hostile strings, odd times, controls
the period gave no evidence for, checks it does not know. Every document still validates against NIST's
schema. And the demo writes the OSCAL file, signed with the rest."""

from __future__ import annotations

import base64
import json
from typing import NamedTuple

from click.testing import CliRunner
from oscal_schema import schema_errors

from nomyo_audit.audit import build_report
from nomyo_audit.audit._controls import controls_evidenced
from nomyo_audit.audit._oscal import build_assessment_results
from nomyo_audit.cli import cli

EMPTY_LOG = {"size": 0, "root": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}


class Control(NamedTuple):  # the design's Control, without the catalog id (older mappings)
    framework: str
    control_id: str
    title: str
    checks: tuple[str, ...]
    rationale: str


class Judged(NamedTuple):
    control: Control
    status: str
    reason: str


def empty_report(**changes):
    return {**build_report([], generated_at="2026-11-25T12:00:00Z", log_state=EMPTY_LOG), **changes}


def test_an_empty_log_still_gives_a_valid_document():
    report = empty_report()
    document = build_assessment_results(report, controls_evidenced(report), catalog_uuid=None)
    assert schema_errors(document) == []
    (result,) = document["assessment-results"]["results"]
    assert result["start"] == result["end"] == "2026-11-25T12:00:00Z"  # no records: the generation time
    assert "risks" not in result


def test_hostile_strings_and_odd_times_stay_valid():
    report = empty_report(
        generated_at="2026-11-25t13:30:00.5+01:30",  # RFC 3339 allows it; OSCAL's pattern does not
        period={"since": "2026-11-01T00:00:00z", "until": "not a time"},
        by_router={" http://r\n.example ": 1},
        failures=[
            {
                "seq": 7,
                "payload_id": "",
                "status": "denied",
                "reason": "  \n ",
                "rules": [" \t"],
                "time": None,
            }
        ],
        rules={"ima": {"fail": 1}},
    )
    control = Control(
        "EU AI Act", "Art. 26(6)", "  Log retention ", ("record_retention", "no_such_check"), ""
    )
    judged = [Judged(control, "not-satisfied", "\n"), Judged(control._replace(control_id="Art. 19"), "x", "")]
    document = build_assessment_results(report, judged, catalog_uuid="6a0f3f57-3c1e-4c8e-9d55-1d6f1c9b2a10")
    assert schema_errors(document) == []
    metadata = document["assessment-results"]["metadata"]
    (result,) = document["assessment-results"]["results"]
    assert metadata["last-modified"] == "2026-11-25T12:00:00.5Z"  # in UTC
    assert result["start"] == "2026-11-01T00:00:00Z" and result["end"] == result["start"]
    (finding,) = result["findings"]  # the control with no OSCAL state gets none, and is named
    assert finding["target"]["target-id"] == "eu-ai-act_art.26-6"
    assert result["remarks"].endswith("EU AI Act Art. 19")
    unknown = next(o for o in result["observations"] if o["title"] == "Check no_such_check")
    assert unknown["relevant-evidence"][0]["href"] == "report.json#"
    (risk,) = result["risks"]
    assert [p["name"] for p in risk["props"]] == ["record-seq", "status"]  # empty values are left out


def test_the_demo_writes_the_oscal_file_signed(tmp_path):
    result = CliRunner().invoke(cli, ["demo", "--attester", "software", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "demo" / "report"
    document = json.loads((report / "report.oscal.json").read_text())
    assert schema_errors(document) == []
    assert len(document["assessment-results"]["results"][0]["risks"]) == 1  # the demo's denied reply
    envelope = json.loads((report / "report.dsse.json").read_text())
    assert "report.oscal.json" in {
        s["name"] for s in json.loads(base64.b64decode(envelope["payload"]))["subject"]
    }
