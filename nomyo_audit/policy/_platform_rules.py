"""The cloud platform rules ``gce``, ``sev_snp`` and ``tdx``: constraints on the facts of a cloud
vTPM anchor (docs/policies.md, docs/cloud-anchors.md). Pure, no I/O beyond the trust store
``aik_trust`` reads.

Each rule judges only facts an anchor proved: the ``platform`` facts of an ``aik_anchor`` that
passed with the rule's kind (``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx``), from the verdict
when the caller anchored it (the client, ``verify`` with roots), else appraised here from the
reply's ``platform`` evidence exactly as ``aik_trust`` does (same roots, same cache). Without such
an anchor every rule fails closed: a project, measurement or TCB a router merely states is never
believed. The TCB status of SEV-SNP is always ``unknown`` (no AMD collateral); ``min_tcb`` is a
floor on the reported TCB the VCEK certifies, not a claim that it is current.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..tpm._verdict import CHECKS, Verdict
from ._anchor_rule import _appraise_here, _store_of
from ._model import PolicySpec

__all__ = ["PLATFORM_RULES"]

_ANCHOR = CHECKS.index("aik_anchor")
_KINDS = {"gce": "gce-ak-cert", "sev_snp": "azure-sev-snp", "tdx": "azure-tdx"}
_TCB_PARTS = ("bootloader", "tee", "snp", "microcode")
#: what reads a platform's facts and says what is wrong with them ("" when nothing is)
Judge = Callable[[Mapping[str, Any]], str]


def _platform_rule(rule: str, judge: Judge, spec: PolicySpec) -> Any:
    """A check that finds the rule's anchor facts and applies ``judge`` to them."""
    from ._rules import RuleOutcome

    kind = _KINDS[rule]
    trust = spec.get("aik_trust")
    roots = _store_of(trust if isinstance(trust, Mapping) else {})

    def check(metadata: Mapping[str, Any], verdict: Verdict, model: Any, now: float | None) -> Any:
        finding = verdict.findings[_ANCHOR]
        facts: Mapping[str, Any] = verdict.facts
        code = finding.code
        if not (finding.status == "pass" and facts.get("anchor_kind") == kind):
            if finding.status == "fail" or verdict.findings[CHECKS.index("signature")].status != "pass":
                return RuleOutcome(rule, "fail", f"no {kind} anchor: {finding.detail}", (code,))
            result = _appraise_here(kind, metadata, verdict, roots, (), now)
            facts, code = result.facts, result.finding.code
            if result.finding.status != "pass" or facts.get("anchor_kind") != kind:
                return RuleOutcome(rule, "fail", f"no {kind} anchor: {result.finding.detail}", (code,))
        platform = facts.get("platform")
        problem = judge(platform) if isinstance(platform, Mapping) else f"the {kind} anchor has no facts"
        if problem:
            return RuleOutcome(rule, "fail", problem, (code,))
        return RuleOutcome(rule, "pass", f"the {kind} anchor's facts meet the policy", (code,))

    return check


def _gce(value: Mapping[str, Any], spec: PolicySpec) -> Any:
    projects = frozenset(value.get("projects", ()))
    zones = frozenset(value.get("zones", ()))

    def judge(platform: Mapping[str, Any]) -> str:
        project, zone = platform.get("project_id"), platform.get("zone")
        if projects and project not in projects:
            return f"GCE project {project!r} is not one of {', '.join(sorted(projects))}"
        if zones and zone not in zones:
            return f"GCE zone {zone!r} is not one of {', '.join(sorted(zones))}"
        return ""

    return _platform_rule("gce", judge, spec)


def _sev_snp(value: Mapping[str, Any], spec: PolicySpec) -> Any:
    measurements = frozenset(value.get("measurements", ()))
    floor = {part: value["min_tcb"][part] for part in _TCB_PARTS if part in value.get("min_tcb", {})}
    products = frozenset(value.get("products", ()))

    def judge(platform: Mapping[str, Any]) -> str:
        if platform.get("debug") is not False:  # the appraiser refuses debug; never assume it did
            return "the SEV-SNP guest policy allows debugging"
        measurement = platform.get("measurement")
        if measurements and measurement not in measurements:
            return f"SEV-SNP measurement {str(measurement)[:16]}... is not an allowed one"
        if products and platform.get("product") not in products:
            return f"AMD product {platform.get('product')!r} is not one of {', '.join(sorted(products))}"
        tcb = platform.get("reported_tcb")
        tcb = tcb if isinstance(tcb, Mapping) else {}
        low = [
            f"{part} {tcb.get(part)} < {minimum}"
            for part, minimum in floor.items()
            if type(tcb.get(part)) is not int or tcb[part] < minimum
        ]
        if low:
            return f"the reported TCB is below the policy's minimum ({', '.join(low)}; TCB status unknown)"
        return ""

    return _platform_rule("sev_snp", judge, spec)


def _tdx(value: Mapping[str, Any], spec: PolicySpec) -> Any:
    mrtds = frozenset(value.get("mrtd", ()))
    statuses = frozenset(value.get("tcb_status", ()))

    def judge(platform: Mapping[str, Any]) -> str:
        if platform.get("debug") is not False:
            return "the TD allows debugging"
        if mrtds and platform.get("mrtd") not in mrtds:
            return f"MRTD {str(platform.get('mrtd'))[:16]}... is not an allowed one"
        if statuses and platform.get("tcb_status") not in statuses:
            allowed = ", ".join(sorted(statuses))
            return f"TDX TCB status {platform.get('tcb_status')!r} is not one of {allowed}"
        return ""

    return _platform_rule("tdx", judge, spec)


#: The platform rules, registered after ``aik_trust`` in :data:`nomyo_audit.policy._rules.RULES`.
PLATFORM_RULES: tuple[tuple[str, Callable[[Any, PolicySpec], Any]], ...] = (
    ("gce", _gce),
    ("sev_snp", _sev_snp),
    ("tdx", _tdx),
)
