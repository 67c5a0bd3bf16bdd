"""Review R3: an extend the TPM refuses half-way must not leave a PCR the log cannot explain."""

from __future__ import annotations

import base64

import pytest

from nomyo_audit.attest import SoftwareTPM, TPMAttester
from nomyo_audit.errors import ConfigurationError
from nomyo_audit.eventlog import EV_EVENT_TAG, match_event_log, parse_event_log


def test_a_digest_of_the_wrong_size_extends_no_bank_and_later_quotes_still_match():
    attester = TPMAttester(SoftwareTPM(), "sha1:23+sha256:23+sha384:23")
    measured = attester.measurements
    measured.extend_event(23, EV_EVENT_TAG, b"one")
    # sha1 comes first and is computed; the sha256 digest given is short: before the fix the sha1
    # bank was extended, then the software TPM refused sha256, and the log never got the event
    with pytest.raises(ConfigurationError, match="sha256"):
        measured.extend_event(23, EV_EVENT_TAG, b"image", {"sha256": b"short"})
    block = attester.evidence(b"n" * 32)
    log = parse_event_log(base64.b64decode(block["event_log_b64"]))
    quoted = {b: {int(i): bytes.fromhex(v) for i, v in vs.items()} for b, vs in block["pcr_values"].items()}
    assert match_event_log(log, quoted).ok


def test_a_firmware_log_with_an_sm3_bank_takes_the_routers_events():
    # a firmware log may declare sm3_256 (hashlib calls it "sm3"): the router's events get their sm3
    # digests in the log (this TPM has no sm3 bank to extend); before the fix serve crashed at start
    # with "unsupported hash type sm3_256"
    from nomyo_audit.eventlog import EV_SEPARATOR, EventLogWriter
    from nomyo_audit.router._serving_stack import measure_serving_stack

    firmware = EventLogWriter(("sha256", "sm3_256"))
    firmware.add(0, EV_SEPARATOR, bytes(4))
    attester = TPMAttester(SoftwareTPM(), "sha256:23", firmware_log=firmware.to_bytes())
    measure_serving_stack(attester)
    block = attester.evidence(b"n" * 32)
    log = parse_event_log(base64.b64decode(block["event_log_b64"]))
    assert log.banks == ("sha256", "sm3_256") and len(log.events) == 5
    quoted = {b: {int(i): bytes.fromhex(v) for i, v in vs.items()} for b, vs in block["pcr_values"].items()}
    assert match_event_log(log, quoted).ok
