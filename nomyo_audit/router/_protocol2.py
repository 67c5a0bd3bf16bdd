"""Protocol 2 on the router: its HPKE key configuration, attested, and the sealed completion endpoint.

The cryptography is :mod:`nomyo_audit._protocol2` (pure); this module is the HTTP around it:

* ``GET /pki/v2/key_config``: the :class:`KeyConfig` JSON, with ``X-Key-Config-Signature``, an
  RSA-PSS (SHA-256) signature by the router's protocol 1.0 key over ``KeyConfig.digest()``, so a
  client that pinned that key (``server_key_fingerprint``) also pins the v2 key;
* ``GET /pki/v2/attestation?nonce=<hex>``: a quote over ``key_binding(nonce, config digest)``,
  what attest-before-send checks, exactly as ``/pki/attestation`` does for the RSA key;
* ``POST /v2/chat/secure_completion``: one sealed request in, one sealed reply out.

Every malformed request is a 4xx with a stable ``error.code`` before the model or the TPM is
called, and its message says nothing about which byte was wrong: ``v2_unknown_suite``,
``v2_unknown_key_id``, ``v2_truncated``, ``v2_aad_mismatch``, ``v2_malformed``; a reused
encapsulation is ``409 v2_replay``; a request to a key rotated out is ``409 v2_key_rotated``
whose body carries the current configuration.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._memory import wipe
from .._protocol2 import KeyConfig, ReplayWindow, RouterKeys, open_request, seal_response
from ..errors import ProtocolError
from ..wire import (
    COMPLETION_V2_PATH,
    KEY_CONFIG_ATTESTATION_PATH,
    KEY_CONFIG_PATH,
    SECURITY_TIERS,
    parse_json,
)
from ._backends import BackendError
from ._requests import query_nonce
from ._validation import RequestRejected, check_chat_request, check_payload_id, load_json

__all__ = ["KEY_CONFIG_SIGNATURE_HEADER", "V2Keys", "protocol2_routes", "sign_key_config"]

logger = logging.getLogger("nomyo_audit.router")

#: The response header carrying the router key's signature over the key configuration's digest.
KEY_CONFIG_SIGNATURE_HEADER = "X-Key-Config-Signature"
#: A key configuration's lifetime before the router makes the next one.
DEFAULT_VALIDITY_SECONDS = 24 * 3600
#: Seconds a seen encapsulation is remembered, and how many at most.
REPLAY_WINDOW_SECONDS = 600.0
REPLAY_MAX_ENTRIES = 100_000
#: Requests up to this size are opened on the event loop; larger ones (AES-GCM over megabytes) in a thread.
_INLINE_BYTES = 64 * 1024

#: What each refusal of the core says, without detail an attacker could use.
_REFUSALS = {
    "v2_unknown_suite": "the request names a suite this router does not offer",
    "v2_unknown_key_id": "the request names a key this router does not hold",
    "v2_truncated": "the request is truncated",
    "v2_aad_mismatch": "the request could not be opened",
    "v2_malformed": "the request is malformed",
}


def sign_key_config(private_key: rsa.RSAPrivateKey, config: KeyConfig) -> str:
    """Base64 RSA-PSS (MGF1-SHA256, salt = digest length) signature over ``config.digest()``."""
    signature = private_key.sign(
        config.digest(),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH),
        hashes.SHA256(),
    )
    return base64.b64encode(signature).decode()


class V2Keys:
    """The router's current protocol 2 keys, the few rotated out (to say so), and the replay window.

    The app runs on one event loop, so plain attributes are enough.
    """

    def __init__(self, keys: RouterKeys | None = None, *, validity: int = DEFAULT_VALIDITY_SECONDS) -> None:
        self.validity = validity
        self.current = keys if keys is not None else RouterKeys.generate(validity, now=int(time.time()))
        self.retired: deque[RouterKeys] = deque(maxlen=2)
        self.replays = ReplayWindow(REPLAY_WINDOW_SECONDS, REPLAY_MAX_ENTRIES)

    def rotate(self, keys: RouterKeys | None = None) -> KeyConfig:
        """Make (or install) the next keys; requests to the old ones get ``v2_key_rotated``."""
        self.retired.append(self.current)
        self.current = keys if keys is not None else RouterKeys.generate(self.validity, now=int(time.time()))
        return self.current.config

    def fresh(self) -> RouterKeys:
        """The current keys, rotated first when their configuration has expired."""
        if self.current.config.not_after <= time.time():
            self.rotate()
        return self.current

    def was_rotated(self, body: bytes) -> bool:
        """Whether ``body`` names the key id of keys rotated out (called only for a request the
        current keys refused as ``v2_unknown_key_id``, so ``body`` is the envelope's JSON)."""
        try:
            key_id = parse_json(body, what="v2 request", code="v2_malformed").get("key_id")
        except (ProtocolError, RecursionError):
            return False
        return any(keys.config.key_id == key_id for keys in self.retired)


def protocol2_routes(
    config: Any,
    keys: V2Keys,
    *,
    count: Callable[[Request], None],
    hold: Callable[[], AbstractContextManager[list[int]]],
    read_body: Callable[[Request, list[int]], Awaitable[bytes]],
    check_auth: Callable[[Request], None],
    allowed_tiers: Callable[[str], tuple[str, ...]],
    rejection: Callable[[RequestRejected], Response],
    metadata: Callable[[], dict[str, Any]],
) -> list[Route]:
    """The three protocol 2 routes, built from the app's own helpers (``hold``: the body budget;
    ``rejection``: a :class:`RequestRejected` as its 4xx/5xx reply)."""

    async def key_config(request: Request) -> Response:
        count(request)
        current = keys.fresh().config
        signature = sign_key_config(config.private_key, current)
        return JSONResponse(current.to_json(), headers={KEY_CONFIG_SIGNATURE_HEADER: signature})

    async def key_config_attestation(request: Request) -> Response:
        count(request)
        nonce = query_nonce(request)
        if nonce is None:
            return _refusal(400, "v2_malformed", "nonce must be 16-64 bytes of hex")
        current = keys.fresh().config
        digest = current.digest()
        try:
            block = await run_in_threadpool(config.attester.attest_key, nonce, digest)
        except Exception as exc:
            logger.error("key config attestation failed: %s", type(exc).__name__)
            return _refusal(503, "attestation_failed", f"attestation failed ({type(exc).__name__})")
        return JSONResponse(
            {"key_config": current.to_json(), "key_config_sha256": digest.hex(), "tpm_attestation": block}
        )

    async def completion(request: Request, share: list[int]) -> Response:
        check_auth(request)
        body = await read_body(request, share)
        current = keys.fresh()
        try:
            if len(body) <= _INLINE_BYTES:  # ~0.1 ms of HPKE: cheaper on the loop than a thread hop
                opened = open_request(current, body)
            else:
                opened = await run_in_threadpool(open_request, current, body)
        except ProtocolError as exc:
            if exc.code == "v2_unknown_key_id" and keys.was_rotated(body):
                raise _Rotated(current.config) from None
            code = exc.code if exc.code in _REFUSALS else "v2_malformed"
            raise _V2Rejected(400, code, _REFUSALS[code]) from None
        if keys.replays.seen(opened.enc, time.monotonic()):  # a clock that never steps (NTP)
            raise _V2Rejected(409, "v2_replay", "this request was already received")
        payload_id = check_payload_id(opened.payload_id)
        tier = opened.security_tier or "standard"
        if tier not in SECURITY_TIERS:
            raise _V2Rejected(400, "v2_malformed", "the request is malformed")
        plaintext = bytearray(opened.payload)
        try:
            payload = check_chat_request(load_json(bytes(plaintext), "decrypted payload"))
        finally:
            wipe(plaintext)
        if payload.get("model") != opened.model:  # the sealed model is the one the AAD binds
            raise _V2Rejected(400, "v2_aad_mismatch", _REFUSALS["v2_aad_mismatch"])
        if tier not in allowed_tiers(payload["model"]):
            raise RequestRejected(403, f"security tier {tier!r} is not allowed for this model")
        try:
            result = await config.backend.complete(payload)
        except BackendError as exc:
            raise RequestRejected(exc.status, str(exc)) from None
        processed_at = int(time.time())
        try:
            attestation = await run_in_threadpool(config.attester.attest_response, payload_id, result)
        except Exception as exc:
            logger.error("response attestation failed: %s", type(exc).__name__)
            raise RequestRejected(503, f"attestation failed ({type(exc).__name__})") from None
        result["_metadata"] = {
            **metadata(),
            "payload_id": payload_id,
            "processed_at": processed_at,
            "security_tier": tier,
            "tpm_attestation": attestation,
        }
        reply = bytearray(json.dumps(result).encode())
        try:
            sealed = seal_response(opened, bytes(reply))
        finally:
            wipe(reply)
        return Response(sealed, media_type="application/octet-stream")

    async def secure_completion_v2(request: Request) -> Response:
        count(request)
        try:
            with hold() as share:
                return await completion(request, share)
        except _Rotated as rotated:
            return _refusal(
                409,
                "v2_key_rotated",
                "the router's key was rotated: seal to the key configuration in this reply",
                key_config=rotated.config.to_json(),
            )
        except _V2Rejected as rejected:
            return _refusal(rejected.status, rejected.code, rejected.message)
        except RequestRejected as reject:
            return rejection(reject)
        except Exception as exc:  # never crash, never echo plaintext
            logger.error("v2 secure_completion failed: %s", type(exc).__name__)
            return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    return [
        Route(KEY_CONFIG_PATH, key_config, methods=["GET"]),
        Route(KEY_CONFIG_ATTESTATION_PATH, key_config_attestation, methods=["GET"]),
        Route(COMPLETION_V2_PATH, secure_completion_v2, methods=["POST"]),
    ]


class _V2Rejected(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


class _Rotated(Exception):
    def __init__(self, config: KeyConfig) -> None:
        super().__init__("v2_key_rotated")
        self.config = config


def _refusal(status: int, code: str, message: str, **extra: Mapping[str, Any]) -> JSONResponse:
    return JSONResponse({"detail": message, "error": {"code": code, "message": message}, **extra}, status)
