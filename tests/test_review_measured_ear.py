"""Review of issue 14: an event log or IMA list that does not replay to its quote makes the EAR's
``executables`` claim 96 (contraindicated), as a failing PCR check does; a matching one claims nothing."""

from __future__ import annotations

import base64

from test_verify_measured import NONCE, _flip_digest, log_of, machine, rewrite, verify, with_log

from nomyo_audit.tpm import to_ear


def _executables(verdict) -> int:
    return to_ear(verdict, issued_at=0)["submods"]["tpm"]["ear.trustworthiness-vector"]["executables"]


def test_a_failing_event_log_contraindicates_executables():
    block = machine().evidence(NONCE)
    assert _executables(verify(block)) == 0
    verdict = verify(with_log(block, rewrite(log_of(block), _flip_digest)))
    assert verdict.finding("event_log").status == "fail"
    assert _executables(verdict) == 96


def test_a_failing_ima_list_contraindicates_executables():
    attester = machine("sha256:0,4,7,10,23")
    attester.measurements.extend_ima_file("/usr/bin/true", bytes(32))
    block = attester.evidence(NONCE)
    assert verify(block).finding("ima_log").status == "pass"
    ima = bytearray(base64.b64decode(block["ima_log_b64"]))
    ima[-1] ^= 1  # the file name's last byte: the entry no longer replays
    verdict = verify({**block, "ima_log_b64": base64.b64encode(bytes(ima)).decode()})
    assert verdict.finding("ima_log").code == "ima_log_mismatch"
    assert _executables(verdict) == 96
