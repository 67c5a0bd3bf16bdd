"""Compliance reports: one JSON document (the source of truth) built in one pass over the log.

:func:`build_report` is pure: records in, a versioned JSON-able dict out. It
streams, keeping only counters and capped samples, so a large log stays
readable and memory stays flat. Other formats render from this document
(:mod:`.render`), and :func:`timeline_svg` draws the daily chart as inline SVG
(no JavaScript, no network).
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from .._version import __version__
from ..policy import Policy, evaluate
from ..tpm.verify import verify_attestation
from .records import recorded_content_digest

__all__ = ["MAX_FAILURES", "REPORT_SCHEMA", "build_report", "timeline_svg"]

REPORT_SCHEMA = "https://nomyo-audit.dev/schemas/compliance-report/v1"
PREDICATE_TYPE = "https://nomyo-audit.dev/compliance-report/v1"
MAX_FAILURES = 200
MAX_DISTINCT = 50


def _passed(doc: Mapping[str, Any], rules: list[Mapping[str, Any]] | None) -> str:
    """ok / warned / denied for a record, from its policy outcome or, without one, its verdict."""
    policy = doc.get("policy_result") or doc.get("policy") or {}
    outcome = policy.get("outcome")
    if outcome == "deny" or str(doc.get("outcome", "")).startswith("policy_denied"):
        return "denied"
    if outcome == "warn":
        return "warned"
    if outcome == "pass":
        return "passed"
    verdict = (doc.get("verdict") or {}).get("result")
    return "passed" if verdict == "pass" and doc.get("outcome") == "ok" else "failed"


def build_report(
    records: Iterable[Mapping[str, Any]],
    *,
    generated_at: str,
    log_state: Mapping[str, Any],
    policy: Policy | None = None,
    period: tuple[str | None, str | None] = (None, None),
) -> dict[str, Any]:
    """Aggregate record documents (as stored in the log) into the report document.

    With ``policy`` every record's stored evidence is appraised again against
    it (at the record's own time, so ``max_age`` judges the evidence as it was
    when received); without one, each record's recorded policy outcome is used.
    """
    totals: Counter[str] = Counter()
    by: dict[str, Counter[str]] = {"model": Counter(), "security_tier": Counter(), "router": Counter()}
    days: dict[str, Counter[str]] = defaultdict(Counter)
    rules: dict[str, Counter[str]] = defaultdict(Counter)
    findings: Counter[str] = Counter()
    aiks: Counter[str] = Counter()
    pcr_values: dict[str, Counter[str]] = defaultdict(Counter)
    failures: list[dict[str, Any]] = []
    first_time = last_time = None
    for doc in records:
        metadata = doc.get("metadata") or {}
        tpm = metadata.get("tpm_attestation") or {}
        verification = doc.get("verdict") or {}
        if policy is not None and metadata:
            doc = dict(doc)
            timestamp = _dt.datetime.fromisoformat(doc["time"].replace("Z", "+00:00")).timestamp()
            payload_id = metadata.get("payload_id", doc.get("payload_id"))
            verdict = verify_attestation(
                metadata.get("tpm_attestation"),
                payload_id if isinstance(payload_id, str) else None,
                content_digest=recorded_content_digest(doc),
            )
            doc["policy_result"] = evaluate(
                policy, metadata, now=timestamp, model=doc.get("model"), verdict=verdict
            ).to_dict()
        status = _passed(doc, None)
        totals["requests"] += 1
        totals[status] += 1
        if tpm.get("is_available"):
            totals["attested"] += 1
        if verification.get("result") == "pass":
            totals["verified"] += 1
        for key in by:
            by[key][str(doc.get(key))] += 1
        day = str(doc.get("time", ""))[:10]
        days[day][status] += 1
        first_time = first_time or doc.get("time")
        last_time = doc.get("time")
        applied = doc.get("policy_result") or doc.get("policy") or {}
        for rule in applied.get("rules", []):
            rules[rule["rule"]][rule["status"]] += 1
        if verification.get("result") == "fail":
            for code in verification.get("failed") or ():
                findings[code] += 1
        facts = verification.get("facts") or {}
        if facts.get("aik_fingerprint"):
            aiks[facts["aik_fingerprint"]] += 1
        for bank, values in (facts.get("pcr_values") or {}).items():
            for index, value in values.items():
                pcr_values[f"{bank}:{index}"][value] += 1
        if status in ("failed", "denied", "warned"):
            totals["failure_records"] += 1
            if len(failures) < MAX_FAILURES:
                failures.append(
                    {
                        "seq": doc.get("seq"),
                        "time": doc.get("time"),
                        "payload_id": doc.get("payload_id"),
                        "status": status,
                        "outcome": doc.get("outcome"),
                        "model": doc.get("model"),
                        "error": (doc.get("error") or {}).get("code"),
                        "findings": list(verification.get("failed") or ()),
                        "rules": [
                            f"{r['rule']}: {r['detail']}"
                            for r in applied.get("rules", [])
                            if r["status"] == "fail"
                        ],
                    }
                )
    return {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "tool": f"nomyo-audit {__version__}",
        "period": {"since": period[0] or first_time, "until": period[1] or last_time},
        "log": dict(log_state),
        "policy": {"name": policy.name, "digest": policy.digest, "reappraised": True} if policy else None,
        "summary": {
            "requests": totals["requests"],
            "attested": totals["attested"],
            "verified": totals["verified"],
            "passed": totals["passed"],
            "warned": totals["warned"],
            "denied": totals["denied"],
            "failed": totals["failed"],
        },
        "by_model": dict(by["model"].most_common()),
        "by_tier": dict(by["security_tier"].most_common()),
        "by_router": dict(by["router"].most_common()),
        "by_day": {day: dict(counts) for day, counts in sorted(days.items())},
        "rules": {rule: dict(counts) for rule, counts in sorted(rules.items())},
        "finding_codes": dict(findings.most_common()),
        "aiks": [{"fingerprint": fp, "records": n} for fp, n in aiks.most_common(MAX_DISTINCT)],
        "aik_count": len(aiks),
        "pcr_values": {
            pcr: [{"value": v, "records": n} for v, n in values.most_common(MAX_DISTINCT)]
            for pcr, values in sorted(pcr_values.items())
        },
        "failures": failures,
        "failures_omitted": max(0, totals["failure_records"] - len(failures)),
    }


def timeline_svg(by_day: Mapping[str, Mapping[str, int]], width: int = 640, height: int = 160) -> str:
    """A stacked bar per day (passed / warned / failed+denied), as a self-contained SVG string."""
    days = list(by_day.items())[-60:]
    if not days:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'role="img" aria-label="no records"></svg>'
        )
    peak = max(sum(c.values()) for _, c in days) or 1
    bar = min(40, max(2, (width - 40) // len(days)))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" '
        f'aria-label="requests per day">'
    ]
    colours = (("passed", "#2e7d32"), ("warned", "#f9a825"), ("failed", "#c62828"), ("denied", "#6a1b9a"))
    for n, (day, counts) in enumerate(days):
        x, y = 30 + n * bar, height
        for status, colour in colours:
            h = round(counts.get(status, 0) / peak * (height - 10))
            if h:
                y -= h
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{bar - 1}" height="{h}" fill="{colour}">'
                    f"<title>{day}: {counts.get(status, 0)} {status}</title></rect>"
                )
    parts.append(f'<text x="30" y="{height + 20}" font-size="11">{days[0][0]}</text>')
    parts.append(f'<text x="{width - 90}" y="{height + 20}" font-size="11">{days[-1][0]}</text>')
    parts.append(f'<text x="0" y="12" font-size="11">{peak}</text></svg>')
    return "".join(parts)
