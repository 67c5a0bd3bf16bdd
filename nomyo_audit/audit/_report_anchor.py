"""The anchor of one record's AIK, as a report shows it. Pure.

Read from the record's own verdict (the client's appraisal, hashed with the record): an AIK is shown
as anchored only when that verdict's ``aik_anchor`` passed, and then only with what the anchor
established (its kind, the chain's subjects, and the TPM manufacturer, model and firmware version
that the EK certificate or AK certificate states), and none of the AIK's identity checks failed (an
AK certificate certifies a key, not the attributes a router presents with it). Every other record
is "not anchored": a software or unanchored AIK is never shown as hardware.
``nomyo-audit verify --log --tpm-roots`` re-checks the anchor against roots the auditor chooses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tpm._ear import IDENTITY_CHECKS

__all__ = ["Anchor", "anchor_of", "anchor_row"]

#: (kind, manufacturer, TPM model, firmware version, chain subjects)
Anchor = tuple[str, str, str, str, tuple[str, ...]]


def anchor_of(verdict: object) -> Anchor | None:
    """The anchor a record's verdict established, or None (not anchored, or unreadable)."""
    if not isinstance(verdict, Mapping):
        return None
    findings = verdict.get("findings")
    if not isinstance(findings, Mapping) or _status(findings.get("aik_anchor")) != "pass":
        return None
    if any(_status(findings.get(check)) == "fail" for check in IDENTITY_CHECKS):
        return None
    facts = verdict.get("facts")
    if not isinstance(facts, Mapping) or facts.get("anchor_kind") not in ("ca", "ek"):
        return None
    subjects = facts.get("chain_subjects")
    return (
        str(facts["anchor_kind"]),
        _text(facts.get("manufacturer")),
        _text(facts.get("tpm_model")),
        _text(facts.get("tpm_firmware_version")),
        tuple(_text(s) for s in subjects[:8]) if isinstance(subjects, list) else (),
    )


def anchor_row(anchor: Anchor, records: int) -> dict[str, Any]:
    """One anchor of an AIK as the report document holds it."""
    kind, manufacturer, model, firmware, subjects = anchor
    return {
        "kind": kind,
        "manufacturer": manufacturer,
        "tpm_model": model,
        "tpm_firmware_version": firmware,
        "chain_subjects": list(subjects),
        "records": records,
    }


def _status(finding: object) -> object:
    return finding[0] if isinstance(finding, list) and finding else None


def _text(value: object) -> str:
    return str(value)[:200] if value is not None else "not stated"
