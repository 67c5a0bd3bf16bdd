"""The gate: what a policy says about a reply, and about the router key before anything is sent.

Pure decisions, no I/O: the client fetches, these functions judge. :func:`pinned_server_key`
accepts the router key only when it matches the pinned fingerprint; :func:`apply_policy` evaluates
a reply against the policy and refuses it (its content dropped) when the policy denies it;
:func:`judge_key_attestation` appraises the router key's attestation, fetched with a fresh nonce,
and refuses to send anything when it does not satisfy the policy. :class:`KeyAttestations`
remembers which router keys passed, for the policy's ``key_attestation_ttl``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import SecurityError
from ..policy import KEY_SCOPE, Policy, PolicyViolationError, evaluate
from ..tpm import Verdict, key_binding, verify_attestation
from ..wire import key_fingerprint, load_public_key_pem, public_key_pem

__all__ = ["KeyAttestations", "ServerKey", "apply_policy", "judge_key_attestation", "pinned_server_key"]


@dataclass(frozen=True)
class ServerKey:
    """The router's public key as the client encrypts to it, its canonical PEM and fingerprint."""

    key: rsa.RSAPublicKey
    pem: str
    sha256: str


def pinned_server_key(pem: bytes, pinned_sha256: str | None) -> ServerKey:
    """The router key served as ``pem``, once it matches the pinned fingerprint (if any).

    A key that is no acceptable RSA public key raises :class:`ProtocolError`; one whose SHA-256
    (of the DER SubjectPublicKeyInfo) is not ``pinned_sha256`` raises :class:`SecurityError`
    (``server_key_pin``), before any prompt is encrypted to it.
    """
    key = load_public_key_pem(pem, what="router public key")
    fingerprint = key_fingerprint(key)
    if pinned_sha256 is not None and fingerprint != pinned_sha256:
        raise SecurityError(
            f"router public key fingerprint {fingerprint} does not match the pinned {pinned_sha256}",
            code="server_key_pin",
        )
    return ServerKey(key, public_key_pem(key), fingerprint)  # canonical SPKI PEM, whatever was sent


def apply_policy(policy: Policy, response: dict[str, Any], verdict: Verdict, *, now: float) -> None:
    """Evaluate ``response`` (with its ``verdict``) against ``policy`` and record the result in it.

    The result goes into ``_metadata.policy`` (and its name, digest and outcome into
    ``_metadata.verification.policy``). A ``deny`` outcome empties ``response``, so no reference
    to the content outlives the call, and raises :class:`PolicyViolationError` carrying the
    metadata for the audit record.
    """
    metadata = response["_metadata"]
    result = evaluate(policy, response, now=now, verdict=verdict)
    metadata["policy"] = result.to_dict()
    metadata["verification"]["policy"] = {
        "name": result.policy_name,
        "digest": result.policy_digest,
        "outcome": result.outcome,
    }
    if result.outcome == "deny":
        response.clear()  # drop our references to the content before raising
        raise PolicyViolationError(result.summary(), result, metadata)


def judge_key_attestation(
    policy: Policy, status: int, document: Any, *, nonce: bytes, key_sha256: str, anchor: Any = None
) -> None:
    """Accept the router key's attestation reply, or raise: nothing may be sent to the key.

    ``status`` and ``document`` (the JSON body, None when it was not JSON) are what
    ``GET /pki/attestation?nonce=`` returned; ``key_sha256`` is the fingerprint of the router key
    the client would encrypt to. A 404 or another error status raises :class:`SecurityError`
    (``key_attestation_unavailable``); a quote that does not verify against
    ``key_binding(nonce, key)`` or does not satisfy ``policy`` raises
    :class:`PolicyViolationError` naming every failure. ``anchor`` (a prepared anchor, for
    ``aik_trust`` ek/ca) anchors the quote's AIK as each reply's is, so an anchored policy can pass.
    """
    if status == 404:
        raise SecurityError(
            "the router offers no key attestation (GET /pki/attestation: 404); "
            "the policy requires it, so nothing was sent",
            code="key_attestation_unavailable",
        )
    if status != 200:
        raise SecurityError(
            f"key attestation failed: HTTP {status}; nothing was sent", code="key_attestation_unavailable"
        )
    block = document.get("tpm_attestation") if isinstance(document, dict) else None
    verdict = verify_attestation(block, None, expected_nonce=key_binding(nonce, bytes.fromhex(key_sha256)))
    if anchor is not None:
        from ._activation import anchor_reply

        verdict = anchor_reply({"_metadata": {"tpm_attestation": block}}, verdict, anchor)
    result = evaluate(policy, {"tpm_attestation": block}, verdict=verdict, scope=KEY_SCOPE)
    if not verdict.passed or not result.passed:
        reasons = [f"{f.check}: {f.code}" for f in verdict.failures]
        reasons += [f"{r.rule}: {r.detail}" for r in result.failures]
        raise PolicyViolationError(
            "the router key's attestation does not satisfy policy "
            f"{policy.name} ({'; '.join(reasons)}); nothing was sent",
            result,
            {"key_attestation": {"tpm_attestation": block, "verification": verdict.to_dict()}},
        )


class KeyAttestations:
    """Router keys whose attestation passed, each until its policy's TTL runs out (monotonic time)."""

    def __init__(self) -> None:
        #: key fingerprint -> ``time.monotonic()`` at which the attestation expires
        self.until: dict[str, float] = {}

    def fresh(self, key_sha256: str) -> bool:
        """Whether ``key_sha256`` passed an attestation that has not expired yet."""
        return self.until.get(key_sha256, 0.0) > time.monotonic()

    def passed(self, key_sha256: str, ttl: float) -> None:
        """Remember that ``key_sha256`` passed, for ``ttl`` seconds."""
        self.until[key_sha256] = time.monotonic() + ttl
