"""What one record says happened, read defensively: a report's view of a single record. Pure.

Every field is read as untrusted (a malformed record is counted as failed, never a crash).
A record's policy result is the client's own evaluation (``policy``), never a field the
router sent; with a policy given, the stored evidence is verified and appraised again
(:func:`reappraised`). These run several times per record in a report: the exact-type
test is the fast path (records are decoded JSON), the isinstance one the careful path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..policy import Policy, appraise
from ..policy._appraise import stored_record

__all__ = [
    "BEFORE_SENDING",
    "Appraisal",
    "Rule",
    "as_label",
    "as_mapping",
    "as_recorded",
    "as_text",
    "attester_kind",
    "before_sending",
    "reappraised",
    "status_of",
]

_MAX_TEXT = 200

BEFORE_SENDING = "denied before sending"
_KEY_DENIED = "the router key's attestation did not satisfy the policy; nothing was sent"
_KEY_UNAVAILABLE = "the router offers no usable key attestation; nothing was sent"


_EMPTY: Mapping[str, Any] = {}


def as_mapping(value: Any) -> Mapping[str, Any]:
    if type(value) is dict:
        return value
    if value is None:
        return _EMPTY
    return value if isinstance(value, Mapping) else _EMPTY


def as_text(value: Any) -> str | None:
    """A string field as stored, capped; anything else is treated as absent."""
    if type(value) is str:
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT]
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def as_label(value: Any) -> str:
    """A value used as a grouping key: its text, or its JSON-ish form when not a string."""
    if type(value) is str and len(value) <= _MAX_TEXT:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text[:_MAX_TEXT]


def _codes(value: Any) -> list[str]:
    return [v[:_MAX_TEXT] for v in value if isinstance(v, str)] if isinstance(value, list) else []


class Rule(NamedTuple):
    rule: str
    status: str
    detail: str


class Appraisal(NamedTuple):
    """What one record says happened: its policy outcome, rules, and verifier result."""

    outcome: str | None
    rules: list[Rule]
    result: str | None
    failed: list[str]
    facts: Mapping[str, Any]


def _recorded_rules(policy: Mapping[str, Any]) -> list[Rule]:
    rules = policy.get("rules")
    if not isinstance(rules, list):
        return []
    return [
        Rule(as_label(r.get("rule")), as_label(r.get("status")), as_label(r.get("detail", "")))
        for r in rules
        if isinstance(r, Mapping)
    ]


def as_recorded(doc: Mapping[str, Any]) -> Appraisal:
    """The record's own policy result (the client's evaluation) and its stored verdict."""
    policy = as_mapping(doc.get("policy"))
    verdict = as_mapping(doc.get("verdict"))
    return Appraisal(
        as_text(policy.get("outcome")),
        _recorded_rules(policy),
        as_text(verdict.get("result")),
        _codes(verdict.get("failed")),
        as_mapping(verdict.get("facts")),
    )


def reappraised(doc: Mapping[str, Any], policy: Policy, at: float | None, blob: Any = None) -> Appraisal:
    """Verify the stored evidence again and evaluate ``policy``, at the record's time unless ``at``:
    the record read and appraised as ``verify --log`` does (:func:`nomyo_audit.policy.stored_record`),
    so the anchor the client kept is re-checked against the policy's roots and the event logs it keeps
    by digest are read back through ``blob`` (a ``_blobs.BlobReader`` or ``AuditLog.store.blob``)."""
    record = stored_record(doc, "report", blob)
    moment = at if at is not None else record.received_at
    if moment is None or not math.isfinite(moment):
        detail = "the record's time is unreadable, so freshness cannot be judged"
        return Appraisal("deny", [Rule("record", "fail", detail)], None, [], {})
    appraisal = appraise(record, policy, at=moment)
    verdict, result = appraisal.verdict, appraisal.result
    assert result is not None  # a policy was given
    return Appraisal(
        result.outcome,
        [Rule(r.rule, r.status, r.detail) for r in result.rules],
        verdict.result,
        [f.code for f in verdict.failures],
        verdict.facts,
    )


def before_sending(outcome: str, metadata: Mapping[str, Any]) -> str | None:
    """Why nothing was sent, for a request the client stopped at key attestation; else None."""
    if outcome.startswith("policy_denied") and "key_attestation" in metadata:
        return _KEY_DENIED
    if outcome.startswith("security_error:key_attestation"):
        return _KEY_UNAVAILABLE
    return None


def status_of(outcome: str, appraisal: Appraisal, error_code: str | None) -> tuple[str, str]:
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


def attester_kind(evidence: Mapping[str, Any]) -> str:
    """The router's own label for what produced the quote (unauthenticated), or none/unlabelled."""
    if evidence.get("is_available") is not True:
        return "none"
    label = evidence.get("attester")
    return label[:32] if isinstance(label, str) and label else "unlabelled"
