"""``SecureCompletionClient``: keys, hybrid encryption and the HTTP exchange.

Same constructor and methods as ``nomyo.SecureCompletionClient`` (see the
seed API reference), with these differences, each deliberate:

* one pooled ``httpx.AsyncClient`` per instance (keep-alive), closed by
  :meth:`aclose` or ``async with``; ``transport=`` swaps in any httpx
  transport (an in-process ASGI app, say) without touching the logic;
* the server key is fetched once and cached; ``server_key_fingerprint=``
  pins it (SHA-256 of the DER SubjectPublicKeyInfo) and a mismatch raises
  :class:`SecurityError` before any prompt is encrypted;
* the response is bound to the request: a decrypted ``_metadata.payload_id``
  that differs from ours raises :class:`SecurityError`; a server that does
  not echo it is accepted and ``_metadata.payload_id_verified`` says False;
* the TPM evidence is verified on arrival and the verdict recorded in
  ``_metadata.verification`` (policies decide what a failing verdict means);
* a ``_metadata`` field the client computes (the verdict, the policy
  result, ``is_encrypted``...) is never taken from the router: the router's
  copy is dropped and named in ``_metadata.dropped_router_fields``;
  freshness rests on the ``processed_at`` inside the authenticated
  ciphertext, never on the package's unauthenticated copy;
* every reply is bounded (:mod:`.http`): its size while it streams in and
  before it is inflated, its time by a total deadline (``timeout=``,
  :data:`DEFAULT_TIMEOUT` by default, retries included); a malformed reply
  is a :class:`ProtocolError`, and with an audit log every request leaves
  one record whatever happened to it;
* retries follow the OpenAI SDK (see :mod:`.retry`) and re-encrypt every
  attempt with a fresh AES key and nonce;
* RSA key generation runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import os
import re
import time
import urllib.parse
import warnings
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from .._memory import secure_buffer, wipe
from ..audit._log import AuditLog
from ..audit._records import build_record
from ..errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidRequestError,
    NomyoAuditError,
    ProtocolError,
    RateLimitError,
    SecurityError,
    ServerError,
    ServiceUnavailableError,
)
from ..policy import KEY_SCOPE, Policy, PolicyViolationError, evaluate, load_policy
from ..tpm._binding import key_binding, response_content_digest
from ..tpm._verify import Verdict, verify_attestation
from ..wire import (
    ALGORITHM,
    MAX_JSON_DEPTH,
    MAX_PACKAGE_BYTES,
    decrypt_package,
    encrypt_package,
    key_fingerprint,
    load_public_key_pem,
    parse_json,
    parse_package,
    public_key_pem,
)
from ._http import ACCEPT_ENCODING, FINAL_CONNECTION_CODES, Reply, exchange
from ._keys import DEFAULT_KEY_BITS, KeyPair, generate_key_pair, load_key_pair, save_key_pair
from ._retry import backoff_delay, is_retryable_status

__all__ = ["CLIENT_FIELDS", "DEFAULT_TIMEOUT", "SECURITY_TIERS", "SecureCompletionClient"]

logger = logging.getLogger("nomyo_audit.client")
T = TypeVar("T")
_MISSING = object()

SECURITY_TIERS = ("standard", "high", "maximum")
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
PUBLIC_KEY_PATH = "/pki/public_key"
COMPLETION_PATH = "/v1/chat/secure_completion"
KEY_ATTESTATION_PATH = "/pki/attestation"
#: Seconds a whole call may take, retries included; each HTTP request is held to it too. A server
#: that drips one byte at a time resets no clock: this deadline is total, not per read.
DEFAULT_TIMEOUT = 600.0
#: Per-operation limits under the deadline: 10 s to connect, then up to the deadline per read.
DEFAULT_HTTP_TIMEOUT = httpx.Timeout(DEFAULT_TIMEOUT, connect=10.0)
#: Small replies: the router key PEM and its attestation (a quote and its PCR values).
MAX_SMALL_REPLY_BYTES = 1024 * 1024
#: How much of an error reply is read for its ``detail``; the rest is not read.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: ``_metadata`` fields only the client may set: a router's copy is dropped and noted.
CLIENT_FIELDS = (
    "payload_id_verified",
    "is_encrypted",
    "encryption_algorithm",
    "verification",
    "policy",
    "dropped_router_fields",
    "unauthenticated_processed_at",
)
#: Client fields NOMYO routers send themselves (is_encrypted): the same value is no finding.
_HONEST_ROUTER_VALUES: dict[str, object] = {"is_encrypted": True, "encryption_algorithm": ALGORITHM}
_PAYLOAD_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    429: RateLimitError,
    500: ServerError,
    503: ServiceUnavailableError,
}


class SecureCompletionClient:
    """Client for the ``/v1/chat/secure_completion`` endpoint of a NOMYO router."""

    def __init__(
        self,
        router_url: str = "https://api.nomyo.ai",
        allow_http: bool = False,
        max_retries: int = 2,
        *,
        secure_memory: bool = True,
        server_key_fingerprint: str | None = None,
        timeout: float | None = None,
        http_timeout: httpx.Timeout | float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        key_bits: int = DEFAULT_KEY_BITS,
        policy: Policy | str | os.PathLike[str] | None = None,
        audit_log: AuditLog | str | os.PathLike[str] | None = None,
    ) -> None:
        self.router_url = _check_router_url(router_url, allow_http)
        self._owns_audit_log = isinstance(audit_log, (str, os.PathLike))
        self.audit_log = AuditLog(audit_log) if isinstance(audit_log, (str, os.PathLike)) else audit_log
        self._policies: dict[str, Policy] = {}
        self.policy = self._as_policy(policy)
        self._key_attested_until: dict[str, float] = {}
        self.allow_http = allow_http
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be a non-negative integer")
        self.max_retries = max_retries
        self.secure_memory = secure_memory
        self.server_key_fingerprint = _normalise_fingerprint(server_key_fingerprint)
        self.timeout = _check_timeout(timeout)
        self.key_bits = key_bits
        self.private_key: rsa.RSAPrivateKey | None = None
        self.public_key_pem: str | None = None
        self._http_timeout = http_timeout if http_timeout is not None else DEFAULT_HTTP_TIMEOUT
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._server_key: rsa.RSAPublicKey | None = None
        self._server_key_pem: str | None = None
        self._server_key_sha256: str | None = None  # computed once per fetched key
        self._locks: dict[int, tuple[asyncio.Lock, asyncio.Lock]] = {}

    # -- keys -------------------------------------------------------------

    def generate_keys(
        self, save_to_file: bool = False, key_dir: str = "client_keys", password: str | None = None
    ) -> None:
        """Generate the client's RSA key pair (4096 bits by default).

        Blocking; the async paths call it in a worker thread. With
        ``save_to_file`` the private key is written 0600 (encrypted when a
        password is given), and existing files are never overwritten.
        """
        self._install(generate_key_pair(self.key_bits))
        if save_to_file:
            save_key_pair(self._keys(), key_dir, password)

    def load_keys(
        self, private_key_path: str, public_key_path: str | None = None, password: str | None = None
    ) -> None:
        """Load the key pair; keys under 2048 bits and mismatched pairs are refused."""
        self._install(load_key_pair(private_key_path, public_key_path, password))

    def _install(self, pair: KeyPair) -> None:
        self.private_key = pair.private_key
        self.public_key_pem = pair.public_key_pem

    def _keys(self) -> KeyPair:
        if self.private_key is None or self.public_key_pem is None:
            raise SecurityError("client keys are not initialised: call generate_keys() or load_keys()")
        return KeyPair(self.private_key, self.public_key_pem)

    async def ensure_keys(self, key_dir: str | None = None, password: str | None = None) -> None:
        """Make sure a key pair exists, generating it off the event loop once.

        With ``key_dir``, keys found there are loaded (a wrong password or a
        corrupt file is an error, never a reason to regenerate); when the
        directory holds none, new keys are generated and saved there.
        """
        if self.private_key is not None:
            return
        key_lock, _ = self._loop_locks()
        async with key_lock:
            if self.private_key is not None:
                return
            if key_dir is not None and os.path.exists(os.path.join(key_dir, "private_key.pem")):
                self.load_keys(os.path.join(key_dir, "private_key.pem"), password=password)
                return
            pair = await asyncio.to_thread(generate_key_pair, self.key_bits)
            if key_dir is not None:
                await asyncio.to_thread(save_key_pair, pair, key_dir, password)
            self._install(pair)

    # -- server key -------------------------------------------------------

    async def fetch_server_public_key(self, *, refresh: bool = False) -> str:
        """The router's public key PEM, fetched once and then served from cache.

        When a fingerprint is pinned, a key that does not match raises
        :class:`SecurityError` and is not cached.
        """
        if self._server_key_pem is not None and not refresh:
            return self._server_key_pem
        _, fetch_lock = self._loop_locks()
        async with fetch_lock:
            if self._server_key_pem is not None and not refresh:
                return self._server_key_pem
            reply = await self._request("GET", self.router_url + PUBLIC_KEY_PATH, limit=MAX_SMALL_REPLY_BYTES)
            if reply.status_code != 200:
                raise _api_error(reply, "fetching the router's public key")
            key = load_public_key_pem(reply.body, what="router public key")
            fingerprint = key_fingerprint(key)
            if self.server_key_fingerprint is not None and fingerprint != self.server_key_fingerprint:
                raise SecurityError(
                    f"router public key fingerprint {fingerprint} does not match the pinned "
                    f"{self.server_key_fingerprint}",
                    code="server_key_pin",
                )
            self._server_key = key
            self._server_key_pem = public_key_pem(key)  # canonical SPKI PEM, whatever the layout sent
            self._server_key_sha256 = fingerprint
            return self._server_key_pem

    @property
    def server_key_fingerprint_seen(self) -> str | None:
        """Fingerprint of the cached router key, once fetched."""
        return self._server_key_sha256

    # -- encryption -------------------------------------------------------

    async def encrypt_payload(self, payload: dict[str, Any]) -> bytes:
        """Encrypt ``payload`` to the router's key: the package as JSON bytes."""
        if not isinstance(payload, dict):
            raise InvalidRequestError("payload must be a dict")
        if not payload:
            raise InvalidRequestError("payload cannot be empty")
        await self.fetch_server_public_key()
        assert self._server_key is not None
        fault = payload_fault(payload)
        if fault is not None:
            raise InvalidRequestError(fault)
        encoded = json.dumps(payload).encode()
        with secure_buffer(bytearray(encoded), locked=self.secure_memory) as plaintext:
            wipe(encoded)
            if len(plaintext) > MAX_PAYLOAD_BYTES:
                raise InvalidRequestError(
                    f"payload is {len(plaintext)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit"
                )
            return encrypt_package(plaintext, self._server_key)

    async def decrypt_response(self, encrypted_response: bytes, payload_id: str) -> dict[str, Any]:
        """Decrypt a response package and bind it to ``payload_id``.

        Malformed packages raise :class:`ProtocolError`; a package that fails
        decryption, or whose ``_metadata.payload_id`` names another request,
        raises :class:`SecurityError`.
        """
        response, _ = await self._decrypt(encrypted_response, payload_id)
        return response

    async def _decrypt(self, encrypted_response: bytes, payload_id: str) -> tuple[dict[str, Any], Verdict]:
        package = parse_package(encrypted_response)
        # RSA-4096 decryption takes milliseconds and releases the GIL: off the loop.
        plaintext = await asyncio.to_thread(decrypt_package, package, self._keys().private_key)
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
                "encryption_algorithm": ALGORITHM,
            }
        )
        if dropped:
            metadata["dropped_router_fields"] = dropped
        _note_unauthenticated_time(metadata, package.processed_at)
        verdict = verify_attestation(
            metadata.get("tpm_attestation"), payload_id, content_digest=response_content_digest(response)
        )
        metadata["verification"] = verdict.to_dict()
        return response, verdict

    # -- the exchange -----------------------------------------------------

    async def send_secure_request(
        self,
        payload: dict[str, Any],
        payload_id: str,
        api_key: str | None = None,
        security_tier: str | None = None,
        *,
        policy: Policy | str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Encrypt, send with retries, decrypt, bind and (with a policy) gate one chat completion.

        ``policy`` overrides the client's. With ``require_key_attestation`` the
        router key is attested before any prompt is encrypted to it; a failure
        there sends nothing. A response failing a ``deny`` policy raises
        :class:`PolicyViolationError` and its content is not returned.
        """
        validate_security_tier(security_tier)
        if not isinstance(payload_id, str) or not _PAYLOAD_ID.match(payload_id):
            raise InvalidRequestError("payload_id must be 1-128 characters of [A-Za-z0-9._:-]")
        active = self._as_policy(policy) or self.policy
        await self.ensure_keys()
        return await self._audited_send(payload, payload_id, api_key, security_tier, active)

    async def _audited_send(
        self,
        payload: dict[str, Any],
        payload_id: str,
        api_key: str | None,
        security_tier: str | None,
        policy: Policy | None,
    ) -> dict[str, Any]:
        """The exchange within the deadline, and (with an audit log) one record of it whatever happens.

        The deadline sits inside the audit, so a call that runs out of time is recorded too;
        so is one that fails in a way nobody planned for (a bug), as ``error:internal``.
        """
        fault = payload_fault(payload)
        if fault is not None:  # recorded without a request digest: no canonical JSON holds this payload
            refused = InvalidRequestError(fault)
            await self._audit(payload_id, None, security_tier, _outcome_of(refused), None, refused, None)
            raise refused
        exchange = self._gated_send(payload, payload_id, api_key, security_tier, policy)
        try:
            response = await _within(self.timeout, exchange, "the call")
        except PolicyViolationError as denied:
            metadata = denied.metadata
            await self._audit(
                payload_id,
                payload,
                security_tier,
                "policy_denied",
                {"_metadata": metadata} if metadata else None,
                denied,
                denied.result.to_dict(),
            )
            raise
        except NomyoAuditError as failure:
            await self._audit(payload_id, payload, security_tier, _outcome_of(failure), None, failure, None)
            raise
        except (Exception, asyncio.CancelledError) as unplanned:
            outcome = "error:cancelled" if isinstance(unplanned, asyncio.CancelledError) else "error:internal"
            await self._audit(payload_id, payload, security_tier, outcome, None, unplanned, None)
            raise
        policy_result = response["_metadata"].get("policy")  # only ever the client's own evaluation
        outcome = "policy_warned" if policy_result and policy_result.get("outcome") == "warn" else "ok"
        await self._audit(payload_id, payload, security_tier, outcome, response, None, policy_result)
        return response

    async def _audit(
        self,
        payload_id: str,
        payload: dict[str, Any] | None,
        security_tier: str | None,
        outcome: str,
        response: dict[str, Any] | None,
        error: BaseException | None,
        policy: dict[str, Any] | None,
    ) -> None:
        if self.audit_log is None:
            return
        summary = _error_summary(error)

        def build(seq: int, salt: bytes) -> bytes:
            return build_record(
                seq=seq,
                timestamp=time.time(),
                salt=salt,
                payload_id=payload_id,
                router=self.router_url,
                server_key=self.server_key_fingerprint_seen,
                model=_model_of(payload),
                security_tier=security_tier,
                outcome=outcome,
                request=payload,
                response=response if outcome != "policy_denied" else None,
                error=summary,
                policy=policy,
                metadata=(response or {}).get("_metadata"),
            )

        # A durable SQLite append takes a disk flush: off the event loop.
        await asyncio.to_thread(self.audit_log.append, payload_id, build)

    async def _gated_send(
        self,
        payload: dict[str, Any],
        payload_id: str,
        api_key: str | None,
        security_tier: str | None,
        policy: Policy | None,
    ) -> dict[str, Any]:
        if policy is not None and policy.require_key_attestation:
            await self.attest_server_key(policy)
        response, verdict = await self._send(payload, payload_id, api_key, security_tier)
        if policy is not None:
            self._apply_policy(policy, response, verdict)
        return response

    def _apply_policy(self, policy: Policy, response: dict[str, Any], verdict: Verdict) -> None:
        metadata = response["_metadata"]
        result = evaluate(policy, response, now=time.time(), verdict=verdict)
        metadata["policy"] = result.to_dict()
        metadata["verification"]["policy"] = {
            "name": result.policy_name,
            "digest": result.policy_digest,
            "outcome": result.outcome,
        }
        if result.outcome == "deny":
            response.clear()  # drop our references to the content before raising
            raise PolicyViolationError(result.summary(), result, metadata)

    async def attest_server_key(self, policy: Policy) -> None:
        """Verify the router key's TPM attestation against ``policy`` (cached for its TTL).

        Fails closed: a router without ``/pki/attestation``, or whose quote does
        not satisfy the policy, raises :class:`SecurityError` and nothing is sent.
        """
        await self.fetch_server_public_key()
        fingerprint = self._server_key_sha256
        assert fingerprint is not None
        if self._key_attested_until.get(fingerprint, 0.0) > time.monotonic():
            return
        nonce = os.urandom(32)
        reply = await self._request(
            "GET",
            self.router_url + KEY_ATTESTATION_PATH,
            limit=MAX_SMALL_REPLY_BYTES,
            params={"nonce": nonce.hex()},
        )
        if reply.status_code == 404:
            raise SecurityError(
                "the router offers no key attestation (GET /pki/attestation: 404); "
                "the policy requires it, so nothing was sent",
                code="key_attestation_unavailable",
            )
        if reply.status_code != 200:
            raise SecurityError(
                f"key attestation failed: HTTP {reply.status_code}; nothing was sent",
                code="key_attestation_unavailable",
            )
        document = reply.json_or_none("key attestation")
        block = document.get("tpm_attestation") if isinstance(document, dict) else None
        verdict = verify_attestation(
            block, None, expected_nonce=key_binding(nonce, bytes.fromhex(fingerprint))
        )
        result = evaluate(policy, {"tpm_attestation": block}, verdict=verdict, scope=KEY_SCOPE)
        if not verdict.passed or not result.passed:
            reasons = [f"{f.check}: {f.code}" for f in verdict.failures]
            reasons += [f"{r.rule}: {r.detail}" for r in result.failures]
            raise PolicyViolationError(
                "the router key's attestation does not satisfy policy "
                f"{policy.name} ({'; '.join(reasons)}); nothing was sent",
                result,
                {"key_attestation": {"tpm_attestation": block, "verification": verdict.to_dict()}},
            )
        self._key_attested_until[fingerprint] = time.monotonic() + policy.key_attestation_ttl

    def _as_policy(self, policy: Policy | str | os.PathLike[str] | None) -> Policy | None:
        """A policy object, loading a file only once per client (not once per request)."""
        if policy is None or isinstance(policy, Policy):
            return policy
        key = os.fspath(policy)
        if key not in self._policies:
            self._policies[key] = load_policy(key)
        return self._policies[key]

    async def _send(
        self, payload: dict[str, Any], payload_id: str, api_key: str | None, security_tier: str | None
    ) -> tuple[dict[str, Any], Verdict]:
        headers = {
            "X-Payload-ID": payload_id,
            "X-Public-Key": urllib.parse.quote(self._keys().public_key_pem),
            "Content-Type": "application/octet-stream",
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if security_tier:
            headers["X-Security-Tier"] = security_tier
        url = self.router_url + COMPLETION_PATH
        attempt = 0
        while True:
            body = await self.encrypt_payload(payload)  # fresh AES key and nonce every attempt
            retry_headers: Mapping[str, str] | None = None
            try:
                response = await self._request(
                    "POST", url, limit=MAX_PACKAGE_BYTES, headers=headers, content=body
                )
            except APIConnectionError as unreachable:
                if unreachable.code in FINAL_CONNECTION_CODES:
                    raise  # a wrong scheme or an unknown host will not mend itself
                failure: APIError = unreachable
            else:
                if response.status_code == 200:
                    return await self._decrypt(response.body, payload_id)
                failure = _api_error(response)
                if not is_retryable_status(response.status_code):
                    raise failure
                retry_headers = response.headers
            if attempt >= self.max_retries:
                raise failure
            delay = backoff_delay(attempt, retry_headers)
            logger.warning(
                "retrying secure completion (attempt %d of %d) in %.2fs after %s",
                attempt + 1,
                self.max_retries,
                delay,
                failure.code,
            )
            await asyncio.sleep(delay)
            attempt += 1

    # -- connection pool --------------------------------------------------

    async def _request(self, method: str, url: str, *, limit: int, **options: Any) -> Reply:
        """One HTTP exchange, its body bounded by ``limit`` and its time by the deadline."""
        client = self._client()
        request = client.build_request(method, url, **options)
        reading = exchange(
            client, request, limit=limit, error_limit=MAX_ERROR_BODY_BYTES, server=self.router_url
        )
        return await _within(self.timeout, reading, f"{method} {url}")

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            # A pooled client is tied to the loop that opened its connections.
            self._http = httpx.AsyncClient(
                timeout=self._http_timeout,
                transport=self._transport,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
                headers={"Accept-Encoding": ACCEPT_ENCODING},
                follow_redirects=False,
            )
            self._http_loop = loop
        return self._http

    def _loop_locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        loop_id = id(asyncio.get_running_loop())
        locks = self._locks.get(loop_id)
        if locks is None:
            locks = self._locks[loop_id] = (asyncio.Lock(), asyncio.Lock())
        return locks

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._owns_audit_log and self.audit_log is not None:
            self.audit_log.close()
            self.audit_log = None

    async def __aenter__(self) -> SecureCompletionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _within(deadline: float, work: Awaitable[T], what: str) -> T:
    """``work`` or :class:`APITimeoutError` once ``deadline`` seconds have passed, however busy it is."""
    try:
        return await asyncio.wait_for(work, deadline)
    except asyncio.TimeoutError:
        raise APITimeoutError(f"{what} did not complete within {deadline:g} s (timeout=)") from None


def _check_timeout(timeout: float | None) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigurationError("timeout must be a number of seconds")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ConfigurationError("timeout must be positive, finite seconds: a request never waits forever")
    return float(timeout)


def payload_fault(payload: object) -> str | None:
    """Why ``payload`` cannot be sent as JSON and digested into a record, or None.

    Checked before anything is sent, without recursion: a payload the canonical JSON of the audit
    record cannot hold (a lone surrogate, NaN, an object JSON has no form for, a dict mixing key
    types, nesting deeper than :data:`~nomyo_audit.wire.MAX_JSON_DEPTH`) would otherwise fail
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


#: Python writes at most 4300 decimal digits of an int by default (sys.get_int_max_str_digits).
_MAX_INT_BITS = 14_000


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _model_of(payload: Mapping[str, Any] | None) -> str | None:
    model = payload.get("model") if payload is not None else None
    return model if isinstance(model, str) else None


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


def _error_summary(error: BaseException | None) -> dict[str, Any] | None:
    """What a record keeps of a failure: our own messages, never the text of an unknown exception."""
    if error is None:
        return None
    if isinstance(error, NomyoAuditError):
        return {"code": error.code, "class": type(error).__name__, "message": error.message}
    if isinstance(error, asyncio.CancelledError):
        return {"code": "cancelled", "class": "CancelledError", "message": "the call was cancelled"}
    return {"code": "internal", "class": type(error).__name__, "message": "internal error (a bug)"}


def _outcome_of(error: NomyoAuditError) -> str:
    if isinstance(error, APIError):
        return f"http_error:{type(error).__name__}"
    if isinstance(error, SecurityError):
        return f"security_error:{error.code}"
    return f"error:{error.code}"


def validate_security_tier(tier: object) -> None:
    if tier is not None and tier not in SECURITY_TIERS:
        shown = tier if isinstance(tier, str) and len(tier) <= 32 else type(tier).__name__
        raise InvalidRequestError(
            f"invalid security_tier {shown!r}: must be one of {', '.join(SECURITY_TIERS)}"
        )


def _check_router_url(url: str, allow_http: bool) -> str:
    if not isinstance(url, str):
        raise ConfigurationError("router URL must be a string")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigurationError(f"router URL must be http(s)://host[:port][/path], got {url!r}")
    if parsed.scheme == "http":
        if not allow_http:
            raise SecurityError(
                "router URL must use HTTPS; for local development pass allow_http=True",
                code="insecure_transport",
            )
        if not _is_loopback(parsed.hostname):
            warnings.warn(
                f"plain HTTP to non-loopback host {parsed.hostname}: "
                "the server key can be swapped in transit",
                UserWarning,
                stacklevel=3,
            )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normalise_fingerprint(value: str | None) -> str | None:
    if value is None:
        return None
    cleaned = value.lower().replace(":", "").strip()
    if cleaned.startswith("sha256:"):
        cleaned = cleaned[len("sha256:") :]
    if not re.fullmatch(r"[0-9a-f]{64}", cleaned):
        raise ConfigurationError("server_key_fingerprint must be 64 hex digits (SHA-256 of the DER SPKI)")
    return cleaned


def _api_error(response: Reply, during: str | None = None) -> APIError:
    """The exception for an error status, with the router's ``detail`` (bounded)."""
    details: dict[str, Any] | None = None
    body = response.json_or_none("error reply")
    if isinstance(body, dict):
        details = body
        detail = body.get("detail", "")
    else:
        detail = ""
    detail_text = detail if isinstance(detail, str) else json.dumps(detail)[:500]
    if len(detail_text) > 500:
        detail_text = detail_text[:500] + "..."
    status = response.status_code
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else APIError)
    prefix = f"HTTP {status}" + (f" {during}" if during else "")
    message = f"{prefix}: {detail_text}" if detail_text else prefix
    return cls(message, status_code=status, error_details=details)
