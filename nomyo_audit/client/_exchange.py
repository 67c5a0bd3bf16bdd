"""The exchange step, pure: a request sealed to the router, a reply opened, bound and verified.

No I/O and no clock: bytes in, a result out, so every rule here is unit-testable without a
router. :func:`seal_request` turns a payload into the package the router receives;
:func:`open_reply` turns the package it sends back into the caller's reply: decrypted, shaped,
bound to the request's ``payload_id``, cleaned of what only the client may say, and carrying the
verdict of its TPM evidence. The client runs the RSA decryption in a worker thread and the rest
(:func:`read_reply`) on the event loop; :func:`open_reply` is the two in one call.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from .._memory import secure_buffer, wipe
from ..errors import InvalidRequestError, ProtocolError, SecurityError
from ..tpm import Verdict, response_content_digest, verify_attestation
from ..wire import (
    ALGORITHM,
    CLIENT_FIELDS,
    MAX_JSON_DEPTH,
    _has_lone_surrogate,
    decrypt_package,
    encrypt_package,
    parse_json,
    parse_package,
)

__all__ = ["MAX_PAYLOAD_BYTES", "OpenedReply", "open_reply", "payload_fault", "read_reply", "seal_request"]

#: The largest request payload, as JSON (the ``nomyo`` reference client's limit).
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
#: Python writes at most 4300 decimal digits of an int by default (sys.get_int_max_str_digits).
_MAX_INT_BITS = 14_000
#: Client fields NOMYO routers send themselves (is_encrypted): the same value is no finding.
_HONEST_ROUTER_VALUES: dict[str, object] = {"is_encrypted": True, "encryption_algorithm": ALGORITHM}
_MISSING = object()
#: ``_metadata.encryption_algorithm`` of a protocol 2 reply (docs/protocol-v2.md: the suite is HPKE's).
V2_ALGORITHM = "nomyo-audit-v2-hpke"


@dataclass(frozen=True)
class OpenedReply:
    """A decrypted reply bound to its request, and the verdict on its TPM evidence.

    ``response`` is the OpenAI-shaped dict the caller gets; its ``_metadata.verification`` holds
    ``verdict`` as data. The verdict is kept as an object too, for the policy to read.
    """

    response: dict[str, Any]
    verdict: Verdict


def seal_request(
    payload: dict[str, Any], server_key: rsa.RSAPublicKey, *, secure_memory: bool = True
) -> bytes:
    """``payload`` as JSON, encrypted to ``server_key``: the package bytes to POST.

    Raises :class:`InvalidRequestError` for a payload :func:`payload_fault` refuses or one over
    :data:`MAX_PAYLOAD_BYTES`. The JSON plaintext lives in a locked buffer (``secure_memory``)
    and is wiped once sealed. Every call draws a fresh AES key and nonce.
    """
    fault = payload_fault(payload)
    if fault is not None:
        raise InvalidRequestError(fault)
    encoded = json.dumps(payload).encode()
    with secure_buffer(bytearray(encoded), locked=secure_memory) as plaintext:
        wipe(encoded)
        if len(plaintext) > MAX_PAYLOAD_BYTES:
            raise InvalidRequestError(
                f"payload is {len(plaintext)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
            )
        return encrypt_package(plaintext, server_key)


def open_reply(body: bytes, payload_id: str, private_key: rsa.RSAPrivateKey) -> OpenedReply:
    """Decrypt the router's package ``body`` and read it as the reply to ``payload_id``.

    A malformed package or reply raises :class:`ProtocolError`; a package that fails decryption,
    or a reply bound to another request, raises :class:`SecurityError`. See :func:`read_reply`.
    """
    package = parse_package(body)
    return read_reply(decrypt_package(package, private_key), payload_id, package.processed_at)


def read_reply(
    plaintext: bytearray,
    payload_id: str,
    processed_at: object = None,
    *,
    client_key_sha256: bytes | None = None,
    protocol: str = "1.0",
) -> OpenedReply:
    """The decrypted ``plaintext`` (wiped here) as the reply to ``payload_id``.

    * it must be a JSON object whose ``choices`` and ``_metadata`` have the shape callers index,
      else :class:`ProtocolError` (``response_json``);
    * a ``_metadata.payload_id`` naming another request raises :class:`SecurityError`
      (``payload_id_mismatch``); none at all is accepted, and ``payload_id_verified`` says False;
    * ``protocol`` (``"1.0"`` or ``"2"``) is recorded in ``_metadata.protocol``;
    * the router's copies of :data:`nomyo_audit.wire.CLIENT_FIELDS` are dropped (and named in
      ``dropped_router_fields`` when they claimed something);
    * ``processed_at`` is the package's unauthenticated copy, noted when it differs from the
      authenticated one inside;
    * the TPM evidence is verified against the request and the reply's content, and, given
      ``client_key_sha256`` (SHA-256 of the DER SPKI of our own key), against our key: a quote
      that binds another client key raises :class:`SecurityError` (``key_substitution``).
    """
    try:
        response = parse_json(plaintext, what="decrypted response", code="response_json")
    finally:
        wipe(plaintext)
    metadata = _check_response_shape(response)
    echoed = metadata.get("payload_id")
    if echoed is not None and echoed != payload_id:
        raise SecurityError(
            "response is bound to another request: its payload_id differs from this request's",
            code="payload_id_mismatch",
        )
    dropped = _drop_client_fields(metadata)
    metadata.update(
        {
            "payload_id": payload_id,
            "payload_id_verified": echoed is not None,
            "is_encrypted": True,
            "encryption_algorithm": ALGORITHM if protocol == "1.0" else V2_ALGORITHM,
            "protocol": protocol,
        }
    )
    if dropped:
        metadata["dropped_router_fields"] = dropped
    _note_unauthenticated_time(metadata, processed_at)
    content_digest = response_content_digest(response)
    evidence = metadata.get("tpm_attestation")
    verdict = verify_attestation(
        evidence, payload_id, content_digest=content_digest, client_key_sha256=client_key_sha256
    )
    if client_key_sha256 is not None and verdict.failures:
        refuse_key_substitution(verdict, metadata, content_digest, client_key_sha256)
    metadata["verification"] = verdict.to_dict()
    return OpenedReply(response, verdict)


def refuse_key_substitution(
    verdict: Verdict, metadata: dict[str, Any], content_digest: bytes, own_key_sha256: bytes
) -> None:
    """Raise ``key_substitution`` when the quote binds, instead of our key, the one the router names.

    The router's ``_metadata.client_key_sha256`` is not trusted: it only explains a binding that
    already failed with our own key, and only when the quote verifies with it. Whoever swapped
    ``X-Public-Key`` on the path could read the reply before this check.
    """
    if verdict.finding("nonce_binding").code != "nonce_mismatch":
        return
    claimed = metadata.get("client_key_sha256")
    if not isinstance(claimed, str) or len(claimed) != 64 or not claimed.isascii():
        return
    try:
        other = bytes.fromhex(claimed)
    except ValueError:
        return
    if other == own_key_sha256:
        return
    explained = verify_attestation(
        metadata.get("tpm_attestation"),
        verdict.payload_id,
        content_digest=content_digest,
        accept_derivations=("nomyo-audit-v2",),
        client_key_sha256=other,
    )
    if explained.finding("nonce_binding").status == "pass":
        raise SecurityError(
            "the router sealed this reply to another client key than ours (the X-Public-Key header "
            "was replaced on the path); whoever replaced it could read the reply",
            code="key_substitution",
        )


def payload_fault(payload: object) -> str | None:
    """Why ``payload`` cannot be sent as JSON and digested into a record, or None.

    Checked before anything is sent, without recursion: a payload the canonical JSON of the audit
    record cannot hold (a lone surrogate, NaN, an object JSON has no form for, a dict mixing key
    types, nesting deeper than :data:`nomyo_audit.wire.MAX_JSON_DEPTH`) would otherwise fail
    while the failure is being recorded, and the record would be lost.
    """
    if not isinstance(payload, dict):
        return "payload must be a dict"
    if not payload:
        return "payload cannot be empty"
    stack: list[tuple[object, int]] = [(payload, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > MAX_JSON_DEPTH:
                return f"payload is nested deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(node, dict):
                if len({type(key) for key in node}) > 1 or not all(type(k) in (str, int) for k in node):
                    return "payload has an object whose keys are not all strings (or all integers)"
                stack.extend((key, depth) for key in node if isinstance(key, str))
                stack.extend((value, depth + 1) for value in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            if not node.isascii() and _has_lone_surrogate(node):
                return "payload contains a lone UTF-16 surrogate, which is not Unicode text"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return "payload contains NaN or an infinity, which JSON cannot hold"
        elif isinstance(node, int) and not isinstance(node, bool):
            if node.bit_length() > _MAX_INT_BITS:
                return "payload contains an integer too large to write as JSON"
        elif node is not None and not isinstance(node, bool):
            return f"payload is not JSON-serialisable: it holds a {type(node).__name__}"
    return None


def _check_response_shape(response: object) -> dict[str, Any]:
    """The decrypted reply's ``_metadata`` (created when absent), once the shape callers index is sure.

    Callers read ``reply["choices"][0]["message"]`` and ``reply["_metadata"][...]``; a reply where
    those have other types is malformed, refused here rather than failing in the caller's code.
    """
    if not isinstance(response, dict):
        raise ProtocolError("decrypted response is not a JSON object", code="response_json")
    choices = response.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
        raise ProtocolError("decrypted response: choices must be a list of objects", code="response_json")
    if not all(isinstance(choice.get("message", {}), dict) for choice in choices):
        raise ProtocolError("decrypted response: a choice's message must be an object", code="response_json")
    metadata = response.setdefault("_metadata", {})
    if not isinstance(metadata, dict):
        raise ProtocolError("decrypted response has a non-object _metadata", code="response_json")
    if not isinstance(metadata.get("payload_id", ""), str):
        raise ProtocolError("decrypted response: _metadata.payload_id must be a string", code="response_json")
    return metadata


def _drop_client_fields(metadata: dict[str, Any]) -> list[str]:
    """Remove the router's copies of fields only the client sets; name those that said something.

    A copy equal to what the client itself sets (``is_encrypted: true``, which NOMYO routers send)
    is dropped without a note: it claims nothing the client does not check.
    """
    noted = []
    for name in CLIENT_FIELDS:
        if name not in metadata:
            continue
        value = metadata.pop(name)
        honest = _HONEST_ROUTER_VALUES.get(name, _MISSING)
        if type(value) is not type(honest) or value != honest:
            noted.append(name)
    return sorted(noted)


def _note_unauthenticated_time(metadata: dict[str, Any], outer: object) -> None:
    """Keep the authenticated ``processed_at``; note the package's copy when it says otherwise.

    The package's ``processed_at`` sits outside the AES-GCM ciphertext: anyone on the path can
    change it. Only the one inside ``_metadata`` is the router's authenticated word.
    """
    if outer is None:
        return
    inner = metadata.get("processed_at", _MISSING)
    if type(inner) is type(outer) and inner == outer:
        return
    metadata["unauthenticated_processed_at"] = (
        outer if _is_number(outer) else f"non-numeric ({_json_type(outer)})"
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {str: "string", bool: "boolean", list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), "number")
