"""The demo's anchoring: which policy the chats run under, what each reply's anchor says, and a
forged software quote judged by the shipped ``production`` policy.

With swtpm, its local CA (``swtpm_setup --create-ek-cert``) plays the TPM manufacturer: the demo's
policy is production with that CA as the only root, which no real deployment should trust. Without
swtpm nothing can be anchored, so the chats run production's other rules with any AIK, and say so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..policy import Policy, Record, appraise, load_policy

__all__ = ["anchor_summary", "demo_policy", "forged_quote_verdict", "measured_rules"]


def demo_policy(ca_root: Path | None, workdir: Path) -> tuple[Policy, str]:
    """The chats' policy, written to ``workdir/policy.yaml`` (so ``verify --log`` can re-check the
    demo's log with it later, swtpm's root copied beside it), and a line that says what it trusts."""
    from .._files import write_file

    if ca_root is not None:
        write_file(workdir / "swtpm-ca.pem", ca_root.read_bytes(), mode=0o644)
        trust = "{mode: ek, roots: [swtpm-ca.pem]}"
        why = "swtpm's local CA plays the TPM manufacturer (test only: never trust it in production)"
        name = "production-swtpm-ca"
    else:
        trust = "{mode: any}"
        why = "anchoring unavailable without swtpm: production's other rules, AIK NOT anchored"
        name = "production-unanchored"
    text = (
        f"# The demo's policy: {why}.\napiVersion: nomyo-audit/v1\nkind: AttestationPolicy\n"
        f"extends: production\nmetadata: {{name: {name}}}\nspec:\n  aik_trust: {trust}\n{measured_rules()}"
    )
    write_file(workdir / "policy.yaml", text.encode(), mode=0o644)
    return load_policy(workdir / "policy.yaml"), why


def measured_rules() -> str:
    """The demo policy's rules on what its logs prove: secure boot on, every IMA entry one of the
    demo machine's files, and this router version serving the echo model (PCR 23)."""
    import json

    from .._version import __version__
    from ..tpm._measurements import demo_ima_allow_list

    allowed = json.dumps(demo_ima_allow_list())  # JSON is YAML: paths quoted, digests listed
    return (
        "  pcr_selection: {sha256: [0, 7, 10, 23]}\n"
        "  secure_boot: enabled\n"
        f"  ima: {{digests: {allowed}}}\n"
        f"  serving_stack: {{router_versions: [{json.dumps(__version__)}], models: {{echo: any}}}}\n"
    )


def anchor_summary(metadata: Mapping[str, Any]) -> str:
    """What the client's own verdict says of the AIK's anchor (never the router's word)."""
    verification = metadata.get("verification")
    facts = verification.get("facts", {}) if isinstance(verification, Mapping) else {}
    kind = facts.get("anchor_kind") if isinstance(facts, Mapping) else None
    if not kind:
        return "AIK not anchored"
    return (
        f"AIK anchored ({kind}): manufacturer {facts.get('manufacturer')}, "
        f"model {facts.get('tpm_model')}, firmware {facts.get('tpm_firmware_version')}"
    )


def forged_quote_verdict() -> str:
    """A software key's quote, right in every other way, judged by the shipped production policy."""
    from ..attest._attester import TPMAttester
    from ..attest._software import SoftwareTPM
    from ..tpm._binding import client_key_binding, response_content_digest
    from ..tpm._measurements import measure_demo_boot

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    client_key = bytes(32)
    response: dict[str, Any] = {"id": "forged", "model": "echo", "choices": [{"message": {"content": "-"}}]}
    digest = response_content_digest(response)
    response["_metadata"] = {
        "payload_id": "forged",
        "processed_at": int(time.time()),
        "security_tier": "high",
        "client_key_sha256": client_key.hex(),
        "memory_protection": {"memory_locking": True, "secure_zeroing": True, "core_dump_prevention": True},
        "tpm_attestation": TPMAttester(tpm).evidence(client_key_binding("forged", digest, client_key)),
    }
    record = Record("forged", response["_metadata"], digest, "content", response)
    appraisal = appraise(record, load_policy("production"), at=time.time())
    result = appraisal.result
    assert result is not None
    failed = "; ".join(f"{r.rule}: {r.detail}" for r in result.failures)
    return (
        f"a forged software quote (golden PCRs, bound, fresh; verifier {appraisal.verdict.result}) "
        f"under the shipped production policy: {result.outcome.upper()} ({failed})"
    )
