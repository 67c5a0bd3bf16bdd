"""TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA): the signature over a quote. Pure, no I/O."""

from __future__ import annotations

import struct
from typing import NamedTuple

from ._marshal import (
    ALG,
    HASH_NAMES,
    HASH_SIZES,
    MAX_ECC_KEY_BYTES,
    MAX_RSA_KEY_BYTES,
    U16,
    Reader,
    TPMStructureError,
    read_hash_alg,
    tpm2b,
    u16,
)

__all__ = ["Signature", "parse_signature"]


class Signature(NamedTuple):
    """A TPMT_SIGNATURE: RSA schemes carry ``rsa``, ECDSA carries ``r`` and ``s``."""

    sig_alg: int
    hash_alg: int
    rsa: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @property
    def hash_name(self) -> str:
        """The signature hash's name, ``"sha256"`` for example."""
        return HASH_NAMES[self.hash_alg]

    def marshal(self) -> bytes:
        """As a TPMT_SIGNATURE (attesters and tests build signatures with it)."""
        head = u16(self.sig_alg) + u16(self.hash_alg)
        if self.sig_alg == ALG.ECDSA:
            return head + tpm2b(self.r) + tpm2b(self.s)
        return head + tpm2b(self.rsa)


_SIG_HEAD = struct.Struct(">HHH")
_RSA_SCHEMES = (ALG.RSASSA, ALG.RSAPSS)


def parse_signature(data: bytes) -> Signature:
    """Unmarshal a complete TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA).

    Raises :class:`TPMStructureError` (with a ``code``) for anything malformed or any other scheme.
    """
    if type(data) is not bytes:
        data = bytes(data)
    fast = _parse_signature_fast(data)
    if fast is not None:
        return fast
    return _parse_signature_careful(data)


def _parse_signature_fast(data: bytes) -> Signature | None:
    """Well-formed RSA and ECDSA signatures with few calls; None when the careful parser must say why.

    Both accept the same inputs (tests/test_verify_differential.py).
    """
    if len(data) >= 6:
        sig_alg, hash_alg, size = _SIG_HEAD.unpack_from(data, 0)
        if hash_alg in HASH_SIZES:
            if sig_alg in _RSA_SCHEMES and size <= MAX_RSA_KEY_BYTES and len(data) == 6 + size:
                return Signature(sig_alg, hash_alg, data[6:])
            if sig_alg == ALG.ECDSA and size <= MAX_ECC_KEY_BYTES and len(data) >= 8 + size:
                s_size = U16.unpack_from(data, 6 + size)[0]
                if s_size <= MAX_ECC_KEY_BYTES and len(data) == 8 + size + s_size:
                    return Signature(sig_alg, hash_alg, b"", data[6 : 6 + size], data[8 + size :])
    return None


def _parse_signature_careful(data: bytes) -> Signature:
    """Field by field, saying exactly what is wrong; the reference the fast paths are tested against."""
    reader = Reader(data, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg not in (ALG.RSASSA, ALG.RSAPSS, ALG.ECDSA):
        raise TPMStructureError(
            f"sigAlg 0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA",
            code="unknown_algorithm",
            path=reader.path,
        )
    hash_alg = read_hash_alg(reader, "signature.hash")
    if sig_alg == ALG.ECDSA:
        r = reader.tpm2b("signatureR", MAX_ECC_KEY_BYTES)
        s = reader.tpm2b("signatureS", MAX_ECC_KEY_BYTES)
        reader.end()
        return Signature(sig_alg, hash_alg, r=r, s=s)
    sig = reader.tpm2b("sig", MAX_RSA_KEY_BYTES)
    reader.end()
    return Signature(sig_alg, hash_alg, rsa=sig)
