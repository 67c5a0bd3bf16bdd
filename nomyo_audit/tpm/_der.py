"""A small, bounded DER reader for the parts of X.509 that real TPM certificates get wrong.

``cryptography`` parses X.509 strictly, and some real EK certificates break it (trailing NV-index
padding, Name SETs out of DER order, non-minimal INTEGERs). This reader walks tag-length-value
triples with definite lengths only, never reads past its buffer, and raises
:class:`~nomyo_audit.errors.CertificateError` (``cert_malformed``) for anything it cannot read,
so the certificate layer can see the raw TBS bytes and the raw extension values exactly as they
were signed. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import CertificateError

__all__ = [
    "BOOLEAN",
    "INTEGER",
    "OID",
    "SEQUENCE",
    "SET",
    "TLV",
    "decode_oid",
    "decode_time",
    "encode_tlv",
    "read_all",
    "read_one",
]

BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, OID = 0x01, 0x02, 0x03, 0x04, 0x06
SEQUENCE, SET = 0x30, 0x31
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
_MAX_LENGTH_OCTETS = 4  # 4 GiB: far beyond anything the callers accept (they bound inputs first)


def malformed(what: str) -> CertificateError:
    """The one error of this module: the bytes are not the DER they should be."""
    return CertificateError(f"malformed certificate: {what}", code="cert_malformed")


@dataclass(frozen=True)
class TLV:
    """One DER element: its tag byte, its value, and the exact bytes it was read from."""

    tag: int
    value: bytes
    raw: bytes

    def children(self) -> list[TLV]:
        """The elements of a constructed value (SEQUENCE, SET, [n] constructed)."""
        if not self.tag & 0x20:
            raise malformed(f"tag 0x{self.tag:02x} is not constructed")
        return read_all(self.value)


def read_one(data: bytes, offset: int = 0) -> tuple[TLV, int]:
    """The element at ``offset`` and the offset just after it."""
    if offset + 2 > len(data):
        raise malformed("truncated element")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise malformed("multi-byte tags are not used in X.509")
    first = data[offset + 1]
    position = offset + 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > _MAX_LENGTH_OCTETS:
            raise malformed("indefinite or oversized length")
        if position + count > len(data):
            raise malformed("truncated length")
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    end = position + length
    if end > len(data):
        raise malformed("element longer than its container")
    return TLV(tag, data[position:end], data[offset:end]), end


def read_all(data: bytes) -> list[TLV]:
    """Every element of ``data``, which must hold nothing else."""
    elements, offset = [], 0
    while offset < len(data):
        element, offset = read_one(data, offset)
        elements.append(element)
    return elements


def encode_tlv(tag: int, value: bytes) -> bytes:
    """``tag`` and ``value`` as one DER element (minimal length octets)."""
    size = len(value)
    if size < 0x80:
        return bytes([tag, size]) + value
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(octets)]) + octets + value


def decode_oid(element: TLV) -> str:
    """The dotted string of an OBJECT IDENTIFIER."""
    if element.tag != OID or not element.value or element.value[-1] & 0x80:
        raise malformed("bad object identifier")
    arcs, current = [], 0
    for byte in element.value:
        current = (current << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(current)
            current = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in [first, arcs[0] - 40 * first, *arcs[1:]])


def decode_time(element: TLV) -> datetime:
    """A UTCTime or GeneralizedTime in the ``YY(YY)MMDDHHMMSSZ`` form RFC 5280 requires."""
    text = element.value.decode("ascii", "replace")
    try:
        if element.tag == UTC_TIME and len(text) == 13 and text.endswith("Z"):
            year = int(text[:2])
            parsed = datetime.strptime(
                f"{1900 + year if year >= 50 else 2000 + year}{text[2:12]}", "%Y%m%d%H%M%S"
            )
        elif element.tag == GENERALIZED_TIME and len(text) == 15 and text.endswith("Z"):
            parsed = datetime.strptime(text[:14], "%Y%m%d%H%M%S")
        else:
            raise ValueError(text)
    except ValueError:
        raise malformed("bad validity time") from None
    return parsed.replace(tzinfo=timezone.utc)
