"""The OSCAL assessment results' observations: one per nomyo-audit check, its subjects and evidence.

Pure. An observation states what the report document holds about one check (counts, the log's
root and checkpoint), never a judgement of its own; its subjects are the routers and the AIKs
that quoted for them (or the audit log), as inventory items with their fingerprints; its
relevant evidence points into the signed report files (``report.json`` by JSON pointer, the DSSE
envelope), the checkpoint, the inclusion proofs and the previous report of a chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from ._controls import scope_phrase

__all__ = [
    "CHECKS",
    "OSCAL_NAMESPACE",
    "UUID_ROOT",
    "Subjects",
    "as_int",
    "mapping",
    "observation",
    "oscal_props",
    "oscal_text",
    "rows",
    "stable_id",
]

#: The namespace of nomyo-audit's own OSCAL properties (``ns`` of every ``prop``).
OSCAL_NAMESPACE = "https://nomyo-audit.dev/ns/oscal"
#: The root of every UUID the OSCAL document derives (uuid5 of the namespace's URL).
UUID_ROOT = uuid.uuid5(uuid.NAMESPACE_URL, OSCAL_NAMESPACE)
#: Report files the OSCAL document links (names as :data:`._render.FORMATS` writes them).
_REPORT_JSON = "report.json"
_ENVELOPE = "report.dsse.json"


def stable_id(*parts: object) -> str:
    """A UUID that stays the same from one report to the next (a router, an AIK, the log)."""
    return str(uuid.uuid5(UUID_ROOT, "/".join(map(str, parts))))


class Subjects:
    """The inventory items the observations are about: routers (with the AIKs that quoted for them),
    AIKs (by fingerprint) and the audit log (by its checkpoint signer)."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.items: list[dict[str, Any]] = []
        self.attested: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        aiks_of: dict[str, list[str]] = {}
        for row in rows(report.get("attesters")):
            aiks_of.setdefault(str(row.get("router")), []).append(str(row.get("aik") or ""))
        keys = {str(r.get("router")): str(r.get("key_sha256")) for r in rows(report.get("router_keys"))}
        for router in mapping(report.get("by_router")):
            props = oscal_props(
                ("router-url", router),
                ("key-fingerprint-sha256", keys.get(router)),
                *(("aik-fingerprint", aik) for aik in sorted(set(aiks_of.get(router, []))) if aik),
            )
            self._add(self.attested, ("router", router, keys.get(router)), f"Router {router}", props)
        for aik in rows(report.get("aiks")):
            anchored = "anchored" if rows(aik.get("anchors")) else "not anchored"
            fingerprint = str(aik.get("fingerprint"))
            description = f"TPM attestation key (AIK) {fingerprint}, {anchored} in this period"
            props = oscal_props(("aik-fingerprint", fingerprint), ("anchored", anchored))
            self._add(self.attested, ("aik", fingerprint), description, props)
        log = mapping(report.get("log"))
        checkpoint = mapping(log.get("checkpoint"))
        if log:
            signer = checkpoint.get("signer")
            props = oscal_props(
                ("log-origin", checkpoint.get("origin")), ("checkpoint-signer-sha256", signer)
            )
            self._add(self.log, ("log", checkpoint.get("origin"), signer), "The audit log", props)

    def _add(self, group: list[dict[str, Any]], key: tuple[Any, ...], description: str, props: Any) -> None:
        item = {
            "uuid": stable_id(*key),
            "description": oscal_text(description),
            **({"props": props} if props else {}),
        }
        if item["uuid"] not in {i["uuid"] for i in self.items}:
            self.items.append(item)
        group.append({"subject-uuid": item["uuid"], "type": "inventory-item", "title": item["description"]})


#: check -> (what the report's sections say about it, JSON pointers into report.json, about the log?)
CHECKS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "attestation": (
        "{attested} of {requests} replies carried a TPM quote and {verified} verified (signature, nonce, "
        "key binding); {no_hardware} came from an attester the router itself declared software",
        ("/summary", "/attesters", "/pcr_values"),
        False,
    ),
    "policy": (
        "The client policy passed {passed}, warned on {warned} and denied {denied} of {requests} replies "
        "({denied_before_sending} before anything was sent); {failed} requests failed",
        ("/summary", "/rules", "/failures"),
        False,
    ),
    "aik_anchor": (
        "{aik_count} attestation keys (AIKs) quoted in this period; which were anchored to a TPM "
        "manufacturer or CA root is listed per AIK",
        ("/aiks",),
        False,
    ),
    "measured_boot": (
        "What booted and what served, from event logs the quotes proved, per router",
        ("/measured", "/pcr_values"),
        False,
    ),
    "transport_encryption": (
        "Prompts and replies travel end-to-end encrypted; the policy's key-binding rule (the quote binds "
        "the reply to the key it was sealed to) judged: {rule_require_key_binding}",
        ("/rules/require_key_binding", "/summary"),
        False,
    ),
    "record_keeping": (
        "{records} requests were recorded in the audit log automatically, from {since} to {until}",
        ("/covers", "/summary", "/by_day"),
        True,
    ),
    "denial_recording": (
        "{denied} denied and {warned} warned replies were recorded with the policy rule that failed",
        ("/failures", "/summary"),
        False,
    ),
    "audit_log_integrity": (
        "The audit log verified before the report was built: all {log_size} records hashed again "
        "into the Merkle root {log_root}",
        ("/log/verification",),
        True,
    ),
    "log_checkpoint": (
        "A signed checkpoint covers {checkpoint_size} of the log's {log_size} records (root "
        "{checkpoint_root}); every record's inclusion proof leads to it",
        ("/log/checkpoint",),
        True,
    ),
    "record_retention": (
        "The report covers records {first_seq} to {last_seq} ({records} records) of this period",
        ("/covers", "/period"),
        True,
    ),
}


def observation(
    observation_uuid: str,
    check: str,
    report: Mapping[str, Any],
    subjects: Subjects,
    signed: bool,
    collected: str,
) -> dict[str, Any]:
    template, pointers, about_log = CHECKS.get(
        check, ("The report sections the control mapping reads for this check", ("",), False)
    )
    log = mapping(report.get("log"))
    checkpoint = mapping(log.get("checkpoint"))
    if check == "log_checkpoint" and not checkpoint:
        template = "No signed checkpoint covers the log: whoever can write it could have changed its records"
    elif check == "log_checkpoint" and as_int(checkpoint.get("size")) < as_int(log.get("size")):
        template = (
            "A signed checkpoint covers {checkpoint_size} of the log's {log_size} records (root "
            "{checkpoint_root}); the records past it have no inclusion proof to a signed checkpoint"
        )
    if check == "audit_log_integrity" and mapping(log.get("verification")).get("intact") is not True:
        template = "The report does not show that the audit log verified: its records prove nothing"
    evidence = [
        {
            "href": f"{_REPORT_JSON}#{pointer}",
            "description": f"report.json{pointer or ''}: the report document, the source of truth",
        }
        for pointer in pointers
    ]
    if signed:
        evidence.append(
            {
                "href": _ENVELOPE,
                "description": "The DSSE envelope (in-toto statement) signing the SHA-256 of report.json "
                "and every rendered report file: nomyo-audit verify-report checks it",
            }
        )
    if check == "log_checkpoint":
        evidence.extend(_proof_evidence(report))
    if check in ("log_checkpoint", "record_retention") and mapping(report.get("chain")):
        evidence.append(
            {
                "href": f"{_REPORT_JSON}#/chain",
                "description": "The previous report (SHA-256 of its report.json) and the consistency proof "
                "from its checkpoint to this one: nothing in between was removed or rewritten "
                "(nomyo-audit verify-report --previous checks it)",
            }
        )
    rules = [("rule", f"{rule}: {_counts(counts)}") for rule, counts in mapping(report.get("rules")).items()]
    observation: dict[str, Any] = {
        "uuid": observation_uuid,
        "title": f"Check {check}",
        "description": oscal_text(template.format_map(_Facts(report)) + _in_scope(report, about_log)),
        "props": oscal_props(("check", check), *(rules if check == "policy" else ())),
        "methods": ["TEST"],
        "subjects": subjects.log if about_log else subjects.attested,
        "relevant-evidence": evidence,
        "collected": collected,
    }
    if not observation["subjects"]:
        del observation["subjects"]
    return observation


def _in_scope(report: Mapping[str, Any], about_log: bool) -> str:
    """What a scoped report's counts are of: its scope's records only (the log's checks are of the log)."""
    scope = None if about_log else scope_phrase(report)
    return f" (the records of {scope} only: the report's scope)" if scope else ""


def _proof_evidence(report: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The checkpoint, and the inclusion proofs: the bundles the report names, else how to make one."""
    checkpoint = mapping(mapping(report.get("log")).get("checkpoint"))
    if checkpoint:
        yield {
            "href": f"{_REPORT_JSON}#/log/checkpoint/note",
            "description": "The signed checkpoint (C2SP signed note) over the log's Merkle root",
        }
    bundles = [row for row in rows(report.get("bundles")) if isinstance(row.get("file"), str)]
    for row in bundles:
        yield {
            "href": str(row["file"]),
            "description": oscal_text(
                f"Offline evidence bundle of reply {row.get('payload_id')}: the record, its evidence, its "
                "inclusion proof and the checkpoint (nomyo-audit verify FILE --offline)"
            ),
        }
    if not bundles:
        yield {
            "description": "Inclusion proofs: any record's proof to this checkpoint comes from the log "
            "(nomyo-audit log prove PAYLOAD_ID --log LOG) or an offline bundle (nomyo-audit bundle)"
        }


class _Facts(dict[str, Any]):
    """The values the observation templates name, read defensively from the report."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        log = mapping(report.get("log"))
        checkpoint = mapping(log.get("checkpoint"))
        super().__init__(
            {key: as_int(value) for key, value in mapping(report.get("summary")).items()},
            aik_count=as_int(report.get("aik_count")),
            log_size=as_int(log.get("size")),
            log_root=log.get("root") or "none",
            checkpoint_size=as_int(checkpoint.get("size")),
            checkpoint_root=checkpoint.get("root") or "none",
            **{
                key: as_int(mapping(report.get("covers")).get(key), "none")
                for key in ("first_seq", "last_seq")
            },
            records=as_int(mapping(report.get("covers")).get("records")),
            since=mapping(report.get("period")).get("since") or "none",
            until=mapping(report.get("period")).get("until") or "none",
        )
        for rule, counts in mapping(report.get("rules")).items():
            self[f"rule_{rule}"] = _counts(counts)

    def __missing__(self, key: str) -> str:
        if key.startswith("rule_"):
            return "not a rule of the policy"
        return "0" if key in ("requests", "attested", "verified", "denied", "warned") else "none"


def _counts(counts: Any) -> str:
    """A rule's outcomes: ``4 pass, 1 fail``."""
    return ", ".join(f"{n} {status}" for status, n in sorted(mapping(counts).items())) or "none"


def oscal_props(*pairs: tuple[str, Any]) -> list[dict[str, str]]:
    """OSCAL props in nomyo-audit's namespace; a pair whose value is None or empty is left out."""
    return [
        {"name": name, "ns": OSCAL_NAMESPACE, "value": oscal_text(value)}
        for name, value in pairs
        if value is not None and str(value).strip()
    ]


def oscal_text(value: Any) -> str:
    """An OSCAL string: one or more characters, no leading or trailing white space, and nothing
    unprintable (a router's text can hold NUL, terminal escapes, bidi overrides: each becomes U+FFFD)."""
    text = " ".join(str(value).split())
    return "".join(c if c.isprintable() else "\ufffd" for c in text) or "none"


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def rows(value: Any) -> list[Mapping[str, Any]]:
    return [row for row in value if isinstance(row, Mapping)] if isinstance(value, list) else []


def as_int(value: Any, otherwise: Any = 0) -> Any:
    """``value`` when it is an integer (not a bool), else ``otherwise``."""
    return value if isinstance(value, int) and not isinstance(value, bool) else otherwise
