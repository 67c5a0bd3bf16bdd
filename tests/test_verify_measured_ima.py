"""verify_attestation and an IMA measurement list: the ima_log check and the ``ima`` fact.

The software TPM measures an IMA list through the router's measuring API (a boot aggregate, then
files, each extended into PCR 10). A list read after the quote may go on past it: those entries
pass unproven. A changed or dropped entry, a list of an unquoted PCR, a truncated list each get
their own finding, never a pass.
"""

from __future__ import annotations

import base64
import hashlib

import pytest

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.eventlog import parse_ima_log
from nomyo_audit.tpm import verify_attestation

NONCE = b"ima-test-nonce"
FILES = [f"/usr/bin/tool{n}" for n in range(5)]


def measured(banks: str = "sha256:0,7,10") -> TPMAttester:
    attester = TPMAttester(SoftwareTPM(), banks)
    attester.measurements.extend_ima_boot_aggregate()
    for path in FILES:
        attester.measurements.extend_ima_file(path, hashlib.sha256(path.encode()).digest())
    return attester


@pytest.fixture(scope="module")
def attester() -> TPMAttester:
    return measured()


@pytest.fixture(scope="module")
def block(attester) -> dict:
    return attester.evidence(NONCE)


def verify(block: dict):
    return verify_attestation(block, None, expected_nonce=NONCE)


def ima_bytes(block: dict) -> bytes:
    return base64.b64decode(block["ima_log_b64"])


def with_ima(block: dict, data: bytes) -> dict:
    return dict(block, ima_log_b64=base64.b64encode(data).decode())


def entry_spans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each entry of a binary list: PCR, SHA-1 template hash, name, data."""
    spans, at = [], 0
    for entry in parse_ima_log(data, "binary").entries:
        end = at + 4 + 20 + 4 + len(entry.template_name) + 4 + len(entry.template_data)
        spans.append((at, end))
        at = end
    assert at == len(data)
    return spans


def finding(verdict) -> tuple[str, str]:
    f = verdict.finding("ima_log")
    return f.status, f.code


def test_an_ima_list_the_quote_proves_passes(block):
    verdict = verify(block)
    assert verdict.passed, verdict.failures
    assert finding(verdict) == ("pass", "ima_log_matches")
    assert verdict.finding("event_log").code == "no_event_log"
    ima = verdict.facts["ima"]
    assert (ima["entries"], ima["proven"]) == (len(FILES) + 1, len(FILES) + 1)
    assert ima["log_sha256"] == hashlib.sha256(ima_bytes(block)).hexdigest()
    paths = [e.path for e in verdict.measurements.proven_ima_entries()]
    assert paths == ["boot_aggregate", *FILES]


def test_entries_added_after_the_quote_pass_unproven(attester):
    before = attester.evidence(NONCE)
    later = measured()  # the same list, then one more file: as if read after the quote
    later.measurements.extend_ima_file("/tmp/loaded-after", bytes(32))
    grown = with_ima(before, ima_bytes(later.evidence(NONCE)))
    verdict = verify(grown)
    assert finding(verdict) == ("pass", "ima_log_matches")
    ima = verdict.facts["ima"]
    assert (ima["entries"], ima["proven"]) == (len(FILES) + 2, len(FILES) + 1)
    assert "/tmp/loaded-after" not in [e.path for e in verdict.measurements.proven_ima_entries()]


def test_a_changed_entry_fails(block):
    data = bytearray(ima_bytes(block))
    at = data.index(hashlib.sha256(FILES[2].encode()).digest())  # entry 3's file digest
    assert entry_spans(bytes(data))[3][0] < at < entry_spans(bytes(data))[3][1]
    data[at] ^= 0x01
    verdict = verify(with_ima(block, bytes(data)))
    assert finding(verdict) == ("fail", "ima_log_mismatch")
    detail = verdict.finding("ima_log").detail
    assert "PCR 10:" in detail and "first divergent: entry 0 (boot_aggregate)" in detail
    assert "ima" not in verdict.facts and not verdict.passed


def test_a_dropped_entry_fails(block):
    data = ima_bytes(block)
    start, end = entry_spans(data)[2]
    verdict = verify(with_ima(block, data[:start] + data[end:]))
    assert finding(verdict) == ("fail", "ima_log_mismatch")


def test_a_list_of_an_unquoted_pcr_proves_nothing():
    verdict = verify(measured("sha256:0,7").evidence(NONCE))
    assert finding(verdict) == ("skip", "ima_log_unquoted")
    assert "PCRs 10" in verdict.finding("ima_log").detail
    assert "ima" not in verdict.facts
    assert verdict.measurements.proven_ima_entries() == ()


def test_a_truncated_list_fails_with_the_parser_code(block):
    verdict = verify(with_ima(block, ima_bytes(block)[:-3]))
    status, code = finding(verdict)
    assert status == "fail" and code.startswith("ima_") and code != "ima_log_mismatch"


def test_garbage_base64_fails(block):
    verdict = verify(dict(block, ima_log_b64="not*base64"))
    assert finding(verdict) == ("fail", "bad_base64")


def test_mutated_lists_never_raise_and_never_prove_other_entries(block):
    """A seeded fuzz loop through verify_attestation: flipped bytes and cuts of the IMA list."""
    import random

    original = ima_bytes(block)
    good = [e.template_data for e in verify(block).measurements.proven_ima_entries()]
    rng = random.Random(10)
    for _ in range(200):
        data = bytearray(original)
        if rng.randrange(2):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            del data[rng.randrange(len(data)) :]
        verdict = verify(with_ima(block, bytes(data)))
        status, code = finding(verdict)
        if status == "pass":  # a flip in the SHA-1 template hash, which the sha256 bank does not read
            assert [e.template_data for e in verdict.measurements.proven_ima_entries()] == good
        else:
            assert code != "ima_log_matches" and "ima" not in verdict.facts
