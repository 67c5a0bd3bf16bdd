"""Everything the verifier derives from an AIK alone, made once per AIK and never changed. Pure, no I/O.

A router signs every response with the same AIK, so parsing its public area,
building its key and its findings is cached (:func:`aik_material`). What is
cached is immutable (named tuples, frozen sets, read-only mappings): threads
verifying different quotes against one AIK share it and cannot change it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

from ..errors import EvidenceError
from ._evidence import decode_b64
from ._keys import PublicKey, public_key_fingerprint, to_crypto_key
from ._marshal import ALG, HASH_NAMES, HASH_SIZES, HIERARCHIES, TPM_ST_ATTEST_QUOTE
from ._public import ObjectAttributes, Public, parse_public
from ._verdict import Finding

__all__ = [
    "AikMaterial",
    "ChildSigner",
    "SignatureDescription",
    "aik_material",
    "attestation_key_finding",
    "child_signer",
    "describe_signature",
    "quote_facts",
]

_SCHEME_NAMES = {ALG.RSASSA: "rsassa", ALG.RSAPSS: "rsapss", ALG.ECDSA: "ecdsa"}
_ENCODINGS = ("TPMS_ATTEST", "TPM2B_ATTEST")
#: (quote encoding, sigAlg, hashAlg, attest type): what the facts of a verdict follow from, with the AIK
Shape = tuple[str, int, int, int]


class SignatureDescription(NamedTuple):
    """What a signature scheme is called in a verdict's facts, and its passing finding."""

    facts: Mapping[str, str]
    valid: Finding


@lru_cache(maxsize=32)
def describe_signature(sig_alg: int, hash_alg: int) -> SignatureDescription:
    """The facts and passing finding for a (sigAlg, hashAlg) pair that ``parse_signature`` accepted."""
    scheme, hash_name = _SCHEME_NAMES[sig_alg], HASH_NAMES[hash_alg]
    return SignatureDescription(
        MappingProxyType({"signature_scheme": scheme, "signature_hash": hash_name}),
        Finding("signature", "pass", "signature_valid", f"{scheme}-{hash_name} over the quote"),
    )


class AikMaterial(NamedTuple):
    """Everything derived from one AIK, read-only: shared by every verification against it."""

    public: Public
    key: PublicKey
    #: aik_name, aik_fingerprint and aik_type, as the verdict's facts record them
    facts: Mapping[str, str]
    #: qualifiedSigner value -> the passing signer_name finding for it
    signers: Mapping[bytes, Finding]
    #: the aik_attributes finding, which depends on the AIK alone
    attributes: Finding
    #: quote encoding -> the passing evidence_format finding
    parsed: Mapping[str, Finding]
    #: the (sigAlg, hashAlg) pairs that fit this AIK
    schemes: frozenset[tuple[int, int]]
    #: the facts of a quote signed with one of :attr:`schemes`, by shape (others are built per quote)
    facts_by_shape: Mapping[Shape, MappingProxyType[str, object]]


@lru_cache(maxsize=256)
def aik_material(aik_b64: str) -> AikMaterial:
    """Everything derived from an AIK alone: AIKs repeat across responses, so this is cached.

    The cache is keyed by the exact ``aik_pubkey_b64`` text, so it holds only
    pure functions of it; the signature is still checked for every quote.
    Raises :class:`nomyo_audit.errors.EvidenceError` when the AIK is not
    base64 of a TPM2B_PUBLIC of a valid RSA or ECC key.
    """
    aik = parse_public(decode_b64(aik_b64, "aik_pubkey_b64"))
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
        for encoding in _ENCODINGS
    }
    facts = {
        "aik_name": aik.name.hex(),
        "aik_fingerprint": public_key_fingerprint(key),
        "aik_type": aik_type,
    }
    schemes = _schemes(aik)
    by_shape = {
        (encoding, sig_alg, hash_alg, TPM_ST_ATTEST_QUOTE): _facts(
            encoding, facts, sig_alg, hash_alg, "TPM_ST_ATTEST_QUOTE"
        )
        for encoding in _ENCODINGS
        for sig_alg, hash_alg in schemes
    }
    return AikMaterial(
        aik,
        key,
        MappingProxyType(facts),
        MappingProxyType(signers),
        attestation_key_finding(aik),
        MappingProxyType(parsed),
        schemes,
        MappingProxyType(by_shape),
    )


class ChildSigner(NamedTuple):
    """What a child AIK's quotes must name as qualifiedSigner, given its parent's qualified name."""

    #: u16(nameAlg) || H_nameAlg(parent QN || Name(AIK))
    qualified_signer: bytes
    #: the parent's qualified name, hex, as the verdict's facts record it
    parent_hex: str
    matches: Finding
    mismatch: Finding


@lru_cache(maxsize=256)
def child_signer(aik_b64: str, parent_b64: str) -> ChildSigner:
    """The signer a quote by a child AIK must name, from ``aik_parent_qualified_name_b64``: cached per
    (AIK, parent), like :func:`aik_material`.

    The parent's qualified name is unauthenticated, but it cannot lend the AIK attributes it lacks:
    the qualifiedSigner it must produce is signed by the AIK and hashes the AIK's own public area,
    so a match proves that public area (attributes included) is the one the TPM signed with.
    Raises :class:`nomyo_audit.errors.EvidenceError` when the field is not base64 of a qualified
    name (a 4-byte hierarchy handle, or nameAlg || digest).
    """
    aik = aik_material(aik_b64).public
    parent = decode_b64(parent_b64, "aik_parent_qualified_name_b64")
    alg = int.from_bytes(parent[:2], "big")
    if not (len(parent) == 4 and parent[0] == 0x40) and len(parent) != 2 + HASH_SIZES.get(alg, -2):
        raise EvidenceError(
            "aik_parent_qualified_name_b64 is neither a hierarchy handle nor nameAlg || digest",
            code="bad_parent_name",
        )
    return ChildSigner(
        aik.qualified_name(parent),
        parent.hex(),
        Finding(
            "signer_name",
            "pass",
            "signer_matches",
            "qualifiedSigner is the AIK's qualified name under the parent the evidence names: the quote "
            "names this public area, attributes included, as its signer, which proves them only as far as "
            "the signer is a TPM (aik_anchor); the parent is known only by that qualified name, as no "
            "particular key",
        ),
        Finding(
            "signer_name",
            "fail",
            "signer_mismatch",
            "qualifiedSigner is not the AIK's qualified name under the parent the evidence names",
        ),
    )


def quote_facts(material: AikMaterial, shape: Shape, type_name: str) -> MappingProxyType[str, object]:
    """The facts that follow from a quote's shape and its AIK (read-only: copy before adding to them).

    Shapes are attacker-chosen, so only those an honest router uses are made in advance
    (:attr:`AikMaterial.facts_by_shape`, which callers look in first); any other is built
    for its one quote and not kept.
    """
    known = material.facts_by_shape.get(shape)
    if known is not None:
        return known
    encoding, sig_alg, hash_alg, _ = shape
    return _facts(encoding, material.facts, sig_alg, hash_alg, type_name)


def _facts(
    encoding: str, aik_facts: Mapping[str, str], sig_alg: int, hash_alg: int, type_name: str
) -> MappingProxyType[str, object]:
    return MappingProxyType(
        {
            "quote_encoding": encoding,
            **aik_facts,
            **describe_signature(sig_alg, hash_alg).facts,
            "attest_type": type_name,
        }
    )


def attestation_key_finding(aik: Public) -> Finding:
    """The ``aik_attributes`` finding: whether ``aik`` is a key only a TPM could have made and that
    signs only what a TPM attests. The one definition, which the enrollment CA applies too."""
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
    if aik.scheme == ALG.NULL:
        # go-attestation refuses such an AIK too: its quotes could be signed with any scheme and hash
        return Finding(
            "aik_attributes",
            "fail",
            "aik_no_scheme",
            "the AIK's public area names no signing scheme (TPM_ALG_NULL), so nothing fixes the scheme "
            "and hash its quotes are signed with",
        )
    return Finding(
        "aik_attributes",
        "pass",
        "restricted_signing_key",
        "restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin",
    )


def _schemes(aik: Public) -> frozenset[tuple[int, int]]:
    """The (sigAlg, hashAlg) pairs a signature by this AIK may use: its own scheme, or any that fits
    its key type when the AIK's scheme is NULL (such an AIK fails ``aik_attributes``, but its
    signature is still checked, so the verdict says exactly what is wrong)."""
    if aik.scheme != ALG.NULL:
        return frozenset({(aik.scheme, aik.scheme_hash)})
    algorithms = (ALG.RSASSA, ALG.RSAPSS) if aik.type == ALG.RSA else (ALG.ECDSA,)
    return frozenset((algorithm, hash_alg) for algorithm in algorithms for hash_alg in HASH_SIZES)
