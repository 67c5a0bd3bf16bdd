"""EventLogWriter: what it writes parses back, replays to what it returned, and tpm2_eventlog reads it."""

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from nomyo_audit.errors import EventLogError
from nomyo_audit.eventlog import (
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    EventLogWriter,
    parse_event_log,
    replay_event_log,
)

FIXTURES = Path(__file__).parent / "fixtures" / "eventlogs"


def _extend(bank, value, digest):
    return hashlib.new(bank, value + digest).digest()


def test_round_trip_every_bank():
    writer = EventLogWriter()
    expected = {bank: bytes(hashlib.new(bank).digest_size) for bank in writer.banks}
    for data in (b"first", b"second"):
        digests = writer.add(23, EV_EVENT_TAG, data)
        assert digests == {bank: hashlib.new(bank, data).digest() for bank in writer.banks}
        expected = {bank: _extend(bank, expected[bank], digests[bank]) for bank in writer.banks}
    log = parse_event_log(writer.to_bytes())
    assert log.format == "crypto-agile"
    assert log.banks == ("sha1", "sha256", "sha384")
    assert [(e.number, e.pcr, e.type, e.data) for e in log.events[1:]] == [
        (1, 23, EV_EVENT_TAG, b"first"),
        (2, 23, EV_EVENT_TAG, b"second"),
    ]
    for bank in writer.banks:
        assert replay_event_log(log, bank) == {23: expected[bank]}
    assert log.sha256 == hashlib.sha256(writer.to_bytes()).digest()


def test_no_action_events_extend_nothing():
    writer = EventLogWriter(("sha256",))
    assert writer.add(0, EV_NO_ACTION, b"note") == {"sha256": bytes(32)}
    log = parse_event_log(writer.to_bytes())
    assert replay_event_log(log, "sha256") == {}


def test_append_to_a_firmware_log_keeps_its_header_and_banks():
    base = (FIXTURES / "sb_cert_eventlog").read_bytes()
    writer = EventLogWriter(("sha256",), base=base)
    assert writer.banks == ("sha1", "sha256", "sha384")
    writer.add(23, EV_SEPARATOR, b"\x00\x00\x00\x00")
    log = parse_event_log(writer.to_bytes())
    before = parse_event_log(base)
    assert log.events[: len(before.events)] == before.events
    assert replay_event_log(log, "sha256")[23] == _extend(
        "sha256", bytes(32), hashlib.sha256(bytes(4)).digest()
    )


def test_given_digests_must_cover_the_banks():
    writer = EventLogWriter(("sha1", "sha256"))
    with pytest.raises(ValueError):
        writer.add(23, EV_EVENT_TAG, b"x", {"sha256": bytes(32)})
    with pytest.raises(ValueError):
        writer.add(23, EV_EVENT_TAG, b"x", {"sha1": bytes(19), "sha256": bytes(32)})
    with pytest.raises(ValueError):
        EventLogWriter(())


def test_a_bank_we_cannot_write_is_refused():
    with pytest.raises(EventLogError) as caught:
        EventLogWriter(("md5",))
    assert caught.value.code == "eventlog_unknown_algorithm"


def test_tpm2_eventlog_replays_what_we_wrote(tmp_path):
    """An implementation we did not write reads our log and replays it to the same values."""
    from conftest import require

    require(shutil.which("tpm2_eventlog"), "tpm2_eventlog (tpm2-tools)")
    writer = EventLogWriter()
    writer.add(23, EV_EVENT_TAG, b"router")
    writer.add(23, EV_EVENT_TAG, b"model")
    path = tmp_path / "log.bin"
    path.write_bytes(writer.to_bytes())
    out = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, check=True).stdout
    log = parse_event_log(writer.to_bytes())
    for bank in writer.banks:
        assert f"23 : 0x{replay_event_log(log, bank)[23].hex()}" in out
