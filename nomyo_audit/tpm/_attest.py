"""TPMS_ATTEST and TPM2B_ATTEST: the structure a TPM signs when it quotes. Pure, no I/O.

Two parsers accept the same quotes: a fast one for the well-formed quote a
router sends every time, and a careful one that says exactly what is wrong
(tests/test_verify_differential.py holds them to that).
"""

# No ``from __future__ import annotations``: the named tuples' fields stay real types, which
# documentation tools (pdoc) resolve: as strings they fail to resolve from NamedTuple's generated __new__.

import struct
from functools import lru_cache
from typing import NamedTuple

from ._marshal import (
    ATTEST_TYPES,
    MAX_ATTEST,
    MAX_DATA,
    MAX_DIGEST,
    MAX_NAME,
    MAX_PCR_BANKS,
    MAX_PCR_SELECT,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    U16,
    U32,
    Reader,
    TPMStructureError,
    read_yes_no,
    tpm2b,
    u16,
    u32,
)
from ._pcr_selection import (
    PCRSelection,
    marshal_pcr_selection_list,
    parse_pcr_selection_list,
    read_pcr_selection_list,
)

__all__ = ["ClockInfo", "TPMSAttest", "parse_attest"]


class ClockInfo(NamedTuple):
    """TPMS_CLOCK_INFO: the TPM's clock (milliseconds), its reset and restart counts, and whether
    the clock is known not to have gone back (``safe``)."""

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
        """The TPM_ST name of :attr:`type` (``"TPM_ST_ATTEST_QUOTE"``), or its value in hex."""
        name = ATTEST_TYPES.get(self.type)
        return name if name is not None else f"0x{self.type:04x}"

    def marshal(self) -> bytes:
        """As a TPMS_ATTEST: what an attester signs (tests forge quotes with it)."""
        body = (
            u32(self.magic)
            + u16(self.type)
            + tpm2b(self.qualified_signer)
            + tpm2b(self.extra_data)
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
            body += marshal_pcr_selection_list(self.pcr_select) + tpm2b(self.pcr_digest)
        return body


_QUOTE_HEAD = struct.Struct(">IH")
_CLOCK_FIRMWARE_COUNT = struct.Struct(">QIIBQI")  # clockInfo, firmwareVersion, pcrSelect.count
_QUOTE_MAGIC_TYPE = (TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE)
_MAGIC = U32.pack(TPM_GENERATED_VALUE)


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
        size = U16.unpack_from(data, 6)[0]
        pos = 8 + size
        if size > MAX_NAME or pos > end:
            return None
        signer = data[8:pos]
        size = U16.unpack_from(data, pos)[0]
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
        size = U16.unpack_from(data, pos)[0]
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
    Raises :class:`TPMStructureError` (with a ``code``) for anything malformed.
    """
    if type(data) is not bytes:
        data = bytes(data)
    encoding = "TPMS_ATTEST"
    if len(data) >= 6 and data[2:6] == _MAGIC and U16.unpack_from(data)[0] == len(data) - 2:
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
    reader = Reader(data, "TPMS_ATTEST")
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
        read_yes_no(reader, "clockInfo.safe"),
    )
    firmware = reader.u64("firmwareVersion")
    if attest_type != TPM_ST_ATTEST_QUOTE:
        return TPMSAttest(magic, attest_type, signer, extra, clock, firmware, encoding=encoding, raw=data)
    selections = read_pcr_selection_list(reader)
    digest = reader.tpm2b("pcrDigest", MAX_DIGEST)
    reader.end()
    return TPMSAttest(magic, attest_type, signer, extra, clock, firmware, selections, digest, encoding, data)
