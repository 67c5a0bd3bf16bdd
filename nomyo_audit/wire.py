"""NOMYO protocol 1.0 encrypted packages: pure functions, no I/O.

A package is the JSON document both directions carry::

    {"version": "1.0", "algorithm": "hybrid-aes256-rsa4096",
     "encrypted_payload": {"ciphertext": b64, "nonce": b64, "tag": b64},
     "encrypted_aes_key": b64, "key_algorithm": "RSA-OAEP-SHA256",
     "payload_algorithm": "AES-256-GCM"}

with a fresh 32-byte AES key and 12-byte nonce per message, the key wrapped
with RSA-OAEP (MGF1-SHA256, SHA-256, no label). Responses add
``processed_at``. Anything else -- another version, another algorithm, a
16-byte key -- is rejected rather than negotiated: no downgrade.

The one-shot :class:`AESGCM` API is used throughout; it is many times faster
than a ``Cipher`` object for the same operation.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._memory import secure_buffer as _secure_buffer
from ._memory import wipe as _wipe
from .errors import ProtocolError, SecurityError

__all__ = [
    "ACTIVATION_PATH",
    "AES_KEY_BYTES",
    "AIK_CERTIFICATE_PATH",
    "ALGORITHM",
    "CLIENT_FIELDS",
    "COMPLETION_PATH",
    "COMPLETION_V2_PATH",
    "ENDORSEMENT_PATH",
    "GCM_NONCE_BYTES",
    "GCM_TAG_BYTES",
    "KEY_ALGORITHM",
    "KEY_ATTESTATION_PATH",
    "KEY_CONFIG_ATTESTATION_PATH",
    "KEY_CONFIG_PATH",
    "MAX_JSON_DEPTH",
    "MAX_PACKAGE_BYTES",
    "MAX_PUBLIC_EXPONENT",
    "MAX_RSA_BITS",
    "MIN_RSA_BITS",
    "PAYLOAD_ALGORITHM",
    "PUBLIC_KEY_PATH",
    "SECURITY_TIERS",
    "VERSION",
    "EncryptedPackage",
    "decrypt_package",
    "encrypt_package",
    "key_fingerprint",
    "load_public_key_pem",
    "parse_json",
    "parse_package",
    "public_key_pem",
]

#: The package ``version`` this module writes and the only one it reads.
VERSION = "1.0"
#: The package ``algorithm``: hybrid encryption, AES-256-GCM under an RSA-OAEP-wrapped key.
ALGORITHM = "hybrid-aes256-rsa4096"
#: The package ``key_algorithm``: how the AES key is wrapped (OAEP, MGF1-SHA256, SHA-256, no label).
KEY_ALGORITHM = "RSA-OAEP-SHA256"
#: The package ``payload_algorithm``: how the message itself is sealed.
PAYLOAD_ALGORITHM = "AES-256-GCM"

#: The AES key size (a fresh key per message): a 16-byte key is refused, never negotiated.
AES_KEY_BYTES = 32
#: The AES-GCM nonce size (a fresh nonce per message).
GCM_NONCE_BYTES = 12
#: The AES-GCM tag size; the package carries the tag apart from the ciphertext.
GCM_TAG_BYTES = 16
#: Smaller RSA keys are refused, whoever holds them (client or router).
MIN_RSA_BITS = 2048
#: Larger keys or public exponents are refused when loaded: OpenSSL cannot encrypt to a modulus over
#: 16384 bits, nor with an exponent over 64 bits for moduli over 3072 bits, and would say so only
#: when a prompt is being encrypted (a bare ValueError). The router caps client keys the same way.
MAX_RSA_BITS = 8192
#: The largest RSA public exponent accepted (see :data:`MAX_RSA_BITS`).
MAX_PUBLIC_EXPONENT = 2**32 - 1
#: Upper bound on a package, checked before parsing (the reference client
#: limits payloads to 10 MiB; base64 and JSON add about a third).
MAX_PACKAGE_BYTES = 16 * 1024 * 1024
#: Deepest nesting accepted in a package or a decrypted message. Chat completions nest a handful
#: of levels; the limit sits far below the interpreter's recursion limit, so everything that later
#: walks the document (canonical JSON, digests, the audit record) cannot overflow the stack.
MAX_JSON_DEPTH = 100

#: Where a router serves its public key (PEM, ``GET``).
PUBLIC_KEY_PATH = "/pki/public_key"
#: Where a router serves a TPM quote over its key (``GET ?nonce=<64 hex>``); optional.
KEY_ATTESTATION_PATH = "/pki/attestation"
#: Where a router serves its EK public area, EK certificate chain and AIK (``GET``, anchoring extension).
ENDORSEMENT_PATH = "/pki/endorsement"
#: Where a router activates a credential made to its EK for its AIK (``POST``, anchoring extension).
ACTIVATION_PATH = "/pki/activation"
#: Where an enrollment CA hands a router its AK certificate chain (``POST``, admin key only).
AIK_CERTIFICATE_PATH = "/pki/aik_certificate"
#: Where a client ``POST``s an encrypted chat completion and gets the encrypted reply.
COMPLETION_PATH = "/v1/chat/secure_completion"
#: Where a router serves its protocol 2 key configuration (JSON, ``GET``; docs/protocol-v2.md).
KEY_CONFIG_PATH = "/pki/v2/key_config"
#: Where a router serves a TPM quote over its key configuration's digest (``GET ?nonce=<hex>``).
KEY_CONFIG_ATTESTATION_PATH = "/pki/v2/attestation"
#: Where a client ``POST``s a protocol 2 (HPKE) chat completion and gets the sealed reply.
COMPLETION_V2_PATH = "/v2/chat/secure_completion"
#: The values of the ``X-Security-Tier`` header; a client and a router refuse any other.
SECURITY_TIERS = ("standard", "high", "maximum")
#: ``_metadata`` fields only the client computes (its verdict, its policy result, whether the reply
#: was bound to the request...). A router's copy is never taken: the client drops it and names it in
#: ``dropped_router_fields``.
CLIENT_FIELDS = (
    "payload_id_verified",
    "is_encrypted",
    "encryption_algorithm",
    "verification",
    "policy",
    "dropped_router_fields",
    "unauthenticated_processed_at",
    "protocol",
)

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@dataclass(frozen=True)
class EncryptedPackage:
    """A parsed, structurally valid package (nothing decrypted yet)."""

    ciphertext: bytes
    nonce: bytes
    tag: bytes
    encrypted_aes_key: bytes
    processed_at: Any = None


def encrypt_package(
    plaintext: bytes | bytearray,
    recipient: rsa.RSAPublicKey,
    *,
    processed_at: int | None = None,
) -> bytes:
    """Encrypt ``plaintext`` to ``recipient`` and return the package as JSON bytes."""
    with _secure_buffer(bytearray(os.urandom(AES_KEY_BYTES))) as aes_key:
        nonce = os.urandom(GCM_NONCE_BYTES)
        sealed = AESGCM(aes_key).encrypt(nonce, plaintext, None)
        key_copy = bytes(aes_key)  # RSA encrypt needs bytes; wiped right after
        wrapped_key = recipient.encrypt(key_copy, _OAEP)
        _wipe(key_copy)
    package: dict[str, Any] = {
        "version": VERSION,
        "algorithm": ALGORITHM,
        "encrypted_payload": {
            "ciphertext": _b64(sealed[:-GCM_TAG_BYTES]),
            "nonce": _b64(nonce),
            "tag": _b64(sealed[-GCM_TAG_BYTES:]),
        },
        "encrypted_aes_key": _b64(wrapped_key),
        "key_algorithm": KEY_ALGORITHM,
        "payload_algorithm": PAYLOAD_ALGORITHM,
    }
    if processed_at is not None:
        package["processed_at"] = processed_at
    return json.dumps(package).encode()


def parse_package(data: bytes | bytearray | str) -> EncryptedPackage:
    """Validate a package's structure; raise :class:`ProtocolError` naming the fault."""
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("encrypted package must be bytes", code="package_type")
    if not data:
        raise ProtocolError("encrypted package is empty", code="package_empty")
    if len(data) > MAX_PACKAGE_BYTES:
        raise ProtocolError(
            f"encrypted package is {len(data)} bytes, over the {MAX_PACKAGE_BYTES}-byte limit",
            code="package_too_large",
        )
    doc = parse_json(data, what="encrypted package", code="package_json")
    if not isinstance(doc, dict):
        raise ProtocolError("encrypted package must be a JSON object", code="package_json")
    missing = [f for f in ("version", "algorithm", "encrypted_payload", "encrypted_aes_key") if f not in doc]
    if missing:
        raise ProtocolError(
            f"encrypted package is missing field(s): {', '.join(missing)}", code="package_fields"
        )
    _expect(doc, "version", VERSION, "unsupported protocol version", "version")
    _expect(doc, "algorithm", ALGORITHM, "unsupported encryption algorithm", "algorithm")
    # Optional in nomyo 0.2.9's parser, but if present they must not name anything else.
    if "key_algorithm" in doc:
        _expect(doc, "key_algorithm", KEY_ALGORITHM, "unsupported key algorithm", "algorithm")
    if "payload_algorithm" in doc:
        _expect(doc, "payload_algorithm", PAYLOAD_ALGORITHM, "unsupported payload algorithm", "algorithm")
    inner = doc["encrypted_payload"]
    if not isinstance(inner, dict):
        raise ProtocolError("encrypted_payload must be a JSON object", code="package_fields")
    missing = [f for f in ("ciphertext", "nonce", "tag") if f not in inner]
    if missing:
        raise ProtocolError(
            f"encrypted_payload is missing field(s): {', '.join(missing)}", code="package_fields"
        )
    nonce = _unb64(inner["nonce"], "encrypted_payload.nonce")
    tag = _unb64(inner["tag"], "encrypted_payload.tag")
    if len(nonce) != GCM_NONCE_BYTES:
        raise ProtocolError(f"nonce is {len(nonce)} bytes, expected {GCM_NONCE_BYTES}", code="package_nonce")
    if len(tag) != GCM_TAG_BYTES:
        raise ProtocolError(f"tag is {len(tag)} bytes, expected {GCM_TAG_BYTES}", code="package_tag")
    return EncryptedPackage(
        ciphertext=_unb64(inner["ciphertext"], "encrypted_payload.ciphertext"),
        nonce=nonce,
        tag=tag,
        encrypted_aes_key=_unb64(doc["encrypted_aes_key"], "encrypted_aes_key"),
        processed_at=doc.get("processed_at"),
    )


def parse_json(data: bytes | bytearray | str, *, what: str, code: str) -> Any:
    """Parse strict JSON (RFC 8259) or raise :class:`ProtocolError` with ``code``.

    Refused, each with a message that says which: text that is not JSON or not
    UTF-8, ``NaN`` and ``Infinity`` (not JSON, and no canonical form) and numbers
    that overflow to them (``1e400``), nesting
    deeper than :data:`MAX_JSON_DEPTH`, and lone UTF-16 surrogates (``"\\ud800"``
    parses in Python but is not Unicode text: it cannot be encoded, hashed or
    logged). What this returns is safe to serialise, digest and store.
    """
    try:
        doc = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ProtocolError(
            f"{what} is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels", code=code
        ) from None
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not UTF-8 text", code=code) from None
    except ValueError as exc:
        raise ProtocolError(f"{what} is not valid JSON ({_json_fault(exc)})", code=code) from None
    fault = _json_tree_fault(doc)
    if fault is not None:
        raise ProtocolError(f"{what} {fault}", code=code)
    return doc


class _NonStandardConstant(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonStandardConstant(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to infinity: no JSON can say that back
        raise _NonStandardConstant(f"{text[:32]} (out of range)")
    return value


def _json_fault(exc: ValueError) -> str:
    if isinstance(exc, _NonStandardConstant):
        return f"{exc} is not a JSON number"
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at offset {exc.pos}"
    return "malformed"


def _json_tree_fault(doc: Any) -> str | None:
    """What makes a parsed document unsafe to handle, or None: depth and lone surrogates."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _has_lone_surrogate(node):
                return "contains a lone UTF-16 surrogate escape, which is not Unicode text"
        elif isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
                stack.extend((value, depth + 1) for value in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def decrypt_package(package: EncryptedPackage, private_key: rsa.RSAPrivateKey) -> bytearray:
    """Return the plaintext as a ``bytearray`` the caller can wipe (``nomyo_audit._memory.wipe``).

    Every cryptographic failure (wrong key, flipped bit, truncated key) gives
    the same message: which step failed is not told to the sender.
    """
    try:
        key = private_key.decrypt(package.encrypted_aes_key, _OAEP)
    except ValueError:
        raise SecurityError(
            "decryption failed: integrity or authentication check failed", code="decrypt"
        ) from None
    aes_key = bytearray(key)
    _wipe(key)
    try:
        if len(aes_key) != AES_KEY_BYTES:
            raise SecurityError("decryption failed: integrity or authentication check failed", code="decrypt")
        plain = AESGCM(aes_key).decrypt(package.nonce, package.ciphertext + package.tag, None)
    except InvalidTag:
        raise SecurityError(
            "decryption failed: integrity or authentication check failed", code="decrypt"
        ) from None
    finally:
        _wipe(aes_key)
    out = bytearray(plain)
    _wipe(plain)
    return out


def public_key_pem(key: rsa.RSAPublicKey) -> str:
    """The SubjectPublicKeyInfo PEM text used on the wire."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key_pem(pem: str | bytes, *, what: str = "public key") -> rsa.RSAPublicKey:
    """Parse an RSA public key PEM and enforce the minimum size."""
    if isinstance(pem, str):
        pem = pem.encode()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ProtocolError(f"{what} is not a valid PEM public key", code="public_key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ProtocolError(f"{what} is not an RSA key", code="public_key")
    if key.key_size < MIN_RSA_BITS:
        raise ProtocolError(
            f"{what} is {key.key_size} bits; at least {MIN_RSA_BITS} are required", code="public_key"
        )
    if key.key_size > MAX_RSA_BITS:
        raise ProtocolError(
            f"{what} is {key.key_size} bits; at most {MAX_RSA_BITS} bits are accepted", code="public_key"
        )
    exponent = key.public_numbers().e
    if exponent % 2 == 0 or exponent > MAX_PUBLIC_EXPONENT:
        raise ProtocolError(
            f"{what} has a {exponent.bit_length()}-bit public exponent; "
            "it must be odd and from 3 to 2^32-1 (65537 is usual)",
            code="public_key",
        )
    return key


def key_fingerprint(key: rsa.RSAPublicKey) -> str:
    """SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (what pinning compares)."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize().hex()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ProtocolError(f"{field} must be a base64 string", code="package_base64")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{field} is not valid base64", code="package_base64") from None


def _expect(doc: dict[str, Any], field: str, expected: str, what: str, code: str) -> None:
    value = doc[field]
    if value != expected:
        shown = value if isinstance(value, str) and len(value) <= 64 else type(value).__name__
        raise ProtocolError(f"{what}: {shown!r} (expected {expected!r})", code=code)
