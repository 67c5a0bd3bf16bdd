"""X.509 certificates read the way TPM certificates need: leniently where they are known to be
wrong, strictly where it matters for trust.

:func:`read_certificate` walks the DER itself (:mod:`._der`) so it always has the exact
TBSCertificate bytes that were signed, the raw extensions and the SubjectPublicKeyInfo, and it
names every deviation from RFC 5280 DER it tolerates in ``quirks``:

* ``trailing_bytes``: bytes after the certificate (EK certificates read from a TPM NV index are
  padded with 0xFF, e.g. the STMicro ST33 RSA EK certificate).
* ``unsorted_name_set``: a multi-valued RDN whose SET members are not in DER order (Nuvoton's
  roots and the EK certificates they issued); ``cryptography`` refuses these.
* ``non_minimal_serial``, ``non_positive_serial``, ``oversized_serial``: serial numbers that are
  not minimal DER, are zero or negative, or are longer than 20 octets.
* ``ecdsa_null_parameters``: an ECDSA signature AlgorithmIdentifier with NULL parameters, which
  RFC 5758 forbids (an Intel PTT CA certificate); ``cryptography`` 50 refuses it.

``cryptography`` still gives the :class:`x509.Certificate` callers see: when its loader refuses
the bytes, the certificate is re-encoded with only those repairs (the padding cut, the SETs
sorted, the serial made minimal) and loaded again, and the quirk ``reencoded`` says so. Signatures
are never checked on the re-encoded form: :func:`verify_issued_by` checks the issuer's signature
over the original TBS bytes, as they were signed. Pure, no I/O.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..errors import CertificateError
from ._der import (
    BIT_STRING,
    INTEGER,
    SEQUENCE,
    SET,
    TLV,
    decode_oid,
    decode_time,
    encode_tlv,
    malformed,
    read_all,
    read_one,
)

__all__ = [
    "MAX_CERTIFICATE_BYTES",
    "CertificateKey",
    "Extension",
    "RawCertificate",
    "decode_name",
    "name_text",
    "read_certificate",
    "verify_issued_by",
]

#: The largest certificate accepted (real EK and AK certificates are 1-2 KiB; NV indices hold 2-4).
MAX_CERTIFICATE_BYTES = 16 * 1024

CertificateKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

_NAME_LABELS = {
    "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU",
    "2.5.4.5": "serialNumber", "0.9.2342.19200300.100.1.25": "DC", "1.2.840.113549.1.9.1": "emailAddress",
    "2.23.133.2.1": "tpmManufacturer", "2.23.133.2.2": "tpmModel", "2.23.133.2.3": "tpmVersion",
}  # fmt: skip
_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x1A: "ascii", 0x14: "latin-1",
                  0x1E: "utf-16-be", 0x1C: "utf-32-be"}  # fmt: skip
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "1.3.14.3.2.26": hashes.SHA1, "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384, "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}  # fmt: skip
_SIGNATURES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "1.2.840.113549.1.1.5": ("rsa", hashes.SHA1), "1.2.840.113549.1.1.11": ("rsa", hashes.SHA256),
    "1.2.840.113549.1.1.12": ("rsa", hashes.SHA384), "1.2.840.113549.1.1.13": ("rsa", hashes.SHA512),
    "1.2.840.10045.4.1": ("ecdsa", hashes.SHA1), "1.2.840.10045.4.3.2": ("ecdsa", hashes.SHA256),
    "1.2.840.10045.4.3.3": ("ecdsa", hashes.SHA384), "1.2.840.10045.4.3.4": ("ecdsa", hashes.SHA512),
}  # fmt: skip
_RSA_PSS = "1.2.840.113549.1.1.10"


@dataclass(frozen=True)
class Extension:
    """One extension exactly as encoded: ``value`` is the content of its extnValue OCTET STRING."""

    oid: str
    critical: bool
    value: bytes


@dataclass(frozen=True)
class RawCertificate:
    """A certificate as signed, and the ``cryptography`` view of it.

    ``der`` is the certificate without trailing bytes and ``sha256`` its hex digest; ``tbs`` the
    signed bytes; ``issuer``/``subject`` the raw DER Names.
    """

    der: bytes
    tbs: bytes
    signature_algorithm: bytes
    signature: bytes
    serial: int
    issuer: bytes
    subject: bytes
    not_before: datetime
    not_after: datetime
    spki: bytes
    public_key: CertificateKey
    extensions: tuple[Extension, ...]
    certificate: x509.Certificate
    quirks: tuple[str, ...] = ()
    sha256: str = field(default="")

    def extension(self, oid: str) -> Extension | None:
        """The extension with this OID, if the certificate has it."""
        return next((e for e in self.extensions if e.oid == oid), None)

    @property
    def subject_text(self) -> str:
        """The subject as RFC 4514-style text ("" for the empty subject of EK/AK certificates)."""
        return name_text(self.subject)

    @property
    def issuer_text(self) -> str:
        """The issuer as RFC 4514-style text."""
        return name_text(self.issuer)

    @property
    def self_issued(self) -> bool:
        """Issuer and subject are the same name (a root, or a self-signed leaf)."""
        return decode_name(self.issuer) == decode_name(self.subject)


def read_certificate(data: bytes) -> RawCertificate:
    """Parse one DER certificate, tolerating only the quirks the module docstring lists."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        raise malformed("no certificate bytes")
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise malformed(f"larger than {MAX_CERTIFICATE_BYTES} bytes")
    data = bytes(data)
    outer, end = read_one(data)
    quirks = ["trailing_bytes"] if end < len(data) else []
    if outer.tag != SEQUENCE:
        raise malformed("not a SEQUENCE")
    parts = outer.children()
    if len(parts) != 3 or parts[0].tag != SEQUENCE or parts[1].tag != SEQUENCE or parts[2].tag != BIT_STRING:
        raise malformed("not a Certificate (tbsCertificate, signatureAlgorithm, signatureValue)")
    tbs, algorithm, signature = parts
    if not signature.value or signature.value[0] != 0:
        raise malformed("signature BIT STRING with unused bits")
    fields = tbs.children()
    head = fields[:1] if fields and fields[0].tag == 0xA0 else []
    fields = fields[len(head) :]
    if len(fields) < 6:
        raise malformed("tbsCertificate too short")
    serial, inner_algorithm, issuer, validity, subject, spki = fields[:6]
    if serial.tag != INTEGER or not serial.value or inner_algorithm.raw != algorithm.raw:
        raise malformed("bad serial or signature algorithm")
    quirks += _serial_quirks(serial.value)
    if _ecdsa_with_null(algorithm):
        quirks.append("ecdsa_null_parameters")
    for name in (issuer, subject):
        if name.tag != SEQUENCE:
            raise malformed("bad Name")
        if any(_unsorted(rdn) for rdn in name.children()):
            quirks.append("unsorted_name_set")
    times = validity.children() if validity.tag == SEQUENCE else []
    if len(times) != 2:
        raise malformed("bad validity")
    extensions = _extensions(fields[6:])
    try:
        public_key = serialization.load_der_public_key(spki.raw)
    except (ValueError, UnsupportedAlgorithm):
        raise malformed("unreadable subjectPublicKeyInfo") from None
    if not isinstance(public_key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise malformed("the key is neither RSA nor ECC")
    certificate, reencoded = _load(outer.raw, head, fields, algorithm, signature)
    return RawCertificate(
        der=outer.raw,
        tbs=tbs.raw,
        signature_algorithm=algorithm.raw,
        signature=signature.value[1:],
        serial=int.from_bytes(serial.value, "big", signed=True),
        issuer=issuer.raw,
        subject=subject.raw,
        not_before=decode_time(times[0]),
        not_after=decode_time(times[1]),
        spki=spki.raw,
        public_key=public_key,
        extensions=extensions,
        certificate=certificate,
        quirks=tuple(dict.fromkeys(quirks + (["reencoded"] if reencoded else []))),
        sha256=hashlib.sha256(outer.raw).hexdigest(),
    )


def verify_issued_by(child: RawCertificate, issuer_key: CertificateKey) -> None:
    """Check the issuer's signature over the child's original TBS bytes (PKCS#1 v1.5, PSS, ECDSA).

    Raises ``cert_bad_signature`` when it does not verify, or uses an algorithm not listed here.
    """
    try:
        _verify(child, issuer_key)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(
            f"the signature on certificate {child.sha256[:16]} does not verify with its issuer's key",
            code="cert_bad_signature",
        ) from None


def _verify(child: RawCertificate, key: CertificateKey) -> None:
    parts = read_all(read_one(child.signature_algorithm)[0].value)
    oid = decode_oid(parts[0])
    if oid == _RSA_PSS and isinstance(key, rsa.RSAPublicKey):
        hash_type, salt = _pss_parameters(parts[1] if len(parts) > 1 else None)
        pss = padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=salt)
        key.verify(child.signature, child.tbs, pss, hash_type())
        return
    kind, hash_type = _SIGNATURES.get(oid, ("unknown", hashes.SHA256))
    if kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
        key.verify(child.signature, child.tbs, padding.PKCS1v15(), hash_type())
    elif kind == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(child.signature, child.tbs, ec.ECDSA(hash_type()))
    else:
        raise InvalidSignature


def _pss_parameters(parameters: TLV | None) -> tuple[type[hashes.HashAlgorithm], int]:
    hash_type: type[hashes.HashAlgorithm] = hashes.SHA1
    salt = 20
    for item in parameters.children() if parameters is not None else []:
        if item.tag == 0xA0:
            hash_type = _HASHES.get(decode_oid(read_all(item.children()[0].value)[0]), hashes.SHA1)
        elif item.tag == 0xA2:
            salt = int.from_bytes(item.children()[0].value, "big")
    return hash_type, salt


def decode_name(raw: bytes) -> tuple[tuple[tuple[str, str], ...], ...]:
    """A DER Name as RDNs of (OID, value) pairs, values decoded from their string type, each
    RDN's pairs sorted: two names that differ only in string types or SET order compare equal
    (RFC 5280 7.1 asks for that comparison; the STM ECC intermediates need it)."""
    rdns = []
    for rdn in read_one(raw)[0].children():
        if rdn.tag != SET:
            raise malformed("bad RDN")
        pairs = []
        for attribute in rdn.children():
            parts = attribute.children()
            if attribute.tag != SEQUENCE or len(parts) != 2:
                raise malformed("bad attribute in a Name")
            pairs.append((decode_oid(parts[0]), " ".join(decode_string(parts[1]).split()).casefold()))
        rdns.append(tuple(sorted(pairs)))
    return tuple(rdns)


def decode_string(element: TLV) -> str:
    """The text of a directory string of any of the types real certificates use."""
    codec = _STRING_CODECS.get(element.tag)
    if codec is None:
        raise malformed(f"string type 0x{element.tag:02x} in a Name")
    try:
        return element.value.decode(codec)
    except UnicodeDecodeError:
        raise malformed("badly encoded string in a Name") from None


def name_text(raw: bytes) -> str:
    """RFC 4514-style text of a DER Name, most specific RDN first, as ``cryptography`` prints."""
    rdns = []
    for rdn in read_one(raw)[0].children():
        pairs = []
        for attribute in rdn.children():
            oid_element, value = attribute.children()
            oid = decode_oid(oid_element)
            pairs.append(f"{_NAME_LABELS.get(oid, oid)}={decode_string(value)}")
        rdns.append("+".join(pairs))
    return ",".join(reversed(rdns))


def _serial_quirks(value: bytes) -> list[str]:
    quirks = []
    if len(value) > 1 and ((value[0] == 0 and value[1] < 0x80) or (value[0] == 0xFF and value[1] >= 0x80)):
        quirks.append("non_minimal_serial")
    if int.from_bytes(value, "big", signed=True) <= 0:
        quirks.append("non_positive_serial")
    if len(value.lstrip(b"\x00")) > 20:
        quirks.append("oversized_serial")
    return quirks


def _unsorted(rdn: TLV) -> bool:
    members = [member.raw for member in rdn.children()]
    return members != sorted(members)


def _extensions(rest: list[TLV]) -> tuple[Extension, ...]:
    wrapper = next((element for element in rest if element.tag == 0xA3), None)
    if wrapper is None:
        return ()
    extensions = []
    container = wrapper.children()
    if len(container) != 1 or container[0].tag != SEQUENCE:
        raise malformed("bad extensions")
    for item in container[0].children():
        parts = item.children()
        critical = len(parts) == 3 and parts[1].tag == 0x01 and parts[1].value != b"\x00"
        if item.tag != SEQUENCE or len(parts) not in (2, 3) or parts[-1].tag != 0x04:
            raise malformed("bad extension")
        extensions.append(Extension(decode_oid(parts[0]), critical, parts[-1].value))
    if len({e.oid for e in extensions}) != len(extensions):
        raise malformed("an extension appears twice")
    return tuple(extensions)


def _load(
    der: bytes, head: list[TLV], fields: list[TLV], algorithm: TLV, signature: TLV
) -> tuple[x509.Certificate, bool]:
    """``cryptography``'s view of the certificate; re-encoded once with the repairs if refused.

    ``head`` is the optional [0] version, ``fields`` the rest of the TBSCertificate from the serial on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # negative serials, long CNs: named as quirks instead
        try:
            return x509.load_der_x509_certificate(der), False
        except (ValueError, x509.InvalidVersion):
            pass
        number = int.from_bytes(fields[0].value, "big", signed=True)
        serial = encode_tlv(INTEGER, number.to_bytes(number.bit_length() // 8 + 1, "big", signed=True))
        issuer, subject = (_sorted_name(fields[index]) for index in (2, 4))
        algorithm_der = (
            encode_tlv(SEQUENCE, algorithm.children()[0].raw)
            if _ecdsa_with_null(algorithm)
            else algorithm.raw
        )
        repaired = [*(e.raw for e in head), serial, algorithm_der, issuer, fields[3].raw, subject]
        repaired += [e.raw for e in fields[5:]]
        body = encode_tlv(SEQUENCE, b"".join(repaired)) + algorithm_der + signature.raw
        try:
            return x509.load_der_x509_certificate(encode_tlv(SEQUENCE, body)), True
        except (ValueError, x509.InvalidVersion) as exc:
            raise malformed(f"unreadable even after the known repairs ({exc})") from None


def _ecdsa_with_null(algorithm: TLV) -> bool:
    parts = algorithm.children()
    return (
        len(parts) == 2
        and parts[1].raw == b"\x05\x00"
        and decode_oid(parts[0]).startswith("1.2.840.10045.4.")
    )


def _sorted_name(name: TLV) -> bytes:
    return encode_tlv(SEQUENCE, b"".join(_sorted_rdn(rdn) for rdn in name.children()))


def _sorted_rdn(rdn: TLV) -> bytes:
    if rdn.tag != SET:
        return rdn.raw
    return encode_tlv(SET, b"".join(sorted(member.raw for member in rdn.children())))
