"""Which controls a report evidences: the shipped mapping and the judgement of one report against it.

The mapping is an OSCAL 1.1 catalog shipped as package data (``data/controls/``): one control per
framework control (SOC 2, the EU AI Act, ISO/IEC 42001, NIST SP 800-53), named by the framework's
identifier, with the nomyo-audit checks that evidence it (``evidenced-by`` properties) and the
project's reasoning (docs/controls.md). It is the project's mapping, not an auditor's opinion.

:func:`controls_evidenced` is pure: a report document (:func:`build_report
<nomyo_audit.audit.build_report>`) in, one :class:`ControlStatus` per control out. Each check is
judged from the report's own facts only (its verified log, checkpoint, counters, rules and failure
samples), and a control is ``satisfied`` only when every check it rests on held, ``not-satisfied``
when one of them failed, and ``not-evidenced`` when the report cannot tell: a report never claims
more than it shows. Fields are read defensively (a report is a file someone may have edited):
anything missing or malformed counts as not shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Literal, NamedTuple

__all__ = [
    "CHECKS",
    "MAPPING_CATALOG_UUID",
    "MAPPING_FILE",
    "MAPPING_NS",
    "Control",
    "ControlStatus",
    "controls_evidenced",
    "load_mapping",
    "scope_phrase",
]

#: The shipped catalog's uuid (OSCAL documents that judge these controls link to it).
MAPPING_CATALOG_UUID = "6a0f3f57-3c1e-4c8e-9d55-1d6f1c9b2a10"
#: The catalog's file name in the package data directory ``data/controls``.
MAPPING_FILE = "nomyo-audit-controls.json"
#: The namespace of the catalog's own properties (framework, evidenced-by, source-control-id).
MAPPING_NS = "https://nomyo-audit.dev/ns/oscal"
#: A control's reason is cut to this many characters.
MAX_REASON = 480

#: The nomyo-audit checks a control can rest on, and what each shows.
CHECKS = {
    "audit_log_integrity": "every record hashed again from its bytes and every checkpoint verified",
    "log_checkpoint": "a checkpoint signed by a key given from a trusted place covers every record",
    "attestation": "every released reply's TPM quote verified (signature, nonce, PCR digest)",
    "aik_anchor": "every quote's attestation key is anchored to a certified TPM (EK activation or CA chain)",
    "transport_encryption": "the end-to-end encryption's key is bound to the quote (require_key_binding)",
    "policy": "a policy judged every record and no reply was released after it failed",
    "measured_boot": "measured rules (PCRs, boot events, kernel command line, IMA, serving stack) judged "
    "every released reply from a TPM-proven event log",
    "denial_recording": "every denial, warning and failure is recorded with its reason in the verified log",
    "record_keeping": "every request of the period is recorded automatically, and the records verified",
    "record_retention": "records six months old are still held, verified, under a trusted checkpoint",
}

Status = Literal["satisfied", "not-satisfied", "not-evidenced"]
_State = Literal["held", "failed", "unknown"]
#: Policy rules on what the TPM measured: a proven event log or quoted PCR values.
MEASURED_RULES = ("pcrs", "secure_boot", "boot_events", "kernel_cmdline", "ima", "serving_stack")
#: How old the oldest record must be to show the EU AI Act's six months of retention.
RETENTION = timedelta(days=183)
#: Checks judged on the log itself, whatever the report's scope; every other check reads the
#: report's counts, which a scoped report keeps for its scope's records only.
LOG_WIDE_CHECKS = frozenset({"audit_log_integrity", "log_checkpoint"})
#: The labels a report's ``scope`` can limit, in the order a scope is named.
SCOPE_LABELS = ("service", "router", "tenant")


class Control(NamedTuple):
    """One framework control of the mapping and the nomyo-audit checks that evidence it."""

    framework: str
    control_id: str
    title: str
    checks: tuple[str, ...]
    #: why these checks evidence this control (docs/controls.md says more)
    rationale: str
    #: the control's id in the shipped OSCAL catalog (``nist-au-9``): what OSCAL findings target
    oscal_id: str = ""


class ControlStatus(NamedTuple):
    """How one report stands against one control, and why (bounded, from the report's facts)."""

    control: Control
    status: Status
    reason: str


# pdoc resolves NamedTuple fields from the generated __new__, where postponed annotations are strings
# it cannot evaluate: give it the real types.
ControlStatus.__new__.__annotations__.update(control=Control, status=Status)


class _Check(NamedTuple):
    state: _State
    reason: str


@lru_cache(maxsize=1)
def load_mapping() -> tuple[Control, ...]:
    """The controls of the shipped catalog, in its order (framework by framework)."""
    root = resources.files("nomyo_audit").joinpath("data").joinpath("controls").joinpath(MAPPING_FILE)
    catalog = json.loads(root.read_text(encoding="utf-8"))["catalog"]
    controls: list[Control] = []
    for group in catalog["groups"]:
        for control in group["controls"]:
            props = control.get("props", [])
            label = next(p["value"] for p in props if p["name"] == "label")
            framework = next(p["value"] for p in props if p["name"] == "framework")
            checks = tuple(
                p["value"] for p in props if p["name"] == "evidenced-by" and p.get("ns") == MAPPING_NS
            )
            guidance = next(p["prose"] for p in control["parts"] if p["name"] == "guidance")
            controls.append(Control(framework, label, control["title"], checks, guidance, control["id"]))
    return tuple(controls)


def scope_phrase(report: Mapping[str, Any]) -> str | None:
    """The report's ``scope`` as words (``service billing, tenant acme``), or None for a report of the
    whole log. A scoped report's counts are its scope's records only, so what is said from them must
    name the scope."""
    scope = _map(report.get("scope"))
    named = [f"{label} {scope[label]}" for label in SCOPE_LABELS if scope.get(label) is not None]
    return ", ".join(named) or None


def controls_evidenced(report: Mapping[str, Any]) -> tuple[ControlStatus, ...]:
    """Judge every control of the mapping from one report document; see the module docstring.

    A scoped report's controls are judged on its scope's records: each reason that rests on them
    says so first (``on the records of service billing only (the report's scope): ...``)."""
    checks = _Facts(report).checks()
    scope = scope_phrase(report)
    return tuple(_judge(control, checks, scope) for control in load_mapping())


def _judge(control: Control, checks: Mapping[str, _Check], scope: str | None = None) -> ControlStatus:
    results = [checks.get(name, _Check("unknown", f"{name}: not a known check")) for name in control.checks]
    failed = [r.reason for r in results if r.state == "failed"]
    unknown = [r.reason for r in results if r.state == "unknown"]
    if failed:
        status: Status = "not-satisfied"
        reasons = failed
    elif unknown:
        status, reasons = "not-evidenced", unknown
    else:
        status, reasons = "satisfied", [r.reason for r in results]
    # one printable line: a reason quotes report fields (a policy name, a period) into Markdown and HTML
    said = "; ".join(dict.fromkeys(reasons))
    if scope and set(control.checks) - LOG_WIDE_CHECKS:
        said = f"on the records of {scope} only (the report's scope): {said}"
    reason = "".join(c if c.isprintable() else "?" for c in said)
    return ControlStatus(
        control, status, reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"
    )


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _count(value: Any) -> int:
    return value if type(value) is int and value >= 0 else 0


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


class _Facts:
    """What one report document states, read once, defensively, and judged check by check."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.report = report
        log = _map(report.get("log"))
        self.log = log
        self.intact = _map(log.get("verification")).get("intact") is True
        summary = _map(report.get("summary"))
        self.n = {k: _count(summary.get(k)) for k in ("requests", "verified", "passed", "warned", "denied")}
        self.n["denied_before_sending"] = _count(summary.get("denied_before_sending"))
        self.n["failed"] = _count(summary.get("failed"))
        #: replies the caller received: passed, warned, and (without a policy) failed with outcome ok
        self.released = self.n["passed"] + self.n["warned"]
        self.rules = {str(k): _map(v) for k, v in _map(report.get("rules")).items()}
        failures = report.get("failures")
        self.samples = [_map(f) for f in failures] if isinstance(failures, list) else []
        self.samples_complete = _count(report.get("failures_omitted")) == 0 and isinstance(failures, list)
        released_failed = [
            s for s in self.samples if s.get("status") == "failed" and s.get("outcome") == "ok"
        ]
        self.released_unverified = len(released_failed)
        self.released += self.released_unverified
        #: records not released that a rule may have judged (a request that failed carries no policy
        #: result): a rule's counts include its judgements of these, which say nothing of released ones
        failed_unreleased = max(0, self.n["failed"] - self.released_unverified)
        self.withheld = max(0, self.n["requests"] - self.released - failed_unreleased)

    def checks(self) -> dict[str, _Check]:
        checks = {
            "audit_log_integrity": self._integrity(),
            "log_checkpoint": self._checkpoint(),
            "record_retention": self._retention(),
        }
        if not self.intact:
            unproven = _Check("unknown", "the log did not verify, so its records cannot be relied on")
            return {name: checks.get(name, unproven) for name in CHECKS}
        if self.n["requests"] == 0:
            empty = _Check("unknown", self._no_records())
            return {name: checks.get(name, empty) for name in CHECKS}
        checks["record_keeping"] = self._record_keeping()
        checks["policy"] = self._policy()
        checks["denial_recording"] = self._denials()
        checks["attestation"] = self._attestation()
        checks["aik_anchor"] = self._anchor()
        checks["transport_encryption"] = self._rules_check(("require_key_binding",), "key binding")
        checks["measured_boot"] = self._measured()
        return checks

    def _no_records(self) -> str:
        if scope_phrase(self.report) is None:
            return "the report covers no records"
        period = _count(_map(self.report.get("covers")).get("records"))
        return f"none of the period's {period} records is in the report's scope"

    def _integrity(self) -> _Check:
        if not self.intact:
            return _Check("failed", "the log did not verify intact")
        root = self.log.get("root")
        short = f", root {root[:16]}…" if isinstance(root, str) else ""
        return _Check("held", f"the log verified intact ({_count(self.log.get('size'))} records{short})")

    def _untrusted(self) -> _Check | None:
        """None when the log verified and a checkpoint signed by a trusted key covers every record."""
        if not self.intact:
            return _Check("failed", "the log did not verify intact")
        checkpoint = _map(self.log.get("checkpoint"))
        size = _count(self.log.get("size"))
        if not checkpoint:
            return _Check("unknown", "no signed checkpoint covers the records")
        if _map(self.log.get("verification")).get("key") != "given":
            return _Check(
                "unknown",
                "the checkpoint was checked with the key the log names, not one given from a trusted place",
            )
        covered = _count(checkpoint.get("size"))
        if covered < size:
            return _Check("unknown", f"records {covered} to {size - 1} lie beyond the last signed checkpoint")
        return None

    def _checkpoint(self) -> _Check:
        checkpoint = _map(self.log.get("checkpoint"))
        return self._untrusted() or _Check(
            "held",
            f"a checkpoint signed by the given key ({str(checkpoint.get('signer'))[:16]}…) covers all "
            f"{_count(checkpoint.get('size'))} records",
        )

    def _retention(self) -> _Check:
        untrusted = self._untrusted()
        if untrusted is not None and untrusted.state == "failed":
            return untrusted
        days = sorted(d for d in _map(self.report.get("by_day")) if _time(f"{d}T00:00:00Z") is not None)
        generated = _time(self.report.get("generated_at"))
        oldest = _time(f"{days[0]}T00:00:00Z") if days else None
        if oldest is None or generated is None:
            return _Check("unknown", "the report states no dated records")
        held = (generated - oldest).days
        if generated - oldest < RETENTION:
            return _Check(
                "unknown",
                f"the oldest record it covers is from {days[0]}, {held} days before the report: one report "
                "shows only what the log still holds, and six months of retention needs records that old "
                "(or a chain of reports reaching back that far)",
            )
        return untrusted or _Check(
            "held", f"records from {days[0]} ({held} days before the report) are still held and verified"
        )

    def _record_keeping(self) -> _Check:
        period = _map(self.report.get("period"))
        return _Check(
            "held",
            f"{self.n['requests']} requests recorded automatically from {period.get('since')} to "
            f"{period.get('until')}, and their records verified",
        )

    def _policy(self) -> _Check:
        if not self.rules:
            return _Check("unknown", "no policy judged the records")
        if self.n["warned"]:
            return _Check(
                "failed", f"{self.n['warned']} replies were released although their policy failed (warn)"
            )
        if self.released_unverified:
            return _Check(
                "failed", f"{self.released_unverified} replies were released with unverified evidence"
            )
        policy = _map(self.report.get("policy"))
        name = f"policy {policy.get('name')}" if policy.get("name") else "the recorded policy"
        return _Check(
            "held", f"{name} judged the records; every failure was withheld ({self.n['denied']} denied)"
        )

    def _denials(self) -> _Check:
        if not self.rules:
            return _Check("unknown", "no policy judged the records, so no anomaly was looked for")
        n = self.n
        listed = len(self.samples)
        return _Check(
            "held",
            f"{n['denied']} denied ({n['denied_before_sending']} before sending), {n['warned']} warned and "
            f"{n['failed']} failed, each recorded with its reason in the verified log ({listed} listed)",
        )

    def _attestation(self) -> _Check:
        if self.released_unverified:
            return _Check(
                "failed", f"{self.released_unverified} replies were released with unverified evidence"
            )
        if not self.rules:
            if self.n["verified"] >= self.released and self.released:
                return _Check(
                    "held", f"without a policy, all {self.released} released replies' quotes verified"
                )
            return _Check("unknown", "no released reply with verified evidence")
        return self._rules_check(("require_attestation",), "quote verification")

    def _anchor(self) -> _Check:
        listed = self.report.get("aiks")
        aiks = [a for a in listed if isinstance(a, Mapping)] if isinstance(listed, list) else []
        not_anchored = sum(_count(a.get("not_anchored")) for a in aiks)
        if not aiks or _count(self.report.get("aik_count")) > len(aiks):
            return _Check("unknown", "the report lists no attestation key, or not all of them")
        if not_anchored:
            return _Check(
                "unknown",
                f"{not_anchored} records' attestation key is not anchored to a certified TPM: a software key "
                "could have made their quotes",
            )
        return _Check("held", f"all {len(aiks)} attestation keys are anchored to a certified TPM")

    def _measured(self) -> _Check:
        judged = [rule for rule in MEASURED_RULES if self._judged(rule) > 0]
        if not judged:
            return _Check("unknown", "the policy has no rule on what the TPM measured")
        return self._rules_check(tuple(judged), "measured rules", any_covers=True)

    def _judged(self, rule: str) -> int:
        counts = self.rules.get(rule, {})
        return _count(counts.get("pass")) + _count(counts.get("fail"))

    def _rules_check(self, rules: tuple[str, ...], what: str, *, any_covers: bool = False) -> _Check:
        """Held when the rules judged every released reply and no released reply failed one.

        With ``any_covers`` one of ``rules`` judging every released reply is enough (each measured
        rule judges its part of the machine); otherwise each rule must.
        """
        names = ", ".join(rules)
        if not self.rules:
            return _Check("unknown", f"no policy judged the records ({what})")
        # a rule's counts cover every record it judged, withheld ones too: only what is left after
        # crediting it with every withheld record can have been a judgement of a released reply
        coverage = [self._judged(rule) - self.withheld >= self.released for rule in rules]
        if not (any(coverage) if any_covers else all(coverage)):
            return _Check(
                "unknown", f"{names} did not judge every one of the {self.released} released replies"
            )
        released_failing = [
            s
            for s in self.samples
            if s.get("status") == "warned"
            and any(isinstance(r, str) and r.split(":", 1)[0] in rules for r in _list(s.get("rules")))
        ]
        if released_failing:
            return _Check(
                "failed", f"{len(released_failing)} replies were released although {names} failed (warn)"
            )
        failing = sum(_count(self.rules.get(rule, {}).get("fail")) for rule in rules)
        if self.n["warned"] and failing and not self.samples_complete:
            return _Check(
                "unknown", f"{names} failed on {failing} records and not every warned one is listed"
            )
        withheld = f"; the {failing} records that failed it were withheld" if failing else ""
        return _Check(
            "held", f"{names} judged all {self.released} released replies, none released failing{withheld}"
        )
