"""The AMD VCEK certificate: which product it is for, the chip and TCB it certifies, and its chain
to that product's ARK. Pure, no I/O.

AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface Specification" (57230)
defines the extensions read here (the same OIDs as go-sev-guest ``kds``, virtee/sev and trustee
``deps/verifier/src/snp``):

* ``1.3.6.1.4.1.3704.1.2`` productName (IA5String, ``Milan-B0``, ``Genoa``, ``Turin``...);
* ``1.3.6.1.4.1.3704.1.3.1`` blSPL, ``.3.2`` teeSPL, ``.3.3`` snpSPL, ``.3.8`` ucodeSPL and, for
  Turin only, ``.3.9`` fmcSPL (DER INTEGERs): the TCB the VCEK was derived for;
* ``1.3.6.1.4.1.3704.1.4`` hwID: the chip's ID as raw bytes (64 bytes; 8 for Turin, whose
  CHIP_ID in the report is those 8 bytes followed by zeros).

The chain is VCEK (issuer ``SEV-<product>``) -> ASK ``SEV-<product>`` -> ARK ``ARK-<product>``,
RSA-PSS with SHA-384. Only the ARK of the VCEK's own product is an anchor here, whatever else the
trust store holds: a Google or TPM-vendor root must never anchor a CPU key, and a Milan VCEK must not
chain to Genoa's ARK. The ASK is taken from the presented chain or the store, and its signature by
the ARK is checked (the store's ASK is not trusted as an anchor).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import CertificateError, EvidenceError
from ._chain import build_path, read_chain
from ._cpu_roots import by_common_name, common_name
from ._der import INTEGER, read_one
from ._sev_snp_report import TcbVersion
from ._trust_store import TrustStore
from ._x509 import RawCertificate

__all__ = ["PRODUCTS", "Product", "Vcek", "read_vcek", "validate_vcek_chain"]

Product = Literal["Milan", "Genoa", "Turin"]
PRODUCTS: tuple[Product, ...] = ("Milan", "Genoa", "Turin")

_PRODUCT_NAME = "1.3.6.1.4.1.3704.1.2"
_SPL = {"bootloader": "1.3.6.1.4.1.3704.1.3.1", "tee": "1.3.6.1.4.1.3704.1.3.2",
        "snp": "1.3.6.1.4.1.3704.1.3.3", "microcode": "1.3.6.1.4.1.3704.1.3.8"}  # fmt: skip
_FMC = "1.3.6.1.4.1.3704.1.3.9"
_HW_ID = "1.3.6.1.4.1.3704.1.4"
_TURIN_HW_ID_BYTES = 8
_CHIP_ID_BYTES = 64


class Vcek(NamedTuple):
    """A VCEK certificate, read: its product, the chip and TCB it certifies, and its P-384 key."""

    certificate: RawCertificate
    product: Product
    product_name: str
    hw_id: bytes
    tcb: TcbVersion
    public_key: ec.EllipticCurvePublicKey


def read_vcek(der: bytes) -> Vcek:
    """Read a VCEK. Raises :class:`CertificateError` (``cert_malformed`` ...) for unreadable DER,
    :class:`EvidenceError` ``snp_wrong_product`` when its issuer is not ``SEV-Milan``/``-Genoa``/``-Turin``
    or its productName is another product's, ``snp_vcek_invalid`` for anything else that is not a
    VCEK (another subject, a missing or garbled extension, a key other than P-384)."""
    (certificate,) = read_chain([der])
    issuer = common_name(certificate.issuer)
    product = next((p for p in PRODUCTS if issuer == f"sev-{p}".casefold()), None)
    if product is None:
        raise EvidenceError(
            f"the VCEK's issuer {certificate.issuer_text!r} is not SEV-Milan, SEV-Genoa or SEV-Turin "
            "(VLEK-signed reports are not supported)",
            code="snp_wrong_product",
        )
    if common_name(certificate.subject) != "sev-vcek":
        raise _invalid(f"the certificate's subject {certificate.subject_text!r} is not SEV-VCEK")
    name = _ia5(certificate, _PRODUCT_NAME)
    if name.split("-")[0].casefold() != product.casefold():
        raise EvidenceError(
            f"the VCEK's productName {name!r} is not its issuer's product {product}", code="snp_wrong_product"
        )
    key = certificate.public_key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise _invalid("the VCEK's key is not an ECDSA P-384 key")
    levels = {field: _integer(certificate, oid) for field, oid in _SPL.items()}
    fmc = _integer(certificate, _FMC) if product == "Turin" else 0
    hw_id = _hw_id(certificate, product)
    return Vcek(certificate, product, name, hw_id, TcbVersion(**levels, fmc=fmc), key)


def validate_vcek_chain(
    vcek: Vcek, chain: Sequence[bytes], store: TrustStore, *, at: datetime
) -> list[RawCertificate]:
    """The validated path VCEK -> ASK -> ARK of the VCEK's product (the store's ARK), or
    :class:`EvidenceError` ``snp_wrong_product`` when the presented chain holds another product's
    ASK or ARK, and :class:`CertificateError` codes for the path (``cert_unknown_root`` when the
    store holds no ARK of the product, ``cert_bad_signature``, ``cert_expired`` ...)."""
    presented = read_chain(chain)
    own = {f"sev-{vcek.product}".casefold(), f"ark-{vcek.product}".casefold()}
    for certificate in presented:
        if common_name(certificate.subject) not in own:
            raise EvidenceError(
                f"the VCEK of an AMD {vcek.product} chip comes with {certificate.subject_text!r}: "
                f"the chain must be SEV-{vcek.product} then ARK-{vcek.product}",
                code="snp_wrong_product",
            )
    named = by_common_name(store)
    arks = [c for c in named.get(f"ark-{vcek.product}".casefold(), ()) if c.self_issued]
    if not arks:
        raise CertificateError(
            f"the trust store holds no ARK-{vcek.product} (AMD's root for {vcek.product} chips)",
            code="cert_unknown_root",
        )
    asks = named.get(f"sev-{vcek.product}".casefold(), ())
    return build_path(vcek.certificate, [*presented, *asks], TrustStore(arks), at=at)


def _extension(certificate: RawCertificate, oid: str) -> bytes:
    extension = certificate.extension(oid)
    if extension is None:
        raise _invalid(f"the VCEK has no extension {oid}")
    return extension.value


def _integer(certificate: RawCertificate, oid: str) -> int:
    value = _extension(certificate, oid)
    try:
        element, end = read_one(value)
    except CertificateError:
        raise _invalid(f"the VCEK's extension {oid} is not a DER INTEGER") from None
    if element.tag != INTEGER or end != len(value) or not 1 <= len(element.value) <= 2:
        raise _invalid(f"the VCEK's extension {oid} is not a small DER INTEGER")
    number = int.from_bytes(element.value, "big", signed=True)
    if not 0 <= number <= 255:
        raise _invalid(f"the VCEK's extension {oid} is not a patch level 0-255")
    return number


def _ia5(certificate: RawCertificate, oid: str) -> str:
    value = _extension(certificate, oid)
    try:
        element, end = read_one(value)
    except CertificateError:
        raise _invalid("the VCEK's productName is not an IA5String") from None
    if element.tag != 0x16 or end != len(value) or not element.value.isascii():
        raise _invalid("the VCEK's productName is not an IA5String")
    return element.value.decode("ascii")


def _hw_id(certificate: RawCertificate, product: Product) -> bytes:
    value = _extension(certificate, _HW_ID)
    size = _TURIN_HW_ID_BYTES if product == "Turin" else _CHIP_ID_BYTES
    if len(value) == size + 2 and value[:2] == bytes([0x04, size]):  # wrapped in an OCTET STRING
        value = value[2:]
    if len(value) != size:
        raise _invalid(f"the VCEK's hwID is {len(value)} bytes, not {size}")
    return value


def _invalid(message: str) -> EvidenceError:
    return EvidenceError(message, code="snp_vcek_invalid")
