"""The EK authorization policies of the TCG EK Credential Profile 2.x (pure: no I/O).

A low-range EK (templates L-1, L-2) has authPolicy PolicyA = PolicySecret(TPM_RH_ENDORSEMENT). A
high-range EK (templates H-1..H-n, certificates from 0x01c00012) has PolicyB = PolicyOR(PolicyA,
PolicyC), where PolicyC is PolicyAuthorizeNV of the profile's policy index (0x01c07f01 for SHA-256,
0x01c07f02 for SHA-384, 0x01c07f03 for SHA-512): the TPM owner may later delegate the EK's use
through that index. We satisfy PolicyA (the endorsement hierarchy's empty auth) and then PolicyOR
over both branches, which needs each branch's digest in the EK's nameAlg.

PolicyA is computed here from its definition; PolicyC depends on the policy index's Name, so it is
the profile's published value ("Computing PolicyC"). tests/test_credential_high_range.py checks
PolicyOR(PolicyA, PolicyC) against tpm2-pytss's high-range templates.
"""

from __future__ import annotations

import hashlib

from ..tpm._marshal import ALG, HASH_NAMES, HASH_SIZES

__all__ = ["ek_policy_branches", "policy_a", "policy_or_digest"]

_CC_POLICY_SECRET = 0x0000_0151
_CC_POLICY_OR = 0x0000_0171
_RH_ENDORSEMENT = 0x4000_000B

#: PolicyC per nameAlg: PolicyAuthorizeNV(policy index), from the profile's "Computing PolicyC"
_POLICY_C = {
    ALG.SHA256: bytes.fromhex("3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde"),
    ALG.SHA384: bytes.fromhex(
        "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165"
    ),
    ALG.SHA512: bytes.fromhex(
        "589ee1e146544716e8deafe6db247b01b81e9f9c7dd16b814aa159138749105f"
        "ba5388dd1dea702f35240c184933121e2c61b8f50d3ef91393a49a38c3f73fc8"
    ),
}


def _hash(name_alg: int, *parts: bytes) -> bytes:
    return hashlib.new(HASH_NAMES[name_alg], b"".join(parts)).digest()


def policy_a(name_alg: int) -> bytes:
    """PolicySecret(TPM_RH_ENDORSEMENT) with an empty policyRef, from an empty policy digest."""
    zeros = bytes(HASH_SIZES[name_alg])
    secret = _hash(name_alg, zeros, _CC_POLICY_SECRET.to_bytes(4, "big"), _RH_ENDORSEMENT.to_bytes(4, "big"))
    return _hash(name_alg, secret)  # PolicyUpdate's second step hashes in the (empty) policyRef


def ek_policy_branches(name_alg: int) -> tuple[bytes, bytes]:
    """(PolicyA, PolicyC) of a high-range EK whose nameAlg is ``name_alg``: the PolicyOR list.
    Raises KeyError for a nameAlg the profile defines no policy index for."""
    return policy_a(name_alg), _POLICY_C[name_alg]


def policy_or_digest(name_alg: int, branches: tuple[bytes, ...]) -> bytes:
    """The policy digest after TPM2_PolicyOR over ``branches`` (what the EK's authPolicy must equal)."""
    return _hash(name_alg, bytes(HASH_SIZES[name_alg]), _CC_POLICY_OR.to_bytes(4, "big"), *branches)
