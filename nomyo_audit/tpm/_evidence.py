"""Reading a ``tpm_attestation`` block's fields: base64, ``pcr_banks`` and ``pcr_values``. Pure, no I/O.

The block is attacker-controlled JSON: every reader here bounds its input and
raises :class:`nomyo_audit.errors.EvidenceError` with a stable ``code`` for
anything malformed. Fast paths take the evidence a router writes; anything
unexpected goes to a careful path that says exactly what is wrong (both
accept the same input: tests/test_verify_differential.py).
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from ..errors import EvidenceError
from ._marshal import HASH_BY_NAME, HASH_NAMES, HASH_SIZES
from ._pcr_selection import PCRSelection, pcr_value_map

__all__ = [
    "MAX_B64",
    "b64_field",
    "b64_text",
    "decode_b64",
    "parse_pcr_banks",
    "read_pcr_values",
    "strict_b64decode",
]

#: The longest base64 field read (a TPM structure is at most a few hundred bytes)
MAX_B64 = 8192
#: banks joined by "+", each "name:" and its indices; a bank with no PCR selected is "name:"
_BANKS = re.compile(r"^[a-z0-9]+:(\d{1,2}(,\d{1,2})*)?(\+[a-z0-9]+:(\d{1,2}(,\d{1,2})*)?)*$")


def parse_pcr_banks(text: str) -> tuple[PCRSelection, ...]:
    """``"sha256:0,7,10"`` (or ``"sha1:0+sha256:0,7"``) as selections, in the order given.

    A bank with no PCR selected is written ``"sha1:"``: a TPM echoes every bank it was asked
    for, so such a bank appears in quotes (``"sha1:+sha256:0,7"``). Raises
    :class:`nomyo_audit.errors.EvidenceError` (code ``pcr_banks_format``) for any other text:
    an unknown bank, an index over 31, an index given twice.
    """
    if not isinstance(text, str):
        raise EvidenceError("pcr_banks is missing or not a string", code="pcr_banks_format")
    return _parse_pcr_banks(text)


@lru_cache(maxsize=64)
def _parse_pcr_banks(text: str) -> tuple[PCRSelection, ...]:
    if not isinstance(text, str) or not _BANKS.match(text.strip().lower()):
        raise EvidenceError(
            f"pcr_banks {str(text)[:40]!r} is not like 'sha256:0,7,10'", code="pcr_banks_format"
        )
    selections = []
    for part in text.strip().lower().split("+"):
        bank, _, indices = part.partition(":")
        if bank not in HASH_BY_NAME:
            raise EvidenceError(f"pcr_banks names unknown bank {bank!r}", code="pcr_banks_format")
        numbers = [int(i) for i in indices.split(",")] if indices else []
        if any(n > 31 for n in numbers) or len(set(numbers)) != len(numbers):
            raise EvidenceError(
                f"pcr_banks {part!r}: indices must be distinct and 0-31", code="pcr_banks_format"
            )
        # the bitmap a TPM uses: 3 bytes for PCRs 0-23, 4 when a higher one is selected
        width = 4 if numbers and max(numbers) > 23 else 3
        selections.append(PCRSelection(HASH_BY_NAME[bank], tuple(sorted(numbers)), width))
    return tuple(selections)


if sys.version_info >= (3, 11):

    def strict_b64decode(value: str | bytes) -> bytes:
        return binascii.a2b_base64(value, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def strict_b64decode(value: str | bytes) -> bytes:
        return base64.b64decode(value, validate=True)


def b64_field(block: Mapping[str, Any], name: str) -> bytes:
    value = block.get(name)
    if type(value) is str and len(value) <= MAX_B64:
        try:
            return strict_b64decode(value)
        except (binascii.Error, ValueError):
            pass
    return decode_b64(b64_text(block, name), name)  # raises the precise error


def b64_text(block: Mapping[str, Any], name: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise EvidenceError(f"{name} is missing or not a string", code="missing_field")
    if len(value) > MAX_B64:
        raise EvidenceError(f"{name} is {len(value)} characters, over {MAX_B64}", code="size_limit")
    return value


def decode_b64(value: str, name: str) -> bytes:
    try:
        return strict_b64decode(value)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{name} is not valid base64", code="bad_base64") from None


def read_pcr_values(
    block: Mapping[str, Any], selections: tuple[PCRSelection, ...]
) -> tuple[list[bytes], dict[str, dict[str, str]]]:
    """The values for the selection, in selection order, each checked for its bank's length.

    A fast pass handles well-formed values; anything unexpected goes to the
    careful pass, which says exactly what is wrong (both accept the same input).
    Also returns the values as recorded in the verdict: ``{bank: {index: hex}}``.
    """
    values = block.get("pcr_values")
    fast = _pcr_values_fast(values, selections)
    if fast is not None:
        return fast
    ordered = _pcr_values_careful(values, selections)
    return ordered, pcr_value_map(selections, ordered)


def _pcr_values_fast(
    values: object, selections: tuple[PCRSelection, ...]
) -> tuple[list[bytes], dict[str, dict[str, str]]] | None:
    """``pcr_values`` exactly as a router writes them; None when the careful pass must say why."""
    if type(values) is not dict or len(values) != len(selections):
        return None
    ordered = []
    recorded: dict[str, dict[str, str]] = {}
    try:
        for selection in selections:
            bank = HASH_NAMES[selection.hash_alg]
            entries = values[bank]
            if type(entries) is not dict or len(entries) != len(selection.indices):
                return None
            size = HASH_SIZES[selection.hash_alg]
            copied = recorded[bank] = {}
            for index in selection.indices:
                key = _INDEX_KEYS[index]
                digest = bytes.fromhex(entries[key])
                if len(digest) != size:
                    return None
                ordered.append(digest)
                copied[key] = digest.hex()
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    # a bank the selection lists twice leaves room in ``values`` for one it does not list
    return (ordered, recorded) if len(recorded) == len(values) else None


_INDEX_KEYS = tuple(str(i) for i in range(32))


def _pcr_values_careful(values: object, selections: tuple[PCRSelection, ...]) -> list[bytes]:
    """Every entry checked and named: a bank by its name (``sha256``), a PCR by its index as
    ``str`` writes it (``7``). Any other spelling (``SHA256``, ``07``) is refused, not matched:
    it could give a second value for one PCR."""
    if not isinstance(values, Mapping):
        raise EvidenceError("pcr_values is missing or not an object", code="missing_field")
    selected: dict[str, set[str]] = {}
    for selection in selections:
        selected.setdefault(HASH_NAMES[selection.hash_alg], set()).update(
            _INDEX_KEYS[i] for i in selection.indices
        )
    for bank, entries in values.items():
        where = f"pcr_values.{str(bank)[:16]}"
        if not isinstance(entries, Mapping):
            raise EvidenceError(f"{where} is not an object", code="pcr_value_format")
        quoted = selected.get(bank, set())
        for key in entries:
            if key in quoted:
                continue
            if _index(key) in {int(k) for k in quoted}:
                raise EvidenceError(
                    f"{where}.{str(key)[:4]} is not how an index is written (as {_index(key)})",
                    code="pcr_value_format",
                )
            raise EvidenceError(f"{where}.{str(key)[:4]} was not quoted", code="pcr_value_unquoted")
    ordered = []
    for selection in selections:
        bank = HASH_NAMES[selection.hash_alg]
        entries = values.get(bank, {})
        for index in selection.indices:
            value = entries.get(_INDEX_KEYS[index])
            if not isinstance(value, str):
                raise EvidenceError(f"pcr_values.{bank}.{index} is missing", code="pcr_value_missing")
            try:
                digest = bytes.fromhex(value)
            except ValueError:
                raise EvidenceError(
                    f"pcr_values.{bank}.{index} is not hex", code="pcr_value_format"
                ) from None
            if len(digest) != HASH_SIZES[selection.hash_alg]:
                raise EvidenceError(
                    f"pcr_values.{bank}.{index} is {len(digest)} bytes; a {bank} digest is "
                    f"{HASH_SIZES[selection.hash_alg]}",
                    code="pcr_value_format",
                )
            ordered.append(digest)
    return ordered


def _index(key: object) -> int:
    """The PCR a key would name if read as a number (to say why a spelling like "07" is refused)."""
    try:
        return int(str(key))
    except ValueError:
        return -1
