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
6. The logs the reply carries (``event_log_b64``, ``ima_log_b64``) must replay to the PCR values
   just proved (:mod:`._measured`); a log is the router's word until it does.
7. extraData must match an accepted nonce derivation (:mod:`._binding`).
8. Recorded, never passed: whether the clock is ``safe``, that an AIK
   without a certificate chain is not anchored to a hardware root of trust,
   and a software attester's own label.

``result`` is ``"pass"`` only when no finding failed.

The verdict's types live in :mod:`._verdict`, the evidence readers in
:mod:`._evidence`, what is derived from an AIK alone in :mod:`._aik`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, NamedTuple, cast

from ..errors import EvidenceError
from ._aik import AikMaterial, ChildSigner, aik_material, child_signer, describe_signature, quote_facts
from ._anchoring import NO_ANCHOR, Anchoring
from ._attest import TPMSAttest, parse_attest
from ._binding import DERIVATIONS, match_derivation
from ._evidence import b64_field, b64_text, parse_pcr_banks, read_pcr_values
from ._keys import verify_signature
from ._marshal import ALG, TPM_ST_ATTEST_QUOTE
from ._measured import appraise_logs
from ._pcr_selection import PCRSelection, selection_text
from ._public import Public
from ._signature import Signature, parse_signature
from ._verdict import CHECKS, Checks, Finding, Measurements, Status, Verdict, VerdictFacts

# CHECKS, Finding, Status, Verdict, VerdictFacts and parse_pcr_banks are defined elsewhere and
# named here too, for modules that import them with verify_attestation.
__all__ = ["CHECKS", "Finding", "Status", "Verdict", "VerdictFacts", "parse_pcr_banks", "verify_attestation"]


_HASH_FUNCTIONS = {
    ALG.SHA1: hashlib.sha1,
    ALG.SHA256: hashlib.sha256,
    ALG.SHA384: hashlib.sha384,
    ALG.SHA512: hashlib.sha512,
}


def verify_attestation(
    tpm_attestation: Mapping[str, Any] | None,
    payload_id: str | None,
    *,
    content_digest: bytes | None = None,
    accept_derivations: tuple[str, ...] = DERIVATIONS,
    expected_nonce: bytes | None = None,
    client_key_sha256: bytes | None = None,
    anchor: Anchoring | None = None,
) -> Verdict:
    """Appraise one ``tpm_attestation`` block (a response's ``_metadata.tpm_attestation``) for the
    request ``payload_id``: one finding per check in :data:`CHECKS`, and what the evidence showed.

    ``content_digest`` (from :func:`response_content_digest`) enables the project's response
    binding; ``accept_derivations`` limits the extraData derivations tried (:data:`DERIVATIONS`);
    ``expected_nonce`` replaces them with one exact extraData (attest-before-send).
    ``client_key_sha256`` (SHA-256 of the DER SPKI of the caller's own protocol 1.0 key) enables
    ``nomyo-audit-v2``; with it, ``facts.key_binding`` says ``"bound"`` or ``"absent"``.
    ``anchor`` (:class:`Anchoring`: trust roots, and an activation the caller ran) appraises
    ``aik_anchor``; without it the AIK is reported as not anchored, at no cost.

    Raises nothing for any evidence: missing, malformed or forged evidence is a failing finding
    with a stable code, never an exception. Pure and thread-safe: what it caches per AIK is
    read-only.
    """
    checks = Checks()
    if not isinstance(tpm_attestation, Mapping) or not tpm_attestation.get("is_available"):
        checks.fail("attestation_present", "no_attestation", "the response carries no TPM attestation")
        return checks.done(payload_id, {}, "no attestation")
    checks.put(_PRESENT)

    try:
        quote_bytes = b64_field(tpm_attestation, "quote_b64")
        signature_bytes = b64_field(tpm_attestation, "signature_b64")
        material = aik_material(b64_text(tpm_attestation, "aik_pubkey_b64"))
        child = (
            None
            if tpm_attestation.get("aik_parent_qualified_name_b64") is None
            else _child(tpm_attestation)
        )
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
    shape = (attest.encoding, signature.sig_alg, signature.hash_alg, attest.type)
    # a fresh dict per verdict: the cached facts are read-only and shared by every thread
    known = material.facts_by_shape.get(shape)
    if known is None:  # a shape no honest router uses: built for this quote, not kept
        known = quote_facts(material, shape, attest.type_name)
    facts = cast(VerdictFacts, known.copy())
    checks.put(material.parsed[attest.encoding])

    if (signature.sig_alg, signature.hash_alg) not in material.schemes:
        _scheme_mismatch(material.public, signature, checks)
        return checks.done(payload_id, facts, "the signature did not verify")
    if not verify_signature(material.key, signature, attest.raw):
        checks.fail("signature", "signature_invalid", "the quote's signature does not verify with the AIK")
        return checks.done(payload_id, facts, "the signature did not verify")
    checks.put(describe_signature(signature.sig_alg, signature.hash_alg).valid)

    _check_structure(attest, material, child, checks)
    if child is not None and attest.qualified_signer == child.qualified_signer:
        facts["aik_parent_qualified_name"] = child.parent_hex
    clock = attest.clock_info
    facts["clock"] = clock.clock
    facts["reset_count"] = clock.reset_count
    facts["restart_count"] = clock.restart_count
    facts["firmware_version"] = attest.firmware_version
    measurements: Measurements | None = None
    if attest.type == TPM_ST_ATTEST_QUOTE:
        _check_pcrs(tpm_attestation, attest, signature, claimed, checks, facts)
        measurements = appraise_logs(tpm_attestation, facts, checks)
        _check_nonce(
            attest, payload_id, content_digest, accept_derivations, expected_nonce, checks, facts,
            client_key_sha256,
        )
        if client_key_sha256 is not None and "nonce_derivation" in facts:
            facts["key_binding"] = "bound" if facts["nonce_derivation"] == "nomyo-audit-v2" else "absent"
        checks.put(_CLOCK_SAFE if clock.safe else _CLOCK_NOT_SAFE)
    # aik_anchor: an anchor is appraised only when the caller gives one (its roots, its activation)
    checks.put(NO_ANCHOR if anchor is None else anchor(material.public, tpm_attestation, facts))
    attester = tpm_attestation.get("attester")
    if attester == "software":
        checks.put(_SOFTWARE_ATTESTER)
    elif isinstance(attester, str) and attester:
        checks.put(_declared_attester(attester[:32]))
    else:
        checks.put(_UNLABELLED_ATTESTER)
    return checks.done(payload_id, facts, "the signed structure is not a quote", content_digest, measurements)


# The findings that never vary, built once.
_PRESENT = Finding("attestation_present", "pass", "present", "a TPM quote is attached")
_QUOTE = Finding("quote_structure", "pass", "quote", "TPM_GENERATED_VALUE magic and TPM_ST_ATTEST_QUOTE type")
_EXACT_NONCE = Finding("nonce_binding", "pass", "nonce_matches", "extraData equals the expected nonce")
_CLOCK_SAFE = Finding("clock_safe", "pass", "clock_safe", "clockInfo.safe is set")
_CLOCK_NOT_SAFE = Finding(
    "clock_safe", "skip", "clock_not_safe", "clockInfo.safe is clear: the clock may have gone back"
)
_SOFTWARE_ATTESTER = Finding(
    "attester", "skip", "software_attester", "the router says this quote came from a software attester"
)
_UNLABELLED_ATTESTER = Finding(
    "attester", "skip", "attester_unlabelled", "the evidence does not say what produced it"
)


def _scheme_mismatch(aik: Public, signature: Signature, checks: Checks) -> None:
    if (aik.type == ALG.RSA) != (signature.sig_alg in (ALG.RSASSA, ALG.RSAPSS)):
        checks.fail("signature", "scheme_mismatch", "the signature scheme does not fit the AIK's key type")
    else:
        checks.fail(
            "signature", "scheme_mismatch", "the signature uses another scheme or hash than the AIK's"
        )


def _child(block: Mapping[str, Any]) -> ChildSigner:
    return child_signer(b64_text(block, "aik_pubkey_b64"), b64_text(block, "aik_parent_qualified_name_b64"))


def _check_structure(
    attest: TPMSAttest, material: AikMaterial, child: ChildSigner | None, checks: Checks
) -> None:
    if attest.type != TPM_ST_ATTEST_QUOTE:
        checks.fail("quote_structure", "not_a_quote", f"the AIK signed a {attest.type_name}, not a quote")
    else:
        checks.put(_QUOTE)
    if child is not None:  # the evidence names the AIK's parent: only the child's qualified name passes
        checks.put(child.matches if attest.qualified_signer == child.qualified_signer else child.mismatch)
    else:
        signer = material.signers.get(attest.qualified_signer)
        checks.put(_PARENT_UNKNOWN if signer is None else signer)
    checks.put(material.attributes)


_PARENT_UNKNOWN = Finding(
    "signer_name",
    "fail",
    "signer_parent_unknown",
    "qualifiedSigner is neither the AIK's name nor its qualified name as a primary key: the AIK may be "
    "a child key, whose qualified name depends on a parent the evidence does not name "
    "(aik_parent_qualified_name_b64), so its attributes are unproven",
)


def _check_pcrs(
    block: Mapping[str, Any],
    attest: TPMSAttest,
    signature: Signature,
    claimed: tuple[PCRSelection, ...],
    checks: Checks,
    facts: VerdictFacts,
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
        values, recorded = read_pcr_values(block, quoted)
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
    checks: Checks,
    facts: VerdictFacts,
    client_key_sha256: bytes | None = None,
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
        derivation = match_derivation(
            attest.extra_data, payload_id, content_digest, accept, client_key_sha256=client_key_sha256
        )
    except UnicodeEncodeError:  # a lone surrogate: no request could have had this payload_id
        checks.fail("nonce_binding", "nonce_unverifiable", "the payload_id is not valid Unicode text")
        return
    if derivation is None:
        tried = [d for d in accept if _tryable(d, content_digest, client_key_sha256)]
        checks.fail(
            "nonce_binding",
            "nonce_mismatch",
            f"extraData matches none of {', '.join(tried)} for this payload_id"
            + ("" if content_digest is not None else " (response content not available)"),
        )
        return
    facts["nonce_derivation"] = derivation
    checks.put(_bound_by(derivation))


def _tryable(derivation: str, content_digest: bytes | None, client_key_sha256: bytes | None) -> bool:
    if derivation == "nomyo-audit-v2":
        return content_digest is not None and client_key_sha256 is not None
    return derivation != "nomyo-audit-v1" or content_digest is not None


@lru_cache(maxsize=32)
def _declared_attester(label: str) -> Finding:
    return Finding("attester", "skip", "attester_declared", f"the router says the quote came from {label!r}")


@lru_cache(maxsize=16)
def _bound_by(derivation: str) -> Finding:
    return Finding("nonce_binding", "pass", "nonce_matches", f"extraData binds this request ({derivation})")
