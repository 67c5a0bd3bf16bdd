"""``aik_trust`` modes ``ek``, ``ca`` and the cloud kinds ``gce-ak-cert``, ``azure-sev-snp``,
``azure-tdx``: the AIK must be anchored to a hardware root of trust, in that way.

A verdict whose ``aik_anchor`` the caller already appraised (the client after its own credential
activation, ``verify`` from an audit log's intact record or with ``--tpm-roots``) is judged by that
finding. A verdict made without an anchor is anchored here only from what authenticates itself: the
AK certificate chain the quote carries (``ca``) or its ``platform`` object (a cloud kind: Google's AK
certificate, an AMD or Intel report binding the AK), against the policy's ``roots:`` (or the shipped
roots, which hold Google's, AMD's and Intel's). A credential activation is never read from
``_metadata``: it is interactive, a reply's metadata is the router's (or a file's) word, and anyone
can write "passed" beside a public EK certificate. Reading the roots is this module's only I/O, done
once per set of roots, when a reply first needs them; appraisals are cached by chain
(:class:`nomyo_audit.tpm._anchoring.AnchorCache`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import EvidenceError, NomyoAuditError
from ..tpm._aik import aik_material
from ..tpm._anchor import AnchorResult, manufacturer_accepted, not_anchored
from ..tpm._anchoring import SHARED_CACHE, evidence_in_block
from ..tpm._verdict import CHECKS, Verdict

__all__ = ["ANCHORED_MODES", "anchored_check", "load_roots", "policy_roots", "resolve_roots"]

_ANCHOR = CHECKS.index("aik_anchor")
_KIND_TEXT = {
    "ek": "a credential activation against a certified EK",
    "ca": "an AK certificate chain",
    "gce-ak-cert": "a Google Compute Engine AK certificate",
    "azure-sev-snp": "an AMD SEV-SNP report (Azure confidential VM)",
    "azure-tdx": "an Intel TDX quote (Azure confidential VM)",
}
#: the aik_trust modes that require an anchor of their kind
ANCHORED_MODES = tuple(_KIND_TEXT)


def load_roots(paths: tuple[str, ...]) -> Any:
    """The trust store of ``paths`` (PEM/DER files or directories), or the shipped manufacturer
    roots when there are none. Raises :class:`nomyo_audit.errors.CertificateError` (``cert_trust_store``)."""
    from ..tpm import TrustStore  # type: ignore[attr-defined,unused-ignore]

    if not paths:
        return TrustStore.bundled()
    store = None
    for path in paths:
        part = TrustStore.from_directory(path) if Path(path).is_dir() else TrustStore.from_pem(_read(path))
        store = part if store is None else store | part
    return store


def _read(path: str) -> bytes:
    from ..errors import CertificateError

    try:
        with open(path, "rb") as handle:
            return handle.read(1 << 20)
    except OSError as exc:
        raise CertificateError(f"trust root {path}: {exc.strerror}", code="cert_trust_store") from None


class _Store:
    """The policy's roots, read once, when a reply first needs them (never while loading a policy)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        self._store: Any = None
        self._error: NomyoAuditError | None = None

    def get(self) -> Any:
        if self._store is None and self._error is None:
            with self._lock:
                if self._store is None and self._error is None:
                    try:
                        self._store = load_roots(self.paths)
                    except NomyoAuditError as exc:
                        self._error = exc
        if self._error is not None:
            raise self._error
        return self._store


_STORES: dict[tuple[str, ...], _Store] = {}
_STORES_LOCK = threading.Lock()


def _store_of(value: Mapping[str, Any]) -> _Store:
    """The (lazily read) trust store of an ``aik_trust`` value's roots, one per set of paths."""
    paths = tuple(value.get("roots", ()) or value.get("ca_certificates", ()))
    with _STORES_LOCK:
        store = _STORES.get(paths)
        if store is None:
            store = _STORES[paths] = _Store(paths)
        return store


def policy_roots(spec: Mapping[str, Any]) -> Any:
    """The trust store a policy spec's ``aik_trust: {mode: ek|ca}`` names (its ``roots:``, else the
    shipped manufacturer roots), or None for another mode or roots that do not read (the rule then
    reports why)."""
    trust = spec.get("aik_trust")
    if not isinstance(trust, Mapping) or trust.get("mode") not in ANCHORED_MODES:
        return None
    try:
        return _store_of(trust).get()
    except NomyoAuditError:
        return None


def anchored_check(kind: str, value: Mapping[str, Any]) -> Any:
    """The per-reply check of ``aik_trust: {mode: <an anchored mode>}`` (its signature already verified)."""
    from ._rules import RuleOutcome

    vendors = tuple(value.get("manufacturers", ()))
    roots = _store_of(value)
    anchored = f"the AIK is anchored by {_KIND_TEXT[kind]}"
    # The pass outcome by the anchor finding's code (aik_anchored_<kind>): made once, not per reply.
    # Immutable, so threads racing on a miss only store equal values.
    passed: dict[str, Any] = {}

    def judge(result_code: str, status: str, detail: str, facts: Mapping[str, Any]) -> Any:
        if status == "pass":
            if facts.get("anchor_kind") != kind:
                return RuleOutcome(
                    "aik_trust",
                    "fail",
                    f"the AIK is anchored by {facts.get('anchor_kind')}, not {kind}",
                    (result_code,),
                )
            if vendors and not manufacturer_accepted(str(facts.get("manufacturer", "")), vendors):
                return RuleOutcome(
                    "aik_trust",
                    "fail",
                    f"TPM manufacturer {facts.get('manufacturer')} is not accepted",
                    (result_code,),
                )
            outcome = passed.get(result_code)
            if outcome is None:
                outcome = RuleOutcome("aik_trust", "pass", anchored, (result_code,))
                if len(passed) < 8:
                    passed[result_code] = outcome
            return outcome
        return RuleOutcome(
            "aik_trust", "fail", f"the AIK is not anchored by {_KIND_TEXT[kind]}: {detail}", (result_code,)
        )

    def check(metadata: Mapping[str, Any], verdict: Verdict, now: float | None) -> Any:
        finding = verdict.findings[_ANCHOR]
        if finding.status == "pass" and verdict.facts.get("anchor_kind") == kind:
            return judge(finding.code, "pass", finding.detail, verdict.facts)
        if finding.status == "fail" and not (kind == "ca" and _has_platform(metadata)):
            return judge(finding.code, "fail", finding.detail, {})
        # not appraised, or (ca) the failure may be the platform object's, which a verifier judges first
        result = _appraise_here(kind, metadata, verdict, roots, vendors, now)
        return judge(result.finding.code, result.finding.status, result.finding.detail, result.facts)

    return check


def _has_platform(metadata: Mapping[str, Any]) -> bool:
    block = metadata.get("tpm_attestation")
    return isinstance(block, Mapping) and block.get("platform") is not None


def _appraise_here(
    kind: str,
    metadata: Mapping[str, Any],
    verdict: Verdict,
    roots: _Store,
    vendors: tuple[str, ...],
    now: float | None,
) -> AnchorResult:
    """Anchor a verdict made without an anchor, from what the evidence and the client's record hold."""
    block = metadata.get("tpm_attestation")
    if not isinstance(block, Mapping):
        return not_anchored("no TPM evidence")
    try:
        material = aik_material(block.get("aik_pubkey_b64"))
        if material.facts.get("aik_name") != verdict.facts.get("aik_name"):
            return not_anchored("the AIK is not the one whose signature verified", "aik_mismatch")
        evidence = evidence_in_block(block, kind) if kind != "ek" else None  # never _metadata's word
        if evidence is None:
            if kind == "ek":
                return not_anchored(
                    "no credential activation was run for this AIK: the client runs one (or verify "
                    "re-checks the one an audit log kept); an activation a reply's metadata claims is "
                    "never believed"
                )
            what = "an AK certificate chain" if kind == "ca" else f"{kind} platform evidence"
            return not_anchored(f"the evidence carries no {what}")
        store = roots.get()
    except EvidenceError as exc:
        return AnchorResult(_failed(exc.code, exc.message), {})
    except (NomyoAuditError, TypeError) as exc:
        return AnchorResult(_failed(getattr(exc, "code", "anchor_malformed"), str(exc)[:200]), {})
    at = _when(now)
    return SHARED_CACHE.appraise(material.public, evidence, store, at=at, manufacturers=vendors)


def _when(now: float | None) -> datetime:
    """An AK chain is judged when the reply is (the policy's ``now``), else at present."""
    return datetime.fromtimestamp(now, timezone.utc) if now is not None else datetime.now(timezone.utc)


def _failed(code: str, detail: str) -> Any:
    from ..tpm._verdict import Finding

    return Finding("aik_anchor", "fail", code, detail)


def resolve_roots(spec: dict[str, Any], base: Path) -> None:
    """Make ``aik_trust.roots`` relative to the policy file's directory, in ``spec`` only (the
    policy's digest is over the document as written, so it does not depend on where it lies)."""
    trust = spec.get("aik_trust")
    if not isinstance(trust, Mapping):
        return
    key = "roots" if "roots" in trust else "ca_certificates"
    paths = trust.get(key)
    if isinstance(paths, list):
        spec["aik_trust"] = {**trust, key: [str(base / p) for p in paths]}
