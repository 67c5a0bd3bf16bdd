"""What a quote's extraData may contain to bind it to one request (docs/protocol.md).

NOMYO documents the quote as "tied to the payload_id nonce" without publishing
the derivation, so two plausible ones are accepted and named, alongside the
project's own, stronger binding, which also covers the response content:

``sha256-payload-id``
    ``SHA-256(payload_id as UTF-8)``
``raw-payload-id``
    the payload_id's UTF-8 bytes themselves (at most 64)
``nomyo-audit-v1``
    ``SHA-256("nomyo-audit/response-binding/v1" || 0x00 || u16(len(pid)) || pid || SHA-256(content))``
    where ``content`` is the canonical JSON of the response without ``_metadata``
    (:func:`response_content_digest`). A quote bound this way cannot be moved to
    another response for the same request.

``nomyo-audit-key-v1`` binds a router key for attest-before-send:
``SHA-256("nomyo-audit/key-binding/v1" || 0x00 || nonce || SHA-256(DER SPKI))``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DERIVATIONS",
    "KEY_BINDING_LABEL",
    "RESPONSE_BINDING_LABEL",
    "canonical_json",
    "key_binding",
    "match_derivation",
    "recorded_content_digest",
    "response_binding",
    "response_content_digest",
]

RESPONSE_BINDING_LABEL = b"nomyo-audit/response-binding/v1"
KEY_BINDING_LABEL = b"nomyo-audit/key-binding/v1"

#: Every derivation name, strongest first.
DERIVATIONS = ("nomyo-audit-v1", "sha256-payload-id", "raw-payload-id")


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8: deterministic for JSON data."""
    return _CANONICAL_ENCODER.encode(value).encode()


# json.dumps with options builds an encoder per call; this one is built once (it keeps no state).
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def response_content_digest(response: Mapping[str, Any]) -> bytes:
    """SHA-256 of the response as the model produced it: everything but ``_metadata``.

    What the ``nomyo-audit-v1`` binding covers. Raises TypeError or ValueError when the
    response is not JSON data.
    """
    content = {k: v for k, v in response.items() if k != "_metadata"}
    return hashlib.sha256(canonical_json(content)).digest()


def recorded_content_digest(verification: object) -> bytes | None:
    """The response-content digest a client recorded with its verdict, or None.

    ``verification`` is the client's verdict as kept beside the evidence (an
    audit record's ``verdict``, or ``_metadata.verification`` in a saved
    response). Anything but a mapping whose ``content_digest`` is 64 hex
    digits gives None, never an exception: this reads stored, possibly
    tampered, data. The one implementation for records, the CLI and policies.
    """
    if not isinstance(verification, Mapping):
        return None
    value = verification.get("content_digest")
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def response_binding(payload_id: str, content_digest: bytes) -> bytes:
    """The ``nomyo-audit-v1`` extraData: binds a quote to one request *and* its response content.

    ``content_digest`` is :func:`response_content_digest` of the response. Raises
    UnicodeEncodeError when ``payload_id`` is not valid Unicode text (a lone surrogate).
    """
    pid = payload_id.encode()
    return hashlib.sha256(b"".join((_RESPONSE_PREFIX, _U16.pack(len(pid)), pid, content_digest))).digest()


_RESPONSE_PREFIX = RESPONSE_BINDING_LABEL + b"\x00"
_U16 = struct.Struct(">H")


def key_binding(nonce: bytes, spki_sha256: bytes) -> bytes:
    """The ``nomyo-audit-key-v1`` extraData: binds a quote to the caller's fresh ``nonce`` and the
    router key whose DER SubjectPublicKeyInfo hashes to ``spki_sha256`` (attest-before-send)."""
    return hashlib.sha256(KEY_BINDING_LABEL + b"\x00" + nonce + spki_sha256).digest()


def match_derivation(
    extra_data: bytes,
    payload_id: str,
    content_digest: bytes | None = None,
    accept: tuple[str, ...] = DERIVATIONS,
) -> str | None:
    """The name of the accepted derivation ``extra_data`` matches (tried in ``accept`` order), or None.

    Each comparison is constant-time; the values compared are public, so
    stopping at the first match tells an observer nothing secret. Raises
    UnicodeEncodeError when ``payload_id`` is not valid Unicode text (a lone surrogate).
    """
    for name in accept:
        if name == "nomyo-audit-v1":
            if content_digest is None:
                continue
            value = response_binding(payload_id, content_digest)
        elif name == "sha256-payload-id":
            value = hashlib.sha256(payload_id.encode()).digest()
        elif name == "raw-payload-id":
            value = payload_id.encode()
        else:
            continue
        if hmac.compare_digest(extra_data, value):
            return name
    return None
