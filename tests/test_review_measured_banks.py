"""Review of issue 14: a fact of the measured boot is read only from events proven in its own bank.

A quote may select different PCRs per bank (``sha1:7+sha256:0,4``). An event of PCR 7 is then
proven by its SHA-1 digest only; its SHA-256 digest is whatever the log says. The router (the
attacker here) keeps the SHA-1 digests of a disabled SecureBoot variable, so PCR 7 still replays,
and rewrites the variable to 1 with a matching SHA-256 digest: the summary, read in sha256, must
not take that unproven digest as verifying the data.
"""

from __future__ import annotations

import dataclasses
import hashlib

from test_verify_measured import NONCE, log_of, machine, rewrite, variable, verify, with_log

from nomyo_audit.eventlog import EV_EFI_VARIABLE_DRIVER_CONFIG


def _forge_secure_boot_on(events):
    forged = []
    for event in events:
        if event.type == EV_EFI_VARIABLE_DRIVER_CONFIG:
            data = variable("SecureBoot", b"\x01")
            digests = dict(event.digests)
            for bank in ("sha256", "sha384"):  # every bank but the one the quote proves PCR 7 in
                digests[bank] = hashlib.new(bank, data).digest()
            event = dataclasses.replace(event, data=data, digests=digests)
        forged.append(event)
    return forged


def test_secure_boot_is_not_read_from_a_bank_that_does_not_prove_pcr_7():
    block = machine("sha1:7+sha256:0,4", secure_boot=0).evidence(NONCE)
    honest = verify(block)
    assert honest.finding("event_log").status == "pass"
    assert honest.facts["measured_boot"]["secure_boot"] != "enabled"
    forged = verify(with_log(block, rewrite(log_of(block), _forge_secure_boot_on)))
    boot = forged.facts.get("measured_boot", {})
    assert boot.get("secure_boot") != "enabled", boot


def test_secure_boot_proven_in_the_summary_bank_still_reads():
    verdict = verify(machine("sha1:0,4+sha256:7", secure_boot=1).evidence(NONCE))
    assert verdict.finding("event_log").status == "pass"
    # sha1 proves two PCRs, sha256 one: the summary's bank is sha1, and PCR 7 is not proven in it
    assert verdict.facts["measured_boot"]["bank"] == "sha1"
    assert verdict.facts["measured_boot"]["secure_boot"] is None
    verdict = verify(machine("sha1:7+sha256:0,4,7", secure_boot=1).evidence(NONCE))
    assert verdict.facts["measured_boot"]["bank"] == "sha256"
    assert verdict.facts["measured_boot"]["secure_boot"] == "enabled"
