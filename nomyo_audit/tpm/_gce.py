"""Google Compute Engine vTPM AK certificates: the ``gce-ak-cert`` anchor. Pure, no I/O.

Google certifies the attestation key of every Shielded VM's vTPM and writes the certificate to
NV index 0x01c10000 (RSA) or 0x01c10002 (ECC) (go-tpm-tools ``client/handles.go``). Two PKIs issue
them, and both are accepted:

* the older "UCA" one: issuer ``tpm_ek_v1_cloud_host-signer-...`` (a 79-character CN, longer than
  RFC 5280's upper bound, which ``cryptography`` only warns about), chaining to
  ``tpm_ek_v1_cloud_host_root-signer-...``; an empty subject, the TCG SAN ``id:474F4F47``/``vTPM``
  and the extendedKeyUsage 2.23.133.8.1, the *EK* certificate EKU, although the key is an AK;
* the CAS one: issuer ``EK/AK CA Intermediate``, chaining to ``EK/AK CA Root``; the subject
  ``CN=<instance id>, OU=<project id>, O=Google Compute Engine, L=<zone>``, no SAN, no EKU.

Both carry the GCE extension 1.3.6.1.4.1.11129.2.1.21, read here as go-tpm-tools'
``server/verify.go`` ``gceInstanceInfo`` declares it::

    SEQUENCE { zone UTF8String, projectNumber INTEGER, projectId UTF8String,
               instanceId INTEGER, instanceName UTF8String,
               securityProperties [0] EXPLICIT SEQUENCE {...} OPTIONAL }

:func:`appraise_gce` passes only when the certificate certifies exactly the quoting AIK, its path
validates (:func:`nomyo_audit.tpm._chain.build_path`, at ``at``) to a Google EK/AK CA of the trust
store, and it names a GCE instance; the instance identity is then a fact. When a CAS certificate
states the identity twice (subject and extension), both must agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from ..errors import CertificateError
from ._anchor import MAX_CHAIN, AnchorResult, validity_window
from ._chain import build_path
from ._der import INTEGER, SEQUENCE, TLV, decode_oid, malformed, read_one
from ._keys import spki_der, to_crypto_key
from ._marshal import TPMStructureError
from ._public import Public
from ._tcg import EKU_AIK_CERTIFICATE, EKU_EK_CERTIFICATE, basic_constraints, extended_key_usage, key_usage
from ._verdict import Finding
from ._x509 import RawCertificate, decode_string, read_certificate

__all__ = ["GCE_INSTANCE_EXTENSION", "GceIdentity", "appraise_gce", "gce_identity"]

#: cloudComputeInstanceIdentifier (go-tpm-tools ``server/verify.go``)
GCE_INSTANCE_EXTENSION = "1.3.6.1.4.1.11129.2.1.21"
_UTF8 = 0x0C
_MAX_TEXT = 256
_MAX_ID = (1 << 63) - 1  # go-tpm-tools reads them as int64 and refuses negatives
_CN, _OU, _O, _L = "2.5.4.3", "2.5.4.11", "2.5.4.10", "2.5.4.7"
_GCE_SUBJECT_O = "google compute engine"
_GOOGLE_O = "google llc"
#: the Google CAs a GCE AK certificate may be anchored at (casefolded CN prefixes), and the PKI each names
_GOOGLE_CAS = (("tpm_ek_v1_cloud_host", "uca"), ("ek/ak ca ", "cas"))


class GceIdentity(NamedTuple):
    """The GCE instance a certificate names."""

    instance_id: str
    instance_name: str | None
    project_id: str
    project_number: int | None
    zone: str


def appraise_gce(
    aik: Public, ak_cert: bytes, intermediates: Sequence[bytes], store: Any, *, at: datetime
) -> AnchorResult:
    """Whether the GCE AK certificate ``ak_cert`` (DER; ``intermediates`` DER) anchors ``aik`` to a
    Google EK/AK CA of ``store`` (a TrustStore) at ``at``. Raises nothing for any input.

    Failing codes: ``gce_ak_mismatch`` (a certificate for another key), ``gce_not_gce`` (no GCE
    instance named), ``gce_identity_malformed``, ``gce_identity_mismatch`` (subject and extension
    disagree), ``gce_not_google`` (a path to a root that is not a Google EK/AK CA), ``cert_wrong_eku``,
    ``cert_key_usage``, ``cert_not_ek_profile`` (a CA certificate as the AK's), and the path codes
    of the certificate layer (``cert_expired``, ``cert_unchained``, ``cert_unknown_root``,
    ``cert_bad_signature`` ...).
    """
    try:
        if len(intermediates) >= MAX_CHAIN:
            raise CertificateError(
                f"a GCE AK chain holds at most {MAX_CHAIN} certificates", code="cert_malformed"
            )
        leaf = read_certificate(ak_cert)
        pool = [read_certificate(der) for der in intermediates]
        _check_profile(leaf)
        if leaf.spki != _aik_spki(aik):
            return _fail("gce_ak_mismatch", "the GCE AK certificate certifies another key than the AIK")
        identity = gce_identity(leaf)
        path = build_path(leaf, pool, store, at=at)
        anchor = path[-1]
        pki = _google_pki(anchor)
    except CertificateError as exc:
        return _fail(exc.code, exc.message)
    if pki is None:
        return _fail(
            "gce_not_google",
            f"the GCE AK certificate chains to {anchor.subject_text!r}, not to a Google EK/AK CA",
        )
    subjects = [c.subject_text for c in path]
    valid_from, valid_until = validity_window((leaf.der, *intermediates), store, subjects)
    facts = {
        "anchor_kind": "gce-ak-cert",
        "chain_subjects": subjects,
        "anchor_root_sha256": anchor.sha256,
        "manufacturer": "Google",
        "tpm_model": None,
        "tpm_firmware_version": None,
        "platform": {"cloud": "gce", "pki": pki, **identity._asdict()},
    }
    detail = (
        f"Google AK certificate ({pki.upper()}) for instance {identity.instance_id} in project "
        f"{identity.project_id}, zone {identity.zone}, to root {anchor.sha256[:16]}..."
    )
    finding = Finding("aik_anchor", "pass", "aik_anchored_gce_ak_cert", detail)
    return AnchorResult(finding, facts, valid_from, valid_until)


def gce_identity(certificate: RawCertificate) -> GceIdentity:
    """The instance a GCE AK certificate names: from its GCE extension, or a CAS certificate's
    subject; both, when both are there, must agree. Raises :class:`CertificateError`
    (``gce_not_gce``, ``gce_identity_malformed``, ``gce_identity_mismatch``)."""
    extension = certificate.extension(GCE_INSTANCE_EXTENSION)
    stated = _from_extension(extension.value) if extension is not None else None
    subject = _from_subject(certificate.subject)
    if stated is None and subject is None:
        raise CertificateError(
            "the AK certificate names no GCE instance (no extension 1.3.6.1.4.1.11129.2.1.21, no "
            "Google Compute Engine subject)",
            code="gce_not_gce",
        )
    if (
        stated is not None
        and subject is not None
        and (stated.instance_id, stated.project_id, stated.zone)
        != (subject.instance_id, subject.project_id, subject.zone)
    ):
        raise CertificateError(
            "the AK certificate's subject and its GCE extension name different instances",
            code="gce_identity_mismatch",
        )
    identity = stated if stated is not None else subject
    assert identity is not None
    return identity


def _from_extension(value: bytes) -> GceIdentity:
    try:
        outer, end = read_one(value)
        if outer.tag != SEQUENCE or end != len(value):
            raise _identity_malformed("not one SEQUENCE")
        fields = outer.children()
        if len(fields) not in (5, 6) or (len(fields) == 6 and fields[5].tag != 0xA0):
            raise _identity_malformed("not zone, project number, project id, instance id, instance name")
        zone, number, project, instance, name = fields[:5]
        return GceIdentity(
            instance_id=str(_integer(instance)),
            instance_name=_utf8(name),
            project_id=_required(_utf8(project), "project id"),
            project_number=_integer(number),
            zone=_required(_utf8(zone), "zone"),
        )
    except CertificateError as exc:
        if exc.code == "gce_identity_malformed":
            raise
        raise _identity_malformed(exc.message) from None


def _from_subject(subject: bytes) -> GceIdentity | None:
    """A CAS certificate's ``CN=<instance id>, OU=<project>, O=Google Compute Engine, L=<zone>``."""
    attributes = _name_attributes(subject)
    if [o.casefold() for o in attributes.get(_O, [])] != [_GCE_SUBJECT_O]:
        return None
    values = [attributes.get(oid, []) for oid in (_CN, _OU, _L)]
    if any(len(v) != 1 or not v[0] or len(v[0]) > _MAX_TEXT for v in values):
        raise _identity_malformed("a Google Compute Engine subject needs one CN, OU and L")
    if not all(v[0].isprintable() for v in values):  # the extension's names are held to the same
        raise _identity_malformed("the subject's CN, OU or L is not printable text")
    instance, project, zone = (v[0] for v in values)
    if not instance.isascii() or not instance.isdigit():
        raise _identity_malformed("the subject's CN is not a numeric instance id")
    return GceIdentity(str(int(instance)), None, project, None, zone)


def _integer(element: TLV) -> int:
    value = element.value
    if element.tag != INTEGER or not value or value[0] & 0x80:
        raise _identity_malformed("an id is not a non-negative INTEGER")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise _identity_malformed("an id is not minimal DER")
    number = int.from_bytes(value, "big")
    if number > _MAX_ID:
        raise _identity_malformed("an id is larger than 2^63 - 1")
    return number


def _utf8(element: TLV) -> str:
    if element.tag != _UTF8 or len(element.value) > _MAX_TEXT * 4:
        raise _identity_malformed("a name is not a UTF8String of at most 256 characters")
    try:
        text = element.value.decode("utf-8")
    except UnicodeDecodeError:
        raise _identity_malformed("a name is not valid UTF-8") from None
    if len(text) > _MAX_TEXT or not text.isprintable():
        raise _identity_malformed("a name is longer than 256 characters or not printable")
    return text


def _required(text: str, what: str) -> str:
    if not text:
        raise _identity_malformed(f"the {what} is empty")
    return text


def _check_profile(leaf: RawCertificate) -> None:
    """What a GCE AK certificate must be: not a CA, a signing key (keyUsage digitalSignature when
    stated, which also tells it from the VM's EK certificate, keyEncipherment), and an EKU, when
    stated, of an AK or of Google's UCA AK certificates (2.23.133.8.1, see the module docstring)."""
    constraints = basic_constraints(leaf)
    if constraints is not None and constraints[0]:
        raise CertificateError("a GCE AK certificate must not be a CA", code="cert_not_ek_profile")
    usages = key_usage(leaf)
    if usages is not None and "digitalSignature" not in usages:
        raise CertificateError(
            "the GCE AK certificate's keyUsage does not allow signatures", code="cert_key_usage"
        )
    ekus = extended_key_usage(leaf)
    if ekus is not None and not {EKU_AIK_CERTIFICATE, EKU_EK_CERTIFICATE}.intersection(ekus):
        raise CertificateError(
            "the GCE AK certificate's extendedKeyUsage names neither 2.23.133.8.3 nor 2.23.133.8.1",
            code="cert_wrong_eku",
        )


def _google_pki(anchor: RawCertificate) -> str | None:
    """``"uca"`` or ``"cas"`` for a Google EK/AK CA (O=Google LLC and one of their CNs), else None."""
    attributes = _name_attributes(anchor.subject)
    if [o.casefold() for o in attributes.get(_O, [])] != [_GOOGLE_O] or len(attributes.get(_CN, [])) != 1:
        return None
    common_name = attributes[_CN][0].casefold()
    return next((pki for prefix, pki in _GOOGLE_CAS if common_name.startswith(prefix)), None)


def _name_attributes(name: bytes) -> dict[str, list[str]]:
    """A DER Name's attribute values by OID, in order."""
    attributes: dict[str, list[str]] = {}
    for rdn in read_one(name)[0].children():
        for attribute in rdn.children():
            parts = attribute.children()
            if len(parts) != 2:
                raise malformed("bad attribute in a Name")
            attributes.setdefault(decode_oid(parts[0]), []).append(decode_string(parts[1]))
    return attributes


def _aik_spki(aik: Public) -> bytes:
    try:
        return spki_der(to_crypto_key(aik))
    except TPMStructureError:
        raise CertificateError("the quoting AIK is not a usable public key", code="gce_ak_mismatch") from None


def _identity_malformed(what: str) -> CertificateError:
    return CertificateError(f"the GCE instance identity is malformed: {what}", code="gce_identity_malformed")


def _fail(code: str, detail: str) -> AnchorResult:
    return AnchorResult(Finding("aik_anchor", "fail", code, detail), {})
