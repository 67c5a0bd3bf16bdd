"""Appraise an AIK's anchor to a hardware root of trust: the ``aik_anchor`` check. Pure, no I/O.

A quote whose signature verifies proves only that *some* key signed it. :func:`appraise_anchor`
says whether that key is anchored, in one of these ways:

* ``ca``: an AK certificate chain (:func:`validate_ak_chain`) to a root of the trust store, whose
  certified key is the quoting AIK. An enrollment CA issues such a certificate only after a
  credential activation against an EK certificate it trusts, so anyone with the CA root re-checks
  it offline, years later.
* ``ek``: a credential activation of this AIK (the verifier's own TPM2_MakeCredential to the EK,
  answered by the TPM) against an EK certificate chain (:func:`validate_ek_chain`) to a TPM
  manufacturer root. The activation is interactive; what is kept (:class:`ActivationOutcome`) lets
  an auditor re-validate the EK chain at the recorded time and see which AIK and EK it was for.
* ``gce-ak-cert``, ``azure-sev-snp``, ``azure-tdx``: what a cloud put beside its vTPM (the
  ``platform`` extension, :mod:`._platform`): Google's AK certificate, or a CPU report by AMD or
  Intel that binds the AK. Like ``ca`` it authenticates itself and is re-checked offline.

``aik_anchor`` passes only with one of these verified: every other case is a ``skip``
(no anchor offered) or a ``fail`` with the specific code of what is wrong, never a pass.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from .._canonical import canonical_json
from ..errors import CertificateError, EvidenceError
from ._ak_certificate import validate_ak_chain
from ._ek_certificate import EkCertificate, ek_matches_public, validate_ek_chain
from ._platform import PlatformEvidence, appraise_platform, read_platform
from ._public import Public, parse_public
from ._tcg import manufacturer_name, normalize_manufacturer
from ._verdict import Finding
from ._x509 import read_certificate

__all__ = [
    "ANCHOR_EVIDENCE_VERSION",
    "PLATFORM_ANCHOR_KINDS",
    "ActivationOutcome",
    "AnchorEvidence",
    "AnchorResult",
    "appraise_anchor",
    "manufacturer_accepted",
    "not_anchored",
    "platform_digest",
    "validity_window",
]

#: The version of :meth:`AnchorEvidence.to_dict`'s form, as audit records keep it.
ANCHOR_EVIDENCE_VERSION = 1
#: The most certificates a chain may hold, and the longest one (DER bytes): bounds for untrusted input.
MAX_CHAIN = 8
MAX_CERTIFICATE = 16384

AnchorKind = Literal["ca", "ek", "gce-ak-cert", "azure-sev-snp", "azure-tdx"]
#: the anchor kinds of the ``platform`` extension
PLATFORM_ANCHOR_KINDS = ("gce-ak-cert", "azure-sev-snp", "azure-tdx")


class ActivationOutcome(NamedTuple):
    """What one credential activation showed: the AIK it was for, the EK certificate it was made to
    (SHA-256 of its DER), whether the TPM returned the secret, and when (UTC)."""

    #: the AIK's TPM name, hex
    aik_name: str
    #: SHA-256 (hex) of the DER EK certificate the credential was made to
    ek_certificate_sha256: str
    #: ``"pass"`` when the router returned exactly the secret, else the failure's code
    result: str
    validated_at: datetime

    def to_dict(self) -> dict[str, str]:
        """JSON-ready (the time as ISO 8601 UTC); never holds the secret itself."""
        return {
            "aik_name": self.aik_name,
            "ek_certificate_sha256": self.ek_certificate_sha256,
            "result": self.result,
            "validated_at": _iso(self.validated_at),
        }


@dataclass(frozen=True)
class AnchorEvidence:
    """Everything needed to (re-)appraise an anchor, as an audit record keeps it.

    ``chain`` is DER: for ``ca`` the AK certificate first, then intermediates; for ``ek`` the EK
    certificate first, then intermediates. ``ek_public`` is the EK's TPM2B_PUBLIC the credential was
    made to (``ek`` only); ``validated_at`` when the chain was validated (an offline re-check
    validates at this time). ``platform`` is the cloud evidence of a platform kind (its ``chain``
    is empty). A platform kind read from a record holds ``platform_sha256`` instead
    (:func:`platform_digest`): the record's own ``tpm_attestation`` keeps the evidence once, so the
    anchor re-checks the evidence of the quote's block that has this digest
    (:class:`nomyo_audit.tpm._anchoring.Anchoring`).
    """

    kind: AnchorKind
    chain: tuple[bytes, ...]
    activation: ActivationOutcome | None = None
    ek_public: bytes | None = None
    validated_at: datetime | None = None
    platform: PlatformEvidence | None = None
    platform_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON form audit records keep (certificates as base64 DER). A platform kind
        keeps ``platform_evidence_sha256`` (:func:`platform_digest`), not a second copy of the
        evidence the record's ``tpm_attestation`` holds (up to ~30 KB); a ``ca`` or ``ek`` record
        keeps its exact bytes. Records before it kept the object as ``platform``: still read."""
        document = {
            "version": ANCHOR_EVIDENCE_VERSION,
            "kind": self.kind,
            "chain_b64": [base64.b64encode(c).decode() for c in self.chain],
            "activation": self.activation.to_dict() if self.activation else None,
            "ek_public_b64": base64.b64encode(self.ek_public).decode() if self.ek_public else None,
            "validated_at": _iso(self.validated_at) if self.validated_at else None,
        }
        digest = platform_digest(self.platform) if self.platform is not None else self.platform_sha256
        if digest is not None:
            document["platform_evidence_sha256"] = digest
        return document

    @classmethod
    def from_dict(cls, data: object) -> AnchorEvidence:
        """Read :meth:`to_dict`'s form strictly. Raises :class:`EvidenceError` (``anchor_malformed``)."""
        if not isinstance(data, Mapping) or data.get("version") != ANCHOR_EVIDENCE_VERSION:
            raise _malformed("anchor evidence is not an object of version 1")
        kind = data.get("kind")
        if kind not in ("ca", "ek", *PLATFORM_ANCHOR_KINDS):
            raise _malformed(f"anchor kind is not one of ca, ek, {', '.join(PLATFORM_ANCHOR_KINDS)}")
        chain = read_chain(data.get("chain_b64"), "chain_b64")
        activation = _activation(data.get("activation"))
        ek_public = data.get("ek_public_b64")
        validated = data.get("validated_at")
        platform, digest = None, data.get("platform_evidence_sha256")
        if kind not in PLATFORM_ANCHOR_KINDS:
            if "platform" in data or "platform_evidence_sha256" in data:
                raise _malformed(f"a {kind} anchor holds no platform evidence")
        elif ("platform" in data) == (digest is not None):
            raise _malformed(f"a {kind} anchor holds either its platform evidence or its digest")
        elif digest is not None:
            if not _is_digest(digest):
                raise _malformed("platform_evidence_sha256 is not a SHA-256 digest (64 lowercase hex)")
        else:
            try:
                platform = read_platform(data.get("platform"))
            except EvidenceError as exc:
                raise _malformed(exc.message) from None
            if platform.anchor_kind != kind:
                raise _malformed(f"anchor kind {kind} holds {platform.kind} platform evidence")
        return cls(
            kind,
            chain,
            activation,
            _b64(ek_public, "ek_public_b64") if ek_public is not None else None,
            _time(validated, "validated_at") if validated is not None else None,
            platform,
            digest if platform is None else None,
        )


@lru_cache(maxsize=64)
def platform_digest(platform: PlatformEvidence) -> str:
    """SHA-256 (hex) of ``platform``'s RFC 8785 bytes in its own form (:meth:`PlatformEvidence.to_dict`):
    the same for any spelling of the same evidence (PEM line breaks, say), unlike the digest of the
    object a reply carried (a record's ``tpm_attestation.platform_sha256``)."""
    return hashlib.sha256(canonical_json(platform.to_dict())).hexdigest()


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class AnchorResult(NamedTuple):
    """The ``aik_anchor`` finding, the facts it established (empty unless it passed), and the time
    window in which the same appraisal gives the same pass (for caching; None when it did not)."""

    finding: Finding
    facts: dict[str, Any]
    valid_from: datetime | None = None
    valid_until: datetime | None = None


def not_anchored(detail: str, code: str = "aik_not_anchored") -> AnchorResult:
    """A ``skip``: no anchor was offered, so the quote proves consistency, not genuine hardware."""
    return AnchorResult(Finding("aik_anchor", "skip", code, detail), {})


def appraise_anchor(
    aik: Public,
    evidence: AnchorEvidence,
    store: Any,
    *,
    at: datetime,
    manufacturers: Collection[str] = (),
) -> AnchorResult:
    """Whether ``evidence`` anchors ``aik`` to a root of ``store`` (a :class:`TrustStore`) at ``at``.

    ``manufacturers`` (``id:49465800`` or a name such as ``Infineon``), when given, restricts the
    TPM vendors accepted. Raises nothing for any evidence: a bad anchor is a failing finding with the
    certificate layer's code (``cert_expired``, ``cert_unknown_root``, ``cert_key_mismatch`` ...) or
    one of ``activation_missing``, ``activation_failed``, ``activation_other_aik``,
    ``activation_other_ek``, ``ek_public_mismatch``, ``anchor_manufacturer``, ``anchor_empty``, or
    for a platform kind its appraiser's codes (``gce_ak_mismatch``, ``hcl_ak_mismatch`` ...).
    """
    if evidence.platform is not None:
        result: AnchorResult = appraise_platform(aik, evidence.platform, store, at=at)
        maker = str(result.facts.get("manufacturer", ""))
        accepted = not manufacturers or manufacturer_accepted(maker, manufacturers)
        if result.finding.status != "pass" or accepted:
            return result
        return _fail("anchor_manufacturer", f"manufacturer {maker} is not one the policy accepts")
    if evidence.kind not in ("ca", "ek"):
        return _fail("anchor_malformed", f"a {evidence.kind} anchor without its platform evidence")
    if not evidence.chain:
        return _fail("anchor_empty", "the anchor carries no certificate")
    try:
        if evidence.kind == "ca":
            ak = validate_ak_chain(evidence.chain, store, aik, at=at)
            subjects, root = ak.subjects, ak.root_sha256
            vendor = (ak.manufacturer, manufacturer_name(ak.manufacturer) if ak.manufacturer else None)
            model, version = ak.model, ak.version
        else:
            ek_chain = validate_ek_chain(evidence.chain[0], evidence.chain[1:], store, at=at)
            failure = _check_activation(aik, evidence, ek_chain.ek)
            if failure is not None:
                return failure
            ek = ek_chain.ek
            subjects, root, vendor = (
                ek_chain.subjects,
                ek_chain.root_sha256,
                (ek.manufacturer, ek.manufacturer_name),
            )
            model, version = ek.model, ek.version
    except CertificateError as exc:
        return _fail(exc.code, exc.message)
    except EvidenceError as exc:  # the EK public area of the activation did not parse
        return _fail(exc.code, exc.message)
    if manufacturers and not manufacturer_accepted(vendor[0] or "", manufacturers):
        return _fail("anchor_manufacturer", f"TPM manufacturer {vendor[0]} is not one the policy accepts")
    valid_from, valid_until = validity_window(evidence.chain, store, subjects)
    how = (
        "AK certificate chain"
        if evidence.kind == "ca"
        else "credential activation against the EK certificate"
    )
    facts = {
        "anchor_kind": evidence.kind,
        "chain_subjects": list(subjects),
        "anchor_root_sha256": root,
        "manufacturer": vendor[1] or vendor[0],
        "tpm_model": model,
        "tpm_firmware_version": version,
    }
    finding = Finding("aik_anchor", "pass", f"aik_anchored_{evidence.kind}", f"{how} to root {root[:16]}...")
    return AnchorResult(finding, facts, valid_from, valid_until)


def _check_activation(aik: Public, evidence: AnchorEvidence, ek: EkCertificate) -> AnchorResult | None:
    outcome = evidence.activation
    if outcome is None:
        return _fail("activation_missing", "no credential activation of this AIK was recorded")
    if outcome.result != "pass":
        return _fail("activation_failed", f"the credential activation failed ({outcome.result[:40]})")
    if not hmac.compare_digest(outcome.aik_name, aik.name.hex()):
        return _fail("activation_other_aik", "the credential activation was for another AIK")
    if not hmac.compare_digest(outcome.ek_certificate_sha256, ek.sha256):
        return _fail("activation_other_ek", "the credential activation was made to another EK certificate")
    if evidence.ek_public is not None and not ek_matches_public(ek, parse_public(evidence.ek_public)):
        return _fail("ek_public_mismatch", "the EK the credential was made to is not the certified EK")
    return None


def validity_window(
    chain: Sequence[bytes], store: Any, subjects: Sequence[str]
) -> tuple[datetime | None, datetime | None]:
    """The latest notBefore and earliest notAfter of the validated path's certificates: while a time
    lies in between, a chain that validated once validates again. The path is the chain's
    certificates and those the trust store supplied (the root, and intermediates the chain left
    out): every store certificate named in ``subjects`` counts (one of the same name that was not
    on the path only narrows the window). (None, None) when a certificate cannot be read."""
    try:
        certificates = [read_certificate(der) for der in chain]
    except CertificateError:
        return None, None
    named = set(subjects)
    certificates += [c for c in getattr(store, "certificates", ()) if c.subject_text in named]
    return max(c.not_before for c in certificates), min(c.not_after for c in certificates)


def manufacturer_accepted(stated: str, allowed: Collection[str]) -> bool:
    """Whether the TPM manufacturer a certificate states (its vendor ID ``id:49465800``, or the
    registered name of that ID, as the ``manufacturer`` fact holds it) is one of ``allowed``, each
    written as a vendor ID (any case, leading zeros optional) or a registered name (any case)."""
    if not stated:
        return False
    ids = {stated, manufacturer_name(stated) or stated}
    ids = {i.lower() for i in ids}
    for entry in allowed:
        normalized = normalize_manufacturer(entry)
        if normalized.lower() in ids or (manufacturer_name(normalized) or "").lower() in ids:
            return True
    return False


def _fail(code: str, detail: str) -> AnchorResult:
    return AnchorResult(Finding("aik_anchor", "fail", code, detail), {})


def read_chain(value: object, field: str) -> tuple[bytes, ...]:
    """A list of base64 DER certificates, bounded. Raises :class:`EvidenceError` (``anchor_malformed``)."""
    if not isinstance(value, list) or len(value) > MAX_CHAIN:
        raise _malformed(f"{field} is not a list of at most {MAX_CHAIN} base64 certificates")
    return tuple(_b64(item, field) for item in value)


def _b64(value: object, field: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_CERTIFICATE * 4 // 3 + 4:
        raise _malformed(f"{field} holds something that is not base64 of at most {MAX_CERTIFICATE} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{field} is not valid base64") from None


def _activation(value: object) -> ActivationOutcome | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _malformed("activation is not an object")
    texts = [value.get(k) for k in ("aik_name", "ek_certificate_sha256", "result")]
    if not all(isinstance(t, str) and len(t) <= 256 for t in texts):
        raise _malformed("activation needs aik_name, ek_certificate_sha256 and result as text")
    aik_name, ek_sha256, result = (str(t) for t in texts)
    return ActivationOutcome(aik_name, ek_sha256, result, _time(value.get("validated_at"), "validated_at"))


def _time(value: object, field: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise _malformed(f"{field} is not an ISO 8601 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _malformed(f"{field} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _malformed(message: str) -> EvidenceError:
    return EvidenceError(message, code="anchor_malformed")
