"""The anchor of one record's AIK, as a report shows it. Pure.

Read from the record's own verdict (the client's appraisal, hashed with the record): an AIK is shown
as anchored only when that verdict's ``aik_anchor`` passed, and then only with what the anchor
established (its kind, the chain's subjects, and the TPM manufacturer, model and firmware version
that the EK certificate or AK certificate states), and none of the AIK's identity checks failed (an
AK certificate certifies a key, not the attributes a router presents with it). Every other record
is "not anchored": a software or unanchored AIK is never shown as hardware.

A cloud anchor (``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx``) adds what it established about the
machine: the cloud, the VM's project, zone and instance (GCE), or the CPU, its reported TCB and the
launch measurement (SEV-SNP, TDX). A TCB status of ``"unknown"`` (no TCB collateral was checked) is
flagged, never shown as up to date.
``nomyo-audit verify --log --tpm-roots`` re-checks the anchor against roots the auditor chooses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..tpm._ear import IDENTITY_CHECKS

__all__ = ["Anchor", "anchor_of", "anchor_row"]

#: (kind, manufacturer, TPM model, firmware version, chain subjects, platform facts as (name, text) pairs)
Anchor = tuple[str, str, str, str, tuple[str, ...], tuple[tuple[str, str], ...]]

_KINDS = ("ca", "ek", "gce-ak-cert", "azure-sev-snp", "azure-tdx")
#: the platform facts a report shows, in this order (whichever the anchor established)
_PLATFORM_FACTS = (
    "cloud", "pki", "project_id", "project_number", "zone", "instance_name", "instance_id",
    "cpu", "product", "tcb_status", "reported_tcb", "tee_tcb_svn", "fmspc", "measurement", "mrtd",
    "rtmrs", "mr_seam", "host_data", "policy", "td_attributes", "vmpl", "debug", "chip_id",
)  # fmt: skip
_MAX_VALUE = 200
#: the anchor kinds whose facts include a CPU TCB
_CPU_KINDS = ("azure-sev-snp", "azure-tdx")


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
    if not isinstance(facts, Mapping) or facts.get("anchor_kind") not in _KINDS:
        return None
    subjects = facts.get("chain_subjects")
    return (
        str(facts["anchor_kind"]),
        _text(facts.get("manufacturer")),
        _text(facts.get("tpm_model")),
        _text(facts.get("tpm_firmware_version")),
        tuple(_text(s) for s in subjects[:8]) if isinstance(subjects, list) else (),
        _platform(facts.get("platform")),
    )


def anchor_row(anchor: Anchor, records: int) -> dict[str, Any]:
    """One anchor of an AIK as the report document holds it. ``platform`` and ``platform_summary``
    are present for a cloud anchor; ``tcb_unknown`` says its TCB status was not established."""
    kind, manufacturer, model, firmware, subjects, platform = anchor
    row: dict[str, Any] = {
        "kind": kind,
        "manufacturer": manufacturer,
        "tpm_model": model,
        "tpm_firmware_version": firmware,
        "chain_subjects": list(subjects),
        "records": records,
    }
    if platform:
        facts = dict(platform)
        row["platform"] = facts
        row["platform_summary"] = ", ".join(f"{name} {value}" for name, value in platform)
        # A CPU anchor's TCB is current only when a status was established (from verified
        # collateral); one the facts do not state is as unknown as one they call unknown.
        status = facts.get("tcb_status")
        row["tcb_unknown"] = status == "unknown" or (kind in _CPU_KINDS and not status)
    return row


def _platform(value: object) -> tuple[tuple[str, str], ...]:
    """The platform facts a report shows, as text (a dict, such as the reported TCB, as name=value)."""
    if not isinstance(value, Mapping):
        return ()
    pairs = []
    for name in _PLATFORM_FACTS:
        fact = value.get(name)
        if fact is None:
            continue
        if isinstance(fact, Mapping):
            fact = " ".join(f"{k}={v}" for k, v in list(fact.items())[:8])
        elif isinstance(fact, list):
            fact = " ".join(str(v) for v in fact[:8])
        pairs.append((name, _text(fact)))
    return tuple(pairs)


def _status(finding: object) -> object:
    return finding[0] if isinstance(finding, list) and finding else None


def _text(value: object) -> str:
    """A fact as a report shows it: at most 200 characters, a line break, control or bidi character
    escaped (``\\n``, ``\\u202e``), since a record's verdict is its writer's bytes and a report's
    Markdown and CSV lines must stay the lines they are."""
    if value is None:
        return "not stated"
    text = str(value)[:_MAX_VALUE]
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text[:_MAX_VALUE]
