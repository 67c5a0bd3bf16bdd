"""Turn ``_metadata.tpm_attestation`` into a :class:`Verdict`: pure, no I/O.

Rules, in the order they are applied:

1. No evidence (block missing, or ``is_available`` false) is a failing
   ``attestation_present`` finding, never a silent pass.
2. Every field is decoded and every structure parsed strictly; malformed
   evidence is a failing finding with the parser's code, not an exception.
3. The signature over the quote bytes is checked first, with the scheme and
   hash the signature names (which must be the AIK's own scheme). Nothing in
   an unsigned quote is believed: later checks are then ``skip``/``not_reached``.
4. The signed structure must be a quote (magic, type), signed by this AIK
   (qualifiedSigner = the AIK's name), and the AIK must be a restricted
   signing key: an unrestricted key can sign a forged TPMS_ATTEST.
5. The quoted PCR selection must equal ``pcr_banks``, and the digest of
   ``pcr_values`` (selection order: banks as listed, indices ascending),
   computed with the *signature's* hash, must equal pcrDigest.
6. extraData must match an accepted nonce derivation (:mod:`.binding`).
7. Recorded, never passed: whether the clock is ``safe``, that an AIK
   without a certificate chain is not anchored to a hardware root of trust,
   and a software attester's own label.

``result`` is ``"pass"`` only when no finding failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import sys
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal, NamedTuple

from ..errors import EvidenceError
from ._binding import DERIVATIONS, match_derivation
from ._keys import PublicKey, public_key_fingerprint, to_crypto_key, verify_signature
from ._structures import (
    ALG,
    HASH_BY_NAME,
    HASH_NAMES,
    HASH_SIZES,
    HIERARCHIES,
    TPM_ST_ATTEST_QUOTE,
    ObjectAttributes,
    PCRSelection,
    Public,
    Signature,
    TPMSAttest,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_value_map,
    selection_text,
)

__all__ = ["Finding", "Status", "Verdict", "parse_pcr_banks", "verify_attestation"]

Status = Literal["pass", "fail", "skip"]

#: Every check, in order. A verdict has exactly one finding for each.
CHECKS = (
    "attestation_present",
    "evidence_format",
    "signature",
    "quote_structure",
    "signer_name",
    "aik_attributes",
    "pcr_selection",
    "pcr_digest",
    "nonce_binding",
    "clock_safe",
    "aik_anchor",
    "attester",
)
_CHECK_INDEX = {check: i for i, check in enumerate(CHECKS)}
_MAX_B64 = 8192
#: banks joined by "+", each "name:" and its indices; a bank with no PCR selected is "name:"
_BANKS = re.compile(r"^[a-z0-9]+:(\d{1,2}(,\d{1,2})*)?(\+[a-z0-9]+:(\d{1,2}(,\d{1,2})*)?)*$")


class Finding(NamedTuple):
    """One check's outcome; ``code`` is stable, ``detail`` is for people."""

    check: str
    status: Status
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "code": self.code, "detail": self.detail}


class Verdict(NamedTuple):
    """One finding per check, what the evidence showed, and the overall result.

    Built by :func:`verify_attestation` only; ``failures`` is derived from
    ``findings`` there, once, because gating and reporting ask for it on
    every request.
    """

    findings: tuple[Finding, ...]
    payload_id: str | None
    facts: Mapping[str, Any]
    #: SHA-256 of the response content the binding was checked against, if any.
    content_digest: bytes | None
    #: the findings whose status is "fail", in check order
    failures: tuple[Finding, ...]

    @property
    def result(self) -> Literal["pass", "fail"]:
        return "fail" if self.failures else "pass"

    @property
    def passed(self) -> bool:
        return not self.failures

    def finding(self, check: str) -> Finding:
        return self.findings[_CHECK_INDEX[check]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "payload_id": self.payload_id,
            "findings": [f.to_dict() for f in self.findings],
            "facts": dict(self.facts),
            "content_digest": self.content_digest.hex() if self.content_digest is not None else None,
        }


class _Checks:
    """Collects findings; the checks not reached are filled in as ``skip``."""

    __slots__ = ("failed", "findings")

    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}
        #: whether any failing finding was added (most verdicts have none to look for)
        self.failed = False

    def put(self, finding: Finding) -> None:
        """Add a prebuilt finding (most passing findings never vary, so they are built once)."""
        self.findings[finding.check] = finding
        if finding.status == "fail":
            self.failed = True

    def skip(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "skip", code, detail)

    def fail(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "fail", code, detail)
        self.failed = True

    def done(
        self,
        payload_id: str | None,
        facts: dict[str, Any],
        reason: str = "",
        content_digest: bytes | None = None,
    ) -> Verdict:
        found = self.findings
        if len(found) != len(CHECKS):
            for check in CHECKS:
                if check not in found:
                    found[check] = Finding(check, "skip", "not_reached", reason or "not checked")
        findings = tuple(map(found.__getitem__, CHECKS))
        failures = tuple([f for f in findings if f.status == "fail"]) if self.failed else ()
        return Verdict(findings, payload_id, facts, content_digest, failures)


def parse_pcr_banks(text: str) -> tuple[PCRSelection, ...]:
    """``"sha256:0,7,10"`` (or ``"sha1:0+sha256:0,7"``) as selections, in the order given.

    A bank with no PCR selected is written ``"sha1:"``: a TPM echoes every bank it was asked
    for, so such a bank appears in quotes (``"sha1:+sha256:0,7"``).
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

    def _strict_b64decode(value: str) -> bytes:
        return binascii.a2b_base64(value, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _strict_b64decode(value: str) -> bytes:
        return base64.b64decode(value, validate=True)


def _b64(block: Mapping[str, Any], name: str) -> bytes:
    value = block.get(name)
    if type(value) is str and len(value) <= _MAX_B64:
        try:
            return _strict_b64decode(value)
        except (binascii.Error, ValueError):
            pass
    return _decode(_b64_text(block, name), name)  # raises the precise error


def _b64_text(block: Mapping[str, Any], name: str) -> str:
    value = block.get(name)
    if not isinstance(value, str):
        raise EvidenceError(f"{name} is missing or not a string", code="missing_field")
    if len(value) > _MAX_B64:
        raise EvidenceError(f"{name} is {len(value)} characters, over {_MAX_B64}", code="size_limit")
    return value


def _decode(value: str, name: str) -> bytes:
    try:
        return _strict_b64decode(value)
    except (binascii.Error, ValueError):
        raise EvidenceError(f"{name} is not valid base64", code="bad_base64") from None


def _pcr_values(
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
_HASH_FUNCTIONS = {
    ALG.SHA1: hashlib.sha1,
    ALG.SHA256: hashlib.sha256,
    ALG.SHA384: hashlib.sha384,
    ALG.SHA512: hashlib.sha512,
}


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


def verify_attestation(
    tpm_attestation: Mapping[str, Any] | None,
    payload_id: str | None,
    *,
    content_digest: bytes | None = None,
    accept_derivations: tuple[str, ...] = DERIVATIONS,
    expected_nonce: bytes | None = None,
) -> Verdict:
    """Appraise one ``tpm_attestation`` block for the request ``payload_id``.

    ``content_digest`` (from :func:`.binding.response_content_digest`)
    enables the project's response binding; ``expected_nonce`` replaces the
    derivations with one exact extraData (attest-before-send).
    """
    checks = _Checks()
    if not isinstance(tpm_attestation, Mapping) or not tpm_attestation.get("is_available"):
        checks.fail("attestation_present", "no_attestation", "the response carries no TPM attestation")
        return checks.done(payload_id, {}, "no attestation")
    checks.put(_PRESENT)

    try:
        quote_bytes = _b64(tpm_attestation, "quote_b64")
        signature_bytes = _b64(tpm_attestation, "signature_b64")
        material = _aik_material(_b64_text(tpm_attestation, "aik_pubkey_b64"))
        signature = parse_signature(signature_bytes)
        attest = parse_attest(quote_bytes)
        # pcr_banks describes a quote: a structure of another type is refused by type, not by this
        claimed = (
            parse_pcr_banks(tpm_attestation.get("pcr_banks"))  # type: ignore[arg-type]
            if attest.type == TPM_ST_ATTEST_QUOTE
            else ()
        )
    except EvidenceError as exc:
        checks.fail("evidence_format", exc.code, exc.message)
        return checks.done(payload_id, {}, "evidence could not be parsed")
    described = _describe_signature(signature.sig_alg, signature.hash_alg)
    shape = (attest.encoding, signature.sig_alg, signature.hash_alg, attest.type)
    known = material.facts_by_shape.get(shape)
    if known is None:
        known = {
            "quote_encoding": attest.encoding,
            **material.facts,
            **described.facts,
            "attest_type": attest.type_name,
        }
        if len(material.facts_by_shape) < 16:  # an honest router uses one or two shapes
            material.facts_by_shape[shape] = known
    facts: dict[str, Any] = known.copy()
    checks.put(material.parsed[attest.encoding])

    if (signature.sig_alg, signature.hash_alg) not in material.schemes:
        _scheme_mismatch(material.public, signature, checks)
        return checks.done(payload_id, facts, "the signature did not verify")
    if not verify_signature(material.key, signature, attest.raw):
        checks.fail("signature", "signature_invalid", "the quote's signature does not verify with the AIK")
        return checks.done(payload_id, facts, "the signature did not verify")
    checks.put(described.valid)

    _check_structure(attest, material, checks)
    clock = attest.clock_info
    facts["clock"] = clock.clock
    facts["reset_count"] = clock.reset_count
    facts["restart_count"] = clock.restart_count
    facts["firmware_version"] = attest.firmware_version
    if attest.type == TPM_ST_ATTEST_QUOTE:
        _check_pcrs(tpm_attestation, attest, signature, claimed, checks, facts)
        _check_nonce(attest, payload_id, content_digest, accept_derivations, expected_nonce, checks, facts)
        checks.put(_CLOCK_SAFE if clock.safe else _CLOCK_NOT_SAFE)
    checks.put(_NOT_ANCHORED)
    attester = tpm_attestation.get("attester")
    if attester == "software":
        checks.put(_SOFTWARE_ATTESTER)
    elif isinstance(attester, str) and attester:
        checks.put(_declared_attester(attester[:32]))
    else:
        checks.put(_UNLABELLED_ATTESTER)
    return checks.done(payload_id, facts, "the signed structure is not a quote", content_digest)


# The findings that never vary, built once.
_PRESENT = Finding("attestation_present", "pass", "present", "a TPM quote is attached")
_QUOTE = Finding("quote_structure", "pass", "quote", "TPM_GENERATED_VALUE magic and TPM_ST_ATTEST_QUOTE type")
_EXACT_NONCE = Finding("nonce_binding", "pass", "nonce_matches", "extraData equals the expected nonce")
_CLOCK_SAFE = Finding("clock_safe", "pass", "clock_safe", "clockInfo.safe is set")
_CLOCK_NOT_SAFE = Finding(
    "clock_safe", "skip", "clock_not_safe", "clockInfo.safe is clear: the clock may have gone back"
)
_NOT_ANCHORED = Finding(
    "aik_anchor",
    "skip",
    "aik_not_anchored",
    "AIK not anchored to a hardware root of trust: no certificate chain, so the quote proves "
    "consistency, not genuine hardware",
)
_SOFTWARE_ATTESTER = Finding(
    "attester", "skip", "software_attester", "the router says this quote came from a software attester"
)
_UNLABELLED_ATTESTER = Finding(
    "attester", "skip", "attester_unlabelled", "the evidence does not say what produced it"
)
_SCHEME_NAMES = {ALG.RSASSA: "rsassa", ALG.RSAPSS: "rsapss", ALG.ECDSA: "ecdsa"}


class _SignatureDescription(NamedTuple):
    facts: dict[str, str]
    valid: Finding


@lru_cache(maxsize=32)
def _describe_signature(sig_alg: int, hash_alg: int) -> _SignatureDescription:
    scheme, hash_name = _SCHEME_NAMES[sig_alg], HASH_NAMES[hash_alg]
    return _SignatureDescription(
        {"signature_scheme": scheme, "signature_hash": hash_name},
        Finding("signature", "pass", "signature_valid", f"{scheme}-{hash_name} over the quote"),
    )


class _AikMaterial(NamedTuple):
    public: Public
    key: PublicKey
    #: aik_name, aik_fingerprint and aik_type, as the verdict's facts record them
    facts: dict[str, str]
    #: qualifiedSigner value -> the passing signer_name finding for it
    signers: dict[bytes, Finding]
    #: the aik_attributes finding, which depends on the AIK alone
    attributes: Finding
    #: quote encoding -> the passing evidence_format finding
    parsed: dict[str, Finding]
    #: the (sigAlg, hashAlg) pairs that fit this AIK
    schemes: frozenset[tuple[int, int]]
    #: (encoding, sigAlg, hashAlg, attest type) -> the facts that follow from them and the AIK
    facts_by_shape: dict[tuple[str, int, int, int], dict[str, Any]]


@lru_cache(maxsize=256)
def _aik_material(aik_b64: str) -> _AikMaterial:
    """Everything derived from an AIK alone: AIKs repeat across responses, so this is cached.

    The cache is keyed by the exact ``aik_pubkey_b64`` text, so it holds only
    pure functions of it; the signature is still checked for every quote.
    """
    aik = parse_public(_decode(aik_b64, "aik_pubkey_b64"))
    key = to_crypto_key(aik)
    aik_type = "rsa" if aik.type == ALG.RSA else "ecc"
    signers = {
        aik.qualified_name(handle): Finding(
            "signer_name",
            "pass",
            "signer_matches",
            f"qualifiedSigner is the AIK's qualified name as a primary key in the {hierarchy} hierarchy",
        )
        for hierarchy, handle in HIERARCHIES.items()
    }
    signers[aik.name] = Finding("signer_name", "pass", "signer_matches", "qualifiedSigner is the AIK's name")
    parsed = {
        encoding: Finding("evidence_format", "pass", "parsed", f"quote as {encoding}, {aik_type} AIK")
        for encoding in ("TPMS_ATTEST", "TPM2B_ATTEST")
    }
    facts = {
        "aik_name": aik.name.hex(),
        "aik_fingerprint": public_key_fingerprint(key),
        "aik_type": aik_type,
    }
    return _AikMaterial(aik, key, facts, signers, _aik_attributes(aik), parsed, _schemes(aik), {})


def _aik_attributes(aik: Public) -> Finding:
    missing = ObjectAttributes.ATTESTATION_KEY & ~aik.object_attributes
    if missing:
        return Finding(
            "aik_attributes",
            "fail",
            "aik_not_restricted" if missing & ObjectAttributes.RESTRICTED else "aik_attributes",
            f"the AIK lacks {', '.join(ObjectAttributes.names(missing))}: such a key can sign forged quotes",
        )
    if aik.object_attributes & ObjectAttributes.DECRYPT:
        return Finding("aik_attributes", "fail", "aik_attributes", "the AIK is also a decryption key")
    return Finding(
        "aik_attributes",
        "pass",
        "restricted_signing_key",
        "restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin",
    )


def _schemes(aik: Public) -> frozenset[tuple[int, int]]:
    """The (sigAlg, hashAlg) pairs a signature by this AIK may use: its own scheme, or any that fits
    its key type when the AIK's scheme is NULL."""
    if aik.scheme != ALG.NULL:
        return frozenset({(aik.scheme, aik.scheme_hash)})
    algorithms = (ALG.RSASSA, ALG.RSAPSS) if aik.type == ALG.RSA else (ALG.ECDSA,)
    return frozenset((algorithm, hash_alg) for algorithm in algorithms for hash_alg in HASH_SIZES)


def _scheme_mismatch(aik: Public, signature: Signature, checks: _Checks) -> None:
    if (aik.type == ALG.RSA) != (signature.sig_alg in (ALG.RSASSA, ALG.RSAPSS)):
        checks.fail("signature", "scheme_mismatch", "the signature scheme does not fit the AIK's key type")
    else:
        checks.fail(
            "signature", "scheme_mismatch", "the signature uses another scheme or hash than the AIK's"
        )


def _check_structure(attest: TPMSAttest, material: _AikMaterial, checks: _Checks) -> None:
    if attest.type != TPM_ST_ATTEST_QUOTE:
        checks.fail("quote_structure", "not_a_quote", f"the AIK signed a {attest.type_name}, not a quote")
    else:
        checks.put(_QUOTE)
    signer = material.signers.get(attest.qualified_signer)
    if signer is not None:
        checks.put(signer)
    else:
        checks.fail(
            "signer_name",
            "signer_mismatch",
            "qualifiedSigner is neither the AIK's name nor its qualified name as a primary key "
            "(a child key's qualified name depends on parents the evidence does not carry)",
        )
    checks.put(material.attributes)


def _check_pcrs(
    block: Mapping[str, Any],
    attest: TPMSAttest,
    signature: Signature,
    claimed: tuple[PCRSelection, ...],
    checks: _Checks,
    facts: dict[str, Any],
) -> None:
    quoted = attest.pcr_select
    covered = _covered(quoted)
    facts["pcr_banks"] = covered.text
    stated = _covered(claimed)
    if covered.banks != stated.banks:
        checks.fail(
            "pcr_selection",
            "pcr_selection_mismatch",
            f"pcr_banks says {stated.text} but the quote covers {covered.text}",
        )
        checks.skip("pcr_digest", "not_reached", "the PCR selection does not match")
        return
    checks.put(covered.matches)
    try:
        values, recorded = _pcr_values(block, quoted)
    except EvidenceError as exc:
        checks.fail("pcr_digest", exc.code, exc.message)
        return
    # The digest uses the signing scheme's hash, whatever the banks' hashes are.
    if _HASH_FUNCTIONS[signature.hash_alg](b"".join(values)).digest() != attest.pcr_digest:
        checks.fail("pcr_digest", "pcr_digest_mismatch", "the PCR values do not hash to the quoted pcrDigest")
        return
    facts["pcr_values"] = recorded
    checks.put(covered.digest_matches)


class _Coverage(NamedTuple):
    #: (hash_alg, indices) per bank: what a selection means, whatever its bitmap's width
    banks: tuple[tuple[int, tuple[int, ...]], ...]
    text: str
    matches: Finding
    digest_matches: Finding


@lru_cache(maxsize=64)
def _covered(quoted: tuple[PCRSelection, ...]) -> _Coverage:
    """What a quoted selection is called, and the findings when it is proved."""
    text = selection_text(quoted)
    count = sum(len(s.indices) for s in quoted)
    return _Coverage(
        tuple((s.hash_alg, s.indices) for s in quoted),
        text,
        Finding("pcr_selection", "pass", "pcr_selection_matches", f"the quote covers {text}"),
        Finding("pcr_digest", "pass", "pcr_digest_matches", f"{count} PCR values hash to pcrDigest"),
    )


def _check_nonce(
    attest: TPMSAttest,
    payload_id: str | None,
    content_digest: bytes | None,
    accept: tuple[str, ...],
    expected_nonce: bytes | None,
    checks: _Checks,
    facts: dict[str, Any],
) -> None:
    if expected_nonce is not None:
        if hmac.compare_digest(attest.extra_data, expected_nonce):
            facts["nonce_derivation"] = "exact"
            checks.put(_EXACT_NONCE)
        else:
            checks.fail("nonce_binding", "nonce_mismatch", "extraData is not the expected nonce")
        return
    if payload_id is None:
        checks.fail(
            "nonce_binding", "nonce_unverifiable", "no payload_id to check the quote's binding against"
        )
        return
    try:
        derivation = match_derivation(attest.extra_data, payload_id, content_digest, accept)
    except UnicodeEncodeError:  # a lone surrogate: no request could have had this payload_id
        checks.fail("nonce_binding", "nonce_unverifiable", "the payload_id is not valid Unicode text")
        return
    if derivation is None:
        tried = [d for d in accept if d != "nomyo-audit-v1" or content_digest is not None]
        checks.fail(
            "nonce_binding",
            "nonce_mismatch",
            f"extraData matches none of {', '.join(tried)} for this payload_id"
            + ("" if content_digest is not None else " (response content not available)"),
        )
        return
    facts["nonce_derivation"] = derivation
    checks.put(_bound_by(derivation))


@lru_cache(maxsize=32)
def _declared_attester(label: str) -> Finding:
    return Finding("attester", "skip", "attester_declared", f"the router says the quote came from {label!r}")


@lru_cache(maxsize=16)
def _bound_by(derivation: str) -> Finding:
    return Finding("nonce_binding", "pass", "nonce_matches", f"extraData binds this request ({derivation})")
