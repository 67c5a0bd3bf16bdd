"""Protocol 1.0 client-key binding on the router side: quote the key the reply is sealed to.

The reply of protocol 1.0 is encrypted to the key in the unauthenticated ``X-Public-Key`` header.
An attester that takes ``client_key_sha256`` binds SHA-256 of that key's DER SPKI into the quote
(``nomyo-audit-v2``, docs/protocol.md), so a client whose key was swapped on the path sees that
the quote does not bind its own key. Attesters written before (``attest_response(payload_id,
completion)``) keep working and quote without the key.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from ..wire import key_fingerprint

__all__ = ["attest_reply"]


def attest_reply(
    attester: Any, payload_id: str, completion: Mapping[str, Any], client_key: rsa.RSAPublicKey
) -> tuple[dict[str, Any], str | None]:
    """The ``tpm_attestation`` block for this reply, and the client-key fingerprint it binds (hex,
    for ``_metadata.client_key_sha256``) or None when the attester cannot bind one. Blocking."""
    if not _binds_client_key(attester):
        return attester.attest_response(payload_id, completion), None
    fingerprint = key_fingerprint(client_key)
    block = attester.attest_response(payload_id, completion, client_key_sha256=bytes.fromhex(fingerprint))
    return block, fingerprint if block.get("is_available") else None


def _binds_client_key(attester: Any) -> bool:
    try:
        parameters = inspect.signature(attester.attest_response).parameters
    except (TypeError, ValueError):
        return False
    return "client_key_sha256" in parameters
