"""Credential activation before any prompt is sent, for ``aik_trust: {mode: ek}`` (issue 12 section 3).

The client proves that the router's AIK lives in the same TPM as an EK a TPM manufacturer
certified: it reads ``GET /pki/endorsement``, validates the EK certificate chain to the policy's
roots, makes a credential (TPM2_MakeCredential, pure Python) for the AIK's name to the EK, with a
fresh random secret, and posts it to ``POST /pki/activation``. Only the TPM holding both the EK
and an object of that name can return the secret. The answer is compared in constant time.

The outcome is cached per router and trust roots for the policy's ``key_attestation_ttl``; every
reply's quote is then anchored from it (:func:`anchor_reply`). A quote by another AIK than the one
activated (the router rotated its AIK) fails ``aik_anchor`` (``activation_other_aik``) and drops the
cached activation, so the next call activates the new AIK before its prompt is sent. A replayed or
wrong answer cannot match a fresh secret.
The secret never leaves this module: not in errors, logs or the audit record.

:func:`challenge` and :func:`judge_answer` are pure; :class:`Activations` holds the cache; the
HTTP round trip is the client's (:meth:`SecureCompletionClient._gated_send`).
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..errors import CertificateError, EvidenceError, SecurityError
from ..policy import Policy
from ..tpm._anchor import PLATFORM_ANCHOR_KINDS, ActivationOutcome, AnchorEvidence
from ..tpm._anchoring import Anchoring, evidence_in_block, with_anchor
from ..tpm._verdict import Verdict

__all__ = [
    "Activations",
    "Challenge",
    "PreparedAnchor",
    "anchor_mode",
    "anchor_reply",
    "challenge",
    "ensure_activation",
    "judge_answer",
    "prepare_anchor",
    "wants_activation",
    "wants_anchor",
]

_VERSION = 1
#: the largest endorsement or activation reply read (an EK chain is a few kilobytes)
_MAX_REPLY = 256 * 1024


def anchor_mode(policy: Policy | None) -> str | None:
    """``"ek"``, ``"ca"`` or a cloud anchor kind (``gce-ak-cert`` ...) when ``policy`` asks for an
    anchored AIK (``aik_trust: {mode: ek|ca|gce-ak-cert|azure-sev-snp|azure-tdx}``)."""
    trust = policy.spec.get("aik_trust") if policy is not None else None
    mode = trust.get("mode") if isinstance(trust, Mapping) else None
    return mode if mode in ("ek", "ca", *PLATFORM_ANCHOR_KINDS) else None


def wants_activation(policy: Policy | None) -> bool:
    """Whether ``policy`` asks for a credential activation (``aik_trust: {mode: ek}``)."""
    return anchor_mode(policy) == "ek"


def wants_anchor(policy: Policy | None) -> bool:
    """Whether each reply's verdict is anchored before the policy judges it (``ek`` or ``ca``)."""
    return anchor_mode(policy) is not None


class PreparedAnchor(NamedTuple):
    """What anchoring a reply needs: the activation (``ek``; None for ``ca``, whose AK certificate
    chain comes with every quote), the policy's trust store, and the TPM vendors it accepts."""

    evidence: AnchorEvidence | None
    store: Any
    manufacturers: tuple[str, ...] = ()
    #: drops the cached activation (called when a quote comes from another AIK than the one activated)
    forget: Callable[[], None] | None = None
    #: the ``aik_trust`` mode: the anchor of that kind is judged when a quote carries several (a cloud
    #: ``platform`` object beside an AK certificate chain); None judges the one the verifier offers first
    mode: str | None = None


@dataclass(frozen=True)
class Challenge:
    """One activation in flight: the request body to post, and what judging the answer needs."""

    body: dict[str, Any]
    aik_name: bytes
    evidence: AnchorEvidence
    _secret: bytes

    def __repr__(self) -> str:  # the secret is never shown
        return f"Challenge(aik_name={self.aik_name.hex()})"


def challenge(document: Any, store: Any, *, at: datetime) -> Challenge:
    """Validate the router's endorsement (``GET /pki/endorsement``) and make a credential for its AIK.

    Raises :class:`SecurityError`: ``activation_unavailable`` (no EK certificate: a software
    attester), ``activation_malformed`` (a body that is not the documented one), or the certificate
    layer's code (``cert_unchained``, ``cert_expired``, ...) for an EK chain that does not validate,
    ``ek_public_mismatch`` for an EK public area that is not the certified key.
    """
    from ..tpm import ek_matches_public, make_credential, parse_public, validate_ek_chain
    from ..tpm._anchor import read_chain

    if not isinstance(document, Mapping) or document.get("version") != _VERSION:
        raise SecurityError(
            "the router's endorsement is not a version 1 document", code="activation_malformed"
        )
    if document.get("ek_certificate_b64") is None:
        raise SecurityError(
            "the router serves no EK certificate, so its AIK cannot be anchored; nothing was sent",
            code="activation_unavailable",
        )
    try:
        chain = read_chain(
            [document.get("ek_certificate_b64"), *_list(document.get("ek_chain_b64"))], "ek_chain_b64"
        )
        ek_public_bytes = base64.b64decode(str(document.get("ek_public_b64")), validate=True)
        aik = parse_public(base64.b64decode(str(document.get("aik_pubkey_b64")), validate=True))
        ek_public = parse_public(ek_public_bytes)
        validated = validate_ek_chain(chain[0], chain[1:], store, at=at)
        if not ek_matches_public(validated.ek, ek_public):
            raise SecurityError("the router's EK is not the certified EK", code="ek_public_mismatch")
        secret = os.urandom(32)
        credential = make_credential(ek_public, aik.name, secret)
    except CertificateError as exc:
        raise SecurityError(f"the router's EK certificate: {exc.message}", code=exc.code) from None
    except (EvidenceError, ValueError) as exc:
        raise SecurityError(f"the router's endorsement: {exc}"[:300], code="activation_malformed") from None
    body = {
        "version": _VERSION,
        "aik_name_b64": base64.b64encode(aik.name).decode(),
        "id_object_b64": base64.b64encode(credential.id_object).decode(),
        "encrypted_secret_b64": base64.b64encode(credential.encrypted_secret).decode(),
    }
    evidence = AnchorEvidence("ek", chain, None, ek_public_bytes, at)
    return Challenge(body, aik.name, evidence, secret)


def judge_answer(pending: Challenge, status: int, document: Any, *, at: datetime) -> AnchorEvidence:
    """The anchor evidence of a successful activation, or :class:`SecurityError`:
    ``activation_failed`` (the router or its TPM refused), ``activation_mismatch`` (another secret:
    a wrong EK, another AIK, or a replayed answer)."""
    if status != 200 or not isinstance(document, Mapping):
        code = _error_code(document)
        raise SecurityError(
            f"credential activation failed: HTTP {status} ({code}); nothing was sent",
            code="activation_failed",
        )
    answer = document.get("secret_b64")
    try:
        returned = base64.b64decode(str(answer), validate=True) if isinstance(answer, str) else b""
    except ValueError:
        returned = b""
    if not hmac.compare_digest(returned, pending._secret):
        raise SecurityError(
            "the router did not return the activated secret (another EK or AIK, or a replay); "
            "nothing was sent",
            code="activation_mismatch",
        )
    ek_sha256 = _sha256(pending.evidence.chain[0])
    outcome = ActivationOutcome(pending.aik_name.hex(), ek_sha256, "pass", at)
    evidence = pending.evidence
    return AnchorEvidence(evidence.kind, evidence.chain, outcome, evidence.ek_public, evidence.validated_at)


#: what an activation is cached by: the router's URL and the policy's trust roots (the EK chain was
#: validated against those roots only)
ActivationKey = tuple[str, tuple[str, ...]]


class Activations:
    """Activated AIKs (by router and trust roots), each until the policy's TTL runs out."""

    def __init__(self) -> None:
        self._until: dict[ActivationKey, tuple[float, AnchorEvidence]] = {}
        self._stores: dict[tuple[str, ...], Any] = {}

    def store(self, paths: tuple[str, ...]) -> Any:
        """The trust store of the policy's ``roots`` (the shipped roots when none), read once.
        Raises :class:`SecurityError` with the certificate layer's code."""
        from ..policy._anchor_rule import load_roots

        store = self._stores.get(paths)
        if store is None:
            try:
                store = self._stores[paths] = load_roots(paths)
            except CertificateError as exc:
                raise SecurityError(f"the policy's trust roots: {exc.message}", code=exc.code) from None
        return store

    def fresh(self, key: ActivationKey) -> AnchorEvidence | None:
        """The anchor evidence of the last activation under ``key``, if it has not expired."""
        held = self._until.get(key)
        return held[1] if held is not None and held[0] > time.monotonic() else None

    def passed(self, key: ActivationKey, evidence: AnchorEvidence, ttl: float) -> None:
        self._until[key] = (time.monotonic() + ttl, evidence)

    def forget(self, key: ActivationKey) -> None:
        """Drop the activation under ``key`` (its AIK is no longer the router's)."""
        self._until.pop(key, None)


def anchor_reply(response: dict[str, Any], verdict: Verdict, prepared: PreparedAnchor) -> Verdict:
    """Anchor one reply's verdict (with the activation for ``ek``, the quote's AK certificate chain
    for ``ca``), and record it in ``_metadata.verification`` with the evidence and the time it was
    validated at, which an auditor re-checks offline. Returns the anchored verdict."""
    metadata = response.get("_metadata")
    block = metadata.get("tpm_attestation") if isinstance(metadata, dict) else None
    evidence = prepared.evidence
    if evidence is None:  # ca or a cloud anchor: what the quote carries, judged now
        try:
            wanted = prepared.mode if prepared.mode != "ek" else None
            offered = evidence_in_block(block, wanted) if isinstance(block, Mapping) else None
        except EvidenceError:
            offered = None  # the Anchoring hook below fails it with its code
        if offered is not None:
            evidence = dataclasses.replace(offered, validated_at=now_utc())
    at = evidence.validated_at if evidence is not None else now_utc()
    anchoring = Anchoring(prepared.store, evidence=evidence, at=at, manufacturers=prepared.manufacturers)
    anchored = with_anchor(verdict, block, anchoring)
    if prepared.forget is not None and anchored.finding("aik_anchor").code == "activation_other_aik":
        prepared.forget()  # the router rotated its AIK: the next call activates the new one first
    if isinstance(metadata, dict):
        verification = anchored.to_dict()
        prior = metadata.get("verification")
        if isinstance(prior, Mapping):  # keep what the exchange recorded beside the verdict
            verification = {**prior, **verification}
        if evidence is not None:
            verification["anchor"] = evidence.to_dict()
        metadata["verification"] = verification
    return anchored


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _error_code(document: object) -> str:
    error = document.get("error") if isinstance(document, Mapping) else None
    code = error.get("code") if isinstance(error, Mapping) else None
    return code[:40] if isinstance(code, str) else "no error code"


def _sha256(der: bytes) -> str:
    from ..tpm import parse_ek_certificate

    return str(parse_ek_certificate(der).sha256)


def now_utc() -> datetime:
    """The time activations are validated at."""
    return datetime.now(timezone.utc)


async def prepare_anchor(client: Any, policy: Policy | None) -> PreparedAnchor:
    """What anchoring the replies under ``policy`` needs, before any prompt is sent: the trust
    store, and for ``ek`` the router's AIK activated (from the cache within the policy's TTL, else a
    round trip now). Raises :class:`SecurityError` as :func:`challenge` and :func:`judge_answer` do."""
    assert policy is not None  # wants_anchor(policy) was true
    trust = policy.spec.get("aik_trust", {})
    held: Activations = client._activations
    paths = tuple(trust.get("roots", ()) or trust.get("ca_certificates", ()))
    store = held.store(paths)
    vendors = tuple(trust.get("manufacturers", ()))
    mode = anchor_mode(policy)
    if mode != "ek":  # ca and the cloud kinds come with every quote
        return PreparedAnchor(None, store, vendors, mode=mode)
    key = (client.router_url, paths)
    evidence = await ensure_activation(client, policy, store, key)
    return PreparedAnchor(evidence, store, vendors, lambda: held.forget(key), mode)


async def ensure_activation(client: Any, policy: Policy, store: Any, key: ActivationKey) -> AnchorEvidence:
    """The router's AIK activated against ``store``: from the cache (under ``key``) within the
    policy's TTL, else a round trip now. Nothing is sent before it returns."""
    from ..wire import ACTIVATION_PATH, ENDORSEMENT_PATH

    held: Activations = client._activations
    evidence = held.fresh(key)
    if evidence is not None:
        return evidence
    url = client.router_url
    reply = await client._request("GET", url + ENDORSEMENT_PATH, limit=_MAX_REPLY)
    if reply.status_code != 200:
        raise SecurityError(
            f"the router serves no endorsement (HTTP {reply.status_code}); the policy requires an activated "
            "AIK, so nothing was sent",
            code="activation_unavailable",
        )
    pending = challenge(reply.json_or_none("endorsement"), store, at=now_utc())
    answer = await client._request("POST", url + ACTIVATION_PATH, limit=_MAX_REPLY, json=pending.body)
    evidence = judge_answer(pending, answer.status_code, answer.json_or_none("activation"), at=now_utc())
    held.passed(key, evidence, policy.key_attestation_ttl)
    return evidence
