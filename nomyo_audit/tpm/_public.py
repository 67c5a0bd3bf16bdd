"""TPM2B_PUBLIC of an RSA or ECC key: the AIK's public area, its attributes and its TPM name.

Pure, no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ._marshal import (
    ALG,
    ECC_CURVES,
    HASH_NAMES,
    MAX_DIGEST,
    MAX_ECC_KEY_BYTES,
    MAX_PUBLIC,
    MAX_RSA_KEY_BYTES,
    Reader,
    TPMStructureError,
    read_hash_alg,
    tpm2b,
    u16,
    u32,
)

__all__ = ["EccPoint", "ObjectAttributes", "Public", "parse_public"]


class ObjectAttributes:
    """TPMA_OBJECT bits: what an object's public area says it may do and where it came from."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN = 1 << 18

    NAMES = {
        FIXED_TPM: "fixedTPM",
        ST_CLEAR: "stClear",
        FIXED_PARENT: "fixedParent",
        SENSITIVE_DATA_ORIGIN: "sensitiveDataOrigin",
        USER_WITH_AUTH: "userWithAuth",
        ADMIN_WITH_POLICY: "adminWithPolicy",
        NO_DA: "noDA",
        ENCRYPTED_DUPLICATION: "encryptedDuplication",
        RESTRICTED: "restricted",
        DECRYPT: "decrypt",
        SIGN: "sign",
    }

    #: What an attestation key must have: restricted signing, generated in and bound to its TPM.
    ATTESTATION_KEY = RESTRICTED | SIGN | FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN

    @classmethod
    def names(cls, value: int) -> list[str]:
        """The names of the bits set in ``value``, as the TPM specification spells them."""
        return [name for bit, name in cls.NAMES.items() if value & bit]


@dataclass(frozen=True)
class EccPoint:
    """An ECC public key's coordinates, big-endian, as the TPM wrote them."""

    x: bytes
    y: bytes


@dataclass(frozen=True)
class Public:
    """A TPMT_PUBLIC of an RSA or ECC key (the parts attestation looks at)."""

    type: int
    name_alg: int
    object_attributes: int
    auth_policy: bytes
    symmetric: tuple[int, ...]  # (algorithm,) or (algorithm, keyBits, mode)
    scheme: int
    scheme_hash: int  # ALG.NULL when the scheme is NULL
    rsa_key_bits: int = 0
    rsa_exponent: int = 0
    rsa_modulus: bytes = b""
    curve_id: int = 0
    kdf: tuple[int, ...] = (ALG.NULL,)
    ecc_point: EccPoint | None = None
    #: The marshalled TPMT_PUBLIC: what the name is computed over.
    tpmt: bytes = field(default=b"", repr=False, compare=False)

    def marshal_tpmt(self) -> bytes:
        """As a TPMT_PUBLIC: what the TPM name is computed over."""
        out = u16(self.type) + u16(self.name_alg) + u32(self.object_attributes) + tpm2b(self.auth_policy)
        out += b"".join(u16(v) for v in self.symmetric)
        out += u16(self.scheme) + (b"" if self.scheme == ALG.NULL else u16(self.scheme_hash))
        if self.type == ALG.RSA:
            out += u16(self.rsa_key_bits) + u32(self.rsa_exponent) + tpm2b(self.rsa_modulus)
        else:
            assert self.ecc_point is not None
            out += u16(self.curve_id) + b"".join(u16(v) for v in self.kdf)
            out += tpm2b(self.ecc_point.x) + tpm2b(self.ecc_point.y)
        return out

    def marshal(self) -> bytes:
        """As a TPM2B_PUBLIC."""
        return tpm2b(self.tpmt or self.marshal_tpmt())

    @property
    def name(self) -> bytes:
        """The TPM name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        digest = hashlib.new(HASH_NAMES[self.name_alg], self.tpmt or self.marshal_tpmt()).digest()
        return u16(self.name_alg) + digest

    def qualified_name(self, parent_qualified_name: bytes) -> bytes:
        """nameAlg || H_nameAlg(QN(parent) || Name): what a TPM puts in qualifiedSigner.

        A hierarchy's qualified name is its handle, so a primary key's is
        computable from the key alone (:data:`HIERARCHIES`); a child key's
        depends on every parent up to the hierarchy.
        """
        digest = hashlib.new(HASH_NAMES[self.name_alg], parent_qualified_name + self.name).digest()
        return u16(self.name_alg) + digest


def _read_sym_def(reader: Reader) -> tuple[int, ...]:
    alg = reader.u16("parameters.symmetric.algorithm")
    if alg == ALG.NULL:
        return (alg,)
    return (alg, reader.u16("parameters.symmetric.keyBits"), reader.u16("parameters.symmetric.mode"))


def parse_public(data: bytes) -> Public:
    """Unmarshal a TPM2B_PUBLIC (a bare TPMT_PUBLIC is refused: its size is part of the evidence).

    Raises :class:`TPMStructureError` (with a ``code``) for anything malformed, a key type other
    than RSA or ECC, or an unsupported scheme or curve.
    """
    outer = Reader(bytes(data), "TPM2B_PUBLIC")
    tpmt = outer.tpm2b("TPM2B_PUBLIC", MAX_PUBLIC)
    outer.end()
    reader = Reader(tpmt, "TPMT_PUBLIC")
    key_type = reader.u16("type")
    if key_type not in (ALG.RSA, ALG.ECC):
        raise TPMStructureError(
            f"key type 0x{key_type:04x} is not RSA or ECC", code="unknown_algorithm", path=reader.path
        )
    name_alg = read_hash_alg(reader, "nameAlg")
    attributes = reader.u32("objectAttributes")
    policy = reader.tpm2b("authPolicy", MAX_DIGEST)
    symmetric = _read_sym_def(reader)
    scheme = reader.u16("parameters.scheme.scheme")
    allowed = (
        (ALG.NULL, ALG.RSASSA, ALG.RSAPSS, ALG.RSAES, ALG.OAEP)
        if key_type == ALG.RSA
        else (ALG.NULL, ALG.ECDSA, ALG.ECDH, ALG.ECSCHNORR)
    )
    if scheme not in allowed:
        raise TPMStructureError(
            f"scheme 0x{scheme:04x} is not supported for this key type",
            code="unknown_algorithm",
            path=reader.path,
        )
    scheme_hash = (
        ALG.NULL if scheme in (ALG.NULL, ALG.RSAES) else read_hash_alg(reader, "parameters.scheme.hashAlg")
    )
    key = _read_rsa_key(reader) if key_type == ALG.RSA else _read_ecc_key(reader)
    reader.end()
    return Public(key_type, name_alg, attributes, policy, symmetric, scheme, scheme_hash, tpmt=tpmt, **key)


def _read_rsa_key(reader: Reader) -> dict[str, Any]:
    return {
        "rsa_key_bits": reader.u16("parameters.keyBits"),
        "rsa_exponent": reader.u32("parameters.exponent"),
        "rsa_modulus": reader.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES),
    }


def _read_ecc_key(reader: Reader) -> dict[str, Any]:
    curve = reader.u16("parameters.curveID")
    if curve not in ECC_CURVES:
        raise TPMStructureError(
            f"curve 0x{curve:04x} is not supported", code="unknown_algorithm", path=reader.path
        )
    kdf_scheme = reader.u16("parameters.kdf.scheme")
    kdf = (kdf_scheme,) if kdf_scheme == ALG.NULL else (kdf_scheme, reader.u16("parameters.kdf.hashAlg"))
    x = reader.tpm2b("unique.ecc.x", MAX_ECC_KEY_BYTES)
    y = reader.tpm2b("unique.ecc.y", MAX_ECC_KEY_BYTES)
    return {"curve_id": curve, "kdf": kdf, "ecc_point": EccPoint(x, y)}
