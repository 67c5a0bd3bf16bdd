"""Certificate path validation for TPM EK and AK chains, done explicitly.

``cryptography.x509.verification`` (``PolicyBuilder``) implements the CA/Browser-Forum WebPKI
profile, and TPM certificates do not meet it: EK and AK leaves have an empty subject and a SAN
that holds only a directoryName, manufacturer CAs carry critical policies and subject directory
attributes, Nuvoton's names have SETs out of DER order and ST's EK certificates carry NV
padding, so its loader or its policy refuses real, valid chains (tests/test_ek_certificates.py
shows it on the real ST chain). The checks RFC 5280 section 6 asks for are therefore made here,
one by one, each with its own error code:

* the path: each certificate's issuer name equals the next one's subject (RFC 5280 7.1
  comparison), and the next one's key verifies its signature over the original TBS bytes
  (``cert_bad_signature``); it ends at an anchor of the :class:`TrustStore`
  (``cert_unknown_root`` for a self-signed root outside it, ``cert_self_signed`` for a
  self-signed leaf, ``cert_unchained`` when no issuer is found);
* validity of every certificate at ``at`` (``cert_expired``, ``cert_not_yet_valid``);
* every issuer: basicConstraints cA (``cert_not_ca``; an anchor without the extension is
  accepted, as RFC 5280 6.1 leaves anchors to the relying party), pathLenConstraint
  (``cert_path_length``), keyCertSign when keyUsage is present (``cert_key_usage``);
* no critical extension this module does not know (``cert_unknown_critical_extension``).

Revocation is not checked: TPM vendors publish no CRLs for most EK CAs (the README of the
collected roots says so). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from ..errors import CertificateError
from ._tcg import basic_constraints, key_usage
from ._trust_store import TrustStore
from ._x509 import RawCertificate, decode_name, read_certificate, verify_issued_by

__all__ = ["MAX_CHAIN_LENGTH", "MAX_SIGNATURE_CHECKS", "build_path", "read_chain"]

#: Longest path accepted, leaf and anchor included.
MAX_CHAIN_LENGTH = 8
#: Signatures checked while searching for a path, at most: without a bound, a chain of look-alike
#: intermediates (same subject, same key) makes the search try every ordering of them (13,699 P-521
#: checks, 12 s, for 7 of them). Real chains need a few per level (the bundled store holds at most 4
#: anchors with one subject).
MAX_SIGNATURE_CHECKS = 32
_KNOWN_CRITICAL = {
    "2.5.29.15",  # keyUsage
    "2.5.29.17",  # subjectAltName (critical for an empty subject)
    "2.5.29.19",  # basicConstraints
    "2.5.29.37",  # extendedKeyUsage
    "2.5.29.32",  # certificatePolicies (critical in Windows AIK certificates; policies not enforced)
    "2.5.29.9",  # subjectDirectoryAttributes
    "2.5.29.30",  # nameConstraints (TPM CAs do not use them for these names)
    "2.5.29.35",  # authorityKeyIdentifier
    "2.5.29.14",  # subjectKeyIdentifier
}


def read_chain(chain: Sequence[bytes]) -> list[RawCertificate]:
    """The given certificates, parsed; more than :data:`MAX_CHAIN_LENGTH` is ``cert_malformed``."""
    if isinstance(chain, (bytes, str)) or len(chain) > MAX_CHAIN_LENGTH:
        raise CertificateError(
            f"a chain is a list of at most {MAX_CHAIN_LENGTH} certificates", code="cert_malformed"
        )
    return [read_certificate(der) for der in chain]


def build_path(
    leaf: RawCertificate, intermediates: Sequence[RawCertificate], store: TrustStore, *, at: datetime
) -> list[RawCertificate]:
    """The validated path from ``leaf`` to an anchor of ``store`` (leaf first, anchor last)."""
    if at.tzinfo is None:
        raise CertificateError("the validation time must be timezone-aware", code="cert_malformed")
    at = at.astimezone(timezone.utc)
    path = _extend([leaf], intermediates, store, [MAX_SIGNATURE_CHECKS])
    for position, certificate in enumerate(path):
        _check_validity(certificate, at)
        _check_critical(certificate)
        if position:
            _check_issuer(certificate, path[1:position], anchor=store.holds(certificate))
    return path


def _extend(
    path: list[RawCertificate], pool: Sequence[RawCertificate], store: TrustStore, budget: list[int]
) -> list[RawCertificate]:
    # A leaf is an anchor only as the very bytes the store holds: a twin (an anchor's subject and key,
    # any other content, signed by anyone) would otherwise pass as an EK or AK certificate unsigned.
    leaf = len(path) == 1
    anchor = (path[0] if path[0].sha256 in store.sha256s else None) if leaf else store.anchor_for(path[-1])
    if anchor is not None:
        path = [*path[:-1], anchor]  # the store's copy, never the presented one
    current = path[-1]
    if anchor is not None and (current.self_issued or not store.issuers_of(current)):
        return path
    seen = {c.sha256 for c in path}
    wanted = decode_name(current.issuer)
    candidates = [c for c in pool if decode_name(c.subject) == wanted and c.sha256 not in seen]
    candidates += [c for c in store.issuers_of(current) if c.sha256 not in seen]
    failure: CertificateError | None = None
    for issuer in candidates if len(path) < MAX_CHAIN_LENGTH else []:
        if budget[0] <= 0:
            raise CertificateError(
                f"no path found within {MAX_SIGNATURE_CHECKS} signature checks: the chain holds too many "
                "look-alike issuers",
                code="cert_unchained",
            )
        budget[0] -= 1
        try:
            verify_issued_by(current, issuer.public_key)
            return _extend([*path, issuer], pool, store, budget)
        except CertificateError as exc:
            failure = failure if failure is not None and exc.code == "cert_bad_signature" else exc
    if anchor is not None:
        return path
    if failure is not None:
        raise failure
    raise _unanchored(current, len(path))


def _unanchored(top: RawCertificate, length: int) -> CertificateError:
    if top.self_issued:
        try:
            verify_issued_by(top, top.public_key)
        except CertificateError:
            return CertificateError(
                "a self-issued certificate's signature does not verify", code="cert_bad_signature"
            )
        if length == 1:
            return CertificateError(
                "the certificate is self-signed, not issued by a trusted CA", code="cert_self_signed"
            )
        return CertificateError(
            f"the chain ends at a root not in the trust store: {top.subject_text!r} ({top.sha256[:16]})",
            code="cert_unknown_root",
        )
    return CertificateError(
        f"no issuer found for {top.subject_text or '(empty subject)'!r}: issuer {top.issuer_text!r} is "
        "neither in the chain nor in the trust store",
        code="cert_unchained",
    )


def _check_validity(certificate: RawCertificate, at: datetime) -> None:
    label = certificate.subject_text or f"leaf {certificate.sha256[:16]}"
    if at < certificate.not_before:
        raise CertificateError(
            f"{label!r} is not valid before {certificate.not_before.isoformat()}", code="cert_not_yet_valid"
        )
    if at > certificate.not_after:
        raise CertificateError(
            f"{label!r} expired on {certificate.not_after.isoformat()}", code="cert_expired"
        )


def _check_critical(certificate: RawCertificate) -> None:
    unknown = [e.oid for e in certificate.extensions if e.critical and e.oid not in _KNOWN_CRITICAL]
    if unknown:
        raise CertificateError(
            f"{certificate.subject_text or 'the leaf'!r} has critical extensions this validator does not "
            f"know: {unknown}",
            code="cert_unknown_critical_extension",
        )


def _check_issuer(issuer: RawCertificate, below: list[RawCertificate], *, anchor: bool) -> None:
    constraints = basic_constraints(issuer)
    if (constraints is None and not anchor) or (constraints is not None and not constraints[0]):
        raise CertificateError(
            f"{issuer.subject_text!r} issued a certificate but is not a CA", code="cert_not_ca"
        )
    intermediates = sum(1 for c in below if not c.self_issued)
    if constraints is not None and constraints[1] is not None and intermediates > constraints[1]:
        raise CertificateError(
            f"{issuer.subject_text!r} allows {constraints[1]} intermediate CAs below it, "
            f"the path has {intermediates}",
            code="cert_path_length",
        )
    usages = key_usage(issuer)
    if usages is not None and "keyCertSign" not in usages:
        raise CertificateError(
            f"{issuer.subject_text!r} may not sign certificates (keyUsage)", code="cert_key_usage"
        )
