"""TPM 2.0 marshalling basics: algorithm IDs, TPM size limits, and a bounded big-endian reader.

Pure, no I/O. Every structure module (:mod:`._pcr_selection`, :mod:`._attest`,
:mod:`._signature`, :mod:`._public`) reads through :class:`Reader`, so every
size is checked *before* bytes are read and every failure is a
:class:`TPMStructureError` with a stable ``code``, never an ``IndexError``.
"""

from __future__ import annotations

import struct

from ..errors import EvidenceError

TPM_GENERATED_VALUE = 0xFF544347
TPM_ST_ATTEST_QUOTE = 0x8018

#: TPM_ST values of the attestation structures (Part 2, 6.9).
ATTEST_TYPES = {
    0x8014: "TPM_ST_ATTEST_NV",
    0x8015: "TPM_ST_ATTEST_COMMAND_AUDIT",
    0x8016: "TPM_ST_ATTEST_SESSION_AUDIT",
    0x8017: "TPM_ST_ATTEST_CERTIFY",
    0x8018: "TPM_ST_ATTEST_QUOTE",
    0x8019: "TPM_ST_ATTEST_TIME",
    0x801A: "TPM_ST_ATTEST_CREATION",
    0x801C: "TPM_ST_ATTEST_NV_DIGEST",
}


class ALG:
    """TPM_ALG_ID values used here (TCG Algorithm Registry)."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    KEYEDHASH = 0x0008
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    ECSCHNORR = 0x001C
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CFB = 0x0043


HASH_SIZES = {ALG.SHA1: 20, ALG.SHA256: 32, ALG.SHA384: 48, ALG.SHA512: 64}
HASH_NAMES = {ALG.SHA1: "sha1", ALG.SHA256: "sha256", ALG.SHA384: "sha384", ALG.SHA512: "sha512"}
HASH_BY_NAME = {name: alg for alg, name in HASH_NAMES.items()}
#: TPM_ECC_CURVE -> (name, coordinate size in bytes)
ECC_CURVES = {0x0003: ("NIST_P256", 32), 0x0004: ("NIST_P384", 48), 0x0005: ("NIST_P521", 66)}

#: Hierarchy handles: the qualified names of primary keys' parents.
HIERARCHIES = {
    "endorsement": b"\x40\x00\x00\x0b",
    "owner": b"\x40\x00\x00\x01",
    "platform": b"\x40\x00\x00\x0c",
    "null": b"\x40\x00\x00\x07",
}

# Size limits (Part 2 with the reference implementation's defaults, generous where vendors vary).
MAX_DIGEST = 64
MAX_NAME = 2 + MAX_DIGEST
MAX_DATA = 2 + MAX_DIGEST  # TPM2B_DATA holds a TPMT_HA
MAX_RSA_KEY_BYTES = 512
MAX_ECC_KEY_BYTES = 66
MAX_PCR_SELECT = 4
MAX_PCR_BANKS = 16
MAX_ATTEST = 1024  # sizeof(TPMS_ATTEST) bound used for TPM2B_ATTEST
MAX_PUBLIC = 1024


class TPMStructureError(EvidenceError):
    """A TPM structure is malformed; ``code`` says how, ``path`` says where."""

    def __init__(self, message: str, *, code: str, path: str = "") -> None:
        super().__init__(f"{path}: {message}" if path else message, code=code)
        self.path = path


#: For each byte value, the bit positions set in it (PCR bitmaps are read often).
BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


class Reader:
    """Bounded big-endian reads over an immutable buffer."""

    def __init__(self, data: bytes, path: str) -> None:
        self.data = data
        self.pos = 0
        self.path = path

    def _need(self, n: int, what: str) -> int:
        pos = self.pos
        if n > len(self.data) - pos:
            raise TPMStructureError(
                f"truncated: {what} needs {n} bytes, {len(self.data) - pos} left",
                code="truncated",
                path=self.path,
            )
        self.pos = pos + n
        return pos

    def take(self, n: int, what: str) -> bytes:
        pos = self._need(n, what)
        return self.data[pos : pos + n]

    def u8(self, what: str) -> int:
        return self.data[self._need(1, what)]

    def u16(self, what: str) -> int:
        return int(U16.unpack_from(self.data, self._need(2, what))[0])

    def u32(self, what: str) -> int:
        return int(U32.unpack_from(self.data, self._need(4, what))[0])

    def u64(self, what: str) -> int:
        return int(U64.unpack_from(self.data, self._need(8, what))[0])

    def tpm2b(self, what: str, limit: int) -> bytes:
        size = self.u16(f"{what}.size")
        if size > limit:
            raise TPMStructureError(
                f"{what} is {size} bytes, over the TPM limit of {limit}", code="size_limit", path=self.path
            )
        return self.take(size, what)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise TPMStructureError(
                f"{len(self.data) - self.pos} trailing bytes after the structure",
                code="trailing_bytes",
                path=self.path,
            )


def u16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack(">I", v)


def tpm2b(b: bytes) -> bytes:
    return u16(len(b)) + b


def read_yes_no(reader: Reader, what: str) -> bool:
    """A TPMI_YES_NO: a TPM writes 0 or 1, so any other byte means the structure was not a TPM's."""
    value = reader.u8(what)
    if value > 1:
        raise TPMStructureError(
            f"{what} is {value}; a TPMI_YES_NO is 0 or 1", code="bad_value", path=reader.path
        )
    return value == 1


def read_hash_alg(reader: Reader, what: str, allow_null: bool = False) -> int:
    alg = reader.u16(what)
    if alg in HASH_SIZES or (allow_null and alg == ALG.NULL):
        return alg
    raise TPMStructureError(
        f"{what} 0x{alg:04x} is not a supported hash algorithm", code="unknown_algorithm", path=reader.path
    )
