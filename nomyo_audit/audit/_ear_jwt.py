"""Sign an EAR claims-set (:func:`nomyo_audit.tpm.to_ear`) as a JWS compact JWT (RFC 7515, 7519).

A hand-written signer over ``cryptography`` rather than a JOSE library: signing one token is a
header, two base64url encodings and one signature, and a signer that takes nothing but a key
cannot be talked into a weak token. The algorithm follows from the key's type alone
(Ed25519 -> ``EdDSA``, P-256 -> ``ES256``), so ``alg: none`` and an HMAC keyed with a public key
(key confusion) are impossible by construction; any other key is refused. ``kid`` is the key's
fingerprint (SHA-256 of its DER SubjectPublicKeyInfo, as reports' DSSE ``keyid``), so a relying
party picks the verifying key by it and knows which key it expects. ``typ`` is ``eat+jwt``: the
media type ``application/eat+jwt`` of EAT (RFC 9782), shortened as RFC 7515 4.1.9 recommends;
draft-ietf-rats-ear serialises EAR as such an EAT. The tests check every token with jwcrypto and
PyJWT, code we did not write.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ..errors import ConfigurationError
from ._dsse import key_fingerprint

__all__ = ["EAR_JWT_TYPE", "jwt_algorithm", "sign_ear"]

#: the JOSE ``typ`` of every token: the EAT media type without its ``application/`` prefix
EAR_JWT_TYPE = "eat+jwt"
_P256_BYTES = 32


def sign_ear(claims: Mapping[str, Any], key: object) -> str:
    """``claims`` as a compact JWS: ``header.payload.signature``, each base64url without padding.

    ``key`` is an Ed25519 private key (``EdDSA``) or an ECDSA P-256 private key (``ES256``, the
    signature as ``r || s``, 32 bytes each, RFC 7518 3.4). Raises
    :class:`nomyo_audit.errors.ConfigurationError` (``ear_key_unsupported``) for any other key
    (an RSA or P-384 key, a public key, bytes), and (``ear_claims_invalid``) for claims no JSON
    holds (NaN, a non-text key), before anything is signed.
    """
    alg = jwt_algorithm(key)
    assert isinstance(key, (ed25519.Ed25519PrivateKey, ec.EllipticCurvePrivateKey))  # jwt_algorithm checked
    header = {"alg": alg, "kid": key_fingerprint(key.public_key()), "typ": EAR_JWT_TYPE}
    try:
        payload = json.dumps(claims, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"the EAR claims are not JSON: {exc}", code="ear_claims_invalid") from None
    signing_input = f"{_b64(json.dumps(header, sort_keys=True).encode())}.{_b64(payload.encode())}"
    message = signing_input.encode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(message)
    else:
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
    return f"{signing_input}.{_b64(signature)}"


def jwt_algorithm(key: object) -> str:
    """The JWS ``alg`` ``key`` signs with: ``EdDSA`` (Ed25519) or ``ES256`` (P-256), from its type alone.

    Raises :class:`nomyo_audit.errors.ConfigurationError` (``ear_key_unsupported``) for any other key.
    """
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    raise ConfigurationError(
        "an EAR JWT is signed with an Ed25519 (EdDSA) or ECDSA P-256 (ES256) private key",
        code="ear_key_unsupported",
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
