"""TPML_PCR_SELECTION: which PCRs of which banks a quote covers, and how evidence writes them.

Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from ._marshal import (
    BITS,
    HASH_NAMES,
    MAX_PCR_BANKS,
    MAX_PCR_SELECT,
    Reader,
    TPMStructureError,
    read_hash_alg,
    u16,
    u32,
)

__all__ = [
    "PCRSelection",
    "marshal_pcr_selection_list",
    "parse_pcr_selection_list",
    "pcr_value_map",
    "read_pcr_selection_list",
    "selection_text",
]


class PCRSelection(NamedTuple):
    """One bank's selection: hash algorithm and the selected PCR indices."""

    hash_alg: int
    indices: tuple[int, ...]
    size_of_select: int = 3

    @property
    def bank(self) -> str:
        """The bank's name, ``"sha256"`` for example."""
        return HASH_NAMES[self.hash_alg]

    def marshal(self) -> bytes:
        """As a TPMS_PCR_SELECTION, with a bitmap of :attr:`size_of_select` bytes."""
        bitmap = bytearray(self.size_of_select)
        for index in self.indices:
            bitmap[index // 8] |= 1 << (index % 8)
        return u16(self.hash_alg) + bytes([self.size_of_select]) + bytes(bitmap)


def read_pcr_selection_list(reader: Reader) -> tuple[PCRSelection, ...]:
    count = reader.u32("pcrSelect.count")
    if count > MAX_PCR_BANKS:
        raise TPMStructureError(
            f"pcrSelect lists {count} banks, over the limit of {MAX_PCR_BANKS}",
            code="size_limit",
            path=reader.path,
        )
    selections = []
    for i in range(count):
        alg = read_hash_alg(reader, "pcrSelect[].hash")
        size = reader.u8("pcrSelect[].sizeofSelect")
        if size > MAX_PCR_SELECT:
            raise TPMStructureError(
                f"pcrSelect[{i}].sizeofSelect {size} is over {MAX_PCR_SELECT}",
                code="size_limit",
                path=reader.path,
            )
        bitmap = reader.take(size, "pcrSelect[].pcrSelect")
        indices = tuple(b * 8 + bit for b, byte in enumerate(bitmap) for bit in BITS[byte])
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
    """As a TPML_PCR_SELECTION: what a TPM is asked to quote."""
    return u32(len(selections)) + b"".join(s.marshal() for s in selections)


def parse_pcr_selection_list(data: bytes) -> tuple[PCRSelection, ...]:
    """Unmarshal a complete TPML_PCR_SELECTION. Raises :class:`TPMStructureError` if malformed."""
    reader = Reader(bytes(data), "TPML_PCR_SELECTION")
    result = read_pcr_selection_list(reader)
    reader.end()
    return result
