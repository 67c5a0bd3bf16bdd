"""Differential test: our parser and replay against tpm2_eventlog (tpm2-tools 5.4), on every real log.

tpm2_eventlog is an implementation we did not write (C, tss2-mu). For every fixture log we compare
event by event (number, PCR, type name, every digest) and PCR by PCR (its ``pcrs:`` section is its
replay). Where the two disagree, the test says which is right and why (docs/event-logs.md too):

* ``short_no_action_eventlog`` (49 bytes, a lone EV_NO_ACTION StartupLocality event in the SHA-1
  format): tpm2_eventlog refuses it ("invalid eventDataSize in specid event") because it takes every
  first EV_NO_ACTION for a Spec ID event. The PC Client profile allows other EV_NO_ACTION events
  (section 10.4.5, go-attestation TestParseShortNoAction); without a "Spec ID Event03" the log is in
  the SHA-1 format. We read one event, StartupLocality 3: we are right.
* ``option_rom_eventlog``: tpm2_eventlog 5.4 crashes (SIGSEGV) on it; go-attestation and we parse
  it (every event's digest count and sizes agree with its Spec ID header). We check our replay of
  it with an independent replay below instead.
* SHA-1 format logs (``ebs_event_missing_eventlog``, ``windows_gcp_shielded_vm_eventlog``):
  tpm2_eventlog prints their events without the ``- EventNum:`` list markers (invalid YAML: a
  mapping with repeated keys), so its output is read line by line here, not with a YAML parser.
"""

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require

from nomyo_audit.eventlog import EV_NO_ACTION, parse_event_log, replay_event_log

FIXTURES = Path(__file__).parent / "fixtures" / "eventlogs"
LOGS = sorted(path.name for path in FIXTURES.glob("*eventlog"))
TPM2_REFUSES = {"short_no_action_eventlog": 1, "option_rom_eventlog": -11}


def tpm2_eventlog(path):
    require(shutil.which("tpm2_eventlog") is not None, "tpm2_eventlog (tpm2-tools)")
    return subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, timeout=60)


def read_tpm2_output(text):
    """(events, pcrs) from tpm2_eventlog's output: events as [(pcr, type, {bank: hex})], pcrs as
    {bank: {index: hex}}. Line-based, because its SHA-1 format output is not valid YAML."""
    events, pcrs = [], {}
    current = None
    algorithm = None
    section = "events"
    bank = None
    for line in text.splitlines():
        if line == "pcrs:":
            section = "pcrs"
            continue
        if section == "pcrs":
            if m := re.fullmatch(r"  (\w+):", line):
                bank = m.group(1)
                pcrs[bank] = {}
            elif m := re.fullmatch(r"\s+(\d+)\s*: 0x([0-9a-fA-F]+)", line):
                pcrs[bank][int(m.group(1))] = m.group(2).lower()
            continue
        if m := re.fullmatch(r"(?:- EventNum: \d+|  PCRIndex: (\d+))", line):
            if m.group(1) is None or current is None or "pcr" in current:
                current = {"digests": {}}
                events.append(current)
            if m.group(1) is not None:
                current["pcr"] = int(m.group(1))
        elif m := re.fullmatch(r"  PCRIndex: (\d+)", line):
            current["pcr"] = int(m.group(1))
        elif m := re.fullmatch(r"  EventType: (\S+)", line):
            current["type"] = m.group(1)
        elif m := re.fullmatch(r'  Digest: "([0-9a-f]+)"', line):
            current["digests"]["sha1"] = m.group(1)
        elif m := re.fullmatch(r"  - AlgorithmId: (\w+)", line):
            algorithm = m.group(1)
        elif m := re.fullmatch(r'    Digest: "([0-9a-f]+)"', line):
            current["digests"][algorithm] = m.group(1)
    return [(e["pcr"], e["type"], e["digests"]) for e in events], pcrs


@pytest.mark.parametrize("name", sorted(set(LOGS) - set(TPM2_REFUSES)))
def test_events_and_replay_match_tpm2_eventlog(name):
    path = FIXTURES / name
    result = tpm2_eventlog(path)
    assert result.returncode == 0, result.stderr
    events, pcrs = read_tpm2_output(result.stdout)
    log = parse_event_log(path.read_bytes())
    assert len(events) == len(log.events) > 1
    for theirs, ours in zip(events, log.events, strict=True):
        digests = {bank: value.hex() for bank, value in ours.digests.items()}
        assert theirs == (ours.pcr, ours.type_name, digests), f"event {ours.number}"
    assert set(pcrs) == set(log.banks)
    for bank in log.banks:
        assert {pcr: value.hex() for pcr, value in replay_event_log(log, bank).items()} == pcrs[bank], bank


@pytest.mark.parametrize("name", sorted(TPM2_REFUSES))
def test_logs_tpm2_eventlog_cannot_read_and_we_can(name):
    """The disagreements of the module docstring: tpm2_eventlog fails, we parse (and are right)."""
    result = tpm2_eventlog(FIXTURES / name)
    assert result.returncode == TPM2_REFUSES[name]
    log = parse_event_log((FIXTURES / name).read_bytes())
    assert log.events


def test_short_no_action_log_is_a_sha1_log_with_a_startup_locality():
    log = parse_event_log((FIXTURES / "short_no_action_eventlog").read_bytes())
    assert log.format == "sha1"
    assert [(e.pcr, e.type, e.data) for e in log.events] == [(0, EV_NO_ACTION, b"StartupLocality\x00\x03")]
    assert log.startup_locality == 3
    assert replay_event_log(log, "sha1") == {}


def test_option_rom_log_replays_like_an_independent_replay():
    """tpm2_eventlog cannot check this one, so replay it here with hashlib, straight from the events."""
    log = parse_event_log((FIXTURES / "option_rom_eventlog").read_bytes())
    assert len(log.events) > 50
    for bank in log.banks:
        expected = {}
        for event in log.events:
            if event.type != EV_NO_ACTION:
                start = expected.get(event.pcr, bytes(hashlib.new(bank).digest_size))
                expected[event.pcr] = hashlib.new(bank, start + event.digests[bank]).digest()
        assert replay_event_log(log, bank) == expected
