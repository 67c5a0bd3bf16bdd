"""A report as an OSCAL 1.1.3 assessment-results document (``report.oscal.json``). Pure: dicts in, a dict out.

GRC tools ingest NIST OSCAL; this renders the report document (the source of truth) into the
assessment-results model: one result for the report's period; one observation per nomyo-audit
check (method ``TEST``; its subjects the routers and the AIKs that signed their quotes, with
their fingerprints) whose relevant evidence points into the signed report files, the log's
checkpoint and the inclusion proofs; one finding per control of the shipped control mapping
that the period evidenced (``satisfied`` or ``not-satisfied``, from
:func:`._controls.controls_evidenced`); one risk per denied or warned reply the report lists.

It says what the report says and no more: observations state counts the report holds, a
control's state is the mapping's judgement, and a control the period gave no evidence for gets
no finding (OSCAL has no third state): the result's remarks name it. The document is plain
dicts, built here without an OSCAL library, so auditors' installs need no pydantic; the tests
validate it against NIST's published JSON Schema and load it with compliance-trestle.

Deterministic: every UUID is a version 5 UUID of the content it names (subjects by fingerprint,
so a router or AIK keeps its UUID from one report to the next), so rendering the same report
twice gives the same bytes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._controls import scope_phrase
from ._oscal_observations import (
    CHECKS,
    OSCAL_NAMESPACE,
    UUID_ROOT,
    Subjects,
    as_int,
    mapping,
    observation,
    oscal_props,
    oscal_text,
    rows,
)

__all__ = ["OSCAL_NAMESPACE", "OSCAL_VERSION", "build_assessment_results", "oscal_report"]

#: The OSCAL release the document conforms to (its ``oscal-version``).
OSCAL_VERSION = "1.1.3"
_DATETIME = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)$")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._-]+")


class _Control(Protocol):
    @property
    def framework(self) -> str: ...
    @property
    def control_id(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def checks(self) -> tuple[str, ...]: ...


class ControlJudgement(Protocol):
    """What :func:`._controls.controls_evidenced` gives per control (its ``ControlStatus``)."""

    @property
    def control(self) -> _Control: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str: ...


def oscal_report(report: Mapping[str, Any]) -> bytes:
    """``report.oscal.json``: the document for ``report``, its findings from the shipped control mapping."""
    from ._controls import MAPPING_CATALOG_UUID, controls_evidenced

    document = build_assessment_results(report, controls_evidenced(report), catalog_uuid=MAPPING_CATALOG_UUID)
    return (json.dumps(document, indent=2) + "\n").encode()


def build_assessment_results(
    report: Mapping[str, Any], controls: Sequence[ControlJudgement], *, catalog_uuid: str | None = None
) -> dict[str, Any]:
    """The OSCAL assessment-results document (``{"assessment-results": ...}``) for one report document.

    ``controls`` is ``controls_evidenced(report)``; ``catalog_uuid`` the control mapping catalog's
    UUID, linked from the reviewed controls. Never raises for a report :func:`.build_report` made.
    """
    seed = hashlib.sha256(json.dumps(report, sort_keys=True, default=str).encode()).hexdigest()
    ids = _Ids(seed)
    generated = _datetime(report.get("generated_at")) or "1970-01-01T00:00:00Z"
    period = mapping(report.get("period"))
    start = _datetime(period.get("since")) or generated
    end = _datetime(period.get("until")) or start
    signed = bool(report.get("signer"))
    subjects = Subjects(report)
    observation_of = {check: ids.of("observation", check) for check in _checks_of(controls)}
    observations = [
        observation(observation_of[check], check, report, subjects, signed, end) for check in observation_of
    ]
    risks = _risks(ids, report, observation_of["policy"])
    findings = [
        _finding(ids, judged, observation_of, risks)
        for judged in controls
        if judged.status in ("satisfied", "not-satisfied")
    ]
    plan, catalog = ids.of("plan"), ids.of("mapping")
    unjudged = sorted(_label(c.control) for c in controls if c.status not in ("satisfied", "not-satisfied"))
    result: dict[str, Any] = {
        "uuid": ids.of("result"),
        "title": f"nomyo-audit checks from {start} to {end}",
        "description": oscal_text(
            f"What {report.get('tool')} found in {_records_judged(report)}, {_source(report)} (report.json "
            f"is the source of truth; this document renders it). {_trust(signed)}"
        ),
        "start": start,
        "end": end,
        "props": oscal_props(("report-schema", report.get("schema")), ("signer", report.get("signer"))),
        "reviewed-controls": {
            "control-selections": [
                {
                    "description": "The controls of the nomyo-audit control mapping (the project's "
                    "mapping, not an auditor's opinion).",
                    **({"links": [{"href": f"#{catalog}", "rel": "reference"}]} if catalog_uuid else {}),
                    **(
                        {"include-controls": [{"control-id": _token(c.control)} for c in controls]}
                        if controls
                        else {"include-all": {}}
                    ),
                }
            ]
        },
    }
    if subjects.items:
        result["local-definitions"] = {"inventory-items": subjects.items}
    for name, values in (("observations", observations), ("risks", risks), ("findings", findings)):
        if values:
            result[name] = values
    remarks = [_scope_remark(report)] if scope_phrase(report) else []
    if unjudged:
        remarks.append("No finding (this period gave no evidence for them): " + "; ".join(unjudged))
    if remarks:
        result["remarks"] = " ".join(remarks)
    document: dict[str, Any] = {
        "uuid": ids.of("document"),
        "metadata": {
            "title": f"nomyo-audit assessment results, {start} to {end}",
            "last-modified": generated,
            "version": generated,
            "oscal-version": OSCAL_VERSION,
            "props": oscal_props(("tool", report.get("tool"))),
        },
        "import-ap": {
            "href": f"#{plan}",
            "remarks": "No separate assessment plan: the plan is the policy (or, without one, the "
            "verifier's checks) named in back-matter.",
        },
        "results": [result],
        "back-matter": {
            "resources": [_plan_resource(plan, report), *_mapping_resource(catalog, catalog_uuid)]
        },
    }
    return {"assessment-results": document}


def _records_judged(report: Mapping[str, Any]) -> str:
    """Which records the findings were judged on: the period's, or the scope's only."""
    period = as_int(mapping(report.get("covers")).get("records"))
    scope = scope_phrase(report)
    if scope is None:
        return f"{period} audit-log records of this period"
    requests = as_int(mapping(report.get("summary")).get("requests"))
    return (
        f"the {requests} audit-log records of {scope} (the report's scope; the period holds {period} "
        "records, and the others were not judged)"
    )


def _scope_remark(report: Mapping[str, Any]) -> str:
    return oscal_text(
        f"Scope: {scope_phrase(report)}. The observations' counts and every finding were judged on the "
        "records in this scope only; the log's integrity and its checkpoint on the whole log."
    )


def _source(report: Mapping[str, Any]) -> str:
    verified = mapping(mapping(mapping(report.get("log")).get("verification"))).get("intact") is True
    return "re-checked from the verified log" if verified else "from a log the report does not show verified"


def _trust(signed: bool) -> str:
    if not signed:
        return "The report is unsigned: nothing shows that it, or this document, was not edited."
    return (
        "Trust its statuses only after nomyo-audit verify-report has checked report.dsse.json, which "
        "signs report.json and this file, with the report key from a trusted place."
    )


class _Ids:
    """Version 5 UUIDs of the content they name, within one report (``seed``) or across reports."""

    def __init__(self, seed: str) -> None:
        self.seed = seed

    def of(self, *parts: object) -> str:
        return str(uuid.uuid5(UUID_ROOT, "/".join([self.seed, *map(str, parts)])))


def _checks_of(controls: Sequence[ControlJudgement]) -> list[str]:
    """The checks of the mapping (in first-named order), the report's own checks first."""
    named = [check for judged in controls for check in judged.control.checks]
    return list(dict.fromkeys([*CHECKS, *named]))


# -- findings and risks -----------------------------------------------------------------------------


def _finding(
    ids: _Ids, judged: ControlJudgement, observation_of: Mapping[str, str], risks: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    control = judged.control
    related = [observation_of[c] for c in control.checks if c in observation_of]
    finding: dict[str, Any] = {
        "uuid": ids.of("finding", control.framework, control.control_id),
        "title": oscal_text(f"{_label(control)}: {control.title}"),
        "description": oscal_text(judged.reason),
        "props": oscal_props(("framework", control.framework), ("control", control.control_id)),
        "target": {
            "type": "objective-id",
            "target-id": _token(control),
            "title": oscal_text(_label(control)),
            "status": {
                "state": judged.status,
                "reason": "pass" if judged.status == "satisfied" else "fail",
            },
        },
    }
    if related:
        finding["related-observations"] = [{"observation-uuid": u} for u in related]
    policy = observation_of.get("policy")
    if judged.status == "not-satisfied" and policy in related and risks:
        finding["related-risks"] = [{"risk-uuid": risk["uuid"]} for risk in risks]
    return finding


def _risks(ids: _Ids, report: Mapping[str, Any], policy_observation: str) -> list[dict[str, Any]]:
    """One open risk per denied or warned reply the report lists (at most its MAX_FAILURES)."""
    bundles = {row.get("seq"): row.get("file") for row in rows(report.get("bundles"))}
    risks = []
    for failure in rows(report.get("failures")):
        status = str(failure.get("status"))
        if not (status.startswith("denied") or status == "warned"):
            continue
        payload_id = failure.get("payload_id")
        returned = "returned to the caller (the policy only warns)" if status == "warned" else "withheld"
        risk: dict[str, Any] = {
            "uuid": ids.of("risk", failure.get("seq"), payload_id),
            "title": oscal_text(f"Reply {payload_id} {status} by the policy"),
            "description": oscal_text(f"{failure.get('reason')}; the reply was {returned}"),
            "statement": oscal_text(
                "The router's attested state did not meet the client policy: "
                + ("; ".join(str(rule) for rule in failure.get("rules") or []) or str(failure.get("reason")))
            ),
            "props": oscal_props(
                ("record-seq", failure.get("seq")),
                ("payload-id", payload_id),
                ("recorded-at", failure.get("time")),
                ("status", status),
            ),
            "status": "open",
            "related-observations": [{"observation-uuid": policy_observation}],
        }
        bundle = bundles.get(failure.get("seq"))
        if isinstance(bundle, str) and bundle:  # its offline evidence bundle (report --bundles)
            risk["links"] = [
                {"href": bundle, "rel": "evidence", "text": "Offline evidence bundle of this reply"}
            ]
        risks.append(risk)
    return risks


def _plan_resource(plan: str, report: Mapping[str, Any]) -> dict[str, Any]:
    policy = mapping(report.get("policy"))
    if not policy:
        return {"uuid": plan, "title": "The verifier's checks (no policy given)"}
    return {
        "uuid": plan,
        "title": oscal_text(f"Client policy {policy.get('name')}"),
        "description": "Every record's stored evidence was appraised again against this policy.",
        "props": oscal_props(("policy-digest-sha256", policy.get("digest"))),
    }


def _mapping_resource(resource: str, catalog_uuid: str | None) -> list[dict[str, Any]]:
    if not catalog_uuid:
        return []
    return [
        {
            "uuid": resource,
            "title": "nomyo-audit control mapping (OSCAL catalog shipped in the package)",
            "description": "Which nomyo-audit checks evidence which controls: the project's mapping, "
            "not an auditor's opinion.",
            "document-ids": [
                {"scheme": "https://nomyo-audit.dev/ns/oscal/catalog-uuid", "identifier": catalog_uuid}
            ],
        }
    ]


# -- small helpers ----------------------------------------------------------------------------------


def _token(control: _Control) -> str:
    """The control's OSCAL id (a token): the shipped catalog's, else framework and id (``soc-2_cc6.1``)."""
    shipped = getattr(control, "oscal_id", "")  # the id in the shipped catalog, when the mapping names it
    if isinstance(shipped, str) and shipped:
        return shipped

    def part(text: str) -> str:
        return _NOT_TOKEN.sub("-", re.sub(r"\.\s+", ".", text.strip().lower())).strip("-.") or "x"

    return f"{part(control.framework)}_{part(control.control_id)}"


def _label(control: _Control) -> str:
    return f"{control.framework} {control.control_id}"


def _datetime(value: Any) -> str | None:
    """An RFC 3339 time as OSCAL's pattern takes it: UTC, upper-case ``T`` and ``Z``; None if not a time."""
    match = _DATETIME.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    day, clock, fraction, offset = match.groups()
    zone = _dt.timezone.utc if offset in ("Z", "z") else _dt.datetime.strptime(offset, "%z").tzinfo
    try:
        moment = _dt.datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=zone)
    except ValueError:
        return None
    return moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + (fraction or "") + "Z"
