"""A router enrolls itself with ``ca serve`` (``nomyo-audit serve --enroll URL``): I/O.

The router posts its endorsement, activates the credential the CA sends with its own TPM, posts
the secret back, and installs the AK certificate chain it receives, after checking that the leaf
certifies its current AIK (never a chain for another key). It runs when the router starts, that
is whenever its AIK is new: an AIK lives as long as the router process.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from .._anchoring_wire import ANCHORING_VERSION, b64, certifies, parse_activation_request, parse_chain_upload
from ..errors import EnrollmentError, ProtocolError
from ..tpm import parse_public
from ..wire import parse_json
from ._router_enrollment import _exchange
from ._server import ENROLLMENTS_PATH

__all__ = ["enroll_with_ca"]


def enroll_with_ca(ca_url: str, attester: Any, *, client: httpx.Client | None = None) -> tuple[bytes, ...]:
    """Enroll ``attester``'s AIK with the CA at ``ca_url`` and attach the chain to its quotes.
    Raises :class:`EnrollmentError` (the CA's refusal code, or ``ca_malformed``), LookupError for an
    attester without an EK, and the attester's CredentialError when its TPM refuses the credential."""
    own = client is None
    http = client or httpx.Client(timeout=30.0)
    base = ca_url.rstrip("/")
    try:
        aik_public: bytes = attester.aik_public()
        challenge_body = _exchange(http, "POST", base + ENROLLMENTS_PATH, json=attester.endorsement())
        enrollment_id, challenge = _challenge(challenge_body)
        if challenge.aik_name != parse_public(aik_public).name:
            raise EnrollmentError("the CA's challenge is for another AIK", code="aik_mismatch")
        secret: bytes = attester.activate_credential(challenge.id_object, challenge.encrypted_secret)
        answer = {"version": ANCHORING_VERSION, "secret_b64": b64(secret)}
        chain_body = _exchange(http, "POST", f"{base}{ENROLLMENTS_PATH}/{enrollment_id}", json=answer)
        chain = _chain(chain_body)
        if not certifies(chain[0], aik_public):
            raise EnrollmentError("the CA's AK certificate certifies another key", code="cert_key_mismatch")
        attester.set_aik_certificate_chain(list(chain))
        return chain
    finally:
        if own:
            http.close()


def _challenge(body: bytes) -> tuple[str, Any]:
    try:
        doc = parse_json(body, what="CA challenge", code="ca_malformed")
        enrollment_id, _ = doc.pop("enrollment_id"), doc.pop("expires_in")
        if not (isinstance(enrollment_id, str) and enrollment_id.isalnum() and len(enrollment_id) <= 64):
            raise ProtocolError("enrollment_id is not an identifier", code="ca_malformed")
        return enrollment_id, parse_activation_request(json.dumps(doc).encode())
    except (ProtocolError, KeyError, AttributeError, TypeError) as exc:
        raise EnrollmentError(
            f"the CA's challenge is malformed ({type(exc).__name__})", code="ca_malformed"
        ) from None


def _chain(body: bytes) -> tuple[bytes, ...]:
    try:
        return parse_chain_upload(body)
    except ProtocolError as exc:
        raise EnrollmentError(f"the CA's answer is malformed: {exc.message}", code="ca_malformed") from None
