"""`nomyo-audit log show` prints what a record's writer chose (labels, model, outcome, payload id,
router): text that is not printable is printed escaped, so an escape sequence a writer put into a
record (AuditLog.append takes any bytes) never reaches the terminal, and a line break never starts
a line that reads as another record."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_fleet_report_labels import COMMON

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._records import build_record
from nomyo_audit.cli import cli

HOSTILE = ["\x1b]0;owned\x07", "\x1b[2J", "bill\u200bing", "\u202egnillib", "a\n       9  forged", "a\x00b"]


def _log_with(tmp_path, **fields):
    log_path = tmp_path / "audit.db"
    with AuditLog(log_path) as log:

        def build(seq, salt):  # the writer's own bytes: no label checks
            doc = {**json.loads(build_record(**{**COMMON, "seq": seq, "payload_id": "p0"})), **fields}
            return json.dumps(doc, separators=(",", ":")).encode()

        log.append("p0", build)
    return log_path


@pytest.mark.parametrize("text", HOSTILE)
def test_text_a_writer_chose_is_printed_escaped(tmp_path, text):
    log_path = _log_with(tmp_path, service=text, tenant=text, model=text, router="https://r.example/" + text)
    shown = CliRunner().invoke(cli, ["log", "show", "--log", str(log_path)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("\n") == 1  # one record, one line
    line = shown.output.rstrip("\n")
    assert line.isprintable(), line
    assert f"service={text!r}" in line and f"tenant={text!r}" in line and f"model={text!r}" in line


def test_printable_text_is_printed_as_it_is(tmp_path):
    log_path = _log_with(tmp_path, service="billing", tenant="acme caf\u00e9")
    shown = CliRunner().invoke(cli, ["log", "show", "--log", str(log_path)])
    assert shown.exit_code == 0, shown.output
    assert "model=echo service=billing tenant=acme caf\u00e9" in shown.output


def test_the_json_format_is_escaped_by_json(tmp_path):
    log_path = _log_with(tmp_path, service="\x1b[2J")
    shown = CliRunner().invoke(cli, ["log", "show", "--log", str(log_path), "--format", "json"])
    assert shown.exit_code == 0 and "\x1b" not in shown.output
    assert json.loads(shown.output)["service"] == "\x1b[2J"
