"""DSSE envelopes around in-toto Statements: pure signing and verification.

PAE(type, body) = ``"DSSEv1" SP len(type) SP type SP len(body) SP body``; the
signature is over PAE, never over the bare payload. Keys: Ed25519, ECDSA P-256
(SHA-256, DER signature) or RSA-PSS (SHA-256, MGF1-SHA-256, digest-length salt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from ..errors import IntegrityError
from ._keys import SigningKey, VerifyingKey

__all__ = [
    "IN_TOTO_PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "EnvelopeError",
    "key_fingerprint",
    "pae",
    "sign_envelope",
    "statement",
    "verify_envelope",
]

#: The DSSE payload type of an in-toto Statement.
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
#: The ``_type`` of an in-toto Statement v1.
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class EnvelopeError(IntegrityError):
    """A DSSE envelope is malformed or its signature does not verify."""

    code = "envelope"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a signature covers."""
    encoded = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(encoded), encoded, len(payload), payload)


def key_fingerprint(key: VerifyingKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, hex: the envelope's ``keyid``."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def statement(
    subjects: Mapping[str, bytes], predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """An in-toto Statement v1 whose subjects are files (name -> contents)."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [
            {"name": name, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
            for name, data in sorted(subjects.items())
        ],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def _sign(key: SigningKey, message: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    return key.sign(message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256())


def _verify(key: VerifyingKey, signature: bytes, message: bytes) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, message)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPublicKey):
        key.verify(
            signature,
            message,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )


def sign_envelope(
    payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE
) -> dict[str, Any]:
    """A DSSE envelope (JSON-able dict) carrying ``payload`` and one signature by ``key`` over its PAE."""
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [
            {
                "keyid": key_fingerprint(key.public_key()),
                "sig": base64.b64encode(_sign(key, pae(payload_type, payload))).decode(),
            }
        ],
    }


def verify_envelope(envelope: Mapping[str, Any], key: VerifyingKey) -> bytes:
    """The payload, if ``key`` signed the envelope; :class:`EnvelopeError` otherwise."""
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = envelope["payloadType"]
        signatures = list(envelope["signatures"])
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise EnvelopeError("not a DSSE envelope (payload, payloadType, signatures)") from None
    if not isinstance(payload_type, str):
        raise EnvelopeError("payloadType must be a string")
    message = pae(payload_type, payload)
    for entry in signatures:
        try:
            _verify(key, base64.b64decode(entry["sig"], validate=True), message)
        except (InvalidSignature, KeyError, TypeError, binascii.Error, ValueError):
            continue
        return payload
    raise EnvelopeError("no signature in the envelope verifies with this key")


def statement_of(envelope: Mapping[str, Any], key: VerifyingKey) -> dict[str, Any]:
    """The in-toto Statement ``key`` signed in ``envelope``; :class:`EnvelopeError` otherwise."""
    payload = verify_envelope(envelope, key)
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        raise EnvelopeError(f"payloadType is not {IN_TOTO_PAYLOAD_TYPE}")
    try:
        doc = json.loads(payload)
    except ValueError:
        raise EnvelopeError("the signed payload is not JSON") from None
    if not isinstance(doc, dict) or doc.get("_type") != STATEMENT_TYPE:
        raise EnvelopeError("the signed payload is not an in-toto Statement v1")
    return doc
