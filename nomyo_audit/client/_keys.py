"""The client's RSA key pair: generate, save (0600), load, never overwrite."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._files import write_file
from ..errors import ConfigurationError
from ..wire import MIN_RSA_BITS, public_key_pem

__all__ = [
    "DEFAULT_KEY_BITS",
    "KeyPair",
    "generate_key_pair",
    "load_key_pair",
    "save_key_pair",
    "save_private_key",
]

#: The size of a client key the client generates (the ``nomyo`` reference client's).
DEFAULT_KEY_BITS = 4096
PRIVATE_KEY_FILE = "private_key.pem"
PUBLIC_KEY_FILE = "public_key.pem"


@dataclass(frozen=True)
class KeyPair:
    """A client's RSA private key and its public key as the SPKI PEM the router is sent."""

    private_key: rsa.RSAPrivateKey
    public_key_pem: str


def generate_key_pair(bits: int = DEFAULT_KEY_BITS) -> KeyPair:
    """A fresh RSA key pair. Slow for 4096 bits (~0.5-2 s): run it off the event loop.

    Raises :class:`ConfigurationError` for fewer than 2048 bits.
    """
    if bits < MIN_RSA_BITS:
        raise ConfigurationError(f"RSA keys under {MIN_RSA_BITS} bits are refused (asked for {bits})")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return KeyPair(key, public_key_pem(key.public_key()))


def save_key_pair(pair: KeyPair, key_dir: str | os.PathLike[str], password: str | None = None) -> Path:
    """Write ``private_key.pem`` (0600, encrypted if ``password``) and ``public_key.pem``.

    Existing files (and symlinks) are never overwritten: a key someone relies on
    must not be silently replaced. Both go through :func:`nomyo_audit._files.write_file`:
    created exclusively, never through a symlink, with the mode set before a byte
    is written, so the private key is never readable by others even for an instant.
    A directory it has to create is 0700. Raises :class:`ConfigurationError` when a key
    file (or a symlink) is already there or cannot be written.
    """
    directory = Path(key_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_path = directory / PRIVATE_KEY_FILE
    public_path = directory / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise ConfigurationError(f"refusing to overwrite existing key file {path}")
    save_private_key(pair.private_key, private_path, password)
    write_file(public_path, pair.public_key_pem.encode(), mode=0o644)
    return private_path


def save_private_key(
    key: rsa.RSAPrivateKey, path: str | os.PathLike[str], password: str | None = None
) -> None:
    """Write one private key PEM, mode 0600, encrypted when ``password`` is given; never overwrite.

    Raises :class:`ConfigurationError` naming the path when it exists (a symlink included) or
    cannot be written.
    """
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_file(path, pem, mode=0o600)


def load_key_pair(
    private_key_path: str | os.PathLike[str],
    public_key_path: str | os.PathLike[str] | None = None,
    password: str | None = None,
) -> KeyPair:
    """Load a private key (and check a public key file, when given, matches it).

    Raises :class:`ConfigurationError` for an unreadable file, a wrong or missing password, a
    key that is not RSA or is under 2048 bits, or a public key file that does not match.
    """
    try:
        data = Path(private_key_path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read private key {private_key_path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:
        hint = "it is encrypted; pass password=" if not password else "it is not encrypted; omit password="
        raise ConfigurationError(f"cannot load private key {private_key_path}: {hint}") from None
    except ValueError:
        raise ConfigurationError(
            f"cannot load private key {private_key_path}: wrong password or not a PEM private key"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"private key {private_key_path} is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise ConfigurationError(
            f"private key {private_key_path} is {key.key_size} bits; at least {MIN_RSA_BITS} are required"
        )
    pem = public_key_pem(key.public_key())
    if public_key_path is not None:
        try:
            given = serialization.load_pem_public_key(Path(public_key_path).read_bytes())
        except (OSError, ValueError):
            raise ConfigurationError(f"cannot load public key {public_key_path}") from None
        if public_key_pem(given) != pem:  # type: ignore[arg-type]
            raise ConfigurationError(f"public key {public_key_path} does not match {private_key_path}")
    return KeyPair(key, pem)
