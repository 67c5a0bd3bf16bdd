"""Compliance reports: one JSON document (the source of truth) built in one pass over the log.

:func:`build_report` is pure: records in, a versioned JSON-able dict out. It
streams, keeping only counters and capped samples, so a large log stays
readable and memory stays flat. Other formats render from this document
(:mod:`._render`), and :func:`._timeline.timeline_svg` draws the chart as inline SVG (no
JavaScript, no network). How one record is read and appraised is :mod:`._report_record`.

A report says what is true and no more. Every field of a record is read
defensively (a malformed record is counted as failed, never a crash). A
record's policy result is the client's own evaluation (``policy``), never a
field the router sent. The attester kind is the router's own declaration,
unauthenticated, and is reported as such: software-attested evidence is
flagged "no hardware" (so is swtpm, a TPM in software), and nothing here claims a genuine TPM. An AIK
is shown as anchored (:mod:`._report_anchor`) only where the record's own verdict anchored it, with
what the anchor's certificates state; every other AIK is "not anchored". What booted and what served
(:mod:`._report_measured`) comes from the verdict facts of proven event logs only.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._version import __version__
from ..policy import Policy
from ._blobs import BlobReader
from ._records import rfc3339
from ._report_anchor import Anchor, anchor_of, anchor_row
from ._report_covers import Coverage
from ._report_groups import GroupTally, Scope
from ._report_measured import MeasuredTally
from ._report_record import (
    BEFORE_SENDING,
    Appraisal,
    as_label,
    as_mapping,
    as_recorded,
    as_text,
    attester_kind,
    before_sending,
    reappraised,
    status_of,
)
from ._verification import LogState

__all__ = [
    "MAX_FAILURES",
    "NO_HARDWARE_KINDS",
    "PREDICATE_TYPE",
    "REPORT_SCHEMA",
    "STATUS_LEGEND",
    "build_report",
]

#: The report document's ``schema``.
REPORT_SCHEMA = "https://nomyo-audit.dev/schemas/compliance-report/v1"
#: The in-toto predicate type of a signed report.
PREDICATE_TYPE = "https://nomyo-audit.dev/compliance-report/v1"
#: At most this many failed records are listed; the rest are counted (``failures_omitted``).
MAX_FAILURES = 200
#: At most this many distinct values (models, AIKs, PCR values...) per section.
MAX_DISTINCT = 50

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

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

#: Attester kinds that are software by the router's own account: no TPM hardware behind the quote.
NO_HARDWARE_KINDS = frozenset({"software", "swtpm"})


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
        #: (router, SHA-256 of its key's DER SPKI) per protocol 1.0 reply: the key the client encrypted to
        self.router_keys: Counter[tuple[str, str]] = Counter()
        #: per AIK fingerprint, its records by anchor (None: not anchored)
        self.anchors: dict[str, Counter[Anchor | None]] = defaultdict(Counter)
        self.attesters: Counter[tuple[str, str, str]] = Counter()
        self.pcr_values: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self.combos: Counter[tuple[Any, ...]] = Counter()
        self.pcr_sets: Counter[tuple[Any, ...]] = Counter()
        self.failures: list[dict[str, Any]] = []
        self.measured = MeasuredTally()
        self.groups = GroupTally()
        self.covers = Coverage()  # every record of the period, in the report's scope or not
        self.blob: Any = None  # reads the event logs records keep by digest, for re-appraisal

    def add(self, doc: Mapping[str, Any], policy: Policy | None, at: float | None) -> None:
        metadata = as_mapping(doc.get("metadata"))
        outcome = as_text(doc.get("outcome")) or ""
        error_code = as_text(as_mapping(doc.get("error")).get("code"))
        not_sent = before_sending(outcome, metadata)
        key_evidence = as_mapping(metadata.get("key_attestation"))
        if not_sent is not None:
            # nothing was sent, so there is no reply to appraise again: the recorded denial stands
            recorded = as_recorded(doc)
            key_verdict = as_mapping(key_evidence.get("verification"))
            appraisal = recorded._replace(facts=as_mapping(key_verdict.get("facts")))
            status, label, reason = "denied", BEFORE_SENDING, not_sent
            evidence = as_mapping(key_evidence.get("tpm_attestation"))
        else:
            if policy is not None and metadata:
                appraisal = reappraised(doc, policy, at, self.blob)
            else:
                appraisal = as_recorded(doc)
            status, reason = status_of(outcome, appraisal, error_code)
            label = status
            evidence = as_mapping(metadata.get("tpm_attestation"))
            self._count_router_key(doc, metadata)
        self._count(doc, metadata, status, label, appraisal, evidence)
        self.measured.add(as_label(doc.get("router")), as_text(doc.get("time")) or "", appraisal.facts)
        if status != "passed":
            self._sample(doc, outcome, label, reason, error_code, appraisal)

    def _count(
        self,
        doc: Mapping[str, Any],
        metadata: Mapping[str, Any],
        status: str,
        label: str,
        appraisal: Appraisal,
        evidence: Mapping[str, Any],
    ) -> None:
        """One counter increment for what most records share; :meth:`finish` spreads it out.

        Records of one hour, router, model and attester look alike, so counting
        their combination once is much cheaper than a dozen counters per record.
        """
        when = as_text(doc.get("time")) or ""
        facts = appraisal.facts
        self.combos[
            (
                status,
                label == BEFORE_SENDING,
                evidence.get("is_available") is True,
                appraisal.result == "pass",
                as_label(doc.get("router")),
                as_label(doc.get("model")),
                as_text(metadata.get("security_tier")) or "not stated",
                when[:13],
                as_text(facts.get("aik_fingerprint")) or "",
                attester_kind(evidence),
                anchor_of(doc.get("verdict")),
                self.groups.combined_key(
                    doc,
                    status,
                    before_sending=label == BEFORE_SENDING,
                    verdict_failed=appraisal.result == "fail",
                ),
                appraisal.result == "fail",
            )
        ] += 1
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

    def _count_router_key(self, doc: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """The router key a protocol 1.0 reply came under: the client's own record of the key it
        pinned and encrypted to (protocol 2 encrypts to another key, and a reply never received
        names no protocol)."""
        key = doc.get("server_key_sha256")
        if metadata.get("protocol") != "1.0" or not isinstance(key, str) or not _SHA256_HEX.fullmatch(key):
            return
        self.router_keys[(as_label(doc.get("router")), key.lower())] += 1

    def _count_pcrs_careful(self, pcrs: Any) -> None:
        for bank, values in as_mapping(pcrs).items():
            for index, value in as_mapping(values).items():
                self.pcr_values[(as_label(bank), as_label(index))][as_label(value)] += 1

    def finish(self) -> None:
        """Spread the combined counts over the counters the report shows."""
        totals, by = self.totals, self.by
        for key, n in self.combos.items():
            status, not_sent, attested, verified, router, model, tier, hour, aik, kind, anchor, *grouped = key
            if grouped[0] is not None:  # None: counted by the group tally at once (combined_key)
                self.groups.add(grouped[0], status, before_sending=not_sent, verdict_failed=grouped[1], n=n)
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
                self.anchors[aik][anchor] += n
            if kind != "none":
                self.attesters[(router, aik, kind)] += n
                totals["no_hardware"] += n if kind in NO_HARDWARE_KINDS else 0
        for pcr_set, n in self.pcr_sets.items():
            for bank, values in pcr_set:
                for index, value in values:
                    self.pcr_values[(as_label(bank), as_label(index))][as_label(value)] += n
        self.combos.clear()
        self.pcr_sets.clear()

    def _sample(
        self,
        doc: Mapping[str, Any],
        outcome: str,
        label: str,
        reason: str,
        error_code: str | None,
        appraisal: Appraisal,
    ) -> None:
        self.totals["failure_records"] += 1
        if len(self.failures) >= MAX_FAILURES:
            return
        seq = doc.get("seq")
        self.failures.append(
            {
                "seq": seq if isinstance(seq, int) else None,
                "time": as_text(doc.get("time")),
                "payload_id": as_text(doc.get("payload_id")),
                "status": label,
                "reason": reason,
                "outcome": outcome,
                "model": as_text(doc.get("model")),
                "error": error_code,
                "findings": list(appraisal.failed) if appraisal.result == "fail" else [],
                "rules": [f"{r.rule}: {r.detail}" for r in appraisal.rules if r.status == "fail"],
            }
        )


def build_report(
    records: Iterable[Any],
    *,
    generated_at: str,
    log_state: LogState | Mapping[str, Any],
    policy: Policy | None = None,
    period: tuple[str | None, str | None] = (None, None),
    at: float | None = None,
    blob: Callable[[str], bytes | None] | None = None,
    scope: Scope | Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Aggregate record documents (as stored in the log) into the report document.

    With ``policy`` every sent record's stored evidence is appraised again
    against it, at the record's own time (so ``max_age`` judges the evidence as
    it was when received) or at ``at`` when given; without one, each record's
    recorded policy outcome (the client's own evaluation) is used. A request
    the client never sent (its router key's attestation failed) keeps its
    recorded denial: there is no reply to appraise.

    ``log_state`` is the verified log the report stands on
    (:meth:`AuditLog.verified_state <nomyo_audit.audit.AuditLog.verified_state>`), or its
    ``to_dict()`` form. Never raises for a malformed record: it is counted as failed. ``blob``
    (``AuditLog.store.blob``) reads the event logs records keep by digest, to re-appraise them;
    a missing or altered one raises :class:`nomyo_audit.errors.IntegrityError`.

    ``measured`` lists per router what booted and what served (the verdict facts of proven event
    logs), each distinct state with when it was first and last seen and what changed.

    ``groups`` counts the records by service, router and tenant (:mod:`._report_groups`). With
    ``scope`` (``{"service": ..., "router": ..., "tenant": ...}``, each optional; another key raises
    ``ConfigurationError``) only the records with those labels are counted, while ``covers`` and
    the period still name every record of the period, so what the report covers is checked as for
    any report.
    """
    log = log_state.to_dict() if isinstance(log_state, LogState) else dict(log_state)
    scope = Scope.of(scope)
    tally = _Tally()
    tally.blob = BlobReader(blob)
    for doc in records:
        doc = as_mapping(doc)
        tally.covers.add(doc)
        if not scope or scope.admits(doc):
            tally.add(doc, policy, at)
    tally.finish()
    groups, groups_omitted = tally.groups.section()
    covers = tally.covers
    totals = tally.totals
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at,
        "tool": f"nomyo-audit {__version__}",
        "period": {"since": period[0] or covers.first_time, "until": period[1] or covers.last_time},
        "covers": covers.section(period, log),
        "scope": scope.to_dict() if scope else None,
        "log": log,
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
        "groups": groups,
        "groups_omitted": groups_omitted,
        "by_day": {day: dict(counts) for day, counts in sorted(tally.days.items())},
        "rules": {rule: dict(counts) for rule, counts in sorted(tally.rules.items())},
        "finding_codes": _top(tally.findings),
        "aiks": [
            {
                "fingerprint": fp,
                "records": n,
                "anchors": [
                    anchor_row(anchor, count)
                    for anchor, count in tally.anchors[fp].most_common(MAX_DISTINCT)
                    if anchor is not None
                ],
                "not_anchored": tally.anchors[fp][None],
            }
            for fp, n in tally.aiks.most_common(MAX_DISTINCT)
        ],
        "aik_count": len(tally.aiks),
        "router_keys": [
            {"router": router, "key_sha256": key, "records": n}
            for (router, key), n in tally.router_keys.most_common(MAX_DISTINCT)
        ],
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
        "measured": tally.measured.section(),
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
