"""Build TD quotes v4 for tests: the real ones re-assembled, or forged under a test PCK hierarchy.

The layout written here is the one Intel's DCAP library and go-tdx-guest read (48-byte header,
584-byte TD body, u32 signature data size, r || s, x || y, certification data type 6 holding the
QE report, its PCK signature, the QE authentication data and certification data type 5 with the
PEM chain). A forged quote is signed end to end by keys made here, under a root named like
Intel's: trusting that root (a test TrustStore) is the only way one passes.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from nomyo_audit.tpm._tdx_quote import TdQuote

SGX_EXTENSIONS = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
PLATFORM_CA, PCK = "Intel SGX PCK Platform CA", "Intel SGX PCK Certificate"
FMSPC_OID_DER = bytes.fromhex("060a2a864886f84d010d0104")  # 1.2.840.113741.1.13.1.4


@dataclass(frozen=True)
class QuoteParts:
    """Everything a TD quote v4 is made of, as bytes."""

    header: bytes
    body: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    chain_pem: bytes
    padding: bytes = b""

    @classmethod
    def of(cls, quote: TdQuote, padding: int = 0) -> QuoteParts:
        pem = b"".join(_pem(der) for der in quote.pck_chain) + b"\0"
        return cls(
            quote.header,
            quote.signed[48:],
            quote.signature,
            quote.attestation_key,
            quote.qe_report.raw,
            quote.qe_report_signature,
            quote.qe_auth_data,
            pem,
            bytes(padding),
        )

    def assemble(self) -> bytes:
        chain = struct.pack("<HI", 5, len(self.chain_pem)) + self.chain_pem
        qe = self.qe_report + self.qe_report_signature + struct.pack("<H", len(self.qe_auth_data))
        qe += self.qe_auth_data + chain
        signature_data = self.signature + self.attestation_key + struct.pack("<HI", 6, len(qe)) + qe
        return (
            self.header + self.body + struct.pack("<I", len(signature_data)) + signature_data + self.padding
        )


def raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    )


def _certificate(
    subject: str,
    issuer: str,
    public: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    path_length: int | None = None,
    fmspc: bytes | None = None,
) -> x509.Certificate:
    now = datetime(2024, 1, 1, tzinfo=timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
    )  # fmt: skip
    if fmspc is not None:
        member = b"\x30" + bytes([len(FMSPC_OID_DER) + 8]) + FMSPC_OID_DER + b"\x04\x06" + fmspc
        value = b"\x30" + bytes([len(member)]) + member
        builder = builder.add_extension(x509.UnrecognizedExtension(SGX_EXTENSIONS, value), critical=False)
    return builder.sign(signer, hashes.SHA256())


@dataclass
class ForgedPck:
    """A PCK hierarchy made here: root (``root_cn``), platform CA, PCK certificate with an FMSPC."""

    root_cn: str = "Intel SGX Root CA"
    #: None: a PCK certificate without the SGX extension
    fmspc: bytes | None = bytes.fromhex("00806f050000")

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.pck_key = ec.generate_private_key(ec.SECP256R1())
        root, ca, pck = self.root_key, self.ca_key, self.pck_key
        self.root = _certificate(self.root_cn, self.root_cn, root.public_key(), root, ca=True, path_length=1)
        self.ca = _certificate(PLATFORM_CA, self.root_cn, ca.public_key(), root, ca=True, path_length=0)
        self.pck = _certificate(PCK, PLATFORM_CA, pck.public_key(), ca, ca=False, fmspc=self.fmspc)

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def chain_pem(self) -> bytes:
        return (
            b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.pck, self.ca, self.root))
            + b"\0"
        )

    def forge(self, parts: QuoteParts, **changes: bytes) -> bytes:
        """``parts`` with ``changes`` applied, then signed end to end: a new attestation key bound by
        the QE report (re-signed by this PCK), which signs header || body."""
        parts = replace(parts, **changes)
        attestation = ec.generate_private_key(ec.SECP256R1())
        numbers = attestation.public_key().public_numbers()
        key = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
        report = bytearray(parts.qe_report)
        report[320:384] = hashlib.sha256(key + parts.qe_auth_data).digest() + bytes(32)
        return replace(
            parts,
            signature=raw_signature(attestation, parts.header + parts.body),
            attestation_key=key,
            qe_report=bytes(report),
            qe_report_signature=raw_signature(self.pck_key, bytes(report)),
            chain_pem=self.chain_pem(),
        ).assemble()
