"""Signing keys for checkpoints and reports: generate (0600), load from PEM."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .._files import write_file
from ..errors import ConfigurationError

__all__ = ["SigningKey", "VerifyingKey", "generate_audit_key", "load_private_key", "load_public_key"]

#: A key that signs reports: Ed25519, ECDSA P-256 or RSA (signed with PSS).
SigningKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: The public half of a :data:`SigningKey`: what checks a report's signature.
VerifyingKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def generate_audit_key(path: str | os.PathLike[str], kind: str = "ed25519") -> tuple[Path, Path]:
    """Write ``path`` (private, PKCS#8 PEM, 0600) and ``path.pub`` (public PEM, 0644).

    Never over an existing file and never through a symlink (``nomyo_audit._files.write_file``):
    both paths are checked before either is written. ``kind`` is ``ed25519`` (what log
    checkpoints need), ``ecdsa-p256`` or ``rsa-pss`` (reports only). Raises
    :class:`nomyo_audit.errors.ConfigurationError` for an unknown kind, an existing file or
    a path that cannot be written.
    """
    private_path = Path(path)
    public_path = private_path.with_name(private_path.name + ".pub")
    for existing in (private_path, public_path):
        if existing.exists() or existing.is_symlink():
            raise ConfigurationError(f"refusing to overwrite existing key file {existing}")
    key: SigningKey
    if kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa-p256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa-pss":
        key = rsa.generate_private_key(65537, 3072)
    else:
        raise ConfigurationError(f"unknown key kind {kind!r}: ed25519, ecdsa-p256 or rsa-pss")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        private_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create {private_path.parent}: {exc.strerror}") from None
    write_file(private_path, pem, mode=0o600)
    try:
        write_file(public_path, public_pem, mode=0o644)
    except BaseException:
        private_path.unlink(missing_ok=True)  # never leave half a key pair
        raise
    return private_path, public_path


def load_private_key(path: str | os.PathLike[str]) -> SigningKey:
    """An unencrypted PEM private key (Ed25519, ECDSA P-256 or RSA) from ``path``.

    Raises :class:`nomyo_audit.errors.ConfigurationError` when the file cannot be read,
    is not an unencrypted PEM private key, or holds another kind of key.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except OSError as exc:
        raise ConfigurationError(f"cannot read key {path}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigurationError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigurationError(f"{path}: use an Ed25519, ECDSA P-256 or RSA key")
    return key


def load_public_key(path: str | os.PathLike[str]) -> VerifyingKey:
    """A public key PEM, or the public half of a private key PEM.

    Raises :class:`nomyo_audit.errors.ConfigurationError` when the file cannot be read or
    holds no Ed25519, ECDSA P-256 or RSA key.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read key {path}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigurationError(f"{path} is not a PEM public key") from None
    if not isinstance(key, (ed25519.Ed25519PublicKey, ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise ConfigurationError(f"{path}: use an Ed25519, ECDSA P-256 or RSA key")
    return key


def ed25519_private(path: str | os.PathLike[str]) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 private key that signs log checkpoints (ConfigurationError for any other key)."""
    key = load_private_key(path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(
            f"{path}: log checkpoints are signed with Ed25519 (nomyo-audit keys generate)"
        )
    return key


def ed25519_public(path: str | os.PathLike[str]) -> ed25519.Ed25519PublicKey:
    """The Ed25519 public key that checks log checkpoints (ConfigurationError for any other key)."""
    key = load_public_key(path)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigurationError(f"{path}: log checkpoints are verified with an Ed25519 key")
    return key
