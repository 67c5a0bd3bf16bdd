"""AK certificates (TCG AK credential profile): issue them for an enrollment CA, and validate them.

An AK certificate says "this attestation key lives in the TPM named here": an empty subject, the
TPM's manufacturer, model and version in a critical subjectAltName directoryName (copied from the
EK certificate the activation was made against), extendedKeyUsage tcg-kp-AIKCertificate
(2.23.133.8.3), basicConstraints CA:false. :func:`validate_ak_chain` is what lets any verifier
anchor a quote offline with only the CA root; :func:`build_ak_certificate` is what the enrollment
CA (``nomyo_audit.ca``) signs after a successful credential activation. Pure, no I/O.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ObjectIdentifier

from ..errors import CertificateError
from ._chain import build_path, read_chain
from ._cpu_roots import tpm_anchors
from ._ek_certificate import EkCertificate
from ._keys import spki_der, to_crypto_key
from ._marshal import TPMStructureError
from ._public import Public
from ._tcg import (
    EKU_AIK_CERTIFICATE,
    OID_TPM_MANUFACTURER,
    OID_TPM_MODEL,
    OID_TPM_VERSION,
    basic_constraints,
    extended_key_usage,
    tpm_identity,
)
from ._trust_store import TrustStore

__all__ = ["AkChainValidation", "build_ak_certificate", "validate_ak_chain"]

IssuerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


class AkChainValidation(NamedTuple):
    """A validated AK chain: subjects from the AK certificate ("" for its empty subject) to the
    anchor, the anchor's hex SHA-256, and the TPM identity the AK certificate states (None when
    it states none)."""

    subjects: tuple[str, ...]
    root_sha256: str
    manufacturer: str | None
    model: str | None
    version: str | None


def validate_ak_chain(
    chain: Sequence[bytes], store: TrustStore, aik: Public, *, at: datetime
) -> AkChainValidation:
    """Validate an AK certificate chain (DER, AK certificate first, then intermediates; the root
    may be left out) for the quoting AIK ``aik`` at time ``at`` (timezone-aware).

    Raises :class:`~nomyo_audit.errors.CertificateError`: ``cert_malformed`` for an empty or
    unreadable chain, ``cert_wrong_eku`` when the AK certificate lacks tcg-kp-AIKCertificate,
    ``cert_key_mismatch`` when its key is not the AIK's, ``cert_not_ek_profile`` for a CA
    certificate in the leaf position, and the path codes of ``nomyo_audit.tpm._chain``
    (explicit RFC 5280 checks, since AK certificates do not meet the WebPKI rules of
    ``cryptography``'s verifier).
    """
    certificates = read_chain(chain)
    if not certificates:
        raise CertificateError("the AK certificate chain is empty", code="cert_malformed")
    leaf = certificates[0]
    if EKU_AIK_CERTIFICATE not in (extended_key_usage(leaf) or ()):
        raise CertificateError(
            "the AK certificate's extendedKeyUsage does not include tcg-kp-AIKCertificate (2.23.133.8.3)",
            code="cert_wrong_eku",
        )
    constraints = basic_constraints(leaf)
    if constraints is not None and constraints[0]:
        raise CertificateError("an AK certificate must not be a CA certificate", code="cert_not_ek_profile")
    if leaf.spki != _spki(aik):
        raise CertificateError(
            "the AK certificate certifies another key than the quoting AIK", code="cert_key_mismatch"
        )
    path = build_path(leaf, certificates[1:], tpm_anchors(store), at=at)  # a CPU root vouches for no TPM
    identity = tpm_identity(leaf)
    return AkChainValidation(
        subjects=tuple(c.subject_text for c in path),
        root_sha256=path[-1].sha256,
        manufacturer=identity.manufacturer if identity is not None else None,
        model=identity.model if identity is not None else None,
        version=identity.version if identity is not None else None,
    )


def build_ak_certificate(
    *,
    issuer_key: IssuerKey,
    issuer_cert: x509.Certificate,
    aik: Public,
    ek: EkCertificate,
    not_before: datetime,
    not_after: datetime,
) -> bytes:
    """An AK certificate (DER) for ``aik``, naming the TPM of ``ek``, signed by the CA.

    Only call it after the AIK was proven to live in the TPM of ``ek`` (credential activation).
    Raises ``cert_not_ek_profile`` when the EK certificate names no TPM manufacturer (nothing to
    certify) and ``cert_malformed`` for an unusable AIK or validity.
    """
    if not ek.manufacturer:
        raise CertificateError(
            "the EK certificate names no TPM manufacturer to certify", code="cert_not_ek_profile"
        )
    if not_before.tzinfo is None or not_after.tzinfo is None or not_after <= not_before:
        raise CertificateError(
            "the validity must be timezone-aware and end after it starts", code="cert_malformed"
        )
    try:
        key = to_crypto_key(aik)
    except TPMStructureError as exc:
        raise CertificateError(
            f"the AIK is not a usable public key ({exc.message})", code="cert_malformed"
        ) from None
    attributes = [
        (OID_TPM_MANUFACTURER, ek.manufacturer),
        (OID_TPM_MODEL, ek.model),
        (OID_TPM_VERSION, ek.version),
    ]
    tpm = x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(ObjectIdentifier(oid), value)])
        for oid, value in attributes
        if value
    ])  # fmt: skip
    issuer_public = issuer_cert.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer_cert.subject)
        .public_key(key)
        .serial_number(secrets.randbits(159) | 1 << 158)
        .not_valid_before(not_before.astimezone(timezone.utc))
        .not_valid_after(not_after.astimezone(timezone.utc))
        .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm)]), critical=True)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(EKU_AIK_CERTIFICATE)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key), critical=False)
    )
    if isinstance(issuer_public, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), critical=False
        )
    certificate = builder.sign(issuer_key, _hash_for(issuer_key))
    return certificate.public_bytes(serialization.Encoding.DER)


def _signing_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _hash_for(key: IssuerKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def _spki(aik: Public) -> bytes:
    try:
        key = to_crypto_key(aik)
    except TPMStructureError:
        raise CertificateError(
            "the quoting AIK is not a usable public key", code="cert_key_mismatch"
        ) from None
    return spki_der(key)
