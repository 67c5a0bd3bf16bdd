"""Review of issue 14: names the router controls (IMA file paths) reach findings and the
``eventlog show`` output escaped: a path holding terminal escapes or a newline cannot rewrite the
auditor's screen or forge a line of output."""

from __future__ import annotations

import base64

import pytest
from test_verify_measured import NONCE, machine, verify

from nomyo_audit.cli._main import main

HOSTILE = "/usr/bin/\x1b]0;owned\x07\x1b[2J\nPASS fake"


def _attester_with_hostile_path():
    attester = machine("sha256:0,4,7,10,23")
    attester.measurements.extend_ima_file(HOSTILE, bytes(32))
    return attester


def test_an_ima_mismatch_names_the_entry_printably():
    block = _attester_with_hostile_path().evidence(NONCE)
    ima = bytearray(base64.b64decode(block["ima_log_b64"]))
    ima[-40] ^= 1  # inside the file digest of the hostile entry: it no longer replays
    verdict = verify({**block, "ima_log_b64": base64.b64encode(bytes(ima)).decode()})
    finding = verdict.finding("ima_log")
    assert finding.code == "ima_log_mismatch"
    assert "owned" in finding.detail and finding.detail.isprintable(), finding.detail


def test_eventlog_show_ima_prints_paths_escaped(tmp_path, capsys):
    block = _attester_with_hostile_path().evidence(NONCE)
    path = tmp_path / "ima.bin"
    path.write_bytes(base64.b64decode(block["ima_log_b64"]))
    assert main(["eventlog", "show", "--ima", str(path)]) == 0
    output = capsys.readouterr().out
    assert "owned" in output
    assert "\x1b" not in output and "\x07" not in output
    assert not any(line.startswith("PASS") for line in output.splitlines())


@pytest.mark.parametrize("command", ["show", "replay"])
def test_eventlog_refuses_a_file_that_never_ends(command, capsys):
    # /dev/zero reads as an endless SHA-1 format log of empty events: it must be refused, not replayed forever
    assert main(["eventlog", command, "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err
