"""The demo's measured boot is a typed TCG log and an IMA list, and its tamper step names a file."""

from __future__ import annotations

import asyncio
import base64

import pytest
from click.testing import CliRunner

from nomyo_audit import PolicyViolationError, SecureChatCompletion, load_policy
from nomyo_audit.attest import SoftwareTPM, TPMAttester
from nomyo_audit.cli import cli
from nomyo_audit.cli._demo_anchor import demo_policy
from nomyo_audit.eventlog import match_event_log, parse_event_log, summarize_boot
from nomyo_audit.router._serving_stack import measure_serving_stack
from nomyo_audit.tpm._measurements import (
    DEMO_IMA_FILES,
    DEMO_PCRS,
    TAMPER_MODULE,
    demo_ima_allow_list,
    expected_pcr,
    measure_demo_boot,
)

HELLO = [{"role": "user", "content": "hello"}]


def demo_attester() -> TPMAttester:
    attester = TPMAttester(SoftwareTPM(), DEMO_PCRS)
    measure_demo_boot(attester.measurements)
    measure_serving_stack(attester)
    return attester


def quoted(block):
    return {b: {int(i): bytes.fromhex(v) for i, v in vs.items()} for b, vs in block["pcr_values"].items()}


def test_the_demo_boot_reads_like_a_real_machine_and_replays_to_the_golden_values(tmp_path):
    block = demo_attester().evidence(b"n" * 32)
    log = parse_event_log(base64.b64decode(block["event_log_b64"]))
    match = match_event_log(log, quoted(block))
    assert match.ok
    boot = summarize_boot(log, match)
    assert boot["secure_boot"] == "enabled" and boot["crtm_version"] == "nomyo-audit demo firmware 1.0"
    assert [a["path"] for a in boot["boot_applications"]] == [
        r"\EFI\nomyo\shimx64.efi",
        r"\EFI\nomyo\grubx64.efi",
    ]
    assert boot["kernels"][0]["path"] == "/boot/vmlinuz-6.8.0-nomyo-demo"
    assert boot["kernel_cmdlines"][0].endswith("ima_policy=tcb lockdown=integrity")
    assert set(boot["secure_boot_keys"]) == {"PK", "KEK", "db", "dbx"}
    for pcr in (0, 7, 10):
        assert block["pcr_values"]["sha256"][str(pcr)] == expected_pcr(pcr)
    production = load_policy("production").spec["pcrs"]["sha256"]
    assert production == {"0": [expected_pcr(0)], "7": [expected_pcr(7)]}  # PCR 10: the IMA allow-list's
    (tmp_path / "log.bin").write_bytes(base64.b64decode(block["event_log_b64"]))
    shown = CliRunner().invoke(cli, ["eventlog", "show", str(tmp_path / "log.bin")])
    assert shown.exit_code == 0, shown.output
    for text in (
        "EV_EFI_VARIABLE_DRIVER_CONFIG",
        "SecureBoot",
        "shimx64.efi",
        "kernel_cmdline",
        "EV_EVENT_TAG",
    ):
        assert text in shown.output


def test_a_bare_tpm_reaches_the_same_values_without_a_log():
    attester, bare = demo_attester(), SoftwareTPM()
    measure_demo_boot(bare)
    logged = attester.evidence(b"n" * 32)["pcr_values"]["sha256"]
    assert [bare.pcrs[0x000B][i].hex() for i in (0, 7, 10)] == [logged[str(i)] for i in (0, 7, 10)]


def test_the_ima_allow_list_is_the_demo_machines_files():
    allowed = demo_ima_allow_list()
    assert list(allowed) == ["boot_aggregate", *(path for path, _ in DEMO_IMA_FILES)]
    assert allowed["/usr/bin/python3.12"] == [dict(DEMO_IMA_FILES)["/usr/bin/python3.12"].hex()]
    assert TAMPER_MODULE[0] not in allowed


def test_the_demo_policy_passes_the_demo_machine_and_denies_an_unexpected_module_by_name(
    make_router, client_keys_dir, tmp_path
):
    attester = demo_attester()
    router = make_router(attester=attester)
    policy, _ = demo_policy(None, tmp_path)
    assert {"secure_boot", "ima", "serving_stack"} <= set(policy.spec)

    async def chat():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy=policy
        ) as client:
            return await client.create("echo", HELLO, security_tier="high")

    reply = asyncio.run(chat())
    rules = {r["rule"]: r["status"] for r in reply["_metadata"]["policy"]["rules"]}
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert rules["secure_boot"] == rules["ima"] == rules["serving_stack"] == "pass"
    attester.measurements.extend_ima_file(*TAMPER_MODULE)
    with pytest.raises(PolicyViolationError) as denied:
        asyncio.run(chat())
    failures = {r.rule: r.detail for r in denied.value.result.failures}
    assert list(failures) == ["ima"] and TAMPER_MODULE[0] in failures["ima"]  # no anonymous PCR 10
