"""The HTML and Markdown reports carry a "Controls evidenced" section from the shipped mapping, say
it is the project's mapping and not an auditor's opinion, and are signed with it."""

from __future__ import annotations

import copy
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from nomyo_audit.audit import (
    EnvelopeError,
    load_private_key,
    load_public_key,
    verify_report_dir,
    write_report,
)
from nomyo_audit.audit._controls import controls_evidenced, load_mapping
from nomyo_audit.cli import cli

DISCLAIMER = (
    "the nomyo-audit project's own mapping of its checks to framework controls, not an auditor's opinion"
)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's own signed report directory (html, md, json, ... and report.dsse.json)."""
    directory = tmp_path_factory.mktemp("controls-render") / "demo"
    result = CliRunner().invoke(cli, ["demo", "--attester", "software", "--dir", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


class Rows(HTMLParser):
    """The cells of the table that follows the "Controls evidenced" heading."""

    def __init__(self) -> None:
        super().__init__()
        self.in_section = self.in_cell = False
        self.rows: list[list[str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self.in_section = ("id", "controls") in attrs
        elif self.in_section and tag == "tr":
            self.rows.append([])
        elif self.in_section and tag == "td":
            self.in_cell = True
            self.rows[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self.in_cell = self.in_cell and tag != "td"

    def handle_data(self, data: str) -> None:
        if self.in_cell:
            self.rows[-1][-1] += data


def test_the_html_report_lists_every_control_with_its_status_and_reason(signed):
    report = json.loads((signed / "report" / "report.json").read_text())
    parser = Rows()
    parser.feed((signed / "report" / "report.html").read_text())
    rows = [r for r in parser.rows if r]
    expected = controls_evidenced(report)
    assert len(rows) == len(load_mapping()) == len(expected)
    for row, status in zip(rows, expected, strict=True):
        assert row[0] == status.control.framework
        assert row[1] == f"{status.control.control_id} {status.control.title}"
        assert row[2] == status.status.replace("-", " ")
        assert row[4] == status.reason
    assert DISCLAIMER in (signed / "report" / "report.html").read_text()


def test_the_markdown_report_has_the_section_as_a_table(signed):
    markdown = (signed / "report" / "report.md").read_text()
    section = markdown.split("## Controls evidenced\n", 1)[1].split("\n## ", 1)[0]
    assert DISCLAIMER in section
    lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(lines) == 1 + len(load_mapping())  # the header and one row per control
    assert "| SOC 2 | CC7.2 Monitoring system components for anomalies | satisfied |" in section
    assert "| NIST SP 800-53 | AU-9 Protection of Audit Information | not evidenced |" in section


def test_the_section_is_signed_with_the_report(signed):
    report = signed / "report"
    public = load_public_key(str(signed / "audit.key.pub"))
    verify_report_dir(report, public)
    html = report / "report.html"
    original = html.read_text()
    html.write_text(original.replace(">not evidenced<", ">satisfied<", 1))
    try:
        with pytest.raises(EnvelopeError, match=r"report\.html: modified after it was signed"):
            verify_report_dir(report, public)
    finally:
        html.write_text(original)


def test_report_fields_quoted_in_a_reason_cannot_break_the_markdown_or_html(signed, tmp_path):
    report = json.loads((signed / "report" / "report.json").read_text())
    hostile = copy.deepcopy(report)
    hostile["period"]["since"] = "x | y\n## Forged heading <script>alert(1)</script>\x1b[2J"
    files = write_report(hostile, ["html", "md"], tmp_path, load_private_key(str(signed / "audit.key")))
    section = files["report.md"].read_text().split("## Controls evidenced\n", 1)[1].split("\n## ", 1)[0]
    assert "Forged heading" in section  # quoted, but on its table row, as text
    assert "\n## Forged" not in section and "<script>" not in section and "\x1b" not in section
    row = next(line for line in section.splitlines() if "Art. 12" in line)
    assert row.count(" | ") == 4 and "x \\| y" in row  # five cells: the quoted bar is escaped
    assert "<script>alert" not in files["report.html"].read_text()
