"""The enrollment CA's key and certificate, and the one way it issues: after a proven activation.

A :class:`CertificateAuthority` is an ECDSA P-256 key and its self-signed CA certificate
(basicConstraints CA:true, pathLen 0, keyCertSign|cRLSign): the root a verifier puts in
``aik_trust: {mode: ca, roots: [...]}``. :meth:`CertificateAuthority.issue` takes an
:class:`ActivationProof`, which only :func:`nomyo_audit.ca.Enrollment.complete` makes, after the
TPM returned the credential's secret: the type says that no AK certificate is signed for an AIK
whose home was not proven. The certificate itself follows the TCG AK profile
(:func:`nomyo_audit.tpm.build_ak_certificate`).

:func:`init_authority` and :func:`load_authority` are the only I/O: a directory holding
``ca.key`` (PKCS#8 PEM, 0600, written once with :func:`nomyo_audit._files.write_file`) and
``ca.pem``.
"""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .._files import write_file
from ..errors import ConfigurationError
from ..tpm import EkCertificate, Public, build_ak_certificate

__all__ = [
    "CA_CERTIFICATE_FILE",
    "CA_KEY_FILE",
    "ActivationProof",
    "CertificateAuthority",
    "init_authority",
    "load_authority",
]

#: The CA's private key in its directory (PKCS#8 PEM, mode 0600).
CA_KEY_FILE = "ca.key"
#: The CA's self-signed certificate in its directory (PEM): the root verifiers trust.
CA_CERTIFICATE_FILE = "ca.pem"
_MAX_FILE = 64 * 1024


@dataclass(frozen=True)
class ActivationProof:
    """What a successful credential activation proved: the AIK shares a TPM with the EK of ``ek``,
    a certificate that validated to a trusted manufacturer root (``root_sha256``) at ``validated_at``.
    Made only by :meth:`nomyo_audit.ca.Enrollment.complete`."""

    aik: Public
    ek: EkCertificate
    root_sha256: str
    validated_at: datetime
    _token: object = field(repr=False, compare=False, default=None)


_PROOF_TOKEN = object()  # held by _enrollment: an ActivationProof made anywhere else is refused


@dataclass(frozen=True)
class CertificateAuthority:
    """An enrollment CA: its signing key and self-signed certificate."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls, common_name: str, *, now: datetime, days: int = 3650) -> CertificateAuthority:
        """A new CA key (ECDSA P-256) and self-signed certificate valid for ``days`` from ``now``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def certificate_der(self) -> bytes:
        """The CA certificate, DER."""
        return self.certificate.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the CA certificate's DER: the root a verifier sees in its findings."""
        return hashlib.sha256(self.certificate_der).hexdigest()

    def issue(self, proof: ActivationProof, *, now: datetime, days: int = 30) -> tuple[bytes, ...]:
        """The AK certificate chain for the proven AIK, leaf first (this CA is the root, left out:
        a verifier uses its own copy). Valid from five minutes before ``now`` for ``days``, and never
        beyond the CA certificate."""
        if proof._token is not _PROOF_TOKEN:
            raise ConfigurationError("an AK certificate is issued only after a credential activation")
        not_after = min(now + timedelta(days=days), self.certificate.not_valid_after_utc)
        leaf = build_ak_certificate(
            issuer_key=self.key,
            issuer_cert=self.certificate,
            aik=proof.aik,
            ek=proof.ek,
            not_before=now - timedelta(minutes=5),
            not_after=not_after,
        )
        return (leaf,)


def init_authority(directory: Path, common_name: str, *, days: int = 3650) -> CertificateAuthority:
    """Make a CA in ``directory`` (created if missing): ``ca.key`` (0600) and ``ca.pem`` (0644).
    Refuses to overwrite an existing key (:class:`nomyo_audit._files.FileExistsRefused`)."""
    authority = CertificateAuthority.generate(common_name, now=datetime.now(timezone.utc), days=days)
    directory.mkdir(parents=True, exist_ok=True)
    key_pem = authority.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_file(directory / CA_KEY_FILE, key_pem, mode=0o600)
    write_file(
        directory / CA_CERTIFICATE_FILE,
        authority.certificate.public_bytes(serialization.Encoding.PEM),
        mode=0o644,
    )
    return authority


def load_authority(directory: Path) -> CertificateAuthority:
    """The CA of ``directory`` (made by :func:`init_authority`). Raises :class:`ConfigurationError`
    when a file is missing, unreadable, or the key does not match the certificate."""
    key_pem, cert_pem = _read(directory / CA_KEY_FILE), _read(directory / CA_CERTIFICATE_FILE)
    _check_private(directory / CA_KEY_FILE)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
        certificate = x509.load_pem_x509_certificate(cert_pem)
    except (ValueError, TypeError):
        raise ConfigurationError(f"{directory} does not hold a usable CA key and certificate") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"{directory / CA_KEY_FILE} is not an ECDSA key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != certificate.public_key().public_bytes(*spki):
        raise ConfigurationError(f"{directory}: the CA key does not match the CA certificate")
    return CertificateAuthority(key, certificate)


def _check_private(path: Path) -> None:
    """Refuse a CA key that group or others may read, as ssh refuses such a private key: it may have
    leaked, and whoever holds it can certify any key as a TPM's AIK."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others (mode {mode:04o}): chmod 600 {path}")


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_FILE + 1)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read {path}: {exc.strerror or exc} (run: nomyo-audit ca init)"
        ) from None
    if len(data) > _MAX_FILE:
        raise ConfigurationError(f"{path} is too large to be a CA file")
    return data
