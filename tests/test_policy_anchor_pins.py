"""``aik_trust.pinned`` with ``mode: ek`` or ``ca`` is an added restriction (issue 12 section 5).

``maximum`` is production plus a pin: the AIK must be anchored (production's ``ek`` with the shipped
manufacturer roots) AND be one of the pinned keys. A bare ``mode: pinned`` would drop production's
anchoring, so maximum would be weaker than production; these tests hold it to both. swtpm's local
CA stands in for a manufacturer root, as in tests/test_production_policy.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from conftest import REPO, require
from test_production_policy import forged_software_reply

from nomyo_audit import SecureChatCompletion
from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available
from nomyo_audit.policy import PolicyViolationError, Record, appraise, load_policy
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm._binding import response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot

HELLO = [{"role": "user", "content": "maximum hello"}]
PLACEHOLDER = "0" * 64
HEADER = "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\n"


def policy_file(directory: Path, name: str, parent: str, aik_trust: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        f"{HEADER}extends: {parent}\nmetadata: {{name: {name}}}\nspec:\n  aik_trust: {aik_trust}\n"
    )
    return path


def test_maximum_is_production_plus_a_pin():
    maximum = load_policy("maximum")
    assert maximum.spec["aik_trust"] == {"mode": "ek", "pinned": [PLACEHOLDER]}  # production's anchor kept
    assert load_policy(REPO / "policies" / "maximum.yaml").spec["aik_trust"]["mode"] == "ek"


def test_maximum_denies_a_pinned_but_unanchored_aik(tmp_path):
    response = forged_software_reply()
    response["_metadata"].update(security_tier="maximum", cuda_device={"available": False})
    record = Record("forged", response["_metadata"], response_content_digest(response), "content", response)
    now = time.time()
    fingerprint = appraise(record, load_policy("production"), at=now).verdict.facts["aik_fingerprint"]
    # a bare pin of the software AIK passes: the pin itself matches
    bare = policy_file(tmp_path, "bare-pin", "maximum", f"{{mode: pinned, pinned: ['{fingerprint}']}}")
    assert _aik_trust(appraise(record, load_policy(bare), at=now)).status == "pass"
    # maximum with that pin added still requires the anchor, which a software key does not have
    pinned = policy_file(tmp_path, "maximum-pinned", "maximum", f"{{mode: ek, pinned: ['{fingerprint}']}}")
    assert load_policy(pinned).spec["aik_trust"]["mode"] == "ek"
    denied = appraise(record, load_policy(pinned), at=now)
    assert denied.result is not None and denied.result.outcome == "deny"
    assert [r.rule for r in denied.result.failures] == ["aik_trust"]
    assert "not anchored" in denied.result.failures[0].detail


def _aik_trust(appraisal):  # type: ignore[no-untyped-def]
    assert appraisal.result is not None
    return next(r for r in appraisal.result.rules if r.rule == "aik_trust")


@pytest.fixture(scope="module")
def anchored_tpm():
    """A swtpm of its own with the demo boot measured, whose EK certificate swtpm's local CA signed."""
    require(swtpm_available(), "swtpm is not installed")
    with SwtpmProcess() as process:
        yield process


def _ask(router, client_keys_dir, policy: Path) -> dict:  # type: ignore[no-untyped-def]
    async def go() -> dict:
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy=str(policy)
        ) as client:
            return await client.create("echo", HELLO, security_tier="maximum")

    return asyncio.run(go())


def test_maximum_is_anchored_and_pinned_against_a_swtpm_router(
    anchored_tpm, make_router, client_keys_dir, tmp_path
):
    (tmp_path / "swtpm-ca.pem").write_bytes(Path(anchored_tpm.ca_root_path).read_bytes())
    attester = make_attester(anchored_tpm.spec)
    measure_demo_boot(attester.source)  # type: ignore[attr-defined]
    router = make_router(attester=attester)

    # anchored but not pinned (maximum's placeholder pin): denied on aik_trust alone, before any prompt
    unpinned = policy_file(tmp_path, "maximum-swtpm", "maximum", "{mode: ek, roots: [swtpm-ca.pem]}")
    with pytest.raises(PolicyViolationError) as denied:
        _ask(router, client_keys_dir, unpinned)
    assert [r.rule for r in denied.value.result.failures] == ["aik_trust"]
    assert "is not pinned" in denied.value.result.failures[0].detail
    assert router.config.backend.payloads == []  # no prompt reached the router

    # the router's AIK, as an anchored production reply shows it
    production = policy_file(tmp_path, "production-swtpm", "production", "{mode: ek, roots: [swtpm-ca.pem]}")
    facts = _ask(router, client_keys_dir, production)["_metadata"]["verification"]["facts"]
    fingerprint = facts["aik_fingerprint"]

    # anchored and pinned: passes, and says both
    pinned = policy_file(
        tmp_path, "maximum-pinned", "maximum-swtpm.yaml", f"{{mode: ek, pinned: ['{fingerprint}']}}"
    )
    meta = _ask(router, client_keys_dir, pinned)["_metadata"]
    assert meta["policy"]["outcome"] == "pass"
    rules = {r["rule"]: r for r in meta["policy"]["rules"]}
    assert rules["aik_trust"]["status"] == "pass"
    detail = rules["aik_trust"]["detail"]
    assert "credential activation" in detail and "pinned" in detail
    assert meta["verification"]["facts"]["anchor_kind"] == "ek"


def test_a_pin_never_weakens_mode_any(tmp_path):
    """``pinned`` restricts in every mode: ``any`` with pins trusts only the pinned keys (not anchored)."""
    response = forged_software_reply()
    record = Record("forged", response["_metadata"], response_content_digest(response), "content", response)
    path = tmp_path / "any-pinned.yaml"
    trust = f"{{mode: any, pinned: ['{PLACEHOLDER}']}}"
    path.write_text(f"{HEADER}metadata: {{name: any-pinned}}\nspec:\n  aik_trust: {trust}\n")
    outcome = _aik_trust(appraise(record, load_policy(path), at=time.time()))
    assert outcome.status == "fail" and "is not pinned" in outcome.detail


@pytest.mark.parametrize("pin", [True, False])
def test_from_evidence_output_is_valid_and_extends_maximum_anchored(tmp_path, pin):
    import json

    from click.testing import CliRunner

    from nomyo_audit.cli import cli

    (tmp_path / "replies.jsonl").write_text(json.dumps(forged_software_reply()) + "\n")
    flags = ["--pin-aik" if pin else "--no-pin-aik", "--allow-software-attester"]
    out = tmp_path / "pins.yaml"
    made = CliRunner().invoke(
        cli, ["policy", "from-evidence", *flags, str(tmp_path / "replies.jsonl"), "-o", str(out)]
    )
    assert made.exit_code == 0, made.output
    written = load_policy(out).spec["aik_trust"]
    assert written["mode"] == ("pinned" if pin else "any") and len(written.get("pinned", ())) == pin
    # listed before maximum, the generated pins are added to maximum's anchored mode
    combined = tmp_path / "ours.yaml"
    combined.write_text(f"{HEADER}extends: [pins.yaml, maximum]\nmetadata: {{name: ours}}\nspec: {{}}\n")
    trust = load_policy(combined).spec["aik_trust"]
    assert trust == {"mode": "ek", "pinned": [*written.get("pinned", ()), PLACEHOLDER]}
