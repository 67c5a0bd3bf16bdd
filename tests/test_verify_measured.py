"""verify_attestation and the logs a reply carries: the event_log and ima_log checks, their facts.

Evidence comes from the software TPM through the router's own measuring API
(TPMAttester.measurements: it extends each event into the TPM and logs it), so the logs and the
quote agree the way a router's do. Every tampering with a log is then made on those bytes: each
gives its own finding, never a pass, and nothing the quote does not prove becomes a fact.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import struct
import threading
import tracemalloc
import uuid

import pytest

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.eventlog import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_EVENT_TAG,
    EV_S_CRTM_VERSION,
    EV_SEPARATOR,
    MAX_EVENT_LOG_BYTES,
    MAX_IMA_LOG_BYTES,
    EventLogWriter,
    parse_event_log,
    serving_stack_event,
)
from nomyo_audit.tpm import Measurements, verify_attestation

NONCE = b"measured-boot-test-nonce"
EFI_GLOBAL = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
ROUTER = {"name": "nomyo-audit", "version": "0.9.0", "code_sha256": "ab" * 32}
MODEL = {"name": "echo", "source": "echo", "weights_sha256": None, "upstream_identity": None}


def variable(name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA of an EFI global variable, as EV_EFI_VARIABLE_DRIVER_CONFIG carries it."""
    encoded = name.encode("utf-16-le")
    return EFI_GLOBAL.bytes_le + struct.pack("<QQ", len(name), len(value)) + encoded + value


def boot(attester: TPMAttester, *, secure_boot: int = 1, serving_pcr: int = 23) -> None:
    """A small measured boot: firmware (PCR 0), secure boot (PCR 7), a boot loader (PCR 4), then
    the router's serving stack (PCR 23, reset first as the router does)."""
    log = attester.measurements
    blob = {bank: hashlib.new(bank, b"firmware volume").digest() for bank in ("sha1", "sha256", "sha384")}
    image = {bank: hashlib.new(bank, b"shimx64.efi").digest() for bank in ("sha1", "sha256", "sha384")}
    log.extend_event(0, EV_S_CRTM_VERSION, "1.0".encode("utf-16-le") + b"\0\0")
    log.extend_event(0, EV_EFI_PLATFORM_FIRMWARE_BLOB, struct.pack("<QQ", 0xFF000000, 0x100000), blob)
    log.extend_event(7, EV_EFI_VARIABLE_DRIVER_CONFIG, variable("SecureBoot", bytes([secure_boot])))
    for pcr in (0, 4, 7):
        log.extend_event(pcr, EV_SEPARATOR, bytes(4))
    log.extend_event(4, EV_EFI_BOOT_SERVICES_APPLICATION, struct.pack("<QQQQ", 0, 0, 0, 0), image)
    if serving_pcr in (16, 23):
        log.reset(serving_pcr)
    log.extend_event(serving_pcr, EV_EVENT_TAG, serving_stack_event("router", ROUTER))
    log.extend_event(serving_pcr, EV_EVENT_TAG, serving_stack_event("model", MODEL))


def machine(banks: str = "sha256:0,4,7,23", **kwargs) -> TPMAttester:
    attester = TPMAttester(SoftwareTPM(), banks)
    boot(attester, **kwargs)
    return attester


@pytest.fixture(scope="module")
def attester() -> TPMAttester:
    return machine()


@pytest.fixture(scope="module")
def block(attester) -> dict:
    return attester.evidence(NONCE)


def verify(block: dict):
    return verify_attestation(block, None, expected_nonce=NONCE)


def log_of(block: dict) -> bytes:
    return base64.b64decode(block["event_log_b64"])


def with_log(block: dict, log: bytes | str) -> dict:
    changed = dict(block)
    changed["event_log_b64"] = log if isinstance(log, str) else base64.b64encode(log).decode()
    return changed


def rewrite(log: bytes, change) -> bytes:
    """The log with its events (header excluded) passed through ``change``, written back."""
    parsed = parse_event_log(log)
    events = change([e for e in parsed.events if e.number > 0])
    writer = EventLogWriter(parsed.banks)
    for event in events:
        writer.add(event.pcr, event.type, event.data, dict(event.digests))
    return writer.to_bytes()


def finding(verdict, check: str = "event_log") -> tuple[str, str]:
    f = verdict.finding(check)
    return f.status, f.code


# -- the good case -------------------------------------------------------------------------------


def test_a_reply_with_its_log_passes_with_facts_from_proven_events(block):
    verdict = verify(block)
    assert verdict.passed, verdict.failures
    assert finding(verdict) == ("pass", "event_log_matches")
    assert finding(verdict, "ima_log") == ("skip", "no_ima_log")
    boot_facts = verdict.facts["measured_boot"]
    assert boot_facts["secure_boot"] == "enabled"
    assert boot_facts["log_sha256"] == hashlib.sha256(log_of(block)).hexdigest()
    stack = verdict.facts["serving_stack"]
    assert stack["router"] == ROUTER
    assert stack["models"]["echo"]["source"] == "echo"
    assert isinstance(verdict.measurements, Measurements)
    proven = verdict.measurements.proven_events()
    assert {e.pcr for e in proven} == {0, 4, 7, 23}
    assert "measurements" not in verdict.to_dict()
    assert verdict.to_dict()["facts"]["serving_stack"]["router"] == ROUTER


def test_the_checks_sit_right_after_pcr_digest(block):
    checks = [f.check for f in verify(block).findings]
    at = checks.index("pcr_digest")
    assert checks[at + 1 : at + 3] == ["event_log", "ima_log"]


def test_secure_boot_disabled_is_reported_as_disabled():
    verdict = verify(machine(secure_boot=0).evidence(NONCE))
    assert verdict.passed and verdict.facts["measured_boot"]["secure_boot"] == "disabled"


def test_a_reply_without_logs_has_two_skips_and_no_measurements():
    verdict = verify(TPMAttester(SoftwareTPM(), "sha256:0,7").evidence(NONCE))
    assert verdict.passed
    assert finding(verdict) == ("skip", "no_event_log")
    assert finding(verdict, "ima_log") == ("skip", "no_ima_log")
    assert verdict.measurements is None
    assert not {"measured_boot", "serving_stack", "ima"} & set(verdict.facts)


# -- tampering with the log: each its own finding, never a pass ------------------------------------


def _flip_digest(events):
    target = next(e for e in events if e.type == EV_EFI_BOOT_SERVICES_APPLICATION)
    digests = {bank: bytes([d[0] ^ 1]) + d[1:] for bank, d in target.digests.items()}
    return [dataclasses.replace(e, digests=digests) if e is target else e for e in events]


def _drop(events):
    return [e for e in events if e.type != EV_EFI_VARIABLE_DRIVER_CONFIG]


def _reorder(events):
    pcr0 = [i for i, e in enumerate(events) if e.pcr == 0]
    swapped = list(events)
    swapped[pcr0[0]], swapped[pcr0[1]] = events[pcr0[1]], events[pcr0[0]]
    return swapped


def _append(events):
    extra = dataclasses.replace(events[-1], data=serving_stack_event("model", {**MODEL, "name": "other"}))
    digests = {bank: hashlib.new(bank, extra.data).digest() for bank in extra.digests}
    return [*events, dataclasses.replace(extra, digests=digests)]


@pytest.mark.parametrize(
    ("change", "pcr", "first"),
    [
        (_flip_digest, 4, "EV_SEPARATOR"),  # no prefix of PCR 4 replays: its first event is named
        (_drop, 7, "EV_SEPARATOR"),  # PCR 7's first event is now its separator
        (_reorder, 0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
        (_append, 23, "EV_EVENT_TAG"),  # replays to a value the quote never had: not proven
    ],
    ids=["digest", "dropped", "reordered", "appended"],
)
def test_a_tampered_log_fails_and_names_where_it_diverges(block, change, pcr, first):
    verdict = verify(with_log(block, rewrite(log_of(block), change)))
    status, code = finding(verdict)
    assert (status, code) == ("fail", "event_log_mismatch")
    detail = verdict.finding("event_log").detail
    assert f"sha256 PCR {pcr}:" in detail and first in detail
    assert "but the quote has" in detail
    assert not {"measured_boot", "serving_stack"} & set(verdict.facts)
    assert not verdict.passed


def test_an_appended_event_is_named_by_its_number(block):
    log = rewrite(log_of(block), _append)
    last = parse_event_log(log).events[-1].number
    verdict = verify(with_log(block, log))
    assert f"first divergent: event {last} (EV_EVENT_TAG)" in verdict.finding("event_log").detail
    assert "(2 of 3 events proven)" in verdict.finding("event_log").detail


def test_a_log_for_another_bank_only_proves_nothing(block):
    other = EventLogWriter(("sha1",))
    for event in parse_event_log(log_of(block)).events[1:]:
        other.add(event.pcr, event.type, event.data)
    verdict = verify(with_log(block, other.to_bytes()))
    assert finding(verdict) == ("skip", "event_log_unquoted")
    assert "sha1" in verdict.finding("event_log").detail
    assert not {"measured_boot", "serving_stack"} & set(verdict.facts)
    assert verdict.measurements.proven_events() == ()


def test_a_log_of_unquoted_pcrs_only_proves_nothing():
    attester = TPMAttester(SoftwareTPM(), "sha256:0,7")
    attester.measurements.extend_event(14, EV_EVENT_TAG, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    verdict = verify(attester.evidence(NONCE))
    assert finding(verdict) == ("skip", "event_log_unquoted")
    assert "PCRs 14" in verdict.finding("event_log").detail


def test_an_event_for_an_unquoted_pcr_never_becomes_a_fact():
    """PCR 23 and PCR 7 are not quoted: the serving stack and secure boot stay unproven, though the
    log's PCR 0 and 4 events match."""
    verdict = verify(machine("sha256:0,4").evidence(NONCE))
    assert finding(verdict) == ("pass", "event_log_matches")
    assert "unquoted" not in verdict.finding("event_log").code
    assert "PCRs 7,23 are not quoted" in verdict.finding("event_log").detail
    assert "serving_stack" not in verdict.facts
    assert verdict.facts["measured_boot"].get("secure_boot") is None
    assert {e.pcr for e in verdict.measurements.proven_events()} == {0, 4}


def test_pcr_values_the_quote_does_not_cover_are_never_used(block):
    """A router adding its own PCR 23 value to pcr_values does not get its log believed."""
    forged = dict(block)
    forged["pcr_banks"] = "sha256:0,4,7"  # what the quote covers is not this
    verdict = verify(forged)
    assert finding(verdict) == ("skip", "not_reached") and "serving_stack" not in verdict.facts
    forged = dict(block, pcr_values={"sha256": {**block["pcr_values"]["sha256"], "16": "00" * 32}})
    verdict = verify(forged)
    assert verdict.finding("pcr_digest").status == "fail"
    assert finding(verdict) == ("skip", "not_reached") and verdict.measurements is None


def test_a_forged_quote_never_gets_its_log_read(block):
    forged = dict(block, signature_b64=base64.b64encode(b"\x00" * 8).decode())
    verdict = verify(forged)
    assert finding(verdict)[0] == "skip" and verdict.measurements is None
    assert "measured_boot" not in verdict.facts


def test_a_truncated_log_fails_with_the_parser_code(block):
    verdict = verify(with_log(block, log_of(block)[:-7]))
    assert finding(verdict) == ("fail", "eventlog_truncated")


@pytest.mark.parametrize("value", ["%%% not base64 %%%", "QUJ", "QU JD", 17, ["a"]])
def test_garbage_base64_fails(block, value):
    verdict = verify(with_log(block, value) if isinstance(value, str) else dict(block, event_log_b64=value))
    assert finding(verdict) == ("fail", "bad_base64")
    assert verdict.measurements.event_log is None


def test_an_over_cap_field_fails_before_it_is_decoded(block):
    huge = "A" * (4 * (MAX_EVENT_LOG_BYTES // 3) + 8)
    tracemalloc.start()
    try:
        verdict = verify(with_log(block, huge))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert finding(verdict) == ("fail", "eventlog_too_large")
    assert peak < 512 * 1024  # decoding it would have taken MAX_EVENT_LOG_BYTES
    verdict = verify(dict(block, ima_log_b64="A" * (4 * (MAX_IMA_LOG_BYTES // 3) + 8)))
    assert finding(verdict, "ima_log") == ("fail", "ima_too_large")
    assert finding(verdict) == ("pass", "event_log_matches")


# -- the cache -------------------------------------------------------------------------------------


def test_each_verdict_owns_its_facts(block):
    first, second = verify(block), verify(block)
    assert first.facts["measured_boot"] == second.facts["measured_boot"]
    first.facts["measured_boot"]["deny_candidates"].append("x")
    first.facts["serving_stack"]["router"]["version"] = "changed"
    third = verify(block)
    assert "x" not in third.facts["measured_boot"]["deny_candidates"]
    assert third.facts["serving_stack"]["router"] == ROUTER


def test_the_same_log_against_other_quoted_values_is_appraised_again(attester, block):
    """The cache keys on the quoted values too: the log of one quote is not a pass for another."""
    other = machine()  # another machine: the same events, another AIK, the same PCR values
    assert verify(with_log(other.evidence(NONCE), block["event_log_b64"])).passed
    extended = machine()
    extended.measurements.extend_event(23, EV_EVENT_TAG, serving_stack_event("model", {**MODEL, "name": "b"}))
    verdict = verify(with_log(extended.evidence(NONCE), block["event_log_b64"]))
    assert finding(verdict) == ("fail", "event_log_mismatch")
    assert verify(block).passed


def test_verification_is_thread_safe(block, attester):
    blocks = [block, machine(secure_boot=0).evidence(NONCE)]
    results: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        for j in range(20):
            verdict = verify(blocks[(i + j) % 2])
            with lock:
                results.append((verdict.result, verdict.facts["measured_boot"]["secure_boot"]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(results)) == [("pass", "disabled"), ("pass", "enabled")]
    assert len(results) == 80


def test_mutated_logs_never_raise_and_never_prove_other_events(block):
    """A seeded fuzz loop through verify_attestation: flipped bytes, cuts and splices of the log.
    Nothing raises; a log that still passes proves exactly the original's (pcr, digest) sequence."""
    import random

    original = log_of(block)
    good = [(e.pcr, e.digests["sha256"]) for e in verify(block).measurements.proven_events()]
    rng = random.Random(14)
    for _ in range(300):
        data = bytearray(original)
        action = rng.randrange(3)
        if action == 0:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif action == 1:
            del data[rng.randrange(len(data)) :]
        else:
            at = rng.randrange(len(data))
            data[at:at] = data[rng.randrange(len(data)) :][: rng.randrange(1, 64)]
        verdict = verify(with_log(block, bytes(data)))
        status, code = finding(verdict)
        if status == "pass":
            assert [(e.pcr, e.digests["sha256"]) for e in verdict.measurements.proven_events()] == good
        else:
            assert code != "event_log_matches" and "measured_boot" not in verdict.facts


# -- a real TPM (swtpm) extends, tpm2-pytss quotes ---------------------------------------------------


@pytest.fixture(scope="module")
def own_swtpm():
    """A swtpm of this module's own: the boot below extends PCRs 0, 4 and 7, which the session's
    shared swtpm must keep as the demo's golden values."""
    import shutil

    from conftest import require

    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    try:
        import tpm2_pytss  # noqa: F401

        pytss = True
    except ImportError:
        pytss = False
    require(swtpm_available() and shutil.which("swtpm_setup") is not None, "swtpm is not installed")
    require(pytss, "tpm2-pytss (the 'tpm' extra) is not installed")
    with SwtpmProcess() as process:
        yield process


@pytest.mark.parametrize("aik", ["rsa2048-rsassa", "ecc256-ecdsa"])
def test_swtpm_extends_and_quotes_what_the_log_says(own_swtpm, aik):
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource

    source = Tpm2QuoteSource(own_swtpm.spec, aik)
    try:
        attester = TPMAttester(source, "sha1:0,4,7,23+sha256:0,4,7,23")
        if aik == "rsa2048-rsassa":
            boot(attester)
        else:  # the same TPM: PCRs 0, 4, 7 may hold the other case's boot, which this log does not
            # extend (not a failure: a PCR the log leaves alone proves nothing either way)
            attester.measurements.reset(23)
            attester.measurements.extend_event(23, EV_EVENT_TAG, serving_stack_event("router", ROUTER))
        block = attester.evidence(NONCE)
    finally:
        source.close()
    verdict = verify(block)
    assert verdict.passed, verdict.failures
    assert finding(verdict) == ("pass", "event_log_matches")
    assert {m.bank for m in verdict.measurements.event_log_match.pcrs} == {"sha1", "sha256"}
    assert verdict.facts["serving_stack"]["router"] == ROUTER
    tampered = verify(with_log(block, rewrite(log_of(block), _append)))
    assert finding(tampered) == ("fail", "event_log_mismatch")
