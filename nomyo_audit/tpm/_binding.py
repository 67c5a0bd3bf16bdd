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
    where ``content`` is the canonical JSON (RFC 8785, docs/protocol.md) of the response
    without ``_metadata`` (:func:`response_content_digest`); evidence made before RFC 8785
    was adopted used Python's sorted-keys JSON (:func:`legacy_content_digest`). A quote bound
    this way cannot be moved to another response for the same request.
``nomyo-audit-v2``
    ``SHA-256("nomyo-audit/response-binding/v2" || 0x00 || u16(len(pid)) || pid || SHA-256(content)
    || SHA-256(DER SPKI of the client key the router received))``: ``nomyo-audit-v1`` plus the
    protocol 1.0 client key (``X-Public-Key``), so a client whose key was swapped on the path
    sees that its own key does not match (:func:`client_key_binding`).

``nomyo-audit-key-v1`` binds a router key for attest-before-send:
``SHA-256("nomyo-audit/key-binding/v1" || 0x00 || nonce || SHA-256(DER SPKI))``.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping
from typing import Any

from .._canonical import CanonicalJSONError, canonical_json, legacy_json

__all__ = [
    "CLIENT_KEY_BINDING_LABEL",
    "DERIVATIONS",
    "KEY_BINDING_LABEL",
    "RESPONSE_BINDING_LABEL",
    "canonical_json",
    "client_key_binding",
    "key_binding",
    "legacy_content_digest",
    "match_derivation",
    "recorded_content_digest",
    "response_binding",
    "response_content_digest",
]

RESPONSE_BINDING_LABEL = b"nomyo-audit/response-binding/v1"
KEY_BINDING_LABEL = b"nomyo-audit/key-binding/v1"
CLIENT_KEY_BINDING_LABEL = b"nomyo-audit/response-binding/v2"

#: Every derivation name, strongest first.
DERIVATIONS = ("nomyo-audit-v2", "nomyo-audit-v1", "sha256-payload-id", "raw-payload-id")


def response_content_digest(response: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON (RFC 8785) of the response as the model produced it.

    That is everything but ``_metadata``; what the ``nomyo-audit-v1`` binding covers. Raises
    :class:`nomyo_audit._canonical.CanonicalJSONError` (a ``ValueError``) for content with no
    canonical JSON: NaN, an infinity, a lone surrogate, a non-JSON type (nothing strict JSON
    parsing yields).
    """
    return hashlib.sha256(canonical_json(_content(response))).digest()


def legacy_content_digest(response: Mapping[str, Any]) -> bytes | None:
    """The content digest as taken before RFC 8785, or None where it cannot differ or be taken.

    Responses saved before carry quotes bound (``nomyo-audit-v1``) to SHA-256 of Python's
    sorted-keys JSON. Where that text equals the canonical one (no float spelled differently,
    no key outside the BMP: most responses), None says that retrying with it is pointless.
    For re-checking saved evidence after a ``nonce_mismatch`` only; never raises.
    """
    content = _content(response)
    try:
        legacy = legacy_json(content)
    except (ValueError, TypeError, RecursionError):
        return None
    try:
        if legacy == canonical_json(content):
            return None
    except CanonicalJSONError:
        pass
    return hashlib.sha256(legacy).digest()


def _content(response: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "_metadata"}


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
_CLIENT_KEY_PREFIX = CLIENT_KEY_BINDING_LABEL + b"\x00"
_U16 = struct.Struct(">H")


def client_key_binding(payload_id: str, content_digest: bytes, client_key_sha256: bytes) -> bytes:
    """The ``nomyo-audit-v2`` extraData: :func:`response_binding`'s request and content, and the
    client key the router encrypted the reply to (SHA-256 of its DER SubjectPublicKeyInfo).

    A client that recomputes it with its *own* key learns whether the router sealed the reply to
    that key. Raises UnicodeEncodeError when ``payload_id`` is not valid Unicode text.
    """
    pid = payload_id.encode()
    parts = (_CLIENT_KEY_PREFIX, _U16.pack(len(pid)), pid, content_digest, client_key_sha256)
    return hashlib.sha256(b"".join(parts)).digest()


def key_binding(nonce: bytes, spki_sha256: bytes) -> bytes:
    """The ``nomyo-audit-key-v1`` extraData: binds a quote to the caller's fresh ``nonce`` and the
    router key whose DER SubjectPublicKeyInfo hashes to ``spki_sha256`` (attest-before-send)."""
    return hashlib.sha256(KEY_BINDING_LABEL + b"\x00" + nonce + spki_sha256).digest()


def match_derivation(
    extra_data: bytes,
    payload_id: str,
    content_digest: bytes | None = None,
    accept: tuple[str, ...] = DERIVATIONS,
    *,
    client_key_sha256: bytes | None = None,
) -> str | None:
    """The name of the accepted derivation ``extra_data`` matches (tried in ``accept`` order), or None.

    ``nomyo-audit-v2`` is tried only with both ``content_digest`` and ``client_key_sha256`` (the
    SHA-256 of the caller's own client key's DER SPKI). Each comparison is constant-time; the
    values compared are public, so stopping at the first match tells an observer nothing secret. Raises
    UnicodeEncodeError when ``payload_id`` is not valid Unicode text (a lone surrogate).
    """
    for name in accept:
        if name == "nomyo-audit-v2":
            if content_digest is None or client_key_sha256 is None:
                continue
            value = client_key_binding(payload_id, content_digest, client_key_sha256)
        elif name == "nomyo-audit-v1":
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
