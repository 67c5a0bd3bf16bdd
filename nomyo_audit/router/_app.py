"""The reference router as an ASGI app (starlette).

Endpoints, byte-compatible with NOMYO protocol 1.0 (docs/protocol.md):

* ``GET /pki/public_key``: the router's RSA public key, PEM;
* ``POST /v1/chat/secure_completion``: one encrypted chat request in, one
  encrypted response out, with ``_metadata`` filled as the seed API says.

Protocol 2 (docs/protocol-v2.md) is served alongside by :mod:`._protocol2`.

Errors are JSON ``{"detail": ...}`` with the statuses the client maps to its
exceptions: 400 malformed, 401 auth, 403 tier not allowed, 408 body too slow,
413 too large, 5xx backend or TPM trouble. Every request is checked in full
(:mod:`.validation`) before the backend or the TPM is called, so a malformed
one is always a 4xx. Nothing from a request's plaintext reaches the logs or an
error body, and no request can crash the server: unexpected failures become a
500 that names only the exception type.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._memory import wipe
from ..errors import ProtocolError, SecurityError
from ..wire import (
    COMPLETION_PATH,
    KEY_ATTESTATION_PATH,
    MAX_PACKAGE_BYTES,
    PUBLIC_KEY_PATH,
    SECURITY_TIERS,
    EncryptedPackage,
    decrypt_package,
    encrypt_package,
    key_fingerprint,
    parse_package,
    public_key_pem,
)
from ._anchoring import anchoring_routes
from ._backends import Backend, BackendError, EchoBackend
from ._environment import cuda_device_info, memory_protection_metadata
from ._key_binding import attest_reply
from ._protocol2 import V2Keys, protocol2_routes
from ._requests import bearer_matches, query_nonce, read_bounded
from ._validation import RequestRejected, check_chat_request, check_client_key, check_payload_id, load_json

__all__ = ["Attester", "NoAttester", "RouterConfig", "create_app"]

logger = logging.getLogger("nomyo_audit.router")

DEFAULT_TIER = "standard"


class Attester(Protocol):
    """Produces the ``tpm_attestation`` block for one response (``attest_response`` may also take
    ``client_key_sha256=`` to bind the client key, :mod:`._key_binding`)."""

    def attest_response(self, payload_id: str, completion: Mapping[str, Any]) -> dict[str, Any]: ...

    def attest_key(self, nonce: bytes, spki_sha256: bytes) -> dict[str, Any]: ...

    def close(self) -> None: ...


class NoAttester:
    """No TPM: says so explicitly rather than leaving the block out."""

    def attest_response(
        self, payload_id: str, completion: Mapping[str, Any], *, client_key_sha256: bytes | None = None
    ) -> dict[str, Any]:
        return {"is_available": False}

    def attest_key(self, nonce: bytes, spki_sha256: bytes) -> dict[str, Any]:
        return {"is_available": False}

    def close(self) -> None:
        return None


@dataclass
class RouterConfig:
    """Everything a router needs: its key, its model, who may call it, how it attests, its limits.

    ``private_key`` is the router's RSA key (its public half is served at ``/pki/public_key``);
    ``backend`` answers the decrypted requests; ``api_keys`` (empty: no authentication) are the
    bearer tokens accepted; ``attester`` quotes every reply. :func:`create_app` raises nothing for
    a config; bad values surface as :class:`nomyo_audit.errors.ConfigurationError` from ``serve``.
    """

    private_key: rsa.RSAPrivateKey
    backend: Backend = field(default_factory=EchoBackend)
    api_keys: tuple[str, ...] = ()
    #: Model glob -> tiers it may be served at; a model matching no entry may use any tier.
    model_tiers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    attester: Attester = field(default_factory=NoAttester)
    #: Also serve ``POST /v1/chat/completions`` in plaintext: a baseline for
    #: benchmarks only, never for real traffic.
    plain_endpoint: bool = False
    #: Connections served at once; more are answered 503 and closed (``serve --max-connections``).
    max_connections: int = 1024
    #: Seconds for a request's line and headers to arrive; then the connection is closed.
    header_timeout: float = 10.0
    #: Bytes of request bodies held at once across all connections; a request that would go
    #: over is 503 and closed. Without it, memory would be bounded only by max_connections x
    #: the 16 MiB package limit.
    max_buffered_bytes: int = 256 * 1024 * 1024
    #: Seconds for a request's body to arrive once its headers have; then 408, connection closed.
    body_timeout: float = 60.0
    #: Bearer keys that may install an AK certificate chain (``POST /pki/aik_certificate``); none: refused.
    admin_keys: tuple[str, ...] = ()
    #: Credential activations (one TPM operation each) per second, on average (router/_anchoring.py).
    activation_rate: float = 2.0
    #: The most activations the bucket lets through at once, after a quiet spell.
    activation_burst: int = 10

    async def aclose(self) -> None:
        """Release the backend's connections and the TPM session."""
        try:
            await self.backend.aclose()
        finally:
            self.attester.close()


def create_app(config: RouterConfig) -> Starlette:
    """The router app. ``app.state.requests`` counts requests per endpoint and
    ``app.state.clients`` the distinct client ports seen (connection reuse)."""
    public_pem = public_key_pem(config.private_key.public_key())
    memory_protection = memory_protection_metadata()
    cuda_device = cuda_device_info()
    api_keys = tuple(k.encode() for k in config.api_keys)
    budget = _BodyBudget(config.max_buffered_bytes)

    requests: Counter[str] = Counter()
    clients: set[tuple[str, int]] = set()

    def _count(request: Request) -> None:
        requests[request.url.path] += 1
        if request.client is not None:
            clients.add((request.client.host, request.client.port))

    async def public_key(request: Request) -> Response:
        _count(request)
        return PlainTextResponse(public_pem, media_type="application/x-pem-file")

    spki_sha256 = bytes.fromhex(key_fingerprint(config.private_key.public_key()))

    async def key_attestation(request: Request) -> Response:
        """GET /pki/attestation?nonce=<hex>: a quote binding the caller's nonce and this router's key."""
        _count(request)
        nonce = query_nonce(request)
        if nonce is None:
            return JSONResponse({"detail": "nonce must be 16-64 bytes of hex"}, status_code=400)
        try:
            block = await run_in_threadpool(config.attester.attest_key, nonce, spki_sha256)
        except Exception as exc:
            logger.error("key attestation failed: %s", type(exc).__name__)
            return JSONResponse({"detail": f"attestation failed ({type(exc).__name__})"}, status_code=503)
        return JSONResponse({"public_key_sha256": spki_sha256.hex(), "tpm_attestation": block})

    async def secure_completion(request: Request) -> Response:
        _count(request)
        try:
            with budget.hold() as share:
                return await _handle(request, share)
        except RequestRejected as reject:
            return _rejection(reject)
        except Exception as exc:  # never crash, never echo plaintext
            logger.error("secure_completion failed: %s", type(exc).__name__)
            return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    async def _handle(request: Request, share: list[int]) -> Response:
        _check_auth(request, api_keys)
        payload_id = check_payload_id(request.headers.get("x-payload-id"))
        tier = request.headers.get("x-security-tier")
        if tier is not None and tier not in SECURITY_TIERS:
            raise RequestRejected(400, f"invalid X-Security-Tier: must be one of {', '.join(SECURITY_TIERS)}")
        client_key_header = request.headers.get("x-public-key")
        if not client_key_header:
            raise RequestRejected(400, "missing X-Public-Key header")
        client_key = check_client_key(urllib.parse.unquote(client_key_header))
        package = _parse_package(await _read_body(request, config.body_timeout, budget, share))
        try:
            # RSA-4096 decryption takes milliseconds and releases the GIL: off the loop.
            plaintext = await run_in_threadpool(decrypt_package, package, config.private_key)
        except SecurityError:
            raise RequestRejected(400, "could not decrypt the package with this router's key") from None
        try:
            payload = check_chat_request(load_json(plaintext, "decrypted payload"))
        finally:
            wipe(plaintext)
        effective_tier = tier or DEFAULT_TIER
        allowed = _allowed_tiers(config.model_tiers, payload["model"])
        if effective_tier not in allowed:
            raise RequestRejected(403, f"security tier {effective_tier!r} is not allowed for this model")
        try:
            completion = await config.backend.complete(payload)
        except BackendError as exc:
            raise RequestRejected(exc.status, str(exc)) from None
        processed_at = int(time.time())
        try:
            # A TPM quote takes milliseconds of blocking I/O: off the event loop.
            attestation, bound_key = await run_in_threadpool(
                attest_reply, config.attester, payload_id, completion, client_key
            )
        except Exception as exc:
            logger.error("response attestation failed: %s", type(exc).__name__)
            raise RequestRejected(503, f"attestation failed ({type(exc).__name__})") from None
        completion["_metadata"] = {
            "payload_id": payload_id,
            "processed_at": processed_at,
            "is_encrypted": True,
            "response_status": "success",
            "security_tier": effective_tier,
            "memory_protection": dict(memory_protection),
            "cuda_device": dict(cuda_device),
            "tpm_attestation": attestation,
        }
        if bound_key is not None:  # the client key the quote binds; the client checks its own
            completion["_metadata"]["client_key_sha256"] = bound_key
        body = bytearray(json.dumps(completion).encode())
        try:
            sealed = encrypt_package(body, client_key, processed_at=processed_at)
        finally:
            wipe(body)
        return Response(sealed, media_type="application/json")

    async def plain_completion(request: Request) -> Response:
        _count(request)
        try:
            with budget.hold() as share:
                body = await _read_body(request, config.body_timeout, budget, share)
                payload = check_chat_request(load_json(body, "body"))
                return JSONResponse(await config.backend.complete(payload))
        except RequestRejected as reject:
            return _rejection(reject)
        except BackendError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    routes = [
        Route(PUBLIC_KEY_PATH, public_key, methods=["GET"]),
        Route(KEY_ATTESTATION_PATH, key_attestation, methods=["GET"]),
        Route(COMPLETION_PATH, secure_completion, methods=["POST"]),
    ]
    routes += anchoring_routes(config)  # GET /pki/endorsement, POST /pki/activation, /pki/aik_certificate
    v2 = V2Keys()  # protocol 2: GET /pki/v2/key_config, /pki/v2/attestation, POST /v2/chat/secure_completion
    routes += protocol2_routes(
        config,
        v2,
        count=_count,
        hold=budget.hold,
        read_body=lambda request, share: _read_body(request, config.body_timeout, budget, share),
        check_auth=lambda request: _check_auth(request, api_keys),
        allowed_tiers=lambda model: _allowed_tiers(config.model_tiers, model),
        rejection=_rejection,
        metadata=lambda: {
            "is_encrypted": True,
            "response_status": "success",
            "memory_protection": dict(memory_protection),
            "cuda_device": dict(cuda_device),
        },
    )
    if config.plain_endpoint:
        routes.append(Route("/v1/chat/completions", plain_completion, methods=["POST"]))
    app = Starlette(
        routes=routes,
    )
    app.state.requests = requests
    app.state.clients = clients
    app.state.v2 = v2
    return app


def _rejection(reject: RequestRejected) -> JSONResponse:
    # A 408 leaves the rest of the body unread: the connection cannot carry another request.
    headers = {"Connection": "close"} if reject.status in (408, 413, 503) else None
    return JSONResponse({"detail": reject.detail}, status_code=reject.status, headers=headers)


def _check_auth(request: Request, api_keys: tuple[bytes, ...]) -> None:
    if not api_keys:
        return
    matched = bearer_matches(request, api_keys)
    if matched is None:
        raise RequestRejected(401, "missing API key: send Authorization: Bearer <key>")
    if not matched:
        raise RequestRejected(401, "invalid API key")


class _BodyBudget:
    """Bytes of request bodies the router holds at once, across connections.

    The app runs on one event loop, so plain counters are enough. A request takes its bytes as
    they arrive and gives them all back when it is answered (:meth:`hold`).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def hold(self) -> Iterator[list[int]]:
        """A request's share: ``share[0]`` bytes, given back when the block ends."""
        share = [0]
        try:
            yield share
        finally:
            self.held -= share[0]

    def take(self, share: list[int], size: int) -> None:
        if self.held + size > self.limit:
            raise RequestRejected(503, "the router holds too many request bodies right now; retry later")
        self.held += size
        share[0] += size


async def _read_body(request: Request, timeout: float, budget: _BodyBudget, share: list[int]) -> bytes:
    """The whole body within ``timeout`` seconds (else 408), :data:`MAX_PACKAGE_BYTES` (else 413)
    and the router's budget of bodies held at once (else 503)."""

    def refuse(why: str) -> RequestRejected:
        if why == "body_too_large":
            return RequestRejected(413, f"package over the {MAX_PACKAGE_BYTES}-byte limit")
        if why == "body_timeout":
            return RequestRejected(408, f"the request body did not arrive within {timeout:g} s")
        return RequestRejected(400, "the connection closed before the body arrived")

    return await read_bounded(
        request, MAX_PACKAGE_BYTES, timeout, refuse, take=lambda size: budget.take(share, size)
    )


def _parse_package(body: bytes) -> EncryptedPackage:
    try:
        return parse_package(body)
    except ProtocolError as exc:
        raise RequestRejected(400, exc.message) from None
    except RecursionError:
        raise RequestRejected(400, "encrypted package is not valid JSON: nested too deeply") from None


def _allowed_tiers(model_tiers: Mapping[str, tuple[str, ...]], model: str) -> tuple[str, ...]:
    for pattern, tiers in model_tiers.items():
        if fnmatch.fnmatchcase(model, pattern):
            return tiers
    return SECURITY_TIERS
