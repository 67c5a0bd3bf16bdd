"""The anchoring extension's JSON messages (docs/protocol.md), read strictly and written in one place.

Pure, no I/O. The router, the enrollment CA and its server all speak these bodies, so each is
parsed here once: strict JSON (:func:`nomyo_audit.wire.parse_json`), exactly the fields the
protocol names (an unknown field is refused, not ignored), ``version`` 1, standard base64 with
padding, and every value within the sizes a TPM can produce. Every refusal is a
:class:`~nomyo_audit.errors.ProtocolError` whose ``code`` says which rule broke; the messages name
the field, never its value (an activation secret must not reach a log).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .errors import ProtocolError
from .tpm._keys import to_crypto_key
from .tpm._marshal import TPMStructureError
from .tpm._public import parse_public
from .wire import parse_json

__all__ = [
    "ANCHORING_VERSION",
    "MAX_CHAIN_CERTIFICATES",
    "MAX_MESSAGE_BYTES",
    "ActivationRequest",
    "Endorsement",
    "activation_request_json",
    "b64",
    "certifies",
    "error_body",
    "parse_activation_request",
    "parse_activation_response",
    "parse_chain_upload",
    "parse_endorsement",
]

#: The ``version`` of every anchoring message; another one is refused (``unsupported_version``).
ANCHORING_VERSION = 1
#: Upper bound on any anchoring message body: certificate chains included, far above what a TPM
#: produces (EK certificates are about 1-2 KiB), far below the router's package limit.
MAX_MESSAGE_BYTES = 64 * 1024
#: At most this many certificates in a chain (leaf, intermediates, optional root).
MAX_CHAIN_CERTIFICATES = 8
_MAX_TPM2B_PUBLIC = 2 + 1024  # a TPMT_PUBLIC with an RSA-4096 unique is well under 700 bytes
_MAX_CERTIFICATE = 16 * 1024
_MAX_NAME = 2 + 64  # nameAlg || digest (SHA-512 at most)
_MAX_ID_OBJECT = 2 + 2 * (2 + 64)
_MAX_ENCRYPTED_SECRET = 2 + 512
_MAX_SECRET = 64
_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class Endorsement:
    """``GET /pki/endorsement``, decoded: the EK public area (TPM2B_PUBLIC), its certificate (DER, or
    None) and intermediates, the AIK (TPM2B_PUBLIC) and its parent's qualified name (or None)."""

    ek_public: bytes
    ek_certificate: bytes | None
    ek_chain: tuple[bytes, ...]
    aik_public: bytes
    aik_parent_qualified_name: bytes | None


@dataclass(frozen=True)
class ActivationRequest:
    """``POST /pki/activation``, decoded: the AIK name the credential is for, and the credential."""

    aik_name: bytes
    id_object: bytes
    encrypted_secret: bytes


def b64(data: bytes) -> str:
    """Standard base64 with padding, the encoding of every binary field."""
    return base64.b64encode(data).decode("ascii")


def error_body(code: str, message: str) -> dict[str, Any]:
    """An anchoring error body: ``{"error": {"code", "message"}}``, plus ``detail`` (the same message)
    so that clients reading the router's older ``{"detail": ...}`` errors show it too."""
    return {"error": {"code": code, "message": message}, "detail": message}


def activation_request_json(aik_name: bytes, id_object: bytes, encrypted_secret: bytes) -> dict[str, Any]:
    """The body of ``POST /pki/activation``."""
    return {
        "version": ANCHORING_VERSION,
        "aik_name_b64": b64(aik_name),
        "id_object_b64": b64(id_object),
        "encrypted_secret_b64": b64(encrypted_secret),
    }


def parse_activation_request(body: bytes) -> ActivationRequest:
    """Read a ``POST /pki/activation`` body. Raises :class:`ProtocolError`."""
    doc = _document(body, "activation request", ("aik_name_b64", "id_object_b64", "encrypted_secret_b64"))
    return ActivationRequest(
        aik_name=_binary(doc, "aik_name_b64", _MAX_NAME),
        id_object=_binary(doc, "id_object_b64", _MAX_ID_OBJECT),
        encrypted_secret=_binary(doc, "encrypted_secret_b64", _MAX_ENCRYPTED_SECRET),
    )


def parse_activation_response(body: bytes) -> bytes:
    """The secret of a ``POST /pki/activation`` answer. Raises :class:`ProtocolError`."""
    doc = _document(body, "activation response", ("secret_b64",))
    return _binary(doc, "secret_b64", _MAX_SECRET)


def parse_endorsement(body: bytes) -> Endorsement:
    """Read a ``GET /pki/endorsement`` body. Raises :class:`ProtocolError`."""
    fields = (
        "ek_public_b64",
        "ek_certificate_b64",
        "ek_chain_b64",
        "aik_pubkey_b64",
        "aik_parent_qualified_name_b64",
    )
    doc = _document(body, "endorsement", fields)
    return Endorsement(
        ek_public=_binary(doc, "ek_public_b64", _MAX_TPM2B_PUBLIC),
        ek_certificate=_optional_binary(doc, "ek_certificate_b64", _MAX_CERTIFICATE),
        ek_chain=_chain(doc, "ek_chain_b64", allow_empty=True),
        aik_public=_binary(doc, "aik_pubkey_b64", _MAX_TPM2B_PUBLIC),
        aik_parent_qualified_name=_optional_binary(doc, "aik_parent_qualified_name_b64", _MAX_NAME + 4),
    )


def parse_chain_upload(body: bytes) -> tuple[bytes, ...]:
    """Read a ``POST /pki/aik_certificate`` body: the AK certificate chain, leaf first, as DER."""
    doc = _document(body, "AK certificate upload", ("aik_cert_chain_b64",))
    return _chain(doc, "aik_cert_chain_b64", allow_empty=False)


def certifies(certificate_der: bytes, aik_public: bytes) -> bool:
    """Whether the certificate's key is exactly the AIK's (same SubjectPublicKeyInfo). False for bytes
    that are not a certificate or an AIK that cannot be read."""
    try:
        certificate = x509.load_der_x509_certificate(certificate_der)
        key = to_crypto_key(parse_public(aik_public))
        return bool(certificate.public_key().public_bytes(*_SPKI) == key.public_bytes(*_SPKI))
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm, TPMStructureError):
        return False  # InvalidVersion and UnsupportedAlgorithm are not ValueErrors


def _document(body: bytes, what: str, fields: Sequence[str]) -> Mapping[str, Any]:
    if len(body) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"{what} is over the {MAX_MESSAGE_BYTES}-byte limit", code="body_too_large")
    doc = parse_json(body, what=what, code="malformed_json")
    if not isinstance(doc, dict):
        raise ProtocolError(f"{what} must be a JSON object", code="malformed_json")
    expected = {"version", *fields}
    unknown = sorted(set(doc) - expected)
    if unknown:
        shown = unknown[0] if len(unknown[0]) <= 40 else unknown[0][:40] + "..."
        raise ProtocolError(f"{what} has an unknown field {shown!r}", code="unknown_field")
    missing = [name for name in ("version", *fields) if name not in doc]
    if missing:
        raise ProtocolError(f"{what} lacks the field {missing[0]!r}", code="missing_field")
    version = doc["version"]
    if type(version) is not int or version != ANCHORING_VERSION:
        raise ProtocolError(
            f"{what} has an unsupported version (this side speaks {ANCHORING_VERSION})",
            code="unsupported_version",
        )
    return doc


def _binary(doc: Mapping[str, Any], field: str, limit: int) -> bytes:
    value = doc[field]
    if not isinstance(value, str):
        raise ProtocolError(f"{field} must be a base64 string", code="bad_base64")
    if len(value) > 4 * (limit + 2) // 3 + 4:
        raise ProtocolError(
            f"{field} is longer than the protocol allows ({limit} bytes)", code="field_too_large"
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(f"{field} is not valid base64", code="bad_base64") from None
    if not data:
        raise ProtocolError(f"{field} is empty", code="bad_base64")
    if len(data) > limit:
        raise ProtocolError(
            f"{field} is longer than the protocol allows ({limit} bytes)", code="field_too_large"
        )
    return data


def _optional_binary(doc: Mapping[str, Any], field: str, limit: int) -> bytes | None:
    return None if doc[field] is None else _binary(doc, field, limit)


def _chain(doc: Mapping[str, Any], field: str, *, allow_empty: bool) -> tuple[bytes, ...]:
    value = doc[field]
    if not isinstance(value, list):
        raise ProtocolError(f"{field} must be a list of base64 certificates", code="bad_chain")
    if not value and not allow_empty:
        raise ProtocolError(f"{field} is empty", code="bad_chain")
    if len(value) > MAX_CHAIN_CERTIFICATES:
        raise ProtocolError(f"{field} has more than {MAX_CHAIN_CERTIFICATES} certificates", code="bad_chain")
    return tuple(_binary({field: item}, field, _MAX_CERTIFICATE) for item in value)
