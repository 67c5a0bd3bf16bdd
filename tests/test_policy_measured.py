"""The event rules (issue 14), like the spec: each passes on proven evidence, and fails for each way
the evidence can fail to prove what it needs (no log, the PCR not quoted, a log that does not match
the quote, nothing of the kind measured). The evidence is real: a software TPM whose extends are
logged by the router's own measuring API (TPMAttester.measurements), quoted, and verified by
verify_attestation before the policy reads it."""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from collections.abc import Callable

import pytest

from nomyo_audit import eventlog as ev
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.policy import Policy, evaluate
from nomyo_audit.policy._rules import RULES
from nomyo_audit.tpm._binding import response_binding, response_content_digest

NOW = 1_800_000_000
ALL_PCRS = "sha256:0,4,7,8,10,23"
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
WEIGHTS = hashlib.sha256(b"qwen3 weights").hexdigest()
CODE = hashlib.sha256(b"nomyo-audit 0.9.0").hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def efi_variable(name: str, value: bytes, guid: uuid.UUID = EFI_GLOBAL_VARIABLE) -> bytes:
    """UEFI_VARIABLE_DATA (TCG PC Client PFP 10.2.6): GUID, name length, data length, UTF-16 name, data."""
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value


def blob_digests(blob: bytes) -> dict[str, bytes]:
    """A firmware blob's event digests are the hashes of the blob (not of the event data)."""
    return {bank: hashlib.new(bank, blob).digest() for bank in ("sha1", "sha256", "sha384")}


def machine(
    pcrs: str = ALL_PCRS,
    *,
    firmware: tuple[bytes, ...] = (b"firmware volume 1.0",),
    applications: tuple[bytes, ...] = (b"shimx64.efi 15.8",),
    secure_boot: bytes | None = b"\x01",
    cmdline: str | None = "BOOT_IMAGE=/vmlinuz-6.8 root=/dev/sda1 ro ima_policy=tcb",
    model: tuple[str, str | None] | None = ("qwen3", WEIGHTS),
    ima_files: tuple[tuple[str, bytes], ...] = (),
) -> TPMAttester:
    """A machine whose measured boot and serving stack are logged as a router logs them."""
    attester = TPMAttester(SoftwareTPM(), pcrs)
    log = attester.measurements
    for blob in firmware:
        log.extend_event(0, ev.EV_EFI_PLATFORM_FIRMWARE_BLOB2, b"\x03DXE" + bytes(16), blob_digests(blob))
    if secure_boot is not None:
        log.extend_event(7, ev.EV_EFI_VARIABLE_DRIVER_CONFIG, efi_variable("SecureBoot", secure_boot))
    for pcr in (0, 7):
        log.extend_event(pcr, ev.EV_SEPARATOR, bytes(4))
    for application in applications:
        log.extend_event(4, ev.EV_EFI_BOOT_SERVICES_APPLICATION, bytes(32), blob_digests(application))
    if cmdline is not None:
        log.extend_event(8, ev.EV_IPL, f"kernel_cmdline: {cmdline}".encode() + b"\x00")
    router = {"name": "nomyo-audit", "version": "0.9.0", "code_sha256": CODE}
    log.extend_event(23, ev.EV_EVENT_TAG, ev.serving_stack_event("router", router))
    if model is not None:
        identity = {
            "name": model[0],
            "source": "local",
            "weights_sha256": model[1],
            "upstream_identity": None,
        }
        log.extend_event(23, ev.EV_EVENT_TAG, ev.serving_stack_event("model", identity))
    if ima_files:
        log.extend_ima_boot_aggregate()
        for path, content in ima_files:
            log.extend_ima_file(path, hashlib.sha256(content).digest())
    return attester


def reply(attester: TPMAttester, model: str = "qwen3", mutate: Callable[[dict], None] | None = None) -> dict:
    response = {"id": "c1", "object": "chat.completion", "model": model, "choices": [{"message": {}}]}
    block = attester.evidence(response_binding("pid-1", response_content_digest(response)))
    response["_metadata"] = {"payload_id": "pid-1", "processed_at": NOW, "tpm_attestation": block}
    if mutate is not None:
        mutate(block)
    return response


def judge(spec: dict, response: dict, model: str | None = None):
    document = {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "m"}}
    policy = Policy.from_document({**document, "spec": spec})
    result = evaluate(policy, response, now=NOW, model=model)
    (outcome,) = result.rules
    return outcome


@pytest.fixture(scope="module")
def proven():
    return machine()


def without_log(block: dict) -> None:
    block.pop("event_log_b64", None)
    block.pop("ima_log_b64", None)


def forged_values(block: dict) -> None:
    """A PCR value the signed digest does not cover: no value is proved, so no log proves anything."""
    block["pcr_values"]["sha256"]["0"] = "00" * 32


def tampered_log(block: dict) -> None:
    """Drop the log's last event: the replay no longer reaches the quoted PCR 23."""
    log = ev.parse_event_log(base64.b64decode(block["event_log_b64"]))
    writer = ev.EventLogWriter(log.banks)
    for event in log.events[1:-1]:
        writer.add(event.pcr, event.type, event.data, event.digests)
    block["event_log_b64"] = base64.b64encode(writer.to_bytes()).decode()


# -- secure_boot ----------------------------------------------------------------------------------


def test_secure_boot_passes_when_proven_enabled(proven):
    outcome = judge({"secure_boot": "enabled"}, reply(proven))
    assert outcome.status == "pass", outcome
    assert outcome.findings == ("event_log_matches",)


def test_secure_boot_fails_when_proven_disabled():
    outcome = judge({"secure_boot": "enabled"}, reply(machine(secure_boot=b"\x00")))
    assert (outcome.status, outcome.detail) == (
        "fail",
        "secure boot is disabled, the policy requires enabled",
    )


@pytest.mark.parametrize(
    ("make", "mutate", "why"),
    [
        (machine, without_log, "the reply carries no event log"),
        (machine, tampered_log, "the log did not match the quote"),
        (machine, forged_values, "no PCR values were proved by a verified quote"),
        (lambda: machine("sha256:0,4,8,23"), None, "the log extends PCR 7 but the quote does not cover it"),
        (lambda: machine(secure_boot=None), None, "no proven PCR 7 event holds the SecureBoot variable"),
    ],
)
def test_secure_boot_fails_when_unproven(make, mutate, why):
    outcome = judge({"secure_boot": "disabled"}, reply(make(), mutate=mutate))
    assert outcome.status == "fail"
    assert why in outcome.detail, outcome.detail
    assert outcome.detail.startswith("the secure boot state is unproven")


def test_secure_boot_fails_when_the_variable_data_does_not_match_its_digest():
    attester = TPMAttester(SoftwareTPM(), ALL_PCRS)
    data = efi_variable("SecureBoot", b"\x01")
    lie = {
        bank: hashlib.new(bank, efi_variable("SecureBoot", b"\x00")).digest()
        for bank in ("sha1", "sha256", "sha384")
    }
    attester.measurements.extend_event(7, ev.EV_EFI_VARIABLE_DRIVER_CONFIG, data, lie)
    outcome = judge({"secure_boot": "enabled"}, reply(attester))
    assert outcome.status == "fail", outcome


# -- boot_events ----------------------------------------------------------------------------------


def test_boot_events_allow_lists_pass_on_proven_digests(proven):
    spec = {
        "boot_events": {
            "firmware": [sha256(b"firmware volume 1.0")],
            "boot_applications": [sha256(b"shimx64.efi 15.8")],
            "deny": [sha256(b"grubx64.efi 2.02 (CVE-2020-10713)")],
        }
    }
    outcome = judge(spec, reply(proven))
    assert outcome.status == "pass", outcome
    assert "1 firmware event(s)" in outcome.detail


def test_boot_events_names_a_firmware_blob_not_allowed(proven):
    outcome = judge({"boot_events": {"firmware": ["00" * 32]}}, reply(proven))
    assert outcome.status == "fail"
    assert sha256(b"firmware volume 1.0") in outcome.detail
    assert "EV_EFI_PLATFORM_FIRMWARE_BLOB2" in outcome.detail


def test_boot_events_deny_list_names_the_denied_event():
    bad = b"grubx64.efi 2.02 (CVE-2020-10713)"
    outcome = judge({"boot_events": {"deny": [sha256(bad)]}}, reply(machine(applications=(b"shim", bad))))
    assert outcome.status == "fail"
    assert "denied by boot_events.deny: event" in outcome.detail and sha256(bad) in outcome.detail


def test_boot_events_compare_only_digests_of_quoted_banks():
    """The log's SHA-1 digests are not quoted (the quote covers sha256): listing one proves nothing."""
    sha1 = hashlib.sha1(b"firmware volume 1.0").hexdigest()
    outcome = judge({"boot_events": {"firmware": [sha1]}}, reply(machine()))
    assert outcome.status == "fail", outcome


@pytest.mark.parametrize(
    ("pcrs", "kwargs", "mutate", "why"),
    [
        (ALL_PCRS, {}, without_log, "the boot events is unproven: the reply carries no event log"),
        (ALL_PCRS, {}, tampered_log, "the log did not match the quote"),
        (ALL_PCRS, {}, forged_values, "no PCR values were proved by a verified quote"),
        (
            "sha256:4,7,8,23",
            {},
            None,
            "firmware is unproven: the log extends PCR 0 but the quote does not cover it",
        ),
        (ALL_PCRS, {"firmware": ()}, None, "firmware is unproven: no proven PCR 0 event is of that kind"),
        (
            ALL_PCRS,
            {"applications": ()},
            None,
            "boot applications is unproven: the quote proves no PCR 4 event",
        ),
    ],
)
def test_boot_events_fail_when_unproven(pcrs, kwargs, mutate, why):
    spec = {"boot_events": {"firmware": [sha256(b"firmware volume 1.0")], "boot_applications": ["11" * 32]}}
    outcome = judge(spec, reply(machine(pcrs, **kwargs), mutate=mutate))
    assert outcome.status == "fail"
    assert why in outcome.detail, outcome.detail


# -- kernel_cmdline -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        ({"require": [r"(^| )ima_policy=tcb( |$)", r"\bro\b"]}, "pass"),
        ({"forbid": [r"(^| )init="]}, "pass"),
        ({"require": [r"(^| )lockdown=confidentiality"]}, "fail"),
        ({"forbid": [r"(^| )ima_policy="]}, "fail"),
    ],
)
def test_kernel_cmdline_patterns(proven, rule, status):
    outcome = judge({"kernel_cmdline": rule}, reply(proven))
    assert outcome.status == status, outcome


@pytest.mark.parametrize(
    ("pcrs", "kwargs", "mutate", "why"),
    [
        (ALL_PCRS, {}, without_log, "the reply carries no event log"),
        (ALL_PCRS, {}, tampered_log, "the log did not match the quote"),
        (ALL_PCRS, {}, forged_values, "no PCR values were proved by a verified quote"),
        ("sha256:0,4,7,23", {}, None, "the quote proves no command line"),
        (ALL_PCRS, {"cmdline": None}, None, "the quote proves no command line"),
    ],
)
def test_kernel_cmdline_fails_when_unproven(pcrs, kwargs, mutate, why):
    outcome = judge({"kernel_cmdline": {"forbid": ["init="]}}, reply(machine(pcrs, **kwargs), mutate=mutate))
    assert outcome.status == "fail"
    assert why in outcome.detail, outcome.detail


# -- serving_stack --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "model", "status", "detail"),
    [
        (
            {"router_versions": ["0.9.*"], "router_code": [CODE], "models": {"qwen3": [WEIGHTS]}},
            "qwen3",
            "pass",
            "proven: router 0.9.0, model 'qwen3' (allowed weights)",
        ),
        ({"models": {"qwen3": "any"}}, "qwen3", "pass", "model 'qwen3' (measured)"),
        ({"router_versions": ["1.*"]}, "qwen3", "fail", "router version '0.9.0' matches none of 1.*"),
        (
            {"router_code": ["00" * 32]},
            "qwen3",
            "fail",
            f"router code '{CODE}' is not in serving_stack.router_code",
        ),
        (
            {"models": {"qwen3": ["00" * 32]}},
            "qwen3",
            "fail",
            f"weights '{WEIGHTS}' are not an allowed digest",
        ),
        (
            {"models": {"qwen3": "any"}},
            "llama",
            "fail",
            "model 'llama' is not listed in serving_stack.models",
        ),
        ({"models": {"llama": "any"}}, "llama", "fail", "model 'llama' is not measured"),
        ({"models": {"qwen3": "any"}}, None, "fail", "the reply's model is not known"),
    ],
)
def test_serving_stack(proven, rule, model, status, detail):
    outcome = judge({"serving_stack": rule}, reply(proven, model=model or "qwen3"), model=model)
    if model is None:  # evaluate takes the model from the response: judge a bare _metadata instead
        outcome = judge({"serving_stack": rule}, reply(proven)["_metadata"])
    assert outcome.status == status, outcome
    assert detail in outcome.detail, outcome.detail


def test_serving_stack_model_comes_from_the_reply(proven):
    outcome = judge({"serving_stack": {"models": {"qwen3": [WEIGHTS]}}}, reply(proven, model="qwen3"))
    assert outcome.status == "pass", outcome


def test_serving_stack_upstream_model_has_no_weights_digest():
    attester = machine(model=("gpt-4o", None))
    assert judge({"serving_stack": {"models": {"gpt-4o": "any"}}}, reply(attester, "gpt-4o")).status == "pass"
    outcome = judge({"serving_stack": {"models": {"gpt-4o": [WEIGHTS]}}}, reply(attester, "gpt-4o"))
    assert (outcome.status, "weights None" in outcome.detail) == ("fail", True)


@pytest.mark.parametrize(
    ("pcrs", "mutate", "why"),
    [
        (ALL_PCRS, without_log, "the serving stack is unproven: the reply carries no event log"),
        (ALL_PCRS, tampered_log, "the log did not match the quote"),
        (ALL_PCRS, forged_values, "the serving stack is unproven: no PCR values were proved"),
        ("sha256:0,4,7,8", None, "the log extends PCR 23 but the quote does not cover it"),
    ],
)
def test_serving_stack_fails_when_unproven(pcrs, mutate, why):
    outcome = judge({"serving_stack": {"router_versions": ["*"]}}, reply(machine(pcrs), mutate=mutate))
    assert outcome.status == "fail"
    assert why in outcome.detail, outcome.detail


# -- ima ------------------------------------------------------------------------------------------


PYTHON = (("/usr/bin/python3", b"python"),)


def test_ima_passes_when_every_proven_file_is_allowed():
    spec = {"ima": {"digests": {"/usr/bin/python3": [sha256(b"python")]}, "excludes": ["^boot_aggregate$"]}}
    outcome = judge(spec, reply(machine(ima_files=PYTHON)))
    assert outcome.status == "pass", outcome


def test_ima_names_the_first_offending_files():
    files = tuple((f"/usr/lib/module{n}.ko", f"m{n}".encode()) for n in range(8))
    attester = machine(ima_files=(*PYTHON, *files))
    spec = {"ima": {"digests": {"/usr/bin/python3": [sha256(b"python")]}, "excludes": ["^boot_aggregate$"]}}
    outcome = judge(spec, reply(attester))
    assert outcome.status == "fail"
    assert f"'/usr/lib/module0.ko' {sha256(b'm0')} (not_allowed)" in outcome.detail
    assert "module5" not in outcome.detail and outcome.detail.endswith("(and more)")


@pytest.mark.parametrize(
    ("pcrs", "kwargs", "mutate", "why"),
    [
        (ALL_PCRS, {"ima_files": PYTHON}, without_log, "the IMA list is unproven: the reply carries no IMA"),
        ("sha256:0,4,7,8,23", {"ima_files": PYTHON}, None, "the IMA list is unproven"),
        (ALL_PCRS, {"ima_files": ()}, None, "the IMA list is unproven"),
    ],
)
def test_ima_fails_when_unproven(pcrs, kwargs, mutate, why):
    outcome = judge({"ima": {"excludes": [".*"]}}, reply(machine(pcrs, **kwargs), mutate=mutate))
    assert outcome.status == "fail"
    assert why in outcome.detail, outcome.detail


def test_ima_runtime_policy_not_read_fails_rather_than_guess(proven):
    outcome = judge({"ima": {"runtime_policy": "runtime.json"}}, reply(proven))
    assert outcome.status == "fail"
    assert "was not read" in outcome.detail


# -- the rules' place -----------------------------------------------------------------------------


def test_the_event_rules_are_registered_after_the_pcr_rules():
    names = [name for name, _ in RULES]
    assert names[-5:] == ["secure_boot", "boot_events", "kernel_cmdline", "ima", "serving_stack"]


def test_the_boot_rules_judge_a_router_key_attestation_before_any_prompt():
    """require_key_attestation: the machine's boot (not a reply's model) is judged before a prompt is sent."""
    from nomyo_audit.policy import KEY_SCOPE
    from nomyo_audit.tpm import verify_attestation
    from nomyo_audit.tpm._binding import key_binding

    attester = machine(firmware=(b"firmware 2.0 (unknown)",))
    block = attester.attest_key(b"n" * 32, b"k" * 32)
    verdict = verify_attestation(block, None, expected_nonce=key_binding(b"n" * 32, b"k" * 32))
    spec = {
        "secure_boot": "enabled",
        "boot_events": {"firmware": ["00" * 32]},
        "serving_stack": {"models": {"x": "any"}},
    }
    document = {
        "apiVersion": "nomyo-audit/v1",
        "kind": "AttestationPolicy",
        "metadata": {"name": "m"},
        "spec": spec,
    }
    result = evaluate(
        Policy.from_document(document), {"tpm_attestation": block}, verdict=verdict, scope=KEY_SCOPE
    )
    assert {r.rule: r.status for r in result.rules} == {"secure_boot": "pass", "boot_events": "fail"}
    assert sha256(b"firmware 2.0 (unknown)") in result.failures[0].detail
