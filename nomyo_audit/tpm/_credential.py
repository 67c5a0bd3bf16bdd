"""TPM2_MakeCredential in pure Python: a secret only the TPM holding both an EK and a named AIK can read.

Pure, no I/O (randomness aside). This is how a verifier proves that an AIK lives in the same TPM
as an endorsement key it trusts (TPM 2.0 Part 1, 24 "Credential Protection"): the secret is
wrapped with a seed that only the EK can recover, and with the AIK's *name*, which the TPM checks
against the loaded AIK in TPM2_ActivateCredential. A TPM that does not hold the EK cannot recover
the seed; a TPM that does, but whose AIK has another name (other attributes, another key), fails
the integrity HMAC.

RSA EK:  encryptedSecret = RSA-OAEP(EK, seed, label "IDENTITY\\0", hash = EK nameAlg)
ECC EK:  seed = KDFe(nameAlg, x(d_eph . EK), "IDENTITY", x_eph, x_EK); encryptedSecret = the point
symKey = KDFa(nameAlg, seed, "STORAGE", Name(AIK), "", EK symmetric keyBits)
encIdentity = AES-CFB(symKey, IV = 0, TPM2B(secret))
outerHMAC = HMAC_nameAlg(KDFa(nameAlg, seed, "INTEGRITY", "", "", |H|), encIdentity || Name(AIK))
idObject = TPM2B(TPM2B(outerHMAC) || encIdentity)
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # cryptography >= 47: CFB lives with the other "decrepit" modes
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB  # type: ignore[no-redef,unused-ignore]

from ..errors import CredentialError
from ._kdf import kdfa, kdfe
from ._keys import HASH_ALGORITHMS, to_crypto_key
from ._marshal import (
    ALG,
    ECC_CURVES,
    HASH_NAMES,
    HASH_SIZES,
    MAX_DIGEST,
    Reader,
    TPMStructureError,
    tpm2b,
)
from ._public import Public

__all__ = ["TOOLS_MAGIC", "Credential", "CredentialError", "make_credential", "parse_credential"]

#: The header tpm2-tools writes before a credential (tpm2_makecredential -o, tpm2_activatecredential -i)
TOOLS_MAGIC = 0xBADCC0DE
_TOOLS_VERSION = 1
#: sizeof(TPMS_ID_OBJECT): TPM2B_DIGEST integrityHMAC + TPM2B_DIGEST encIdentity
MAX_ID_OBJECT = 2 * (2 + MAX_DIGEST)
#: sizeof(TPMU_ENCRYPTED_SECRET) for RSA keys up to 4096 bits
MAX_ENCRYPTED_SECRET = 512
_IDENTITY = b"IDENTITY"


class Credential(NamedTuple):
    """What TPM2_MakeCredential returns, both marshalled with their sizes (as TPM2_ActivateCredential
    takes them)."""

    #: TPM2B_ID_OBJECT
    id_object: bytes
    #: TPM2B_ENCRYPTED_SECRET
    encrypted_secret: bytes

    def to_tools_format(self) -> bytes:
        """As tpm2-tools writes it: 0xBADCC0DE || u32(1) || TPM2B_ID_OBJECT || TPM2B_ENCRYPTED_SECRET."""
        return (
            TOOLS_MAGIC.to_bytes(4, "big")
            + _TOOLS_VERSION.to_bytes(4, "big")
            + self.id_object
            + (self.encrypted_secret)
        )

    @classmethod
    def from_tools_format(cls, data: bytes) -> Credential:
        """Read a tpm2-tools credential file (``tpm2_makecredential -o``). Raises :class:`CredentialError`."""
        try:
            reader = Reader(bytes(data), "credential")
            magic, version = reader.u32("magic"), reader.u32("version")
            if magic != TOOLS_MAGIC or version != _TOOLS_VERSION:
                raise CredentialError(
                    f"not a tpm2-tools credential (magic 0x{magic:08x}, version {version})",
                    code="credential_malformed",
                )
            id_object = tpm2b(reader.tpm2b("TPM2B_ID_OBJECT", MAX_ID_OBJECT))
            secret = tpm2b(reader.tpm2b("TPM2B_ENCRYPTED_SECRET", MAX_ENCRYPTED_SECRET))
            reader.end()
        except TPMStructureError as exc:
            raise CredentialError(exc.message, code="credential_malformed") from None
        return parse_credential(id_object, secret)


def parse_credential(id_object: bytes, encrypted_secret: bytes) -> Credential:
    """Check that two byte strings are a TPM2B_ID_OBJECT and a TPM2B_ENCRYPTED_SECRET, within the TPM's
    size limits: what a router checks before handing a challenge to its TPM.

    Raises :class:`CredentialError` (``credential_malformed``).
    """
    try:
        outer = Reader(bytes(id_object), "TPM2B_ID_OBJECT")
        inner = Reader(outer.tpm2b("TPM2B_ID_OBJECT", MAX_ID_OBJECT), "TPMS_ID_OBJECT")
        outer.end()
        integrity = inner.tpm2b("integrityHMAC", MAX_DIGEST)
        if len(integrity) not in HASH_SIZES.values():
            raise CredentialError(
                f"integrityHMAC is {len(integrity)} bytes, not a digest", code="credential_malformed"
            )
        if not 2 < len(inner.data) - inner.pos <= 2 + MAX_DIGEST:
            raise CredentialError("encIdentity is empty or too long", code="credential_malformed")
        secret = Reader(bytes(encrypted_secret), "TPM2B_ENCRYPTED_SECRET")
        if not secret.tpm2b("TPM2B_ENCRYPTED_SECRET", MAX_ENCRYPTED_SECRET):
            raise CredentialError("the encrypted seed is empty", code="credential_malformed")
        secret.end()
    except TPMStructureError as exc:
        raise CredentialError(exc.message, code="credential_malformed") from None
    return Credential(bytes(id_object), bytes(encrypted_secret))


def make_credential(
    ek_public: Public,
    object_name: bytes,
    secret: bytes,
    *,
    seed: bytes | None = None,
    ephemeral_key: ec.EllipticCurvePrivateKey | None = None,
    oaep_seed: bytes | None = None,
) -> Credential:
    """TPM2_MakeCredential: ``secret`` for the TPM holding ``ek_public`` and an object named ``object_name``.

    ``seed`` (RSA EKs; default: random, the size of the EK's name digest), ``ephemeral_key`` (ECC EKs;
    default: fresh) and ``oaep_seed`` (RSA EKs; default: random inside ``cryptography``) fix the
    randomness, for test vectors only. Raises :class:`CredentialError`.
    """
    name_alg = ek_public.name_alg
    digest_size = HASH_SIZES[name_alg]
    _check_name(object_name)
    if not 0 < len(secret) <= digest_size:
        raise CredentialError(
            f"the secret must be 1 to {digest_size} bytes (the EK's name digest)",
            code="credential_bad_secret",
        )
    key_bits = _symmetric_bits(ek_public)
    if ek_public.type == ALG.RSA:
        seed, encrypted = _rsa_seed(ek_public, seed, oaep_seed)
    else:
        if seed is not None:
            raise CredentialError(
                "an ECC EK's seed comes from ECDH, not the caller", code="credential_bad_input"
            )
        seed, encrypted = _ecc_seed(ek_public, ephemeral_key)
    sym_key = kdfa(name_alg, seed, b"STORAGE", object_name, b"", key_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(tpm2b(secret)) + encryptor.finalize()
    hmac_key = kdfa(name_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer_hmac = hmac.new(hmac_key, enc_identity + object_name, HASH_NAMES[name_alg]).digest()
    return Credential(tpm2b(tpm2b(outer_hmac) + enc_identity), tpm2b(encrypted))


def _check_name(name: bytes) -> None:
    alg = int.from_bytes(name[:2], "big") if len(name) >= 2 else -1
    if alg not in HASH_SIZES or len(name) != 2 + HASH_SIZES[alg]:
        raise CredentialError(
            "the object name is not nameAlg || digest of a supported hash", code="credential_bad_name"
        )


def _symmetric_bits(ek: Public) -> int:
    if len(ek.symmetric) != 3 or ek.symmetric[0] != ALG.AES or ek.symmetric[2] != ALG.CFB:
        raise CredentialError(
            "the EK is not a storage key with AES-CFB (its symmetric definition protects credentials)",
            code="credential_unsupported_ek",
        )
    if ek.symmetric[1] not in (128, 192, 256):
        raise CredentialError(
            f"AES-{ek.symmetric[1]} is not an AES key size", code="credential_unsupported_ek"
        )
    return ek.symmetric[1]


def _public_key(ek: Public) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    try:
        return to_crypto_key(ek)
    except TPMStructureError:
        raise CredentialError(
            "the EK's public area holds no valid key", code="credential_unsupported_ek"
        ) from None


def _rsa_seed(ek: Public, seed: bytes | None, oaep_seed: bytes | None) -> tuple[bytes, bytes]:
    digest_size = HASH_SIZES[ek.name_alg]
    if seed is None:
        seed = os.urandom(digest_size)
    elif not 0 < len(seed) <= digest_size:
        raise CredentialError(f"an RSA EK's seed is 1 to {digest_size} bytes", code="credential_bad_input")
    key = _public_key(ek)
    assert isinstance(key, rsa.RSAPublicKey)
    label = _IDENTITY + b"\x00"
    if oaep_seed is None:
        algorithm = HASH_ALGORITHMS[ek.name_alg]()
        pad = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=label)
        return seed, key.encrypt(seed, pad)
    return seed, _oaep_encrypt_with_seed(key, ek.name_alg, seed, label, oaep_seed)


def _oaep_encrypt_with_seed(
    key: rsa.RSAPublicKey, hash_alg: int, message: bytes, label: bytes, seed: bytes
) -> bytes:
    """RSAES-OAEP (RFC 8017, 7.1.1) with a caller's OAEP seed: only to reproduce published vectors."""
    name = HASH_NAMES[hash_alg]
    h_len = HASH_SIZES[hash_alg]
    numbers = key.public_numbers()
    k = (numbers.n.bit_length() + 7) // 8
    if len(seed) != h_len or len(message) > k - 2 * h_len - 2:
        raise CredentialError("the OAEP seed or message does not fit the key", code="credential_bad_input")
    db = hashlib.new(name, label).digest() + bytes(k - len(message) - 2 * h_len - 2) + b"\x01" + message
    masked_db = _xor(db, _mgf1(name, seed, k - h_len - 1))
    masked_seed = _xor(seed, _mgf1(name, masked_db, h_len))
    encoded = int.from_bytes(b"\x00" + masked_seed + masked_db, "big")
    return pow(encoded, numbers.e, numbers.n).to_bytes(k, "big")


def _mgf1(name: str, seed: bytes, length: int) -> bytes:
    out = b"".join(
        hashlib.new(name, seed + counter.to_bytes(4, "big")).digest()
        for counter in range(-(-length // hashlib.new(name).digest_size))
    )
    return out[:length]


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _ecc_seed(ek: Public, ephemeral: ec.EllipticCurvePrivateKey | None) -> tuple[bytes, bytes]:
    key = _public_key(ek)
    assert isinstance(key, ec.EllipticCurvePublicKey) and ek.ecc_point is not None
    size = ECC_CURVES[ek.curve_id][1]
    if ephemeral is None:
        ephemeral = ec.generate_private_key(key.curve)
    elif ephemeral.curve.name != key.curve.name:
        raise CredentialError(
            "the ephemeral key is on another curve than the EK", code="credential_bad_input"
        )
    z = ephemeral.exchange(ec.ECDH(), key)
    numbers = ephemeral.public_key().public_numbers()
    x, y = numbers.x.to_bytes(size, "big"), numbers.y.to_bytes(size, "big")
    seed = kdfe(ek.name_alg, z, _IDENTITY, x, ek.ecc_point.x, HASH_SIZES[ek.name_alg] * 8)
    return seed, tpm2b(x) + tpm2b(y)
