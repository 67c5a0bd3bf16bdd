"""TPM 2.0 structures for quote verification: marshal and unmarshal in pure Python.

One name for the structure modules, each with one job: :mod:`._marshal` (algorithm IDs,
limits, the bounded reader), :mod:`._pcr_selection`, :mod:`._attest`, :mod:`._signature`
and :mod:`._public`.

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

from ._attest import ClockInfo, TPMSAttest, parse_attest
from ._marshal import (
    ALG,
    ATTEST_TYPES,
    ECC_CURVES,
    HASH_BY_NAME,
    HASH_NAMES,
    HASH_SIZES,
    HIERARCHIES,
    MAX_ATTEST,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    TPMStructureError,
)
from ._pcr_selection import (
    PCRSelection,
    marshal_pcr_selection_list,
    parse_pcr_selection_list,
    pcr_value_map,
    selection_text,
)
from ._public import EccPoint, ObjectAttributes, Public, parse_public
from ._signature import Signature, parse_signature

__all__ = [
    "ALG",
    "ATTEST_TYPES",
    "ECC_CURVES",
    "HASH_BY_NAME",
    "HASH_NAMES",
    "HASH_SIZES",
    "HIERARCHIES",
    "MAX_ATTEST",
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
    "marshal_pcr_selection_list",
    "parse_attest",
    "parse_pcr_selection_list",
    "parse_public",
    "parse_signature",
    "pcr_value_map",
    "selection_text",
]
