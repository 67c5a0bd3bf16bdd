"""EK certificates (TCG EK Credential Profile for TPM Family 2.0), parsed as real TPMs ship them.

The profile says: an empty subject, the TPM identity (tpmManufacturer, tpmModel, tpmVersion) in a
critical subjectAltName directoryName, an RSA 2048 or ECC P-256/P-384 endorsement key, no CA
flag. Real certificates deviate; each deviation this parser accepts is named in
:attr:`EkCertificate.quirks` (the DER-level ones of :mod:`._x509`, plus ``non_empty_subject``,
``no_tcg_san``, ``san_not_critical``, ``san_single_rdn``, ``tpm_attributes_in_sda``,
``tpm_attribute_string_type``, ``manufacturer_id_format``, ``no_ek_eku``) so a verdict can show
them. What would change what the certificate proves is refused with
:class:`~nomyo_audit.errors.CertificateError`: a CA certificate, an AIK certificate (wrong EKU),
a key the profile does not allow, nothing that names a TPM at all. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import CertificateError
from ._chain import build_path, read_chain
from ._cpu_roots import tpm_anchors
from ._keys import spki_der, to_crypto_key
from ._marshal import TPMStructureError
from ._public import Public
from ._tcg import EKU_EK_CERTIFICATE, basic_constraints, extended_key_usage, manufacturer_name, tpm_identity
from ._trust_store import TrustStore
from ._x509 import CertificateKey, RawCertificate, read_certificate

__all__ = [
    "ChainValidation",
    "EkCertificate",
    "ek_matches_public",
    "parse_ek_certificate",
    "validate_ek_chain",
]

_EK_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_EK_RSA_BITS = (2048, 3072, 4096)


@dataclass(frozen=True)
class EkCertificate:
    """A parsed EK certificate.

    ``manufacturer`` is "id:XXXXXXXX" (upper-case hex, the profile's form, even when the
    certificate wrote it otherwise), or "" for a certificate with no TCG identity (Google's newer
    GCE vTPM EK certificates name the VM in the subject instead: quirk ``no_tcg_san``), and
    ``manufacturer_name`` the vendor it is registered to. ``sha256`` is the hex SHA-256 of the
    certificate's DER (without NV padding). ``certificate`` is ``cryptography``'s view; when its
    loader refused the original, it is the re-encoded form (quirk ``reencoded``).
    """

    certificate: x509.Certificate
    public_key: CertificateKey
    manufacturer: str
    manufacturer_name: str | None
    model: str | None
    version: str | None
    quirks: tuple[str, ...]
    sha256: str
    raw: RawCertificate = field(repr=False, compare=False)

    @property
    def der(self) -> bytes:
        """The certificate's exact DER bytes, as signed (NV padding removed)."""
        return self.raw.der


def parse_ek_certificate(der: bytes) -> EkCertificate:
    """Parse an EK certificate (DER, NV-index padding allowed) against the TCG EK profile.

    Raises :class:`~nomyo_audit.errors.CertificateError`: ``cert_malformed`` for bytes that are
    not a certificate, ``cert_wrong_eku`` when its extendedKeyUsage lacks tcg-kp-EKCertificate
    (2.23.133.8.1), ``cert_not_ek_profile`` for a CA certificate, a key the profile does not
    allow, or a certificate that names no TPM (empty subject and no TCG attributes).
    """
    raw = read_certificate(der)
    quirks = list(raw.quirks)
    _check_key(raw.public_key)
    constraints = basic_constraints(raw)
    if constraints is not None and constraints[0]:
        raise CertificateError("an EK certificate must not be a CA certificate", code="cert_not_ek_profile")
    usages = extended_key_usage(raw)
    if usages is None:
        quirks.append("no_ek_eku")
    elif EKU_EK_CERTIFICATE not in usages:
        raise CertificateError(
            "the certificate's extendedKeyUsage does not include tcg-kp-EKCertificate (2.23.133.8.1)",
            code="cert_wrong_eku",
        )
    identity = tpm_identity(raw)
    if raw.subject_text:
        quirks.append("non_empty_subject")
    if identity is None:
        if not raw.subject_text:
            raise CertificateError(
                "the EK certificate names no TPM: empty subject and no TCG manufacturer attribute",
                code="cert_not_ek_profile",
            )
        quirks.append("no_tcg_san")
    quirks += identity.quirks if identity is not None else ()
    manufacturer = identity.manufacturer if identity is not None else ""
    return EkCertificate(
        certificate=raw.certificate,
        public_key=raw.public_key,
        manufacturer=manufacturer,
        manufacturer_name=manufacturer_name(manufacturer) if manufacturer else None,
        model=identity.model if identity is not None else None,
        version=identity.version if identity is not None else None,
        quirks=tuple(dict.fromkeys(quirks)),
        sha256=raw.sha256,
        raw=raw,
    )


class ChainValidation(NamedTuple):
    """A validated EK chain: subjects from the EK (its subject, "" when empty) to the anchor, the
    anchor's hex SHA-256, and the parsed EK certificate."""

    subjects: tuple[str, ...]
    root_sha256: str
    ek: EkCertificate


# NamedTuple's generated __new__ lives outside this module, so its postponed annotation "EkCertificate"
# resolves nowhere (typing.get_type_hints, the API reference): give it the class itself.
ChainValidation.__new__.__annotations__["ek"] = EkCertificate


def validate_ek_chain(
    ek_der: bytes, chain: Sequence[bytes], store: TrustStore, *, at: datetime
) -> ChainValidation:
    """Parse the EK certificate (:func:`parse_ek_certificate`) and validate its path through the
    intermediates in ``chain`` (any order) to an anchor of ``store`` at time ``at`` (timezone-aware).
    The checks and their error codes are those of ``nomyo_audit.tpm._chain`` (explicit RFC 5280
    path checks: TPM certificates do not meet the WebPKI rules of ``cryptography``'s verifier)."""
    ek = parse_ek_certificate(ek_der)
    path = build_path(ek.raw, read_chain(chain), tpm_anchors(store), at=at)  # a CPU root vouches for no TPM
    return ChainValidation(tuple(c.subject_text for c in path), path[-1].sha256, ek)


def ek_matches_public(ek: EkCertificate, ek_public: Public) -> bool:
    """Whether the certificate certifies exactly the key in this EK public area (TPM2B/TPMT_PUBLIC
    parsed with :func:`parse_public`): same SubjectPublicKeyInfo. An unusable public area is False."""
    try:
        key = to_crypto_key(ek_public)
    except TPMStructureError:
        return False
    return spki_der(key) == spki_der(ek.public_key)


def _check_key(key: CertificateKey) -> None:
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in _EK_RSA_BITS:
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _EK_CURVES):
        return
    raise CertificateError(
        "the EK certificate's key is not one the TCG EK profile allows "
        "(RSA 2048/3072/4096, ECC P-256/384/521)",
        code="cert_not_ek_profile",
    )
