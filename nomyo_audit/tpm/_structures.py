"""TPM 2.0 structures for quote verification: marshal and unmarshal in pure Python.

Only what attestation needs (TPM 2.0 Library, Part 2 "Structures"):
TPMS_ATTEST / TPM2B_ATTEST with TPMS_QUOTE_INFO, TPML_PCR_SELECTION,
TPMT_SIGNATURE (RSASSA, RSAPSS, ECDSA), and TPM2B_PUBLIC / TPMT_PUBLIC
(RSA and ECC keys), plus the object's TPM name.

Parsing is strict, because its input is attacker-controlled: every size is
checked against the TPM limit *before* the bytes are read, a structure must
use all of its input (no trailing bytes), unknown algorithms are refused, and
every failure is a :class:`TPMStructureError` with a stable ``code``, never an
``IndexError`` or ``struct.error``. No C library is involved.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from ..errors import EvidenceError

__all__ = [
    "ALG",
    "ATTEST_TYPES",
    "ECC_CURVES",
    "HASH_SIZES",
    "HIERARCHIES",
    "TPM_GENERATED_VALUE",
    "TPM_ST_ATTEST_QUOTE",
    "ClockInfo",
    "EccPoint",
    "ObjectAttributes",
    "PCRSelection",
    "Public",
    "Signature",
    "TPMSAttest",
    "TPMStructureError",
    "parse_attest",
    "parse_pcr_selection_list",
    "parse_public",
    "parse_signature",
    "pcr_value_map",
    "selection_text",
]

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


class ObjectAttributes:
    """TPMA_OBJECT bits."""

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
        return [name for bit, name in cls.NAMES.items() if value & bit]


#: For each byte value, the bit positions set in it (PCR bitmaps are read often).
_BITS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class _Reader:
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
        return int(_U16.unpack_from(self.data, self._need(2, what))[0])

    def u32(self, what: str) -> int:
        return int(_U32.unpack_from(self.data, self._need(4, what))[0])

    def u64(self, what: str) -> int:
        return int(_U64.unpack_from(self.data, self._need(8, what))[0])

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


def _u16(v: int) -> bytes:
    return struct.pack(">H", v)


def _u32(v: int) -> bytes:
    return struct.pack(">I", v)


def _tpm2b(b: bytes) -> bytes:
    return _u16(len(b)) + b


def _yes_no(reader: _Reader, what: str) -> bool:
    """A TPMI_YES_NO: a TPM writes 0 or 1, so any other byte means the structure was not a TPM's."""
    value = reader.u8(what)
    if value > 1:
        raise TPMStructureError(
            f"{what} is {value}; a TPMI_YES_NO is 0 or 1", code="bad_value", path=reader.path
        )
    return value == 1


def _hash_alg(reader: _Reader, what: str, allow_null: bool = False) -> int:
    alg = reader.u16(what)
    if alg in HASH_SIZES or (allow_null and alg == ALG.NULL):
        return alg
    raise TPMStructureError(
        f"{what} 0x{alg:04x} is not a supported hash algorithm", code="unknown_algorithm", path=reader.path
    )


# -- PCR selection -------------------------------------------------------------


class PCRSelection(NamedTuple):
    """One bank's selection: hash algorithm and the selected PCR indices."""

    hash_alg: int
    indices: tuple[int, ...]
    size_of_select: int = 3

    @property
    def bank(self) -> str:
        return HASH_NAMES[self.hash_alg]

    def marshal(self) -> bytes:
        bitmap = bytearray(self.size_of_select)
        for index in self.indices:
            bitmap[index // 8] |= 1 << (index % 8)
        return _u16(self.hash_alg) + bytes([self.size_of_select]) + bytes(bitmap)


def _read_pcr_selection_list(reader: _Reader) -> tuple[PCRSelection, ...]:
    count = reader.u32("pcrSelect.count")
    if count > MAX_PCR_BANKS:
        raise TPMStructureError(
            f"pcrSelect lists {count} banks, over the limit of {MAX_PCR_BANKS}",
            code="size_limit",
            path=reader.path,
        )
    selections = []
    for i in range(count):
        alg = _hash_alg(reader, "pcrSelect[].hash")
        size = reader.u8("pcrSelect[].sizeofSelect")
        if size > MAX_PCR_SELECT:
            raise TPMStructureError(
                f"pcrSelect[{i}].sizeofSelect {size} is over {MAX_PCR_SELECT}",
                code="size_limit",
                path=reader.path,
            )
        bitmap = reader.take(size, "pcrSelect[].pcrSelect")
        indices = tuple(b * 8 + bit for b, byte in enumerate(bitmap) for bit in _BITS[byte])
        selections.append(PCRSelection(alg, indices, size))
    return tuple(selections)


def selection_text(selections: tuple[PCRSelection, ...] | list[PCRSelection]) -> str:
    """``sha256:0,7,10`` (banks joined by ``+``): how evidence and policies write a selection."""
    return _selection_text(tuple((s.hash_alg, s.indices) for s in selections))


@lru_cache(maxsize=256)
def _selection_text(key: tuple[tuple[int, tuple[int, ...]], ...]) -> str:
    return "+".join(f"{HASH_NAMES[alg]}:{','.join(map(str, indices))}" for alg, indices in key)


def pcr_value_map(selections: tuple[PCRSelection, ...], values: Iterable[bytes]) -> dict[str, dict[str, str]]:
    """``{bank: {index: hex}}`` from values given in selection order: the evidence's ``pcr_values``.

    Every listed bank has an entry, ``{}`` when none of its PCRs is selected; a bank listed twice
    (a TPM echoes such a request) has one entry with the PCRs of both.
    """
    remaining = iter(values)
    mapped: dict[str, dict[str, str]] = {}
    for s in selections:
        bank = mapped.setdefault(HASH_NAMES[s.hash_alg], {})
        for index in s.indices:
            bank[str(index)] = next(remaining).hex()
    return mapped


def marshal_pcr_selection_list(selections: tuple[PCRSelection, ...] | list[PCRSelection]) -> bytes:
    return _u32(len(selections)) + b"".join(s.marshal() for s in selections)


def parse_pcr_selection_list(data: bytes) -> tuple[PCRSelection, ...]:
    """Unmarshal a complete TPML_PCR_SELECTION."""
    reader = _Reader(bytes(data), "TPML_PCR_SELECTION")
    result = _read_pcr_selection_list(reader)
    reader.end()
    return result


# -- TPMS_ATTEST -------------------------------------------------------------------


class ClockInfo(NamedTuple):
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


class TPMSAttest(NamedTuple):
    """A parsed TPMS_ATTEST. ``pcr_select`` and ``pcr_digest`` are set for quotes only.

    The per-quote structures are named tuples, not dataclasses: a verifier
    builds several for every response, and a frozen dataclass costs about
    five times as much to construct.
    """

    magic: int
    type: int
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_select: tuple[PCRSelection, ...] = ()
    pcr_digest: bytes = b""
    #: "TPMS_ATTEST" or "TPM2B_ATTEST": which form the bytes came in.
    encoding: str = "TPMS_ATTEST"
    #: The bytes that were signed (the TPMS_ATTEST, without a TPM2B size).
    raw: bytes = b""

    @property
    def type_name(self) -> str:
        name = ATTEST_TYPES.get(self.type)
        return name if name is not None else f"0x{self.type:04x}"

    def marshal(self) -> bytes:
        body = (
            _u32(self.magic)
            + _u16(self.type)
            + _tpm2b(self.qualified_signer)
            + _tpm2b(self.extra_data)
            + struct.pack(
                ">QIIB",
                self.clock_info.clock,
                self.clock_info.reset_count,
                self.clock_info.restart_count,
                int(self.clock_info.safe),
            )
            + struct.pack(">Q", self.firmware_version)
        )
        if self.type == TPM_ST_ATTEST_QUOTE:
            body += marshal_pcr_selection_list(self.pcr_select) + _tpm2b(self.pcr_digest)
        return body


_QUOTE_HEAD = struct.Struct(">IH")
_CLOCK_FIRMWARE_COUNT = struct.Struct(">QIIBQI")  # clockInfo, firmwareVersion, pcrSelect.count
_QUOTE_MAGIC_TYPE = (TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
_MAGIC = _U32.pack(TPM_GENERATED_VALUE)


def _parse_quote_fast(data: bytes, encoding: str) -> TPMSAttest | None:
    """The common case -- a well-formed quote -- in one pass with few calls.

    Anything unexpected returns None, and the careful parser below runs
    instead and reports exactly what is wrong. Both accept the same quotes
    (tests/test_verify_differential.py).
    """
    try:
        end = len(data)
        if _QUOTE_HEAD.unpack_from(data, 0) != _QUOTE_MAGIC_TYPE:
            return None
        size = _U16.unpack_from(data, 6)[0]
        pos = 8 + size
        if size > MAX_NAME or pos > end:
            return None
        signer = data[8:pos]
        size = _U16.unpack_from(data, pos)[0]
        if size > MAX_DATA or pos + 2 + size > end:
            return None
        extra = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
        clock, resets, restarts, safe, firmware, count = _CLOCK_FIRMWARE_COUNT.unpack_from(data, pos)
        start = pos + 25  # the TPML_PCR_SELECTION
        pos += 29
        if count > MAX_PCR_BANKS or safe > 1:
            return None
        for _ in range(count):
            width = data[pos + 2]
            if width > MAX_PCR_SELECT:
                return None
            pos += 3 + width
        if pos > end:
            return None
        selections = _fast_selections(data[start:pos])
        size = _U16.unpack_from(data, pos)[0]
        if selections is None or size > MAX_DIGEST or pos + 2 + size != end:
            return None
        digest = data[pos + 2 :]
    except (struct.error, IndexError):
        return None
    return TPMSAttest(
        TPM_GENERATED_VALUE,
        TPM_ST_ATTEST_QUOTE,
        signer,
        extra,
        ClockInfo(clock, resets, restarts, safe == 1),
        firmware,
        selections,
        digest,
        encoding,
        data,
    )


@lru_cache(maxsize=64)
def _fast_selections(marshalled: bytes) -> tuple[PCRSelection, ...] | None:
    """A TPML_PCR_SELECTION already bounded by the caller; None when the careful parser must say why.

    A router quotes the same selection every time, so the result is cached
    by the exact bytes (at most 4 + 16 * 7 of them).
    """
    try:
        return parse_pcr_selection_list(marshalled)
    except TPMStructureError:
        return None


def parse_attest(data: bytes) -> TPMSAttest:
    """Unmarshal a quote given as a bare TPMS_ATTEST or a size-prefixed TPM2B_ATTEST.

    The two are told apart by the magic: a TPMS_ATTEST starts with
    0xff544347, a TPM2B_ATTEST with a two-byte size equal to the rest.
    Only TPM_ST_ATTEST_QUOTE bodies are unmarshalled; other types parse up to
    the union and are returned for the verifier to refuse by type.
    """
    if type(data) is not bytes:
        data = bytes(data)
    encoding = "TPMS_ATTEST"
    if len(data) >= 6 and data[2:6] == _MAGIC and _U16.unpack_from(data)[0] == len(data) - 2:
        encoding = "TPM2B_ATTEST"
        data = data[2:]
    if len(data) > MAX_ATTEST:
        raise TPMStructureError(
            f"quote is {len(data)} bytes, over the limit of {MAX_ATTEST}",
            code="size_limit",
            path="TPMS_ATTEST",
        )
    fast = _parse_quote_fast(data, encoding)
    if fast is not None:
        return fast
    return _parse_attest_careful(data, encoding)


def _parse_attest_careful(data: bytes, encoding: str) -> TPMSAttest:
    """Field by field, saying exactly what is wrong; the reference the fast path is tested against."""
    reader = _Reader(data, "TPMS_ATTEST")
    magic = reader.u32("magic")
    if magic != TPM_GENERATED_VALUE:
        raise TPMStructureError(
            f"magic is 0x{magic:08x}, not TPM_GENERATED_VALUE (0xff544347)",
            code="bad_magic",
            path=reader.path,
        )
    attest_type = reader.u16("type")
    if attest_type not in ATTEST_TYPES:
        raise TPMStructureError(
            f"type 0x{attest_type:04x} is not an attestation structure", code="bad_type", path=reader.path
        )
    signer = reader.tpm2b("qualifiedSigner", MAX_NAME)
    extra = reader.tpm2b("extraData", MAX_DATA)
    clock = ClockInfo(
        reader.u64("clockInfo.clock"),
        reader.u32("clockInfo.resetCount"),
        reader.u32("clockInfo.restartCount"),
        _yes_no(reader, "clockInfo.safe"),
    )
    firmware = reader.u64("firmwareVersion")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        return TPMSAttest(magic, attest_type, signer, extra, clock, firmware, encoding=encoding, raw=data)
    selections = _read_pcr_selection_list(reader)
    digest = reader.tpm2b("pcrDigest", MAX_DIGEST)
    reader.end()
    return TPMSAttest(magic, attest_type, signer, extra, clock, firmware, selections, digest, encoding, data)


# -- TPMT_SIGNATURE ------------------------------------------------------------------


class Signature(NamedTuple):
    """A TPMT_SIGNATURE: RSA schemes carry ``rsa``, ECDSA carries ``r`` and ``s``."""

    sig_alg: int
    hash_alg: int
    rsa: bytes = b""
    r: bytes = b""
    s: bytes = b""

    @property
    def hash_name(self) -> str:
        return HASH_NAMES[self.hash_alg]

    def marshal(self) -> bytes:
        head = _u16(self.sig_alg) + _u16(self.hash_alg)
        if self.sig_alg == ALG.ECDSA:
            return head + _tpm2b(self.r) + _tpm2b(self.s)
        return head + _tpm2b(self.rsa)


_SIG_HEAD = struct.Struct(">HHH")
_RSA_SCHEMES = (ALG.RSASSA, ALG.RSAPSS)


def parse_signature(data: bytes) -> Signature:
    """Unmarshal a complete TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
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
                s_size = _U16.unpack_from(data, 6 + size)[0]
                if s_size <= MAX_ECC_KEY_BYTES and len(data) == 8 + size + s_size:
                    return Signature(sig_alg, hash_alg, b"", data[6 : 6 + size], data[8 + size :])
    return None


def _parse_signature_careful(data: bytes) -> Signature:
    """Field by field, saying exactly what is wrong; the reference the fast paths are tested against."""
    reader = _Reader(data, "TPMT_SIGNATURE")
    sig_alg = reader.u16("sigAlg")
    if sig_alg not in (ALG.RSASSA, ALG.RSAPSS, ALG.ECDSA):
        raise TPMStructureError(
            f"sigAlg 0x{sig_alg:04x} is not RSASSA, RSAPSS or ECDSA",
            code="unknown_algorithm",
            path=reader.path,
        )
    hash_alg = _hash_alg(reader, "signature.hash")
    if sig_alg == ALG.ECDSA:
        r = reader.tpm2b("signatureR", MAX_ECC_KEY_BYTES)
        s = reader.tpm2b("signatureS", MAX_ECC_KEY_BYTES)
        reader.end()
        return Signature(sig_alg, hash_alg, r=r, s=s)
    sig = reader.tpm2b("sig", MAX_RSA_KEY_BYTES)
    reader.end()
    return Signature(sig_alg, hash_alg, rsa=sig)


# -- TPM2B_PUBLIC ----------------------------------------------------------------------


@dataclass(frozen=True)
class EccPoint:
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
        out = _u16(self.type) + _u16(self.name_alg) + _u32(self.object_attributes) + _tpm2b(self.auth_policy)
        out += b"".join(_u16(v) for v in self.symmetric)
        out += _u16(self.scheme) + (b"" if self.scheme == ALG.NULL else _u16(self.scheme_hash))
        if self.type == ALG.RSA:
            out += _u16(self.rsa_key_bits) + _u32(self.rsa_exponent) + _tpm2b(self.rsa_modulus)
        else:
            assert self.ecc_point is not None
            out += _u16(self.curve_id) + b"".join(_u16(v) for v in self.kdf)
            out += _tpm2b(self.ecc_point.x) + _tpm2b(self.ecc_point.y)
        return out

    def marshal(self) -> bytes:
        """As a TPM2B_PUBLIC."""
        return _tpm2b(self.tpmt or self.marshal_tpmt())

    @property
    def name(self) -> bytes:
        """The TPM name: nameAlg || H_nameAlg(TPMT_PUBLIC)."""
        digest = hashlib.new(HASH_NAMES[self.name_alg], self.tpmt or self.marshal_tpmt()).digest()
        return _u16(self.name_alg) + digest

    def qualified_name(self, parent_qualified_name: bytes) -> bytes:
        """nameAlg || H_nameAlg(QN(parent) || Name): what a TPM puts in qualifiedSigner.

        A hierarchy's qualified name is its handle, so a primary key's is
        computable from the key alone (:data:`HIERARCHIES`); a child key's
        depends on every parent up to the hierarchy.
        """
        digest = hashlib.new(HASH_NAMES[self.name_alg], parent_qualified_name + self.name).digest()
        return _u16(self.name_alg) + digest


def _read_sym_def(reader: _Reader) -> tuple[int, ...]:
    alg = reader.u16("parameters.symmetric.algorithm")
    if alg == ALG.NULL:
        return (alg,)
    return (alg, reader.u16("parameters.symmetric.keyBits"), reader.u16("parameters.symmetric.mode"))


def parse_public(data: bytes) -> Public:
    """Unmarshal a TPM2B_PUBLIC (a bare TPMT_PUBLIC is refused: its size is part of the evidence)."""
    outer = _Reader(bytes(data), "TPM2B_PUBLIC")
    tpmt = outer.tpm2b("TPM2B_PUBLIC", MAX_PUBLIC)
    outer.end()
    reader = _Reader(tpmt, "TPMT_PUBLIC")
    key_type = reader.u16("type")
    if key_type not in (ALG.RSA, ALG.ECC):
        raise TPMStructureError(
            f"key type 0x{key_type:04x} is not RSA or ECC", code="unknown_algorithm", path=reader.path
        )
    name_alg = _hash_alg(reader, "nameAlg")
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
        ALG.NULL if scheme in (ALG.NULL, ALG.RSAES) else _hash_alg(reader, "parameters.scheme.hashAlg")
    )
    key = _read_rsa_key(reader) if key_type == ALG.RSA else _read_ecc_key(reader)
    reader.end()
    return Public(key_type, name_alg, attributes, policy, symmetric, scheme, scheme_hash, tpmt=tpmt, **key)


def _read_rsa_key(reader: _Reader) -> dict[str, Any]:
    return {
        "rsa_key_bits": reader.u16("parameters.keyBits"),
        "rsa_exponent": reader.u32("parameters.exponent"),
        "rsa_modulus": reader.tpm2b("unique.rsa", MAX_RSA_KEY_BYTES),
    }


def _read_ecc_key(reader: _Reader) -> dict[str, Any]:
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
