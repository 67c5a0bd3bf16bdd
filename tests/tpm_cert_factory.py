"""Certificates made with cryptography's builder for the bad-input tests of the EK/AK layer: a
small manufacturer PKI (root, intermediate, EK leaf) whose every field a test can change."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID, ObjectIdentifier

from nomyo_audit.tpm import EccPoint, Public, parse_public
from nomyo_audit.tpm._structures import ALG

FIXTURES = Path(__file__).parent / "fixtures" / "tpm-anchors"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
AT = datetime(2025, 6, 1, tzinfo=timezone.utc)
TCG_MANUFACTURER, TCG_MODEL, TCG_VERSION = (ObjectIdentifier(f"2.23.133.2.{n}") for n in (1, 2, 3))
EKU_EK, EKU_AIK = ObjectIdentifier("2.23.133.8.1"), ObjectIdentifier("2.23.133.8.3")
_RSA = rsa.generate_private_key(65537, 2048)
_EC = [ec.generate_private_key(ec.SECP256R1()) for _ in range(4)]


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def tpm_name(
    manufacturer: str = "id:4E544300", model: str = "NPCT75x", version: str = "id:00070002"
) -> x509.Name:
    return x509.Name([
        x509.RelativeDistinguishedName([x509.NameAttribute(TCG_MANUFACTURER, manufacturer)]),
        x509.RelativeDistinguishedName([x509.NameAttribute(TCG_MODEL, model)]),
        x509.RelativeDistinguishedName([x509.NameAttribute(TCG_VERSION, version)]),
    ])  # fmt: skip


@dataclass
class Pki:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate

    def der(self, certificate: x509.Certificate) -> bytes:
        return certificate.public_bytes(serialization.Encoding.DER)


def ca(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    *,
    is_ca: bool = True,
    path_length: int | None = None,
    key_cert_sign: bool = True,
    days: int = 3650,
) -> x509.Certificate:
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name(subject), key)
    usage = x509.KeyUsage(False, False, False, False, False, key_cert_sign, True, False, False)
    return (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length), critical=True)
        .add_extension(usage, critical=True)
        .sign(signer, hashes.SHA256())
    )


def pki(**intermediate_options: object) -> Pki:
    root = ca("Test TPM Root CA", _EC[0])
    intermediate = ca("Test TPM EK CA", _EC[1], (root, _EC[0]), **intermediate_options)  # type: ignore[arg-type]
    return Pki(_EC[0], root, _EC[1], intermediate)


def ek_builder(
    issuer: x509.Certificate,
    *,
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | None = None,
    subject: x509.Name | None = None,
    san: x509.Name | None = None,
    san_critical: bool = True,
    eku: list[ObjectIdentifier] | None = None,
    not_before: datetime = T0,
    not_after: datetime = T0 + timedelta(days=3650),
    is_ca: bool = False,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject if subject is not None else x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(key if key is not None else _RSA.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(eku if eku is not None else [EKU_EK]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DirectoryName(san)]), critical=san_critical
        )
    return builder


def ek_der(p: Pki, **options: object) -> bytes:
    options.setdefault("san", tpm_name())
    builder = ek_builder(p.intermediate, **options)  # type: ignore[arg-type]
    return builder.sign(p.intermediate_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def other_key() -> ec.EllipticCurvePrivateKey:
    return _EC[2]


def aik_public(key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> Public:
    """A restricted signing key's TPM2B_PUBLIC around ``key`` (as an AIK template makes it), parsed
    back with parse_public: the 'quoting AIK' an AK certificate must certify."""
    attributes = 0x00050072  # fixedTPM fixedParent sensitiveDataOrigin userWithAuth restricted sign
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        public = Public(
            ALG.RSA, ALG.SHA256, attributes, b"", (ALG.NULL,), ALG.RSASSA, ALG.SHA256,
            rsa_key_bits=key.key_size, rsa_exponent=0 if n.e == 65537 else n.e,
            rsa_modulus=n.n.to_bytes(key.key_size // 8, "big"),
        )  # fmt: skip
    else:
        p = key.public_numbers()
        point = EccPoint(p.x.to_bytes(32, "big"), p.y.to_bytes(32, "big"))
        public = Public(
            ALG.ECC, ALG.SHA256, attributes, b"", (ALG.NULL,), ALG.ECDSA, ALG.SHA256,
            curve_id=3, ecc_point=point,
        )  # fmt: skip
    return parse_public(public.marshal())


def openssl_verify(at: datetime, root_pem: Path, leaf_pem: Path, untrusted_pem: Path | None = None) -> int:
    """The exit status of ``openssl verify -attime`` (a verifier we did not write) for this chain."""
    command = ["openssl", "verify", "-attime", str(int(at.timestamp())), "-CAfile", str(root_pem)]
    command += ["-untrusted", str(untrusted_pem)] if untrusted_pem is not None else []
    result = subprocess.run([*command, str(leaf_pem)], capture_output=True, text=True, check=False)
    return result.returncode
