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
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal, NamedTuple

from ..errors import EvidenceError
from .binding import DERIVATIONS, match_derivation
from .keys import PublicKey, public_key_fingerprint, to_crypto_key, verify_signature
from .structures import (
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
_BANKS = re.compile(r"^[a-z0-9]+:\d{1,2}(,\d{1,2})*(\+[a-z0-9]+:\d{1,2}(,\d{1,2})*)*$")


class Finding(NamedTuple):
    """One check's outcome; ``code`` is stable, ``detail`` is for people."""

    check: str
    status: Status
    code: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "code": self.code, "detail": self.detail}


@dataclass(frozen=True)
class Verdict:
    """One finding per check, what the evidence showed, and the overall result."""

    findings: tuple[Finding, ...]
    payload_id: str | None
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: SHA-256 of the response content the binding was checked against, if any.
    content_digest: bytes | None = None

    @cached_property
    def result(self) -> Literal["pass", "fail"]:
        return "fail" if self.failures else "pass"

    @property
    def passed(self) -> bool:
        return self.result == "pass"

    def finding(self, check: str) -> Finding:
        return self.findings[_CHECK_INDEX[check]]

    @cached_property
    def failures(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.status == "fail")

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

    def __init__(self) -> None:
        self.findings: dict[str, Finding] = {}

    def add(self, check: str, status: Status, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, status, code, detail)

    def ok(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "pass", code, detail)

    def fail(self, check: str, code: str, detail: str) -> None:
        self.findings[check] = Finding(check, "fail", code, detail)

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
        return Verdict(tuple(found[check] for check in CHECKS), payload_id, facts, content_digest)


def parse_pcr_banks(text: str) -> tuple[PCRSelection, ...]:
    """``"sha256:0,7,10"`` (or ``"sha1:0+sha256:0,7"``) as selections, in the order given."""
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
        numbers = [int(i) for i in indices.split(",")]
        if any(n > 31 for n in numbers) or len(set(numbers)) != len(numbers):
            raise EvidenceError(
                f"pcr_banks {part!r}: indices must be distinct and 0-31", code="pcr_banks_format"
            )
        selections.append(PCRSelection(HASH_BY_NAME[bank], tuple(sorted(numbers))))
    return tuple(selections)


if sys.version_info >= (3, 11):

    def _strict_b64decode(value: str) -> bytes:
        return binascii.a2b_base64(value, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    def _strict_b64decode(value: str) -> bytes:
        return base64.b64decode(value, validate=True)


def _b64(block: Mapping[str, Any], name: str) -> bytes:
    value = block.get(name)
    if not isinstance(value, str):
        raise EvidenceError(f"{name} is missing or not a string", code="missing_field")
    if len(value) > _MAX_B64:
        raise EvidenceError(f"{name} is {len(value)} characters, over {_MAX_B64}", code="size_limit")
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
    if type(values) is dict and len(values) == len(selections):
        ordered = []
        try:
            for selection in selections:
                entries = values[HASH_NAMES[selection.hash_alg]]
                if type(entries) is not dict or len(entries) != len(selection.indices):
                    break
                size = HASH_SIZES[selection.hash_alg]
                for index in selection.indices:
                    digest = bytes.fromhex(entries[_INDEX_KEYS[index]])
                    if len(digest) != size:
                        break
                    ordered.append(digest)
                else:
                    continue
                break
            else:
                return ordered, {
                    bank: {k: v.lower() for k, v in entries.items()} for bank, entries in values.items()
                }
        except (KeyError, TypeError, ValueError, AttributeError):
            pass
    ordered = _pcr_values_careful(values, selections)
    return ordered, pcr_value_map(selections, ordered)


_INDEX_KEYS = tuple(str(i) for i in range(32))
_HASH_FUNCTIONS = {
    ALG.SHA1: hashlib.sha1,
    ALG.SHA256: hashlib.sha256,
    ALG.SHA384: hashlib.sha384,
    ALG.SHA512: hashlib.sha512,
}


def _pcr_values_careful(values: object, selections: tuple[PCRSelection, ...]) -> list[bytes]:
    if not isinstance(values, Mapping):
        raise EvidenceError("pcr_values is missing or not an object", code="missing_field")
    selected = {(HASH_NAMES[s.hash_alg], i) for s in selections for i in s.indices}
    for bank, entries in values.items():
        if not isinstance(entries, Mapping):
            raise EvidenceError(f"pcr_values.{str(bank)[:16]} is not an object", code="pcr_value_format")
        for index in entries:
            if (str(bank).lower(), _index(index)) not in selected:
                raise EvidenceError(
                    f"pcr_values.{str(bank)[:16]}.{str(index)[:4]} was not quoted", code="pcr_value_unquoted"
                )
    ordered = []
    lowered = {str(k).lower(): v for k, v in values.items()}
    for selection in selections:
        bank = HASH_NAMES[selection.hash_alg]
        entries = {_index(k): v for k, v in lowered.get(bank, {}).items()}
        for index in selection.indices:
            value = entries.get(index)
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
    facts: dict[str, Any] = {}
    if not isinstance(tpm_attestation, Mapping) or not tpm_attestation.get("is_available"):
        checks.fail("attestation_present", "no_attestation", "the response carries no TPM attestation")
        return checks.done(payload_id, facts, "no attestation")
    checks.ok("attestation_present", "present", "a TPM quote is attached")

    try:
        quote_bytes = _b64(tpm_attestation, "quote_b64")
        signature_bytes = _b64(tpm_attestation, "signature_b64")
        aik_bytes = _b64(tpm_attestation, "aik_pubkey_b64")
        material = _aik_material(aik_bytes)
        aik, aik_key = material.public, material.key
        signature = parse_signature(signature_bytes)
        attest = parse_attest(quote_bytes)
        claimed_text = tpm_attestation.get("pcr_banks")
        claimed = parse_pcr_banks(claimed_text)  # type: ignore[arg-type]
    except EvidenceError as exc:
        checks.fail("evidence_format", exc.code, exc.message)
        return checks.done(payload_id, facts, "evidence could not be parsed")
    facts.update(
        quote_encoding=attest.encoding,
        aik_name=material.name_hex,
        aik_fingerprint=material.fingerprint,
        aik_type="rsa" if aik.type == ALG.RSA else "ecc",
        signature_scheme={ALG.RSASSA: "rsassa", ALG.RSAPSS: "rsapss", ALG.ECDSA: "ecdsa"}[signature.sig_alg],
        signature_hash=signature.hash_name,
        attest_type=attest.type_name,
    )
    checks.ok("evidence_format", "parsed", f"quote as {attest.encoding}, {facts['aik_type']} AIK")

    if not _signature_matches_key(aik, signature, checks):
        return checks.done(payload_id, facts, "the signature did not verify")
    if not verify_signature(aik_key, signature, attest.raw):
        checks.fail("signature", "signature_invalid", "the quote's signature does not verify with the AIK")
        return checks.done(payload_id, facts, "the signature did not verify")
    checks.ok(
        "signature", "signature_valid", f"{facts['signature_scheme']}-{signature.hash_name} over the quote"
    )

    _check_structure(attest, material, checks)
    facts.update(
        clock=attest.clock_info.clock,
        reset_count=attest.clock_info.reset_count,
        restart_count=attest.clock_info.restart_count,
        firmware_version=attest.firmware_version,
    )
    if attest.type == TPM_ST_ATTEST_QUOTE:
        _check_pcrs(tpm_attestation, attest, signature, claimed, checks, facts)
        _check_nonce(attest, payload_id, content_digest, accept_derivations, expected_nonce, checks, facts)
        if attest.clock_info.safe:
            checks.ok("clock_safe", "clock_safe", "clockInfo.safe is set")
        else:
            checks.add(
                "clock_safe",
                "skip",
                "clock_not_safe",
                "clockInfo.safe is clear: the clock may have gone back",
            )
    checks.add(
        "aik_anchor",
        "skip",
        "aik_not_anchored",
        "AIK not anchored to a hardware root of trust: no certificate chain, so the quote proves "
        "consistency, not genuine hardware",
    )
    attester = tpm_attestation.get("attester")
    if attester == "software":
        checks.add(
            "attester",
            "skip",
            "software_attester",
            "the router says this quote came from a software attester",
        )
    elif isinstance(attester, str) and attester:
        checks.add(
            "attester", "skip", "attester_declared", f"the router says the quote came from {attester[:32]!r}"
        )
    else:
        checks.add("attester", "skip", "attester_unlabelled", "the evidence does not say what produced it")
    return checks.done(payload_id, facts, "the signed structure is not a quote", content_digest)


class _AikMaterial(NamedTuple):
    public: Public
    key: PublicKey
    fingerprint: str
    name_hex: str
    #: qualifiedSigner value -> "name" or the hierarchy of which it is the primary-key qualified name
    signer_forms: dict[bytes, str]


@lru_cache(maxsize=256)
def _aik_material(aik_bytes: bytes) -> _AikMaterial:
    """Everything derived from an AIK: AIKs repeat across responses, so this is cached."""
    aik = parse_public(aik_bytes)
    key = to_crypto_key(aik)
    forms = {aik.qualified_name(handle): hierarchy for hierarchy, handle in HIERARCHIES.items()}
    forms[aik.name] = "name"
    return _AikMaterial(aik, key, public_key_fingerprint(key), aik.name.hex(), forms)


def _signature_matches_key(aik: Public, signature: Signature, checks: _Checks) -> bool:
    if (aik.type == ALG.RSA) != (signature.sig_alg in (ALG.RSASSA, ALG.RSAPSS)):
        checks.fail("signature", "scheme_mismatch", "the signature scheme does not fit the AIK's key type")
        return False
    if aik.scheme != ALG.NULL and (aik.scheme, aik.scheme_hash) != (signature.sig_alg, signature.hash_alg):
        checks.fail(
            "signature", "scheme_mismatch", "the signature uses another scheme or hash than the AIK's"
        )
        return False
    return True


def _check_structure(attest: TPMSAttest, material: _AikMaterial, checks: _Checks) -> None:
    aik = material.public
    if attest.type != TPM_ST_ATTEST_QUOTE:
        checks.fail("quote_structure", "not_a_quote", f"the AIK signed a {attest.type_name}, not a quote")
    else:
        checks.ok("quote_structure", "quote", "TPM_GENERATED_VALUE magic and TPM_ST_ATTEST_QUOTE type")
    signer = material.signer_forms.get(attest.qualified_signer)
    if signer == "name":
        checks.ok("signer_name", "signer_matches", "qualifiedSigner is the AIK's name")
    elif signer is not None:
        checks.ok(
            "signer_name",
            "signer_matches",
            f"qualifiedSigner is the AIK's qualified name as a primary key in the {signer} hierarchy",
        )
    else:
        checks.fail(
            "signer_name",
            "signer_mismatch",
            "qualifiedSigner is neither the AIK's name nor its qualified name as a primary key "
            "(a child key's qualified name depends on parents the evidence does not carry)",
        )
    missing = ObjectAttributes.ATTESTATION_KEY & ~aik.object_attributes
    if missing:
        checks.fail(
            "aik_attributes",
            "aik_not_restricted" if missing & ObjectAttributes.RESTRICTED else "aik_attributes",
            f"the AIK lacks {', '.join(ObjectAttributes.names(missing))}: such a key can sign forged quotes",
        )
    elif aik.object_attributes & ObjectAttributes.DECRYPT:
        checks.fail("aik_attributes", "aik_attributes", "the AIK is also a decryption key")
    else:
        checks.ok(
            "aik_attributes",
            "restricted_signing_key",
            "restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin",
        )


def _check_pcrs(
    block: Mapping[str, Any],
    attest: TPMSAttest,
    signature: Signature,
    claimed: tuple[PCRSelection, ...],
    checks: _Checks,
    facts: dict[str, Any],
) -> None:
    quoted = attest.pcr_select
    facts["pcr_banks"] = selection_text(quoted)
    if len(quoted) != len(claimed) or any(
        q.hash_alg != c.hash_alg or q.indices != c.indices for q, c in zip(quoted, claimed, strict=False)
    ):
        checks.fail(
            "pcr_selection",
            "pcr_selection_mismatch",
            f"pcr_banks says {selection_text(claimed)} but the quote covers {facts['pcr_banks']}",
        )
        checks.add("pcr_digest", "skip", "not_reached", "the PCR selection does not match")
        return
    checks.ok("pcr_selection", "pcr_selection_matches", f"the quote covers {facts['pcr_banks']}")
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
    checks.ok("pcr_digest", "pcr_digest_matches", f"{len(values)} PCR values hash to pcrDigest")


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
            checks.ok("nonce_binding", "nonce_matches", "extraData equals the expected nonce")
        else:
            checks.fail("nonce_binding", "nonce_mismatch", "extraData is not the expected nonce")
        return
    if payload_id is None:
        checks.fail(
            "nonce_binding", "nonce_unverifiable", "no payload_id to check the quote's binding against"
        )
        return
    derivation = match_derivation(attest.extra_data, payload_id, content_digest, accept)
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
    checks.ok("nonce_binding", "nonce_matches", f"extraData binds this request ({derivation})")
