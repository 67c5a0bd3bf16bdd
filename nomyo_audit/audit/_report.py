"""Compliance reports: one JSON document (the source of truth) built in one pass over the log.

:func:`build_report` is pure: records in, a versioned JSON-able dict out. It
streams, keeping only counters and capped samples, so a large log stays
readable and memory stays flat. Other formats render from this document
(:mod:`.render`), and :func:`timeline_svg` draws the chart as inline SVG (no
JavaScript, no network).

A report says what is true and no more. Every field of a record is read
defensively (a malformed record is counted as failed, never a crash). A
record's policy result is the client's own evaluation (``policy``), never a
field the router sent. The attester kind is the router's own declaration,
unauthenticated, and is reported as such: software-attested evidence is
flagged "no hardware" (so is swtpm, a TPM in software), and nothing here claims a genuine TPM, because AIKs
are not anchored to a hardware root of trust.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .._version import __version__
from ..policy import Policy, evaluate
from ..tpm._verify import verify_attestation
from ._records import recorded_content_digest, rfc3339

__all__ = [
    "MAX_FAILURES",
    "NO_HARDWARE_KINDS",
    "REPORT_SCHEMA",
    "STATUS_LEGEND",
    "build_report",
    "timeline_svg",
]

REPORT_SCHEMA = "https://nomyo-audit.dev/schemas/compliance-report/v1"
PREDICATE_TYPE = "https://nomyo-audit.dev/compliance-report/v1"
MAX_FAILURES = 200
MAX_DISTINCT = 50
_MAX_TEXT = 200

#: What each status means; every rendering shows it.
STATUS_LEGEND = {
    "passed": "the policy passed the reply (without --policy and no recorded policy: every verifier check "
    "passed and the request succeeded)",
    "warned": "the policy failed but is set to warn: the reply was returned and the failure recorded",
    "denied": "the policy failed and is set to deny: the reply was withheld from the caller",
    "denied before sending": "the router key's attestation failed or was unavailable, so the client sent "
    "nothing (counted in denied)",
    "failed": "the request failed (transport, HTTP or protocol error) or, without a policy, its evidence "
    "did not verify",
    "no hardware": "the router declared the quote came from a software attester or a software TPM "
    "(swtpm): no TPM hardware stood behind it (the attester kind is the router's own, unauthenticated label)",
}

#: Attester kinds that are software by the router's own account: no TPM hardware behind the quote.
NO_HARDWARE_KINDS = frozenset({"software", "swtpm"})

_BEFORE_SENDING = "denied before sending"
_KEY_DENIED = "the router key's attestation did not satisfy the policy; nothing was sent"
_KEY_UNAVAILABLE = "the router offers no usable key attestation; nothing was sent"


_EMPTY: Mapping[str, Any] = {}


# These run several times per record: the exact-type test is the fast path (records are decoded
# JSON), the isinstance one the careful path for anything else.
def _mapping(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


def _text(value: Any) -> str | None:
    """A string field as stored, capped; anything else is treated as absent."""
    if type(value) is str:
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT]
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _label(value: Any) -> str:
    """A value used as a grouping key: its text, or its JSON-ish form when not a string."""
    if type(value) is str and len(value) <= _MAX_TEXT:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text[:_MAX_TEXT]


def _codes(value: Any) -> list[str]:
    return [v[:_MAX_TEXT] for v in value if isinstance(v, str)] if isinstance(value, list) else []


class _Rule(NamedTuple):
    rule: str
    status: str
    detail: str


class _Appraisal(NamedTuple):
    """What one record says happened: its policy outcome, rules, and verifier result."""

    outcome: str | None
    rules: list[_Rule]
    result: str | None
    failed: list[str]
    facts: Mapping[str, Any]


def _recorded_rules(policy: Mapping[str, Any]) -> list[_Rule]:
    rules = policy.get("rules")
    if not isinstance(rules, list):
        return []
    return [
        _Rule(_label(r.get("rule")), _label(r.get("status")), _label(r.get("detail", "")))
        for r in rules
        if isinstance(r, Mapping)
    ]


def _as_recorded(doc: Mapping[str, Any]) -> _Appraisal:
    """The record's own policy result (the client's evaluation) and its stored verdict."""
    policy = _mapping(doc.get("policy"))
    verdict = _mapping(doc.get("verdict"))
    return _Appraisal(
        _text(policy.get("outcome")),
        _recorded_rules(policy),
        _text(verdict.get("result")),
        _codes(verdict.get("failed")),
        _mapping(verdict.get("facts")),
    )


def _record_time(doc: Mapping[str, Any]) -> float | None:
    text = doc.get("time")
    if not isinstance(text, str):
        return None
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()


def _reappraised(
    doc: Mapping[str, Any], metadata: Mapping[str, Any], policy: Policy, at: float | None
) -> _Appraisal:
    """Verify the stored evidence again and evaluate ``policy``, at the record's time unless ``at``."""
    moment = at if at is not None else _record_time(doc)
    if moment is None or not math.isfinite(moment):
        detail = "the record's time is unreadable, so freshness cannot be judged"
        return _Appraisal("deny", [_Rule("record", "fail", detail)], None, [], {})
    # the request this record was written for (the client's own id, in the hashed record), never
    # the payload_id the router's _metadata names: a replayed quote names the request it came from
    payload_id = doc.get("payload_id")
    if metadata.get("payload_id") != payload_id:
        metadata = {**metadata, "payload_id": payload_id}
    verdict = verify_attestation(
        metadata.get("tpm_attestation"),
        payload_id if isinstance(payload_id, str) else None,
        content_digest=recorded_content_digest(doc),
    )
    model = doc.get("model")
    result = evaluate(
        policy, metadata, now=moment, model=model if isinstance(model, str) else None, verdict=verdict
    )
    return _Appraisal(
        result.outcome,
        [_Rule(r.rule, r.status, r.detail) for r in result.rules],
        verdict.result,
        [f.code for f in verdict.failures],
        verdict.facts,
    )


def _before_sending(outcome: str, metadata: Mapping[str, Any]) -> str | None:
    """Why nothing was sent, for a request the client stopped at key attestation; else None."""
    if outcome.startswith("policy_denied") and "key_attestation" in metadata:
        return _KEY_DENIED
    if outcome.startswith("security_error:key_attestation"):
        return _KEY_UNAVAILABLE
    return None


def _status(outcome: str, appraisal: _Appraisal, error_code: str | None) -> tuple[str, str]:
    """(status, reason) for a record that was sent."""
    if appraisal.outcome == "deny" or outcome.startswith("policy_denied"):
        failed = [r.rule for r in appraisal.rules if r.status == "fail"]
        return "denied", "the policy denied the reply" + (f" ({', '.join(failed)})" if failed else "")
    if appraisal.outcome == "warn":
        return "warned", "the policy failed and warned"
    if appraisal.outcome == "pass":
        return "passed", "the policy passed"
    if outcome != "ok":
        return "failed", f"the request failed ({error_code or outcome})"
    if appraisal.result == "pass":
        return "passed", "every verifier check passed"
    if appraisal.result == "fail":
        return "failed", "the evidence did not verify (" + ", ".join(appraisal.failed) + ")"
    return "failed", "no verified attestation is recorded for this reply"


def _attester_kind(evidence: Mapping[str, Any]) -> str:
    """The router's own label for what produced the quote (unauthenticated), or none/unlabelled."""
    if evidence.get("is_available") is not True:
        return "none"
    label = evidence.get("attester")
    return label[:32] if isinstance(label, str) and label else "unlabelled"


def _pcr_order(bank: str, index: str) -> tuple[str, int, str]:
    return (bank, int(index), "") if index.isdigit() else (bank, 1 << 30, index)


class _Tally:
    """The counters and capped samples one pass keeps."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.by: dict[str, Counter[str]] = {"model": Counter(), "tier": Counter(), "router": Counter()}
        self.days: dict[str, Counter[str]] = defaultdict(Counter)
        self.hours: dict[str, Counter[str]] = defaultdict(Counter)
        self.rules: dict[str, Counter[str]] = defaultdict(Counter)
        self.findings: Counter[str] = Counter()
        self.aiks: Counter[str] = Counter()
        self.attesters: Counter[tuple[str, str, str]] = Counter()
        self.pcr_values: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self.combos: Counter[tuple[Any, ...]] = Counter()
        self.pcr_sets: Counter[tuple[Any, ...]] = Counter()
        self.failures: list[dict[str, Any]] = []
        self.first_time: str | None = None
        self.last_time: str | None = None
        self.first_seq: int | None = None
        self.last_seq: int | None = None

    def add(self, doc: Mapping[str, Any], policy: Policy | None, at: float | None) -> None:
        metadata = _mapping(doc.get("metadata"))
        outcome = _text(doc.get("outcome")) or ""
        error_code = _text(_mapping(doc.get("error")).get("code"))
        not_sent = _before_sending(outcome, metadata)
        key_evidence = _mapping(metadata.get("key_attestation"))
        if not_sent is not None:
            # nothing was sent, so there is no reply to appraise again: the recorded denial stands
            recorded = _as_recorded(doc)
            key_verdict = _mapping(key_evidence.get("verification"))
            appraisal = recorded._replace(facts=_mapping(key_verdict.get("facts")))
            status, label, reason = "denied", _BEFORE_SENDING, not_sent
            evidence = _mapping(key_evidence.get("tpm_attestation"))
        else:
            if policy is not None and metadata:
                appraisal = _reappraised(doc, metadata, policy, at)
            else:
                appraisal = _as_recorded(doc)
            status, reason = _status(outcome, appraisal, error_code)
            label = status
            evidence = _mapping(metadata.get("tpm_attestation"))
        self._count(doc, metadata, status, label, appraisal, evidence)
        if status != "passed":
            self._sample(doc, outcome, label, reason, error_code, appraisal)

    def _count(
        self,
        doc: Mapping[str, Any],
        metadata: Mapping[str, Any],
        status: str,
        label: str,
        appraisal: _Appraisal,
        evidence: Mapping[str, Any],
    ) -> None:
        """One counter increment for what most records share; :meth:`finish` spreads it out.

        Records of one hour, router, model and attester look alike, so counting
        their combination once is much cheaper than a dozen counters per record.
        """
        when = _text(doc.get("time")) or ""
        facts = appraisal.facts
        self.combos[
            (
                status,
                label == _BEFORE_SENDING,
                evidence.get("is_available") is True,
                appraisal.result == "pass",
                _label(doc.get("router")),
                _label(doc.get("model")),
                _text(metadata.get("security_tier")) or "not stated",
                when[:13],
                _text(facts.get("aik_fingerprint")) or "",
                _attester_kind(evidence),
            )
        ] += 1
        seq = doc.get("seq")
        if type(seq) is int:
            self.first_seq = seq if self.first_seq is None else self.first_seq
            self.last_seq = seq
        if when:
            self.first_time = self.first_time or when
            self.last_time = when
        for rule in appraisal.rules:
            self.rules[rule.rule][rule.status] += 1
        if appraisal.result == "fail":
            self.findings.update(appraisal.failed)
        pcrs = facts.get("pcr_values")
        if pcrs:
            try:  # the common shape, {bank: {index: value}} of strings, counted as one key
                self.pcr_sets[tuple([(bank, tuple(values.items())) for bank, values in pcrs.items()])] += 1
            except (AttributeError, TypeError):
                self._count_pcrs_careful(pcrs)

    def _count_pcrs_careful(self, pcrs: Any) -> None:
        for bank, values in _mapping(pcrs).items():
            for index, value in _mapping(values).items():
                self.pcr_values[(_label(bank), _label(index))][_label(value)] += 1

    def finish(self) -> None:
        """Spread the combined counts over the counters the report shows."""
        totals, by = self.totals, self.by
        for key, n in self.combos.items():
            status, not_sent, attested, verified, router, model, tier, hour, aik, kind = key
            totals["requests"] += n
            totals[status] += n
            if not_sent:
                totals["denied_before_sending"] += n
            else:
                totals["attested"] += n if attested else 0
                totals["verified"] += n if verified else 0
            by["router"][router] += n
            by["model"][model] += n
            by["tier"][tier] += n
            self.days[hour[:10] or "unknown"][status] += n
            self.hours[hour or "unknown"][status] += n
            if aik:
                self.aiks[aik] += n
            if kind != "none":
                self.attesters[(router, aik, kind)] += n
                totals["no_hardware"] += n if kind in NO_HARDWARE_KINDS else 0
        for pcr_set, n in self.pcr_sets.items():
            for bank, values in pcr_set:
                for index, value in values:
                    self.pcr_values[(_label(bank), _label(index))][_label(value)] += n
        self.combos.clear()
        self.pcr_sets.clear()

    def _sample(
        self,
        doc: Mapping[str, Any],
        outcome: str,
        label: str,
        reason: str,
        error_code: str | None,
        appraisal: _Appraisal,
    ) -> None:
        self.totals["failure_records"] += 1
        if len(self.failures) >= MAX_FAILURES:
            return
        seq = doc.get("seq")
        self.failures.append(
            {
                "seq": seq if isinstance(seq, int) else None,
                "time": _text(doc.get("time")),
                "payload_id": _text(doc.get("payload_id")),
                "status": label,
                "reason": reason,
                "outcome": outcome,
                "model": _text(doc.get("model")),
                "error": error_code,
                "findings": list(appraisal.failed) if appraisal.result == "fail" else [],
                "rules": [f"{r.rule}: {r.detail}" for r in appraisal.rules if r.status == "fail"],
            }
        )


def build_report(
    records: Iterable[Any],
    *,
    generated_at: str,
    log_state: Mapping[str, Any],
    policy: Policy | None = None,
    period: tuple[str | None, str | None] = (None, None),
    at: float | None = None,
) -> dict[str, Any]:
    """Aggregate record documents (as stored in the log) into the report document.

    With ``policy`` every sent record's stored evidence is appraised again
    against it, at the record's own time (so ``max_age`` judges the evidence as
    it was when received) or at ``at`` when given; without one, each record's
    recorded policy outcome (the client's own evaluation) is used. A request
    the client never sent (its router key's attestation failed) keeps its
    recorded denial: there is no reply to appraise.
    """
    tally = _Tally()
    for doc in records:
        tally.add(_mapping(doc), policy, at)
    tally.finish()
    totals = tally.totals
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "tool": f"nomyo-audit {__version__}",
        "period": {"since": period[0] or tally.first_time, "until": period[1] or tally.last_time},
        "covers": {"first_seq": tally.first_seq, "last_seq": tally.last_seq, "records": totals["requests"]},
        "log": dict(log_state),
        "policy": _policy_section(policy, at),
        "summary": {
            key: totals[key]
            for key in (
                "requests",
                "attested",
                "verified",
                "passed",
                "warned",
                "denied",
                "denied_before_sending",
                "failed",
                "no_hardware",
            )
        },
        "legend": dict(STATUS_LEGEND),
        "by_model": _top(tally.by["model"]),
        "by_tier": _top(tally.by["tier"]),
        "by_router": _top(tally.by["router"]),
        "by_day": {day: dict(counts) for day, counts in sorted(tally.days.items())},
        "rules": {rule: dict(counts) for rule, counts in sorted(tally.rules.items())},
        "finding_codes": _top(tally.findings),
        "aiks": [{"fingerprint": fp, "records": n} for fp, n in tally.aiks.most_common(MAX_DISTINCT)],
        "aik_count": len(tally.aiks),
        "attesters": [
            {
                "router": router,
                "aik": aik,
                "attester": kind,
                "no_hardware": kind in NO_HARDWARE_KINDS,
                "records": n,
            }
            for (router, aik, kind), n in tally.attesters.most_common(MAX_DISTINCT)
        ],
        "pcr_values": [
            {
                "pcr": f"{bank}:{index}",
                "values": [{"value": v, "records": n} for v, n in values.most_common(MAX_DISTINCT)],
            }
            for (bank, index), values in sorted(
                tally.pcr_values.items(), key=lambda item: _pcr_order(*item[0])
            )[:MAX_DISTINCT]
        ],
        "failures": tally.failures,
        "failures_omitted": max(0, totals["failure_records"] - len(tally.failures)),
    }
    if len(tally.days) <= 2:  # a short period is charted by the hour
        report["by_hour"] = {hour: dict(counts) for hour, counts in sorted(tally.hours.items())}
    return report


def _top(counter: Counter[str]) -> dict[str, int]:
    return dict(counter.most_common(MAX_DISTINCT))


def _policy_section(policy: Policy | None, at: float | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    return {
        "name": policy.name,
        "digest": policy.digest,
        "reappraised": True,
        "at": rfc3339(at) if at is not None else None,
    }


# -- the chart ---------------------------------------------------------------------------------------

_COLOURS = (("passed", "#2e7d32"), ("warned", "#f9a825"), ("failed", "#c62828"), ("denied", "#6a1b9a"))


def timeline_svg(report: Mapping[str, Any], width: int = 640, height: int = 160) -> str:
    """Stacked bars per hour (a period of a day or two) or per day, with axes and a legend."""
    hourly = isinstance(report.get("by_hour"), Mapping)
    buckets = (
        _hours(_mapping(report.get("by_hour"))) if hourly else list(_mapping(report.get("by_day")).items())
    )
    buckets = buckets[-72:]
    unit = "hour" if hourly else "day"
    if not buckets:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'role="img" aria-label="no records"><text x="10" y="20" font-size="12">no records</text></svg>'
        )
    left, top, plot = 40, 10, height - 10
    peak = max(sum(_mapping(c).values()) for _, c in buckets) or 1
    bar = max(2, min(40, (width - left - 10) // len(buckets)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 60}" role="img" '
        f'aria-label="requests per {unit}">',
        f"<title>requests per {unit}</title>",
        f'<line x1="{left - 2}" y1="{top}" x2="{left - 2}" y2="{top + plot}" stroke="#888"/>',
        f'<line x1="{left - 2}" y1="{top + plot}" x2="{width}" y2="{top + plot}" stroke="#888"/>',
    ]
    for tick in sorted({0, (peak + 1) // 2, peak}):
        y = top + plot - round(tick / peak * plot)
        parts.append(f'<text x="{left - 6}" y="{y + 4}" font-size="10" text-anchor="end">{tick}</text>')
    for n, (bucket, counts) in enumerate(buckets):
        counts = _mapping(counts)
        x, y = left + n * bar, top + plot
        for status, colour in _COLOURS:
            h = round(counts.get(status, 0) / peak * plot)
            if h:
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{bar - 1}" height="{h}" fill="{colour}">'
                    f"<title>{_escape(bucket)}: {counts.get(status, 0)} {status}</title></rect>"
                )
        label = _axis_label(bucket, hourly, n, len(buckets))
        if label:
            parts.append(f'<text x="{x}" y="{top + plot + 14}" font-size="10">{_escape(label)}</text>')
    legend_y = top + plot + 34
    for n, (status, colour) in enumerate(_COLOURS):
        x = left + n * 90
        parts.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{legend_y}" font-size="11">{status}</text>')
    first, last = buckets[0][0][:10], buckets[-1][0][:10]
    span = first if first == last else f"{first} to {last}"
    parts.append(
        f'<text x="{left}" y="{legend_y + 18}" font-size="10">requests per {unit} (UTC), '
        f"{_escape(span)}</text></svg>"
    )
    return "".join(parts)


def _hours(by_hour: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every hour of the days that have records, so one day reads 00:00 to 23:00."""
    days = sorted({hour[:10] for hour in by_hour if _HOUR.match(hour)})
    return [(f"{day}T{h:02d}", by_hour.get(f"{day}T{h:02d}", {})) for day in days for h in range(24)]


_HOUR = re.compile(r"^\d{4}-\d\d-\d\dT\d\d$")


def _axis_label(bucket: str, hourly: bool, position: int, count: int) -> str:
    """Hours on the 6-hour marks; days at the ends (and a few between for long periods)."""
    if hourly:
        hour = bucket[11:13]
        return f"{hour}:00" if hour in ("00", "06", "12", "18") else ""
    step = max(1, count // 4)
    return bucket[5:10] if position % step == 0 or position == count - 1 else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
