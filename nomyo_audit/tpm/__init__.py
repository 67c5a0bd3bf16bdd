"""The TPM quote verifier: pure Python, no I/O, no TPM and no TSS library needed.

:func:`verify_attestation` appraises a response's ``_metadata.tpm_attestation``
block (a TPM 2.0 quote, its signature and the AIK that made it) and returns a
:class:`Verdict`: one :class:`Finding` per check, and the facts the evidence
showed (:class:`VerdictFacts`), and the event logs it replayed against the quote
(:class:`Measurements`, :mod:`nomyo_audit.eventlog`). It never raises for bad evidence: malformed or
forged evidence is a failing finding with a stable code.

The parsers it is built on are public too, for tools that read TPM structures
(:func:`parse_attest`, :func:`parse_signature`, :func:`parse_public`,
:func:`parse_pcr_selection_list`, :func:`parse_pcr_banks`); so are the binding
functions that say what a quote's extraData must hold (docs/protocol.md), and
:func:`to_ear`, a verdict as an IETF RATS attestation result.

This package never imports :mod:`nomyo_audit.attest` (where evidence is made),
so an auditor who only verifies never reaches attester code.
"""

from ._ak_certificate import AkChainValidation, build_ak_certificate, validate_ak_chain
from ._attest import ClockInfo, TPMSAttest, parse_attest
from ._binding import (
    DERIVATIONS,
    key_binding,
    match_derivation,
    recorded_content_digest,
    response_binding,
    response_content_digest,
)
from ._credential import Credential, make_credential, parse_credential
from ._ear import EAT_PROFILE, to_ear
from ._ek_certificate import (
    ChainValidation,
    EkCertificate,
    ek_matches_public,
    parse_ek_certificate,
    validate_ek_chain,
)
from ._evidence import parse_pcr_banks
from ._keys import public_key_fingerprint
from ._marshal import TPMStructureError
from ._pcr_selection import PCRSelection, parse_pcr_selection_list, selection_text
from ._public import EccPoint, ObjectAttributes, Public, parse_public
from ._signature import Signature, parse_signature
from ._trust_store import TrustStore
from ._verdict import CHECKS, Finding, Measurements, Status, Verdict, VerdictFacts
from ._verify import verify_attestation

__all__ = [
    "CHECKS",
    "DERIVATIONS",
    "EAT_PROFILE",
    "AkChainValidation",
    "ChainValidation",
    "ClockInfo",
    "Credential",
    "EccPoint",
    "EkCertificate",
    "Finding",
    "Measurements",
    "ObjectAttributes",
    "PCRSelection",
    "Public",
    "Signature",
    "Status",
    "TPMSAttest",
    "TPMStructureError",
    "TrustStore",
    "Verdict",
    "VerdictFacts",
    "build_ak_certificate",
    "ek_matches_public",
    "key_binding",
    "make_credential",
    "match_derivation",
    "parse_attest",
    "parse_credential",
    "parse_ek_certificate",
    "parse_pcr_banks",
    "parse_pcr_selection_list",
    "parse_public",
    "parse_signature",
    "public_key_fingerprint",
    "recorded_content_digest",
    "response_binding",
    "response_content_digest",
    "selection_text",
    "to_ear",
    "validate_ak_chain",
    "validate_ek_chain",
    "verify_attestation",
]
