"""What an appraisal returns: one :class:`Finding` per check, the facts the evidence showed, a result.

Pure, no I/O. :func:`nomyo_audit.tpm.verify_attestation` is the only producer of a
:class:`Verdict`; policies, reports and the CLI read it.
"""

# No ``from __future__ import annotations``: the named tuples' fields stay real types, which
# documentation tools (pdoc) resolve: as strings they fail to resolve from NamedTuple's generated __new__.

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, TypedDict

from ..eventlog import BootSummary, Event, EventLog, ImaEntry, ImaLog, ImaSummary, LogMatch, ServingStack

__all__ = ["CHECKS", "Checks", "Finding", "Measurements", "Status", "Verdict", "VerdictFacts"]

#: What a check found: ``skip`` is neither a pass nor a failure (not reached, or only recorded).
Status = Literal["pass", "fail", "skip"]

#: Every check, in order. A verdict has exactly one finding for each.
CHECKS = (
    "attestation_present",
    "evidence_format",
    "signature",
    "quote_structure",
    "signer_name",
    "aik_attributes",
    "pcr_selection",
    "pcr_digest",
    "event_log",
    "ima_log",
    "nonce_binding",
    "clock_safe",
    "aik_anchor",
    "attester",
)
_CHECK_INDEX = {check: i for i, check in enumerate(CHECKS)}


class Finding(NamedTuple):
    """One check's outcome: ``check`` names it (one of :data:`CHECKS`), ``code`` is stable for
    machines (policies and reports match on it), ``detail`` is for people."""

    check: str
    status: Status
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        """The finding as JSON-ready data, as audit records and ``--json`` output hold it."""
        return {"check": self.check, "status": self.status, "code": self.code, "detail": self.detail}


class VerdictFacts(TypedDict, total=False):
    """What the evidence showed, for policies and reports to read. A key is present only once the
    check that establishes it was reached: nothing in a quote whose signature failed is a fact."""

    #: ``"TPMS_ATTEST"`` or ``"TPM2B_ATTEST"``: the form the quote came in
    quote_encoding: str
    #: the AIK's TPM name (nameAlg || digest of its public area), hex
    aik_name: str
    #: SHA-256 of the AIK's DER SubjectPublicKeyInfo, hex: how policies pin an AIK
    aik_fingerprint: str
    #: ``"rsa"`` or ``"ecc"``
    aik_type: str
    #: ``"rsassa"``, ``"rsapss"`` or ``"ecdsa"``
    signature_scheme: str
    #: the signature's hash, ``"sha256"`` for example
    signature_hash: str
    #: what the AIK signed, ``"TPM_ST_ATTEST_QUOTE"`` for a quote
    attest_type: str
    #: clockInfo.clock, resetCount and restartCount, and firmwareVersion, once the signature verified
    clock: int
    reset_count: int
    restart_count: int
    firmware_version: int
    #: the PCR selection the quote covers, written like ``"sha256:0,7,10"``
    pcr_banks: str
    #: ``{bank: {index: hex}}``, present only when the values hash to the quote's pcrDigest
    pcr_values: dict[str, dict[str, str]]
    #: which extraData derivation matched (:data:`nomyo_audit.tpm.DERIVATIONS`), or ``"exact"``
    nonce_derivation: str
    #: the qualified name (hex) of the AIK's parent, for a child AIK whose qualifiedSigner matched it
    aik_parent_qualified_name: str
    #: how the AIK is anchored (``"ca"`` or ``"ek"``), present only when ``aik_anchor`` passed
    anchor_kind: str
    #: the subjects of the anchoring chain, leaf first, and the SHA-256 (hex) of its root
    chain_subjects: list[str]
    anchor_root_sha256: str
    #: the TPM's manufacturer, model and firmware version, from the EK (or AK) certificate
    manufacturer: str
    tpm_model: str | None
    tpm_firmware_version: str | None
    #: what a cloud anchor (``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx``) established: the cloud,
    #: the VM's identity or the CPU's measurement and TCB (docs/protocol.md, "platform")
    platform: dict[str, Any]
    #: ``"bound"`` when the quote binds the client key the caller holds (``nomyo-audit-v2``),
    #: ``"absent"`` when it binds the request without it; only when the caller gave its key
    key_binding: str
    #: what the TCG event log proves (secure boot, firmware, boot loader, kernel, command lines):
    #: only events whose replay reaches a quoted PCR value; present only when ``event_log`` passed
    measured_boot: BootSummary
    #: the router build, configuration and models measured into PCR 23, from proven events only;
    #: present only when ``event_log`` passed and the quote proves PCR 23's events
    serving_stack: ServingStack
    #: the IMA measurement list's size and how much of it the quote proves; only when ``ima_log`` passed
    ima: ImaSummary


@dataclass(frozen=True)
class Measurements:
    """The logs a reply carried, parsed, and how each replayed against the quoted PCRs.

    In :attr:`Verdict.measurements` once the quote's PCR values were proved and the reply carried a
    log. The logs are the router's unauthenticated word: an event counts only when it is in
    :meth:`proven_events` or :meth:`proven_ima_entries`, that is when the replay of its PCR up to
    it reaches a value the quote proved. A log that parsed but did not match is kept, to explain
    the failure. Policy rules read these, never the raw fields.
    """

    #: the TCG event log, when the reply carried one that parsed
    event_log: EventLog | None
    #: how its replay compares with the quoted PCRs
    event_log_match: LogMatch | None
    #: the IMA measurement list, when the reply carried one that parsed
    ima_log: ImaLog | None
    #: how its replay compares with the quoted PCRs
    ima_match: LogMatch | None

    def proven_events(self) -> tuple[Event, ...]:
        """The TCG events the quote proves, in log order."""
        if self.event_log is None or self.event_log_match is None:
            return ()
        proven = self.event_log_match.proven_numbers()
        return tuple(e for e in self.event_log.events if e.number in proven)

    def proven_ima_entries(self) -> tuple[ImaEntry, ...]:
        """The IMA entries the quote proves, in list order (those appended after the quote are not)."""
        if self.ima_log is None or self.ima_match is None:
            return ()
        proven = self.ima_match.proven_numbers()
        return tuple(e for e in self.ima_log.entries if e.number in proven)


class Verdict(NamedTuple):
    """One finding per check, what the evidence showed, and the overall result.

    Built by :func:`nomyo_audit.tpm.verify_attestation` only; ``failures`` is derived from
    ``findings`` there, once, because gating and reporting ask for it on every request.
    """

    #: one finding per check, in :data:`CHECKS` order
    findings: tuple[Finding, ...]
    #: the request the evidence was appraised for
    payload_id: str | None
    #: this verdict's own facts: changing them changes no other verdict
    facts: VerdictFacts
    #: SHA-256 of the response content the binding was checked against, if any.
    content_digest: bytes | None
    #: the findings whose status is "fail", in check order
    failures: tuple[Finding, ...]
    #: the parsed logs and their replay, when the reply carried any (not in :meth:`to_dict`: the
    #: audit log keeps the logs themselves, and their facts are in ``facts``)
    measurements: Measurements | None = None

    @property
    def result(self) -> Literal["pass", "fail"]:
        """``"pass"`` when no finding failed (a ``skip`` is not a failure), else ``"fail"``."""
        return "fail" if self.failures else "pass"

    @property
    def passed(self) -> bool:
        """Whether no finding failed."""
        return not self.failures

    def finding(self, check: str) -> Finding:
        """The finding of one check, by name. Raises KeyError for a name not in :data:`CHECKS`."""
        return self.findings[_CHECK_INDEX[check]]

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready data, as audit records and ``--json`` output hold it."""
        return {
            "result": self.result,
            "payload_id": self.payload_id,
            "findings": [f.to_dict() for f in self.findings],
            "facts": dict(self.facts),
            "content_digest": self.content_digest.hex() if self.content_digest is not None else None,
        }


class Checks:
    """Collects one appraisal's findings; the checks not reached are filled in as ``skip``."""

    __slots__ = ("failed", "findings")

    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}
        #: whether any failing finding was added (most verdicts have none to look for)
        self.failed = False

    def put(self, finding: Finding) -> None:
        """Add a prebuilt finding (most passing findings never vary, so they are built once)."""
        self.findings[finding.check] = finding
        if finding.status == "fail":
            self.failed = True

    def skip(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "skip", code, detail)

    def fail(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "fail", code, detail)
        self.failed = True

    def done(
        self,
        payload_id: str | None,
        facts: VerdictFacts,
        reason: str = "",
        content_digest: bytes | None = None,
        measurements: Measurements | None = None,
    ) -> Verdict:
        found = self.findings
        if len(found) != len(CHECKS):
            for check in CHECKS:
                if check not in found:
                    found[check] = Finding(check, "skip", "not_reached", reason or "not checked")
        findings = tuple(map(found.__getitem__, CHECKS))
        failures = tuple([f for f in findings if f.status == "fail"]) if self.failed else ()
        return Verdict(findings, payload_id, facts, content_digest, failures, measurements)
