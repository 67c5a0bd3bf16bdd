"""A Verdict (and the policy result judged on it) as an IETF RATS EAT Attestation Result
(draft-ietf-rats-ear), JSON claims-set; :func:`nomyo_audit.audit.sign_ear` signs it as a JWT.

The mapping never claims more than the evidence gave. Values are AR4SI's
(draft-ietf-rats-ar4si, named as in Veraison's ``ear`` library); 0 is "no claim",
and a relying party must treat it as if the claim were absent.

A quote whose ``signature`` check failed authenticates nothing it says: every claim that would be
made is 99 ("crypto_failed", "cryptographic validation of the Evidence has failed", a value AR4SI
registers for every claim), resting on ``signature`` alone; the others stay 0.

``instance-identity`` (the Attesting Environment, here the AIK)
  97 ("unrecognized_instance") when a check of the AIK's identity failed (the quote's
  structure, its signer's name, the AIK's attributes: :data:`IDENTITY_CHECKS`),
  when an anchor was offered and did not verify, or when the policy's ``aik_trust`` refused
  the AIK. 2 ("recognized_instance") only when those checks passed and the AIK is recognized:
  anchored (``aik_anchor`` passed: an AK certificate chain or a credential activation against a
  certified EK), or pinned or anchored by the policy's ``aik_trust`` (mode ``pinned``, ``ek``,
  ``ca``, or listed pins). A key whose signature merely verifies is recognized by nobody: 0.

``hardware``
  2 ("genuine_hw") only when ``aik_anchor`` passed and the AIK's identity did not fail (an AK
  certificate certifies a key, not the attributes a router presents with it); 97
  ("unrecognized_hw") when an anchor failed or the anchored AIK's identity did; else 0.

``executables``
  96 ("contraindicated_rt") when the PCR evidence contradicts itself (the verifier's PCR
  checks, or an event log or IMA list that does not replay to the quote), or a proven boot event
  is on the policy's ``boot_events.deny`` list (known bad). 33 ("unrecognized_rt") when a
  golden-value rule (``pcrs``, the ``boot_events`` allow-lists, ``ima``) failed: something
  measured is not one the policy approved. 3 ("approved_boot") only when passing rules approved
  every kind of code a measured boot records: firmware (PCR 0: a golden value or
  ``boot_events.firmware``), option ROMs (PCR 2: a golden value) and boot applications (PCR 4:
  a golden value or ``boot_events.boot_applications``) (:data:`BOOT_CODE_PCRS`). 2
  ("approved_rt") when, besides, the ``ima`` rule passed: every file IMA measured after boot is
  allowed (as far as the kernel's IMA policy measures, with the runtime policy's excludes).
  A golden value for some PCRs only (PCR 7 alone, say) approves no executables: 0.

``configuration``
  from the rules that judge proven configuration: ``secure_boot`` (PCR 7), ``kernel_cmdline``
  (the proven event log), ``serving_stack`` (the router build and models measured into PCR 23).
  2 ("approved_config") when the policy states at least one and all passed: the configuration
  is one the policy approves, in the aspects it states (``ear.appraisal-policy-id`` names
  it). When one failed: 96 ("unsupportable_config") under ``on_failure: deny`` (the policy
  finds it unacceptable), 32 ("unsafe_config") under ``on_failure: warn``.

``file-system``, ``runtime-opaque``, ``storage-opaque``, ``sourced-data``
  always 0: nothing proven speaks to them. ``memory_protection``, ``cuda_device``,
  ``security_tiers`` and ``models`` read the router's own word, which never makes a claim.

``ear.status``
  ``contraindicated`` when any verifier check failed, any claim is in the contraindicated tier
  (96 and above), or the policy denied. ``affirming`` only when nothing failed (neither a
  check nor a rule, so freshness and binding rules count too), every claim made is in the
  affirming tier, and the AIK is anchored (``hardware`` 2): without an anchor a key in software
  could have signed, so nomyo-audit never affirms it. ``warning`` otherwise.

Per-check sub-results travel in extension claims of the submodule (``nomyo-audit.findings``:
every verifier check; ``nomyo-audit.policy``: the policy, its digest, its outcome and every
rule's) and ``nomyo-audit.vector-basis`` names, per claim made, the checks and rules it rests on.
EAR's ``submods`` are for the attesters of a composite device, not for checks: there is one, the
TPM. ``nomyo-audit.payload-id`` names the reply the quote was bound to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ._anchor import PLATFORM_ANCHOR_KINDS
from ._verify import Verdict

if TYPE_CHECKING:
    from ..policy._evaluate import PolicyResult
    from ..policy._model import Policy
    from ..policy._rules import RuleOutcome

__all__ = ["BOOT_CODE_PCRS", "EAT_PROFILE", "IDENTITY_CHECKS", "to_ear"]

#: The ``eat_profile`` claim of every result: the EAR profile this mapping follows
EAT_PROFILE = "tag:github.com,2023:veraison/ear"
DEFAULT_POLICY_ID = "nomyo-audit/verify-only"
#: the checks that establish the AIK's identity: a hardware anchor is believed only when none failed
IDENTITY_CHECKS = ("evidence_format", "signature", "quote_structure", "signer_name", "aik_attributes")
#: the checks whose failure makes the measured state contraindicated (executables 96)
_PCR_CHECKS = ("pcr_selection", "pcr_digest", "event_log", "ima_log")
#: PCRs holding the code a measured boot runs: firmware (0), option ROMs (2), boot applications (4)
BOOT_CODE_PCRS = frozenset({0, 2, 4})
_EXECUTABLES_RULES = ("pcrs", "boot_events", "ima")
_CONFIGURATION_RULES = ("secure_boot", "kernel_cmdline", "serving_stack")
#: the fixed prefix boot_events gives a deny-list hit (the rule's own text, before any event's)
_DENIED = "denied by boot_events.deny: "
_UNCLAIMED = ("file-system", "runtime-opaque", "storage-opaque", "sourced-data")

Claim = tuple[int, tuple[str, ...]]  # an AR4SI value and the checks and rules it rests on
_NO_CLAIM: Claim = (0, ())
#: AR4SI 99, "cryptographic validation of the Evidence has failed": the quote's signature did not verify
_CRYPTO_FAILED: Claim = (99, ("signature",))


def to_ear(
    verdict: Verdict,
    *,
    issued_at: int,
    policy_id: str | None = None,
    submod: str = "tpm",
    policy_result: PolicyResult | None = None,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """``verdict`` as an EAR claims-set (JSON-ready), for relying parties that consume IETF RATS
    attestation results; ``issued_at`` is the ``iat`` claim (seconds since the epoch) and
    ``submod`` names the one submodule appraised. ``policy_result`` (the policy judged on this
    verdict) adds the configuration and executables appraisals and the per-rule sub-results;
    ``policy`` (the policy itself) lets approvals be claimed, which depend on what it states
    (without it, only failures are). ``policy_id`` defaults to the policy's name and digest.
    The mapping is described in this module's docstring. Raises nothing.
    """
    failed = frozenset(f.check for f in verdict.failures)
    rules: dict[str, RuleOutcome] = {}
    if policy_result is not None:
        rules = {r.rule: r for r in policy_result.rules if r.status != "skip"}
    spec: Mapping[str, Any] = policy.spec if policy is not None else {}
    unacceptable = policy_result is not None and policy_result.on_failure != "warn"
    hardware = _hardware(verdict, failed)
    claims = {
        "instance-identity": _instance_identity(verdict, failed, rules.get("aik_trust"), spec),
        "configuration": _configuration(rules, unacceptable),
        "executables": _executables(failed, rules, spec),
        "hardware": hardware,
        **dict.fromkeys(_UNCLAIMED, _NO_CLAIM),
    }
    if "signature" in failed:  # nothing the quote says is authenticated: 99 wherever a claim is made
        claims = {name: (_CRYPTO_FAILED if value else _NO_CLAIM) for name, (value, _) in claims.items()}
    vector = {claim: value for claim, (value, _) in claims.items()}
    appraisal: dict[str, Any] = {
        "ear.status": _status(vector, bool(failed), policy_result),
        "ear.trustworthiness-vector": vector,
        "ear.appraisal-policy-id": policy_id or _policy_id(policy, policy_result),
        "nomyo-audit.findings": [f.to_dict() for f in verdict.findings],
        "nomyo-audit.vector-basis": {claim: list(basis) for claim, (value, basis) in claims.items() if value},
    }
    if policy_result is not None:
        appraisal["nomyo-audit.policy"] = policy_result.to_dict()
    return {
        "eat_profile": EAT_PROFILE,
        "iat": issued_at,
        "ear.verifier-id": {"developer": "nomyo-audit", "build": f"nomyo-audit {__version__}"},
        "nomyo-audit.payload-id": verdict.payload_id,
        "submods": {submod: appraisal},
    }


def _hardware(verdict: Verdict, failed: frozenset[str]) -> Claim:
    anchor = verdict.finding("aik_anchor").status
    identity_failed = sorted(failed.intersection(IDENTITY_CHECKS))
    if anchor == "fail":
        return 97, ("aik_anchor",)
    if anchor == "pass":
        return (97, ("aik_anchor", *identity_failed)) if identity_failed else (2, ("aik_anchor",))
    return _NO_CLAIM


def _instance_identity(
    verdict: Verdict, failed: frozenset[str], aik_trust: RuleOutcome | None, spec: Mapping[str, Any]
) -> Claim:
    identity_failed = tuple(sorted(failed.intersection(IDENTITY_CHECKS)))
    if identity_failed:
        return 97, identity_failed
    anchor = verdict.finding("aik_anchor").status
    if anchor == "fail":
        return 97, ("aik_anchor",)
    if aik_trust is not None and aik_trust.status == "fail":
        return 97, ("aik_trust",)
    basis = IDENTITY_CHECKS + (("aik_anchor",) if anchor == "pass" else ())
    trust = spec.get("aik_trust") or {}
    anchored = ("pinned", "ek", "ca", *PLATFORM_ANCHOR_KINDS)
    if aik_trust is not None and (trust.get("mode") in anchored or trust.get("pinned")):
        return 2, (*basis, "aik_trust")
    return (2, basis) if anchor == "pass" else _NO_CLAIM


def _executables(failed: frozenset[str], rules: Mapping[str, RuleOutcome], spec: Mapping[str, Any]) -> Claim:
    inconsistent = tuple(sorted(failed.intersection(_PCR_CHECKS)))
    if inconsistent:
        return 96, inconsistent
    stated = [rules[name] for name in _EXECUTABLES_RULES if name in rules]
    refused = tuple(r.rule for r in stated if r.status == "fail")
    if refused:
        events = rules.get("boot_events")
        denied = events is not None and events.status == "fail" and _deny_hit(events.detail)
        return (96 if denied else 33), refused
    approved, basis = _approved_boot_code(rules, spec)
    if not BOOT_CODE_PCRS.issubset(approved):
        return _NO_CLAIM
    ima = rules.get("ima")
    return (2, (*basis, "ima")) if ima is not None and ima.status == "pass" else (3, basis)


def _deny_hit(detail: str) -> bool:
    """Whether a failing boot_events outcome names a deny-list hit. Text a router chose (an event's
    description) could only make a refusal look denied, never an approval: 96 instead of 33."""
    return detail.startswith(_DENIED) or f"; {_DENIED}" in detail


def _approved_boot_code(
    rules: Mapping[str, RuleOutcome], spec: Mapping[str, Any]
) -> tuple[set[int], tuple[str, ...]]:
    """The PCRs whose code passing rules approved, and those rules."""
    approved: set[int] = set()
    basis: list[str] = []
    pcrs = rules.get("pcrs")
    if pcrs is not None and pcrs.status == "pass":
        for indices in (spec.get("pcrs") or {}).values():
            approved.update(_index(i) for i, allowed in indices.items() if allowed != "any")
        basis.append("pcrs")
    events = rules.get("boot_events")
    allow_lists = spec.get("boot_events") or {}
    if events is not None and events.status == "pass":
        approved.update(
            pcr for pcr, name in ((0, "firmware"), (4, "boot_applications")) if name in allow_lists
        )
        basis.append("boot_events")
    return approved, tuple(basis)


def _index(index: object) -> int:
    try:
        return int(str(index))
    except ValueError:
        return -1


def _configuration(rules: Mapping[str, RuleOutcome], unacceptable: bool) -> Claim:
    stated = [rules[name] for name in _CONFIGURATION_RULES if name in rules]
    if not stated:
        return _NO_CLAIM
    refused = tuple(r.rule for r in stated if r.status == "fail")
    if refused:
        return (96 if unacceptable else 32), refused
    return 2, tuple(r.rule for r in stated)


def _status(vector: Mapping[str, int], check_failed: bool, policy_result: PolicyResult | None) -> str:
    made = [value for value in vector.values() if value != 0]
    if check_failed or any(value >= 96 for value in made):
        return "contraindicated"
    if policy_result is not None and policy_result.outcome == "deny":
        return "contraindicated"
    policy_passed = policy_result is None or policy_result.passed
    if policy_passed and vector["hardware"] == 2 and all(2 <= value <= 31 for value in made):
        return "affirming"
    return "warning"


def _policy_id(policy: Policy | None, policy_result: PolicyResult | None) -> str:
    if policy is not None:
        return f"{policy.name}@sha256:{policy.digest}"
    if policy_result is not None:
        return f"{policy_result.policy_name}@sha256:{policy_result.policy_digest}"
    return DEFAULT_POLICY_ID
