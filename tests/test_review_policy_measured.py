"""Review (issue 14, R2): attacks on the event rules. Real software-TPM evidence, verified by
verify_attestation, then judged by the rules; each test is an attack that must fail closed."""

from __future__ import annotations

import base64
import hashlib

from test_policy_measured import efi_variable, judge, machine, reply

from nomyo_audit import eventlog as ev


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


def _relabel(block: dict, measured: bytes, new_type: int) -> None:
    """Change the type of the event of ``measured`` in the log: the type is not covered by any
    digest, so the replay still matches the quote."""
    log = ev.parse_event_log(base64.b64decode(block["event_log_b64"]))
    writer = ev.EventLogWriter(log.banks)
    target = hashlib.sha256(measured).digest()
    for event in log.events[1:]:
        kind = new_type if event.digests.get("sha256") == target else event.type
        writer.add(event.pcr, kind, event.data, event.digests)
    block["event_log_b64"] = base64.b64encode(writer.to_bytes()).decode()


def test_boot_events_firmware_allow_list_is_not_bypassed_by_relabelling_a_blob():
    """An unlisted firmware blob, logged as an EV_S_CRTM_VERSION (or an unknown type): its digest is
    not the hash of its data, so the type is only the router's word, and the allow-list judges it."""
    evil = machine(firmware=(b"firmware volume 1.0", b"implant"))
    for new_type in (ev.EV_S_CRTM_VERSION, 0x7777):
        response = reply(evil, mutate=lambda b, t=new_type: _relabel(b, b"implant", t))
        spec = {"boot_events": {"firmware": [hashlib.sha256(b"firmware volume 1.0").hexdigest()]}}
        outcome = judge(spec, response)
        assert outcome.status == "fail", outcome
        assert hashlib.sha256(b"implant").hexdigest() in outcome.detail


def test_boot_events_boot_application_allow_list_is_not_bypassed_by_relabelling():
    evil = machine(applications=(b"shimx64.efi 15.8", b"bootkit.efi"))
    response = reply(evil, mutate=lambda b: _relabel(b, b"bootkit.efi", ev.EV_EFI_ACTION))
    spec = {"boot_events": {"boot_applications": [hashlib.sha256(b"shimx64.efi 15.8").hexdigest()]}}
    outcome = judge(spec, response)
    assert outcome.status == "fail", outcome
    assert hashlib.sha256(b"bootkit.efi").hexdigest() in outcome.detail


# -- policy from-evidence -------------------------------------------------------------------------

PCRS = "sha256:0,4,7,8,23"


def _learn(tmp_path, replies, *options):
    from test_policy_measured_learn import learn

    return learn(tmp_path, replies, *options)


def test_learned_cmdline_refuses_a_second_unseen_command_line(tmp_path):
    """GRUB measures the line of every `linux` command and the kernel boots the last: a learned
    require alone passed a machine that measured the seen line and then another."""
    from nomyo_audit.policy import evaluate

    line = "root=/dev/sda1 ro"
    policy, _ = _learn(tmp_path, [reply(machine(PCRS, cmdline=line))])
    assert evaluate(policy, reply(machine(PCRS, cmdline=line)), now=0).rules  # lints and evaluates
    same = [r for r in evaluate(policy, reply(machine(PCRS, cmdline=line)), now=0).rules
            if r.rule == "kernel_cmdline"]
    assert same[0].status == "pass", same
    two = machine(PCRS, cmdline=line)
    two.measurements.extend_event(8, ev.EV_IPL, b"kernel_cmdline: root=/dev/sda1 init=/bin/sh\x00")
    (outcome,) = [r for r in evaluate(policy, reply(two), now=0).rules if r.rule == "kernel_cmdline"]
    assert outcome.status == "fail", outcome
    assert "init=/bin/sh" in outcome.detail


def test_learned_cmdline_does_not_match_the_line_with_a_final_newline(tmp_path):
    from nomyo_audit.policy import evaluate

    policy, _ = _learn(tmp_path, [reply(machine(PCRS, cmdline="root=/dev/sda1 ro"))])
    (outcome,) = [
        r
        for r in evaluate(policy, reply(machine(PCRS, cmdline="root=/dev/sda1 ro\n")), now=0).rules
        if r.rule == "kernel_cmdline"
    ]
    assert outcome.status == "fail", outcome


def test_no_golden_pcrs_keeps_the_golden_values_of_pcrs_no_learned_rule_judges(tmp_path):
    """--no-golden-pcrs dropped the golden value of every proven PCR. PCR 9 holds the kernel and
    initrd GRUB loaded, which no learned rule judges: another kernel was accepted."""
    from nomyo_audit.policy import evaluate

    def booted(kernel: bytes):
        attester = machine("sha256:0,4,7,8,9,23")
        attester.measurements.extend_event(9, ev.EV_IPL, b"/vmlinuz-6.8\x00", {
            bank: hashlib.new(bank, kernel).digest() for bank in ("sha1", "sha256", "sha384")
        })
        return attester

    policy, spec = _learn(tmp_path, [reply(booted(b"kernel 6.8"))], "--no-golden-pcrs")
    assert 9 in spec["pcrs"]["sha256"] and 0 not in spec["pcrs"]["sha256"]
    assert evaluate(policy, reply(booted(b"kernel 6.8")), now=0).passed
    other = evaluate(policy, reply(booted(b"backdoored kernel")), now=0)
    assert [r.rule for r in other.failures] == ["pcrs"], other.summary()


def test_learned_firmware_list_accepts_its_own_evidence_with_an_unverifiable_pcr_0_event(tmp_path):
    """The allow-list now judges every PCR 0 event whose data its digest does not cover (an
    EV_EFI_HANDOFF_TABLES2 here): from-evidence learns it too, so the learned policy passes the
    machine it was learned from, and a relabelled implant is still refused."""
    from nomyo_audit.policy import evaluate

    def tables(attester):
        attester.measurements.extend_event(0, 0x8000000B, b"\x01tables", {
            bank: hashlib.new(bank, b"ACPI tables").digest() for bank in ("sha1", "sha256", "sha384")
        })
        return attester

    policy, spec = _learn(tmp_path, [reply(tables(machine(PCRS)))], "--no-golden-pcrs")
    assert hashlib.sha256(b"ACPI tables").hexdigest() in spec["boot_events"]["firmware"]
    assert evaluate(policy, reply(tables(machine(PCRS))), now=0).passed
    evil = tables(machine(PCRS, firmware=(b"firmware volume 1.0", b"implant")))
    relabelled = reply(evil, mutate=lambda b: _relabel(b, b"implant", ev.EV_S_CRTM_VERSION))
    result = evaluate(policy, relabelled, now=0)
    assert [r.rule for r in result.failures] == ["boot_events"], result.summary()
