"""The attester's logs: what it extends is in the TCG event log (and the IMA list) each quote carries.

Proved against code we did not write: swtpm holds the PCRs, tpm2_pcrread reads them, tpm2_eventlog
parses the router-written log and replays it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shutil
import subprocess
import threading

import pytest
from conftest import require

from nomyo_audit.attest import SoftwareTPM, Tpm2QuoteSource, TPMAttester
from nomyo_audit.attest._measured import MAX_IMA_LOG_BYTES, read_bounded_file
from nomyo_audit.errors import ConfigurationError
from nomyo_audit.eventlog import (
    EV_EVENT_TAG,
    EV_SEPARATOR,
    EventLogWriter,
    ImaLogWriter,
    match_event_log,
    match_ima_log,
    parse_event_log,
    parse_ima_log,
)
from nomyo_audit.router._attestation import device_attester
from nomyo_audit.router._serving_stack import measure_serving_stack
from nomyo_audit.tpm._structures import ALG

ALL_BANKS = (ALG.SHA1, ALG.SHA256, ALG.SHA384, ALG.SHA512)  # what swtpm allocates


def quoted(block):
    return {
        bank: {int(i): bytes.fromhex(v) for i, v in values.items()}
        for bank, values in block["pcr_values"].items()
    }


def event_log(block):
    return parse_event_log(base64.b64decode(block["event_log_b64"]))


def test_every_extend_is_logged_and_the_log_replays_to_the_quote_in_every_bank():
    attester = TPMAttester(SoftwareTPM(), "sha1:16,23+sha256:16,23+sha384:23")
    measured = attester.measurements
    measured.extend_event(16, EV_SEPARATOR, bytes(4))
    measured.extend_event(23, EV_EVENT_TAG, b"one")
    digests = {"sha1": bytes(20), "sha256": b"\x01" * 32, "sha384": b"\x02" * 48}
    assert measured.extend_event(23, EV_EVENT_TAG, b"an image", digests) == digests
    block = attester.evidence(b"n" * 32)
    match = match_event_log(event_log(block), quoted(block))
    assert match.ok and [(m.bank, m.pcr, m.total) for m in match.pcrs] == [
        ("sha1", 16, 1),
        ("sha1", 23, 2),
        ("sha256", 16, 1),
        ("sha256", 23, 2),
        ("sha384", 23, 2),
    ]


def test_no_extend_no_log_field_and_the_base64_is_made_once_per_change():
    attester = TPMAttester(SoftwareTPM(), "sha256:23")
    assert "event_log_b64" not in attester.evidence(b"n" * 32)
    attester.measurements.extend_event(23, EV_EVENT_TAG, b"one")
    first, second = attester.evidence(b"a" * 32), attester.evidence(b"b" * 32)
    assert first["event_log_b64"] is second["event_log_b64"]  # cached while the log is unchanged
    attester.measurements.extend_event(23, EV_EVENT_TAG, b"two")
    third = attester.evidence(b"c" * 32)
    assert len(event_log(third).events) == len(event_log(first).events) + 1
    assert "ima_log_b64" not in third


def test_a_quote_never_covers_an_extend_its_log_lacks():
    attester = TPMAttester(SoftwareTPM(), "sha256:23")
    blocks = []

    def extend():
        for i in range(60):
            attester.measurements.extend_event(23, EV_EVENT_TAG, b"%d" % i)

    def quote():
        for i in range(30):
            blocks.append(attester.evidence(bytes([i]) * 32))

    threads = [threading.Thread(target=extend), threading.Thread(target=quote)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for block in blocks:
        if "event_log_b64" in block:
            assert match_event_log(event_log(block), quoted(block)).ok
        else:
            assert block["pcr_values"]["sha256"]["23"] == "00" * 32


def test_reset_only_a_resettable_pcr_and_never_under_logged_events():
    attester = TPMAttester(SoftwareTPM(), "sha256:23")
    with pytest.raises(ConfigurationError, match="PCR 0 cannot be reset"):
        attester.measurements.reset(0)
    attester.source.extend("sha256", 23, b"someone else's extend")  # type: ignore[attr-defined]
    attester.measurements.reset(23)
    assert attester.evidence(b"n" * 32)["pcr_values"]["sha256"]["23"] == "00" * 32
    attester.measurements.extend_event(23, EV_EVENT_TAG, b"ours")
    with pytest.raises(ConfigurationError, match="holds logged events"):
        attester.measurements.reset(23)


def test_ima_entries_extend_pcr_10_and_the_list_replays_to_the_quote():
    attester = TPMAttester(SoftwareTPM(), "sha1:10+sha256:0,10")
    attester.measurements.extend_event(0, EV_SEPARATOR, bytes(4))
    attester.measurements.extend_ima_boot_aggregate()
    attester.measurements.extend_ima_file("/usr/bin/python3", hashlib.sha256(b"python").digest())
    block = attester.evidence(b"n" * 32)
    ima = parse_ima_log(base64.b64decode(block["ima_log_b64"]))
    assert [e.path for e in ima.entries] == ["boot_aggregate", "/usr/bin/python3"]
    assert match_ima_log(ima, quoted(block)).ok
    assert match_event_log(event_log(block), quoted(block)).ok


# -- a device TPM: the firmware's log and the kernel's IMA list, from files (securityfs in production)


def firmware_log_of(tpm: SoftwareTPM) -> bytes:
    """A firmware's log of two boot events, extended into ``tpm`` as firmware would."""
    writer = EventLogWriter(("sha1", "sha256"))
    for pcr in (0, 7):
        for bank, digest in writer.add(pcr, EV_SEPARATOR, bytes(4)).items():
            tpm.extend_digest(bank, pcr, digest)
    return writer.to_bytes()


def kernel_ima_list(files: int) -> bytes:
    writer = ImaLogWriter(("sha1", "sha256"))
    for i in range(files):
        writer.add_file(f"/usr/bin/tool{i}", hashlib.sha256(b"%d" % i).digest())
    return writer.to_bytes()


def test_a_device_attaches_the_firmware_log_with_the_routers_events_appended(tmp_path):
    tpm = SoftwareTPM(banks=(ALG.SHA1, ALG.SHA256))
    (tmp_path / "bios").write_bytes(firmware_log_of(tpm))
    attester = device_attester(tpm, "sha256:0,7,23", tmp_path / "bios", tmp_path / "absent")
    assert event_log(attester.evidence(b"n" * 32)).events[-1].pcr == 7  # the firmware's alone
    measure_serving_stack(attester)
    block = attester.evidence(b"n" * 32)
    log = event_log(block)
    assert [e.pcr for e in log.events[1:]] == [0, 7, 23, 23, 23] and log.banks == ("sha1", "sha256")
    assert match_event_log(log, quoted(block)).ok
    assert "ima_log_b64" not in block
    with pytest.raises(ConfigurationError, match="belongs to the kernel"):
        device_attester(tpm, "sha256:10", tmp_path / "bios", tmp_path / "bios").measurements.extend_ima_file(
            "/x", bytes(32)
        )


def test_a_device_attaches_the_kernels_ima_list_as_it_grows_and_never_one_over_the_cap(tmp_path, caplog):
    tpm = SoftwareTPM(banks=(ALG.SHA1, ALG.SHA256))
    ima = tmp_path / "binary_runtime_measurements"
    ima.write_bytes(kernel_ima_list(2))
    attester = device_attester(tpm, "sha256:10", tmp_path / "no-bios", ima)
    assert (
        parse_ima_log(base64.b64decode(attester.evidence(b"n" * 32)["ima_log_b64"])).entries[-1].number == 1
    )
    ima.write_bytes(kernel_ima_list(3))
    assert len(parse_ima_log(base64.b64decode(attester.evidence(b"n" * 32)["ima_log_b64"])).entries) == 3
    with ima.open("r+b") as stream:
        stream.truncate(MAX_IMA_LOG_BYTES + 1)
    with caplog.at_level(logging.WARNING, logger="nomyo_audit.router"):
        assert "ima_log_b64" not in attester.evidence(b"n" * 32)
        assert "ima_log_b64" not in attester.evidence(b"n" * 32)
    assert [r.getMessage() for r in caplog.records if "IMA" in r.getMessage()] == [
        f"the kernel's IMA list {ima} not attached: larger than {MAX_IMA_LOG_BYTES} bytes"
    ]  # once, not on every reply


def test_bounded_reads_say_why_a_file_is_not_attached(tmp_path, caplog):
    (tmp_path / "log").write_bytes(b"x" * 10)
    with caplog.at_level(logging.WARNING, logger="nomyo_audit.router"):
        assert read_bounded_file(tmp_path / "log", 10, "the log") == b"x" * 10
        assert read_bounded_file(tmp_path / "log", 9, "the log") is None
        assert read_bounded_file(tmp_path / "missing", 9, "the log") is None
    assert [r.getMessage().split(": ")[1] for r in caplog.records] == [
        "larger than 9 bytes",
        "No such file or directory",
    ]


def test_an_unreadable_firmware_log_is_left_out_and_the_routers_own_log_is_attached(tmp_path, caplog):
    (tmp_path / "bios").write_bytes(b"not a TCG event log at all")
    with caplog.at_level(logging.WARNING, logger="nomyo_audit.router"):
        attester = device_attester(SoftwareTPM(), "sha256:23", tmp_path / "bios", tmp_path / "absent")
    assert "the firmware event log is not attached" in caplog.text
    measure_serving_stack(attester)
    block = attester.evidence(b"n" * 32)
    assert [e.pcr for e in event_log(block).events[1:]] == [23, 23, 23]


# -- swtpm, tpm2_pcrread and tpm2_eventlog


@pytest.fixture
def swtpm_attester(swtpm):
    require(shutil.which("tpm2_eventlog") is not None, "tpm2_eventlog (tpm2-tools) is not installed")
    attester = TPMAttester(Tpm2QuoteSource(swtpm.spec), "sha256:23")
    yield attester, swtpm
    attester.close()


def tool_pcrs(text: str) -> dict[str, dict[int, str]]:
    """The ``bank: {index: hex}`` a tpm2-tools YAML output lists (tpm2_pcrread, tpm2_eventlog's pcrs:)."""
    banks: dict[str, dict[int, str]] = {}
    bank = None
    for line in text.splitlines():
        if m := re.fullmatch(r"\s*(sha1|sha256|sha384|sha512):\s*", line):
            bank = m.group(1)
        elif (m := re.fullmatch(r"\s*(\d+)\s*:\s*0x([0-9A-Fa-f]+)\s*", line)) and bank:
            banks.setdefault(bank, {})[int(m.group(1))] = m.group(2).lower()
    return banks


def test_swtpm_holds_what_the_routers_log_replays_to_and_tpm2_eventlog_agrees(swtpm_attester, tmp_path):
    attester, swtpm = swtpm_attester
    events = measure_serving_stack(attester)
    block = attester.evidence(b"n" * 32)
    log = event_log(block)
    assert log.banks == ("sha1", "sha256", "sha384", "sha512")  # every bank swtpm has
    assert match_event_log(log, quoted(block)).ok
    path = tmp_path / "log.bin"
    path.write_bytes(base64.b64decode(block["event_log_b64"]))
    read = subprocess.run(
        ["tpm2_pcrread", "-T", swtpm.spec, "sha1:23+sha256:23+sha384:23+sha512:23"],
        capture_output=True,
        text=True,
        check=True,
    )
    replayed = subprocess.run(["tpm2_eventlog", str(path)], capture_output=True, text=True, check=True)
    in_tpm = tool_pcrs(read.stdout)
    assert tool_pcrs(replayed.stdout.split("pcrs:")[1]) == in_tpm
    assert in_tpm["sha256"][23] == block["pcr_values"]["sha256"]["23"]
    assert replayed.stdout.count("EV_EVENT_TAG") == len(events) == 3

    # the software TPM writes the same log for the same events
    software = TPMAttester(SoftwareTPM(banks=ALL_BANKS), "sha256:23")
    measure_serving_stack(software)
    assert software.evidence(b"n" * 32)["event_log_b64"] == block["event_log_b64"]


def test_swtpm_refuses_to_reset_a_firmware_pcr(swtpm_attester):
    attester, _ = swtpm_attester
    with pytest.raises(ConfigurationError, match="refused to reset PCR 0"):
        attester.measurements.reset(0)
