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
* every reply is bounded (:mod:`._http`): its size while it streams in and
  before it is inflated, its time by a total deadline (``timeout=``,
  :data:`DEFAULT_TIMEOUT` by default, retries included); a malformed reply
  is a :class:`ProtocolError`, and with an audit log every request leaves
  one record whatever happened to it;
* retries follow the OpenAI SDK (see :mod:`._retry`) and re-encrypt every
  attempt with a fresh AES key and nonce;
* RSA key generation runs in a worker thread, never on the event loop.

This module is the I/O around the rooms that do the work: :mod:`._exchange` seals the request
and opens the reply (pure), :mod:`._gate` judges it and the router key against the policy (pure),
:mod:`._errors` maps every network failure to an API error, :mod:`._audit` writes the record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from ..audit._labels import labels_from
from ..audit._log import AuditLog
from ..errors import APIConnectionError, APIError, ConfigurationError, InvalidRequestError, SecurityError
from ..policy import Policy, PolicyViolationError, load_policy
from ..wire import (
    COMPLETION_PATH,
    KEY_ATTESTATION_PATH,
    MAX_PACKAGE_BYTES,
    PUBLIC_KEY_PATH,
    decrypt_package,
    key_fingerprint,
    parse_package,
)
from ._activation import Activations, anchor_reply, prepare_anchor, wants_anchor
from ._audit import outcome_of, record_call
from ._call import CompletionCall, check_payload_id, validate_security_tier
from ._errors import FINAL_CONNECTION_CODES, within
from ._exchange import OpenedReply, payload_fault, read_reply, seal_request
from ._gate import KeyAttestations, ServerKey, apply_policy, judge_key_attestation, pinned_server_key
from ._http import Reply
from ._keys import DEFAULT_KEY_BITS, KeyPair, generate_key_pair, load_key_pair, save_key_pair
from ._pool import ConnectionPool
from ._protocol2 import Protocol2
from ._retry import backoff_delay, is_retryable_status
from ._settings import DEFAULT_HTTP_TIMEOUT, check_router_url, check_timeout, normalise_fingerprint

__all__ = ["SecureCompletionClient"]

logger = logging.getLogger("nomyo_audit.client")

#: Small replies: the router key PEM and its attestation (a quote and its PCR values).
MAX_SMALL_REPLY_BYTES = 1024 * 1024


class SecureCompletionClient:
    """Client for the ``/v1/chat/secure_completion`` endpoint of a NOMYO router.

    The constructor checks its arguments: a malformed ``router_url``, ``max_retries``,
    ``timeout`` or ``server_key_fingerprint`` raises :class:`ConfigurationError`, plain HTTP
    without ``allow_http`` raises :class:`SecurityError`. ``policy`` and ``audit_log`` may be
    paths (a policy file or a shipped policy's name; an SQLite log, opened here and closed by
    :meth:`aclose`). ``service`` and ``tenant`` label every record (default ``$NOMYO_AUDIT_SERVICE``,
    ``$NOMYO_AUDIT_TENANT``); one that is not 1-64 printable characters raises ConfigurationError.
    """

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
        protocol: str | None = None,
        service: str | None = None,
        tenant: str | None = None,
    ) -> None:
        self.router_url = check_router_url(router_url, allow_http)
        self._labels = MappingProxyType(labels_from({"service": service, "tenant": tenant}))
        self._v2 = Protocol2(protocol)  # "auto" | "1.0" | "2" (None: $NOMYO_PROTOCOL); client/_protocol2.py
        self._owns_audit_log = isinstance(audit_log, (str, os.PathLike))
        self.audit_log = AuditLog(audit_log) if isinstance(audit_log, (str, os.PathLike)) else audit_log
        self._policies: dict[str, Policy] = {}
        self.policy = self._as_policy(policy)
        self._attested = KeyAttestations()
        self._activations = Activations()  # aik_trust ek: activated AIKs, per policy TTL
        self._key_attested_until = self._attested.until  # tests expire attestations through it
        self.allow_http = allow_http
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be a non-negative integer")
        self.max_retries = max_retries
        self.secure_memory = secure_memory
        self.server_key_fingerprint = normalise_fingerprint(server_key_fingerprint)
        self.timeout = check_timeout(timeout)
        self.key_bits = key_bits
        self.private_key: rsa.RSAPrivateKey | None = None
        self.public_key_pem: str | None = None
        self._pool = ConnectionPool(
            self.router_url, http_timeout if http_timeout is not None else DEFAULT_HTTP_TIMEOUT, transport
        )
        self._server: ServerKey | None = None
        self._locks: dict[int, tuple[asyncio.Lock, asyncio.Lock]] = {}

    # -- keys -------------------------------------------------------------

    def generate_keys(
        self, save_to_file: bool = False, key_dir: str = "client_keys", password: str | None = None
    ) -> None:
        """Generate the client's RSA key pair (4096 bits by default).

        Blocking; the async paths call it in a worker thread. With
        ``save_to_file`` the private key is written 0600 (encrypted when a
        password is given), and existing files are never overwritten.
        Raises :class:`ConfigurationError` for a key size under 2048 bits or an existing
        key file.
        """
        self._install(generate_key_pair(self.key_bits))
        if save_to_file:
            save_key_pair(self._keys(), key_dir, password)

    def load_keys(
        self, private_key_path: str, public_key_path: str | None = None, password: str | None = None
    ) -> None:
        """Load the key pair from PEM files.

        Raises :class:`ConfigurationError` for an unreadable file, a wrong or missing password,
        a key that is not RSA or is under 2048 bits, or a public key that does not match.
        """
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
        Raises :class:`ConfigurationError` as :meth:`load_keys` does.
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
        :class:`SecurityError` and is not cached. An error status raises its
        :class:`APIError`, a key that is no acceptable RSA key :class:`ProtocolError`.
        """
        if self._server is not None and not refresh:
            return self._server.pem
        _, fetch_lock = self._loop_locks()
        async with fetch_lock:
            if self._server is not None and not refresh:
                return self._server.pem
            reply = await self._request("GET", self.router_url + PUBLIC_KEY_PATH, limit=MAX_SMALL_REPLY_BYTES)
            if reply.status_code != 200:
                raise reply.error("fetching the router's public key")
            self._server = pinned_server_key(reply.body, self.server_key_fingerprint)
            return self._server.pem

    @property
    def server_key_fingerprint_seen(self) -> str | None:
        """Fingerprint of the cached router key, once fetched."""
        return self._server.sha256 if self._server is not None else None

    # -- encryption -------------------------------------------------------

    async def encrypt_payload(self, payload: dict[str, Any]) -> bytes:
        """Encrypt ``payload`` to the router's key: the package as JSON bytes.

        Fetches the router key first (see :meth:`fetch_server_public_key`). A payload that is
        not a non-empty dict JSON can hold, or over 10 MiB, raises :class:`InvalidRequestError`.
        """
        if not isinstance(payload, dict):
            raise InvalidRequestError("payload must be a dict")
        if not payload:
            raise InvalidRequestError("payload cannot be empty")
        await self.fetch_server_public_key()
        assert self._server is not None
        return seal_request(payload, self._server.key, secure_memory=self.secure_memory)

    async def decrypt_response(self, encrypted_response: bytes, payload_id: str) -> dict[str, Any]:
        """Decrypt a response package and bind it to ``payload_id``.

        Malformed packages raise :class:`ProtocolError`; a package that fails
        decryption, or whose ``_metadata.payload_id`` names another request,
        raises :class:`SecurityError`.
        """
        return (await self._open(encrypted_response, payload_id)).response

    async def _open(self, body: bytes, payload_id: str) -> OpenedReply:
        """:func:`._exchange.open_reply`, the RSA decryption (milliseconds, GIL released) off the loop."""
        package = parse_package(body)
        plaintext = await asyncio.to_thread(decrypt_package, package, self._keys().private_key)
        own_key = bytes.fromhex(key_fingerprint(self._keys().private_key.public_key()))
        return read_reply(plaintext, payload_id, package.processed_at, client_key_sha256=own_key)

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

        Raises :class:`InvalidRequestError` for a bad payload, id or tier (before anything is
        sent), an :class:`APIError` for an error status or an unreachable router (retried when
        that may help; :class:`APITimeoutError` once ``timeout`` seconds have passed), and a
        :class:`SecurityError` (:class:`ProtocolError` for a malformed reply) when the reply
        cannot be trusted. With an audit log, every call leaves one record, whatever happened.
        """
        validate_security_tier(security_tier)
        check_payload_id(payload_id)
        active = self._as_policy(policy) or self.policy
        await self.ensure_keys()
        call = CompletionCall(payload, payload_id, api_key, security_tier, active)
        return await self._audited_send(call)

    async def _audited_send(self, call: CompletionCall) -> dict[str, Any]:
        """The exchange within the deadline, and (with an audit log) one record of it whatever happens.

        The deadline sits inside the audit, so a call that runs out of time is recorded too;
        so is one that fails in a way nobody planned for (a bug), as ``error:internal``.
        """
        fault = payload_fault(call.payload)
        if fault is not None:  # recorded without a request digest: no canonical JSON holds this payload
            refused = InvalidRequestError(fault)
            await self._record(call, outcome_of(refused), request=None, error=refused)
            raise refused
        try:
            response = await within(self.timeout, self._gated_send(call), "the call")
        except PolicyViolationError as denied:
            metadata = denied.metadata
            await self._record(
                call,
                "policy_denied",
                response={"_metadata": metadata} if metadata else None,
                error=denied,
                policy=denied.result.to_dict(),
            )
            raise
        except (Exception, asyncio.CancelledError) as failure:
            await self._record(call, outcome_of(failure), error=failure)
            raise
        policy_result = response["_metadata"].get("policy")  # only ever the client's own evaluation
        outcome = "policy_warned" if policy_result and policy_result.get("outcome") == "warn" else "ok"
        await self._record(call, outcome, response=response, policy=policy_result)
        return response

    @property
    def labels(self) -> Mapping[str, str]:
        """``service`` and ``tenant`` (None: $NOMYO_AUDIT_SERVICE, $NOMYO_AUDIT_TENANT), in every record.

        Read-only: they were checked when the client was made, and a label changed afterwards would
        only be refused when the record is built, after the request was sent (no record)."""
        return self._labels

    async def _record(self, call: CompletionCall, outcome: str, **details: Any) -> None:
        if self.audit_log is None:
            return
        details.setdefault("request", call.payload)
        await record_call(
            self.audit_log,
            call,
            router=self.router_url,
            server_key=self.server_key_fingerprint_seen,
            outcome=outcome,
            labels=self.labels,
            **details,
        )

    async def _gated_send(self, call: CompletionCall) -> dict[str, Any]:
        v2_config = await self._v2.negotiate(self, call.policy)  # None: protocol 1.0, never a downgrade
        if v2_config is None and call.policy is not None and call.policy.require_key_attestation:
            await self.attest_server_key(call.policy)
        anchor = await prepare_anchor(self, call.policy) if wants_anchor(call.policy) else None
        opened = await (self._send(call) if v2_config is None else self._v2.send(self, call, v2_config))
        verdict = opened.verdict if anchor is None else anchor_reply(opened.response, opened.verdict, anchor)
        if call.policy is not None:
            apply_policy(call.policy, opened.response, verdict, now=time.time())
        return opened.response

    async def attest_server_key(self, policy: Policy) -> None:
        """Verify the router key's TPM attestation against ``policy`` (cached for its TTL).

        Fails closed: a router without ``/pki/attestation`` raises :class:`SecurityError`, one
        whose quote does not satisfy the policy :class:`PolicyViolationError`, and nothing is
        sent. Network failures raise as for any request (:class:`APITimeoutError` for a timeout).
        """
        await self.fetch_server_public_key()
        assert self._server is not None
        await self._attest_key(KEY_ATTESTATION_PATH, self._server.sha256, policy, label=self._server.sha256)

    async def _attest_key(self, path: str, key_sha256: str, policy: Policy, *, label: str) -> None:
        """GET ``path?nonce=`` and judge its quote over ``key_sha256`` (the 1.0 key's SPKI digest or the
        protocol 2 configuration's digest); a pass is cached under ``label`` for the policy's TTL."""
        if self._attested.fresh(label):
            return
        anchor = await prepare_anchor(self, policy) if wants_anchor(policy) else None  # aik_trust ek/ca
        nonce = os.urandom(32)
        reply = await self._request(
            "GET", self.router_url + path, limit=MAX_SMALL_REPLY_BYTES, params={"nonce": nonce.hex()}
        )
        document = reply.json_or_none("key attestation") if reply.status_code == 200 else None
        judge_key_attestation(
            policy, reply.status_code, document, nonce=nonce, key_sha256=key_sha256, anchor=anchor
        )
        self._attested.passed(label, policy.key_attestation_ttl)

    def _as_policy(self, policy: Policy | str | os.PathLike[str] | None) -> Policy | None:
        """A policy object, loading a file only once per client (not once per request)."""
        if policy is None or isinstance(policy, Policy):
            return policy
        key = os.fspath(policy)
        if key not in self._policies:
            self._policies[key] = load_policy(key)
        return self._policies[key]

    async def _send(self, call: CompletionCall) -> OpenedReply:
        """POST the sealed payload, retrying what may mend (see :mod:`._retry`), and open the reply."""
        headers = call.headers(self._keys().public_key_pem)
        url = self.router_url + COMPLETION_PATH
        attempt = 0
        while True:
            body = await self.encrypt_payload(call.payload)  # fresh AES key and nonce every attempt
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
                    return await self._open(response.body, call.payload_id)
                failure = response.error()
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
        return await self._pool.request(method, url, limit=limit, deadline=self.timeout, **options)

    def _loop_locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        loop_id = id(asyncio.get_running_loop())
        locks = self._locks.get(loop_id)
        if locks is None:
            locks = self._locks[loop_id] = (asyncio.Lock(), asyncio.Lock())
        return locks

    async def aclose(self) -> None:
        """Close the pooled connections, and the audit log when this client opened it."""
        await self._pool.aclose()
        if self._owns_audit_log and self.audit_log is not None:
            self.audit_log.close()
            self.audit_log = None

    async def __aenter__(self) -> SecureCompletionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
