"""Protocol 2: a request sealed with HPKE (RFC 9180) to the router's key, its reply sealed back. Pure.

docs/protocol-v2.md is the byte-level spec; this module is its reference implementation, with no
I/O (the router and the client do the HTTP). Why it is built this way:

* cryptography's HPKE (``hpke.Suite.encrypt``/``decrypt``) is single-shot base mode with no AAD
  argument and no secret export. So the associated data (protocol version, key id, payload_id,
  security tier, model, suite) goes into HPKE's ``info``, which the key schedule hashes into the
  AEAD key: change any header and the request does not open.
* The reply key: RFC 9180 §5.3 would export it from the request's context, which cryptography does
  not expose. Instead the sealed request carries a fresh 32-byte response key chosen by the
  client; the reply is AES-256-GCM under HKDF-SHA256 of it, bound to the payload_id. Only the
  client and whoever holds the router's private key know that key, exactly the two parties an
  exported secret would reach, and no client key pair or ``X-Public-Key`` crosses the wire.

Every parser caps sizes before decoding and raises only :class:`ProtocolError` (a
:class:`SecurityError`) with a stable code; messages never carry key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._canonical import canonical_json
from ._protocol2_keys import (
    DHKEM_X25519,
    XWING,
    KeyConfig,
    RouterKeys,
    SuiteId,
    mlkem_available,
    parse_suite,
    usable_suites,
)
from .errors import ProtocolError, SecurityError
from .wire import GCM_NONCE_BYTES, GCM_TAG_BYTES, MAX_PACKAGE_BYTES, SECURITY_TIERS, parse_json

__all__ = [
    "DHKEM_X25519",
    "XWING",
    "ClientContext",
    "KeyConfig",
    "OpenedRequest",
    "ReplayWindow",
    "RouterKeys",
    "SuiteId",
    "mlkem_available",
    "open_request",
    "open_response",
    "seal_request",
    "seal_response",
]

#: The request envelope's ``version`` and the AAD's ``v``.
VERSION = "2"
#: Bytes of the client-chosen response key at the start of the sealed plaintext.
RESPONSE_KEY_BYTES = 32
REQUEST_LABEL = b"nomyo-audit/v2 request"
RESPONSE_LABEL = b"nomyo-audit/v2 response"
MAX_MODEL_CHARS = 256
#: The largest payload sealed: protocol 1.0's (client/_exchange.py), so what 1.0 carries 2 carries; in
#: base64 with the envelope it stays under MAX_PACKAGE_BYTES.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
_PAYLOAD_ID = re.compile(r"[\x21-\x7e]{1,128}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENVELOPE_FIELDS = {"version", "key_id", "suite", "payload_id", "security_tier", "model", "enc", "ciphertext"}


@dataclass(frozen=True)
class ClientContext:
    """What the client keeps from :func:`seal_request` to open the reply (the key stays out of repr)."""

    payload_id: str
    response_key: bytes = field(repr=False)
    suite: SuiteId
    key_id: str
    enc: bytes = field(repr=False)


@dataclass(frozen=True)
class OpenedRequest:
    """A request the router opened: the payload and the fields the AAD bound, plus the reply key."""

    payload: bytes = field(repr=False)
    payload_id: str
    security_tier: str
    model: str
    key_id: str
    suite: SuiteId
    enc: bytes = field(repr=False)
    response_key: bytes = field(repr=False)


def request_info(key_id: str, suite: SuiteId, payload_id: str, security_tier: str, model: str) -> bytes:
    """HPKE ``info``: ``"nomyo-audit/v2 request" || 0x00 || JCS(aad)``, the AAD of the request."""
    aad = {
        "v": VERSION,
        "key_id": key_id,
        "payload_id": payload_id,
        "security_tier": security_tier,
        "model": model,
        "suite": suite.to_json(),
    }
    return REQUEST_LABEL + b"\x00" + canonical_json(aad)


def seal_request(
    config: KeyConfig,
    payload: bytes,
    *,
    payload_id: str,
    security_tier: str,
    model: str,
    suite: SuiteId | None = None,
) -> tuple[bytes, ClientContext]:
    """Seal ``payload`` to ``config``: the request body (JSON bytes) and the context to open the reply.

    ``suite`` defaults to the config's first suite this process can use (X-Wing when ML-KEM is
    here). Raises :class:`ProtocolError`: ``v2_unknown_suite`` (not offered or not usable),
    ``v2_malformed`` (a field out of bounds, a payload over the size cap), ``v2_bad_key_config`` (a
    public key no shared secret can be made with, e.g. a low-order X25519 point).
    """
    chosen = _choose_suite(config, suite)
    _check_fields(config.key_id, payload_id, security_tier, model)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("payload is too large to seal", code="v2_malformed")
    response_key = os.urandom(RESPONSE_KEY_BYTES)
    info = request_info(config.key_id, chosen, payload_id, security_tier, model)
    public_key = config.public_key(chosen.kem_id)
    try:
        sealed = chosen.hpke().encrypt(response_key + bytes(payload), public_key, info=info)
    except ValueError:  # a low-order X25519 key: no shared secret (RFC 7748 all-zero check)
        raise ProtocolError(
            "the key configuration's public key cannot be sealed to", code="v2_bad_key_config"
        ) from None
    enc, ciphertext = sealed[: chosen.enc_length], sealed[chosen.enc_length :]
    envelope = {
        "version": VERSION,
        "key_id": config.key_id,
        "suite": chosen.to_json(),
        "payload_id": payload_id,
        "security_tier": security_tier,
        "model": model,
        "enc": base64.b64encode(enc).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    context = ClientContext(payload_id, response_key, chosen, config.key_id, enc)
    return canonical_json(envelope), context


def open_request(keys: RouterKeys, body: bytes) -> OpenedRequest:
    """Open a request body sealed to ``keys``.

    Raises :class:`ProtocolError` with code ``v2_malformed`` (not the envelope), ``v2_unknown_suite``,
    ``v2_unknown_key_id``, ``v2_truncated`` (encapsulation or ciphertext too short) or
    ``v2_aad_mismatch`` (decryption failed: a bound field changed, or another key).
    """
    if not isinstance(body, (bytes, bytearray)) or not 0 < len(body) <= MAX_PACKAGE_BYTES:
        raise _malformed("request body must be 1 to MAX_PACKAGE_BYTES bytes")
    doc = parse_json(body, what="v2 request", code="v2_malformed")
    if not isinstance(doc, dict) or set(doc) != _ENVELOPE_FIELDS:
        raise _malformed("request must be an object of exactly the documented fields")
    if doc["version"] != VERSION:
        raise _malformed('request version must be "2"')
    suite = parse_suite(doc["suite"], _malformed)
    if suite not in keys.config.suites or suite not in usable_suites():
        raise ProtocolError("the request names a suite this router does not offer", code="v2_unknown_suite")
    key_id = doc["key_id"]
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise _malformed("key_id is malformed")
    if key_id != keys.config.key_id:
        raise ProtocolError("the request names a key this router does not hold", code="v2_unknown_key_id")
    payload_id, tier, model = doc["payload_id"], doc["security_tier"], doc["model"]
    _check_fields(key_id, payload_id, tier, model)
    enc = _unb64(doc["enc"], suite.enc_length, "enc")
    if len(enc) != suite.enc_length:
        raise ProtocolError("the encapsulation is truncated", code="v2_truncated")
    ciphertext = _unb64(doc["ciphertext"], MAX_PACKAGE_BYTES, "ciphertext")
    if len(ciphertext) < RESPONSE_KEY_BYTES + GCM_TAG_BYTES:
        raise ProtocolError("the ciphertext is truncated", code="v2_truncated")
    info = request_info(key_id, suite, payload_id, tier, model)
    try:
        plaintext = suite.hpke().decrypt(enc + ciphertext, keys.hpke_private_key(suite.kem_id), info=info)
    except (InvalidTag, ValueError):
        raise ProtocolError("the request could not be opened", code="v2_aad_mismatch") from None
    return OpenedRequest(
        payload=plaintext[RESPONSE_KEY_BYTES:],
        payload_id=payload_id,
        security_tier=tier,
        model=model,
        key_id=key_id,
        suite=suite,
        enc=enc,
        response_key=plaintext[:RESPONSE_KEY_BYTES],
    )


def seal_response(opened: OpenedRequest, response: bytes) -> bytes:
    """The reply body: ``nonce (12) || AES-256-GCM ciphertext || tag (16)`` under the request's reply key."""
    label = _response_label(opened.payload_id)
    nonce = os.urandom(GCM_NONCE_BYTES)
    return nonce + AESGCM(_response_key(opened.response_key, label)).encrypt(nonce, bytes(response), label)


def open_response(context: ClientContext, body: bytes) -> bytes:
    """Open a reply to the request ``context`` came from.

    Raises :class:`ProtocolError` ``v2_truncated``/``v2_malformed`` for a body too short or too long,
    :class:`SecurityError` ``v2_reply_mismatch`` for a reply to another request, or a changed one.
    """
    if not isinstance(body, (bytes, bytearray)) or len(body) > MAX_PACKAGE_BYTES:
        raise _malformed("reply must be at most MAX_PACKAGE_BYTES bytes")
    if len(body) < GCM_NONCE_BYTES + GCM_TAG_BYTES:
        raise ProtocolError("the reply is truncated", code="v2_truncated")
    label = _response_label(context.payload_id)
    try:
        aead = AESGCM(_response_key(context.response_key, label))
        return aead.decrypt(bytes(body[:GCM_NONCE_BYTES]), bytes(body[GCM_NONCE_BYTES:]), label)
    except (InvalidTag, ValueError):
        raise SecurityError(
            "the reply does not open with this request's key: it answers another request or was changed",
            code="v2_reply_mismatch",
        ) from None


class ReplayWindow:
    """Which encapsulations the router saw lately, so a replayed request is refused. Pure; bounded.

    An ``enc`` is remembered (as 16 bytes of its SHA-256) for ``window_seconds`` after it was first
    seen, and at most ``max_entries`` are kept: past that the oldest are forgotten first, so a
    replay is refused when it comes within the window *and* fewer than ``max_entries`` requests
    arrived since. ``now`` is injected (seconds; any clock that does not run backwards).
    """

    def __init__(self, window_seconds: float, max_entries: int) -> None:
        if not (math.isfinite(window_seconds) and window_seconds > 0) or max_entries < 1:
            raise ValueError("window_seconds must be finite and positive, max_entries at least 1")
        self.window_seconds = float(window_seconds)
        self.max_entries = int(max_entries)
        self._seen: dict[bytes, float] = {}
        self._order: collections.deque[tuple[float, bytes]] = collections.deque()

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, enc: bytes, now: float) -> bool:
        """True when ``enc`` was seen within the window (a replay); else remember it and say False."""
        self._expire(now)
        tag = hashlib.sha256(enc).digest()[:16]
        if tag in self._seen:
            return True
        while len(self._seen) >= self.max_entries:
            _, oldest = self._order.popleft()
            self._seen.pop(oldest, None)
        self._seen[tag] = now
        self._order.append((now, tag))
        return False

    def _expire(self, now: float) -> None:
        horizon = now - self.window_seconds
        while self._order and self._order[0][0] <= horizon:
            _, tag = self._order.popleft()
            self._seen.pop(tag, None)


def _choose_suite(config: KeyConfig, suite: SuiteId | None) -> SuiteId:
    usable = usable_suites()
    if suite is None:
        for offered in config.suites:
            if offered in usable:
                return offered
    elif suite in config.suites and suite in usable:
        return suite
    raise ProtocolError("no suite both sides support", code="v2_unknown_suite")


def _check_fields(key_id: Any, payload_id: Any, security_tier: Any, model: Any) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise _malformed("key_id must be 1-64 characters of A-Z a-z 0-9 _ -")
    if not isinstance(payload_id, str) or not _PAYLOAD_ID.fullmatch(payload_id):
        raise _malformed("payload_id must be 1-128 printable ASCII characters")
    if security_tier not in SECURITY_TIERS:
        raise _malformed(f"security_tier must be one of {', '.join(SECURITY_TIERS)}")
    if not isinstance(model, str) or not 1 <= len(model) <= MAX_MODEL_CHARS or not model.isprintable():
        raise _malformed(f"model must be 1-{MAX_MODEL_CHARS} printable characters")


def _unb64(value: Any, max_bytes: int, name: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(f"{name} must be a base64 string")
    if len(value) > 4 * ((max_bytes + 2) // 3):
        raise _malformed(f"{name} is too long")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{name} is not valid base64") from None


def _response_label(payload_id: str) -> bytes:
    """HKDF ``info`` and AEAD AAD of the reply: ``"nomyo-audit/v2 response" || 0x00 || payload_id``."""
    return RESPONSE_LABEL + b"\x00" + payload_id.encode("ascii", "replace")


def _response_key(response_key: bytes, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(response_key)


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(f"v2 request: {message}", code="v2_malformed")
