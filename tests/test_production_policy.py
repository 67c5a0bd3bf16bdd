"""The shipped ``production`` policy requires an anchored AIK (issue 12 section 5).

A software attester signs quotes that are right in every other way (golden PCRs, key binding,
memory protection, fresh): production denies them on ``aik_trust`` alone, offline and before any
prompt is sent. A router on a real swtpm whose EK certificate chains to a trusted manufacturer
root (swtpm's local CA stands in for one, so the test policy names it) passes production.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import FIXTURES, RecordingBackend

from nomyo_audit import SecureChatCompletion, SecurityError
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.attest._swtpm import SwtpmProcess
from nomyo_audit.policy import Record, appraise, load_policy
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm._binding import client_key_binding, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot

HELLO = [{"role": "user", "content": "production hello"}]
CLIENT_KEY = bytes(range(32))
UNANCHORED = FIXTURES / "policies" / "production-unanchored.yaml"


def test_production_requires_an_ek_anchor_with_the_shipped_roots():
    assert load_policy("production").spec["aik_trust"] == {"mode": "ek"}  # no roots: the bundled ones
    assert load_policy("maximum").spec["aik_trust"]["mode"] == "ek"  # maximum keeps the anchor and adds a pin


def forged_software_reply() -> dict:
    """A reply whose quote a software key made: right PCRs, binding, memory protection and time."""
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    response = {"id": "c", "model": "echo", "choices": [{"message": {"content": "hi"}}]}
    digest = response_content_digest(response)
    response["_metadata"] = {
        "payload_id": "forged-1",
        "processed_at": int(time.time()),
        "security_tier": "high",
        "client_key_sha256": CLIENT_KEY.hex(),
        "memory_protection": {"memory_locking": True, "secure_zeroing": True, "core_dump_prevention": True},
        "tpm_attestation": TPMAttester(tpm).evidence(client_key_binding("forged-1", digest, CLIENT_KEY)),
    }
    return response


def test_production_denies_a_forged_software_quote_on_aik_trust_alone():
    response = forged_software_reply()
    record = Record("forged", response["_metadata"], response_content_digest(response), "content", response)
    now = time.time()
    denied = appraise(record, load_policy("production"), at=now)
    assert denied.verdict.result == "pass"  # the signature, PCRs and binding all verify
    assert denied.result is not None and denied.result.outcome == "deny"
    assert [r.rule for r in denied.result.failures] == ["aik_trust"]
    assert "not anchored" in denied.result.failures[0].detail
    # the same quote under production's other rules passes: anchoring is what denies it
    lifted = appraise(record, load_policy(UNANCHORED), at=now)
    assert lifted.result is not None and lifted.result.outcome == "pass"


def test_production_refuses_a_software_router_before_any_prompt(make_router, client_keys_dir):
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    backend = RecordingBackend()
    router = make_router(attester=TPMAttester(tpm), backend=backend)

    async def go() -> None:
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy="production"
        ) as client:
            await client.create("echo", HELLO, security_tier="high")

    with pytest.raises(SecurityError) as refused:
        asyncio.run(go())
    assert refused.value.code == "activation_unavailable"
    assert backend.payloads == []  # no prompt reached the router


@pytest.fixture(scope="module")
def demo_machine_tpm():
    """A swtpm of its own (its PCRs are extended with the demo boot, so not the session's swtpm)."""
    from conftest import require

    from nomyo_audit.attest._swtpm import swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    with SwtpmProcess() as process:
        yield process


def test_production_passes_an_anchored_swtpm_router(demo_machine_tpm, make_router, client_keys_dir, tmp_path):
    # swtpm's local CA is not a real manufacturer, so the test trusts it as one, on top of production
    root = Path(demo_machine_tpm.ca_root_path)
    (tmp_path / "swtpm-ca.pem").write_bytes(root.read_bytes())
    policy_file = tmp_path / "production-swtpm.yaml"
    policy_file.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nextends: production\n"
        "metadata: {name: production-swtpm}\n"
        "spec:\n  aik_trust: {mode: ek, roots: [swtpm-ca.pem]}\n"
    )
    attester = make_attester(demo_machine_tpm.spec)
    measure_demo_boot(attester.source)  # type: ignore[attr-defined]
    router = make_router(attester=attester)

    async def go() -> dict:
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy=str(policy_file)
        ) as client:
            return await client.create("echo", HELLO, security_tier="high")

    reply = asyncio.run(go())
    meta = reply["_metadata"]
    assert meta["policy"]["outcome"] == "pass"
    rules = {r["rule"]: r for r in meta["policy"]["rules"]}
    assert rules["aik_trust"]["status"] == "pass" and "credential activation" in rules["aik_trust"]["detail"]
    assert all(r["status"] in ("pass", "skip") for r in meta["policy"]["rules"]), meta["policy"]["rules"]
    facts = meta["verification"]["facts"]
    assert facts["anchor_kind"] == "ek" and facts["manufacturer"] == "id:00001014"
