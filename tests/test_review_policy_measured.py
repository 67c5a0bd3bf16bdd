"""Review (issue 14, R2): attacks on the event rules. Real software-TPM evidence, verified by
verify_attestation, then judged by the rules; each test is an attack that must fail closed."""

from __future__ import annotations

import base64
import hashlib

from nomyo_audit import eventlog as ev
from tests.test_policy_measured import efi_variable, judge, machine, reply


def _forge_in_unquoted_bank(block: dict, pcr: int, event_type: int, data: bytes) -> None:
    """Rewrite the ``pcr`` event of ``event_type``: new data, its sha256 digest the hash of the new
    data, its sha1 digest kept (the one the TPM really extended). The quote covers ``pcr`` in
    sha1 only, so the replay still matches; the sha256 digest is the router's word."""
    log = ev.parse_event_log(base64.b64decode(block["event_log_b64"]))
    writer = ev.EventLogWriter(log.banks)
    for event in log.events[1:]:
        if event.pcr == pcr and event.type == event_type:
            digests = {**event.digests, "sha256": hashlib.sha256(data).digest()}
            writer.add(event.pcr, event.type, data, digests)
        else:
            writer.add(event.pcr, event.type, event.data, event.digests)
    block["event_log_b64"] = base64.b64encode(writer.to_bytes()).decode()


def test_secure_boot_is_not_read_from_a_bank_the_quote_does_not_cover_for_pcr_7():
    """Secure boot is really off (the TPM's PCR 7 has SecureBoot=0 in every bank). The quote covers
    PCR 7 in sha1 only and PCR 0 in sha256; the log's sha256 digest of the variable is rewritten to
    a SecureBoot=1 it never measured. The verifier's summary reads the sha256 bank (sha256 is quoted
    for PCR 0), so it finds 'enabled' data-verified by an unquoted digest: the rule must not pass."""
    attester = machine("sha1:0,7,8,23+sha256:0", secure_boot=b"\x00")

    def forge(block: dict) -> None:
        variable = efi_variable("SecureBoot", b"\x01")
        _forge_in_unquoted_bank(block, 7, ev.EV_EFI_VARIABLE_DRIVER_CONFIG, variable)

    response = reply(attester, mutate=forge)
    outcome = judge({"secure_boot": "enabled"}, response)
    assert outcome.status == "fail", outcome


def test_kernel_cmdline_is_not_read_from_a_bank_the_quote_does_not_cover_for_pcr_8():
    """The machine booted with init=/bin/sh; the log's sha256 digest (PCR 8 is quoted in sha1 only)
    claims a harmless command line. forbid must not pass on the unquoted bank's data."""
    attester = machine("sha1:0,7,8,23+sha256:0", cmdline="root=/dev/sda1 init=/bin/sh")

    def forge(block: dict) -> None:
        _forge_in_unquoted_bank(block, 8, ev.EV_IPL, b"kernel_cmdline: root=/dev/sda1 ro\x00")

    response = reply(attester, mutate=forge)
    outcome = judge({"kernel_cmdline": {"forbid": ["init="]}}, response)
    assert outcome.status == "fail", outcome


def _many_cmdlines(lines: list[str]):
    attester = machine(cmdline=None)
    for line in lines:
        attester.measurements.extend_event(8, ev.EV_IPL, f"kernel_cmdline: {line}".encode() + b"\x00")
    return attester


def test_kernel_cmdline_forbid_sees_the_65th_command_line():
    """The measured_boot fact keeps 64 command lines; forbid must see every proven one."""
    attester = _many_cmdlines([f"root=/dev/sda{i} ro" for i in range(64)] + ["root=/dev/sda1 init=/bin/sh"])
    outcome = judge({"kernel_cmdline": {"forbid": ["init="]}}, reply(attester))
    assert outcome.status == "fail", outcome
    assert "init=/bin/sh" in outcome.detail


def test_kernel_cmdline_forbid_sees_past_the_facts_1024_characters():
    attester = _many_cmdlines(["root=/dev/sda1 " + "quiet " * 200 + "init=/bin/sh"])
    outcome = judge({"kernel_cmdline": {"forbid": ["init="]}}, reply(attester))
    assert outcome.status == "fail", outcome


def test_kernel_cmdline_over_4096_characters_fails_closed_for_every_pattern():
    """No kernel takes a command line over 4096 bytes: the rule refuses it, so a pattern never scans
    more (bounding what a backtracking pattern can cost on a command line the machine chose)."""
    attester = _many_cmdlines(["root=/dev/sda1 " + "a" * 5000])
    outcome = judge({"kernel_cmdline": {"require": ["root="]}}, reply(attester))
    assert outcome.status == "fail", outcome
    assert "bytes (> 4096)" in outcome.detail


def test_event_rules_pass_when_proven_in_sha1_only():
    """The fix does not refuse a quote in SHA-1 alone: PCR 7 and 8 are then proven in sha1."""
    response = reply(machine("sha1:0,4,7,8,23"))
    assert judge({"secure_boot": "enabled"}, response).status == "pass"
    assert judge({"kernel_cmdline": {"require": ["^BOOT_IMAGE="]}}, response).status == "pass"


def test_rules_fail_closed_on_a_verdict_with_facts_but_no_measurements():
    """A verdict rebuilt from stored data (facts and findings, no parsed logs) proves nothing new:
    secure_boot and kernel_cmdline need the proven events themselves."""
    from nomyo_audit.policy import Policy, evaluate
    from nomyo_audit.tpm import verify_attestation

    response = reply(machine())
    metadata = response["_metadata"]
    from nomyo_audit.tpm._binding import response_content_digest

    verdict = verify_attestation(
        metadata["tpm_attestation"], "pid-1", content_digest=response_content_digest(
            {k: v for k, v in response.items() if k != "_metadata"}
        )
    )
    assert verdict.finding("event_log").status == "pass"
    bare = verdict._replace(measurements=None)
    document = {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "m"}}
    for spec in ({"secure_boot": "enabled"}, {"kernel_cmdline": {"require": ["root="]}}):
        policy = Policy.from_document({**document, "spec": spec})
        assert evaluate(policy, response, now=0, verdict=verdict).rules[0].status == "pass"
        (outcome,) = evaluate(policy, response, now=0, verdict=bare).rules
        assert outcome.status == "fail", outcome
