"""Protocol 2 in the client: negotiation, no downgrade, the attested key configuration, the exchange.

The cryptography is :mod:`nomyo_audit._protocol2` (pure). This module decides which protocol a
call uses and carries a protocol 2 call over HTTP:

* ``protocol="1.0"`` never asks for protocol 2; ``"2"`` requires it; ``"auto"`` (the default)
  uses it when the router serves a key configuration at ``GET /pki/v2/key_config``.
* **No downgrade.** Once this client saw the router's key configuration attested (policy
  ``require_key_attestation``), signed by the pinned router key (``server_key_fingerprint``) or
  used for a reply, a router that no longer offers protocol 2 is refused: :class:`SecurityError`
  ``downgrade``, and nothing is sent. So is a router without it when ``"2"`` was asked for.
* With a pinned router key, the configuration must carry that key's signature over its digest
  (``X-Key-Config-Signature``), so the pin covers the protocol 2 key as it covers the RSA key.
* With ``require_key_attestation`` the configuration's digest is attested before any prompt is
  sealed to it, exactly as the RSA key is (``GET /pki/v2/attestation?nonce=``).
* A router that rotated its key answers ``409 v2_key_rotated`` with the current configuration
  (unauthenticated: pinned, attested as above before use); the client retries once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from .._protocol2 import KeyConfig, open_response, seal_request
from ..errors import APIConnectionError, APIError, InvalidRequestError, ProtocolError, SecurityError
from ..policy import Policy
from ..wire import COMPLETION_V2_PATH, KEY_CONFIG_ATTESTATION_PATH, KEY_CONFIG_PATH, MAX_PACKAGE_BYTES
from ._call import CompletionCall
from ._errors import FINAL_CONNECTION_CODES
from ._exchange import MAX_PAYLOAD_BYTES, OpenedReply, read_reply
from ._http import Reply
from ._retry import backoff_delay, is_retryable_status
from ._settings import check_protocol

if TYPE_CHECKING:
    from ._secure_client import SecureCompletionClient

__all__ = ["Protocol2"]

#: The router's codes that a fresh key configuration mends (retried once).
_ROTATION_CODES = ("v2_key_rotated", "v2_unknown_key_id")
_MAX_CONFIG_BYTES = 64 * 1024
#: A protocol 2 refusal code as the router may name it (unauthenticated: it goes into errors and logs).
_ROUTER_CODE = re.compile(r"v2_[a-z0-9_]{1,29}")
#: How far a configuration's ``not_before`` may be ahead of our clock (the router's clock may lead).
CLOCK_SKEW_SECONDS = 300
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


class Protocol2:
    """One client's protocol 2 state: what it asked for, the router's configuration, and whether
    the router was ever seen v2-capable (then there is no way back to 1.0)."""

    def __init__(self, protocol: str | None) -> None:
        self.protocol = check_protocol(protocol)
        self.config: KeyConfig | None = None
        #: set once a configuration was attested, signed by the pinned key, or used for a reply
        self.capable = False

    async def negotiate(self, client: SecureCompletionClient, policy: Policy | None) -> KeyConfig | None:
        """The configuration to seal this call to, or None for protocol 1.0.

        Raises :class:`SecurityError` ``downgrade`` when protocol 2 is required or was seen and
        the router does not offer it; a configuration that is malformed :class:`ProtocolError`
        (``v2_bad_key_config``); one whose attestation fails as attest-before-send does.
        """
        if self.protocol == "1.0":
            return None
        config = self.config
        if config is None or config.not_after <= time.time():
            config = await self._fetch(client)
        if config is None:
            return None
        await self._approve(client, config, policy)
        return config

    async def _fetch(self, client: SecureCompletionClient) -> KeyConfig | None:
        reply = await client._request("GET", client.router_url + KEY_CONFIG_PATH, limit=_MAX_CONFIG_BYTES)
        if reply.status_code in (404, 405):
            if self.protocol == "2" or self.capable:
                raise SecurityError(
                    "the router does not offer protocol 2"
                    + (" although it did before" if self.capable else ", which this client requires")
                    + "; nothing was sent",
                    code="downgrade",
                )
            return None
        if reply.status_code != 200:
            raise reply.error("fetching the router's protocol 2 key configuration")
        config = _current(KeyConfig.from_json(reply.json_or_none("key configuration")))
        if client.server_key_fingerprint is not None:
            await _check_signature(client, config, reply)
            self.capable = True
        self.config = config
        return config

    async def _approve(
        self, client: SecureCompletionClient, config: KeyConfig, policy: Policy | None
    ) -> None:
        """Attest ``config`` before anything is sealed to it, when the policy asks (cached for its TTL)."""
        if policy is None or not policy.require_key_attestation:
            return
        digest = config.digest().hex()
        await client._attest_key(KEY_CONFIG_ATTESTATION_PATH, digest, policy, label="v2:" + digest)
        self.capable = True

    async def send(
        self, client: SecureCompletionClient, call: CompletionCall, config: KeyConfig
    ) -> OpenedReply:
        """Seal ``call`` to ``config``, POST it (retrying what may mend), and open the reply.

        A rotated key is retried once with the configuration the router names (approved as any
        other). Router refusals raise :class:`ProtocolError` with the router's code
        (``v2_unknown_suite``, ``v2_truncated``, ``v2_aad_mismatch``, ``v2_malformed``,
        ``v2_replay``, ``v2_key_rotated`` a second time); a reply that does not open for this
        request :class:`SecurityError` ``v2_reply_mismatch``.
        """
        payload = json.dumps(call.payload).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:  # as protocol 1.0 refuses it (client/_exchange.py)
            raise InvalidRequestError(
                f"payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
            )
        headers = {"Content-Type": "application/octet-stream"}
        if call.api_key:
            headers["Authorization"] = f"Bearer {call.api_key}"
        url = client.router_url + COMPLETION_V2_PATH
        rotated = attempt = 0
        while True:
            body, context = seal_request(
                config,
                payload,
                payload_id=call.payload_id,
                security_tier=call.security_tier or "standard",
                model=str(call.payload.get("model", "")),
            )
            retry_headers = None
            try:
                reply = await client._request(
                    "POST", url, limit=MAX_PACKAGE_BYTES, headers=headers, content=body
                )
            except APIConnectionError as unreachable:
                if unreachable.code in FINAL_CONNECTION_CODES:
                    raise
                failure: APIError | SecurityError = unreachable
            else:
                if reply.status_code == 200:
                    plaintext = open_response(context, reply.body)
                    self.capable = True
                    return read_reply(bytearray(plaintext), call.payload_id, protocol="2")
                code, document = _refusal(reply)
                if code in _ROTATION_CODES and not rotated:
                    rotated = 1
                    config = await self._rotated(client, document, call.policy)
                    continue
                if code is not None:
                    raise ProtocolError(f"the router refused the protocol 2 request ({code})", code=code)
                failure = reply.error()
                if not is_retryable_status(reply.status_code):
                    raise failure
                retry_headers = reply.headers
            if attempt >= client.max_retries:
                raise failure
            await asyncio.sleep(backoff_delay(attempt, retry_headers))
            attempt += 1

    async def _rotated(
        self, client: SecureCompletionClient, document: Any, policy: Policy | None
    ) -> KeyConfig:
        carried = document.get("key_config") if isinstance(document, dict) else None
        if carried is None:
            fetched = await self._fetch(client)
            if fetched is None:  # pragma: no cover - _fetch raises for a v2-capable router
                raise SecurityError("the router no longer offers protocol 2", code="downgrade")
            config = fetched
        else:
            config = _current(KeyConfig.from_json(carried))
            if client.server_key_fingerprint is not None:  # the carried copy is unsigned: fetch it signed
                fetched = await self._fetch(client)
                if fetched is None or fetched.digest() != config.digest():
                    raise SecurityError(
                        "the rotated key configuration is not the one the router signs", code="server_key_pin"
                    )
        self.config = config
        await self._approve(client, config, policy)
        return config


def _current(config: KeyConfig) -> KeyConfig:
    """``config`` when it is valid now (``not_before`` may be up to :data:`CLOCK_SKEW_SECONDS` ahead
    of our clock), else :class:`ProtocolError` ``v2_bad_key_config``: nothing is sealed to it."""
    now = time.time()
    if config.not_after <= now or config.not_before > now + CLOCK_SKEW_SECONDS:
        raise ProtocolError(
            "the router's protocol 2 key configuration is not valid now", code="v2_bad_key_config"
        )
    return config


async def _check_signature(client: SecureCompletionClient, config: KeyConfig, reply: Reply) -> None:
    """The pinned router key's signature over ``config.digest()``, else :class:`SecurityError`."""
    await client.fetch_server_public_key()
    assert client._server is not None
    header = reply.headers.get("x-key-config-signature", "")
    try:
        signature = base64.b64decode(header, validate=True)
        client._server.key.verify(signature, config.digest(), _PSS, hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise SecurityError(
            "the router's protocol 2 key configuration is not signed by the pinned router key",
            code="server_key_pin",
        ) from None


def _refusal(reply: Reply) -> tuple[str | None, Any]:
    """The router's protocol 2 error code (``v2_...``) and its document, or (None, None)."""
    if reply.status_code not in (400, 409):
        return None, None
    document = reply.json_or_none("error reply")
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, str) and _ROUTER_CODE.fullmatch(code):  # never control characters into errors
        return code, document
    return None, None

