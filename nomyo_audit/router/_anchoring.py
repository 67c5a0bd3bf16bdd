"""The router's anchoring extension (docs/protocol.md, "Protocol extensions: anchoring").

* ``GET /pki/endorsement``: the EK public area, the EK certificate and intermediates from the TPM's
  NV, and the AIK with its parent's qualified name: what a verifier or an enrollment CA needs to
  make a credential to this TPM's EK for this AIK. 404 ``no_endorsement`` without an EK.
* ``POST /pki/activation``: TPM2_ActivateCredential of such a credential; the answer is the secret,
  which only the TPM holding both the certified EK and this AIK can recover. One TPM operation per
  request, so the endpoint is bounded: one activation at a time, and a token bucket
  (:class:`RateLimit`) over all callers; more is 429 ``rate_limited`` with ``Retry-After``.
* ``POST /pki/aik_certificate``: an enrollment CA (``nomyo-audit ca enroll``) hands over the AK
  certificate chain, leaf first. Only with the router's admin key (``RouterConfig.admin_keys``;
  none configured: 403 ``enrollment_disabled``), and only for a leaf that certifies this router's
  current AIK: the router never attaches a chain for another key. From then on every
  ``tpm_attestation`` carries it as ``aik_cert_chain_b64``. An AIK lives as long as the attester,
  so a restarted router (a new AIK) serves no chain until it is enrolled again.

Every bad input is a 4xx ``{"error": {"code", "message"}}`` with a stable code; a TPM that fails
is 503; nothing here answers 500 or echoes a secret.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography import x509
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._anchoring_wire import (
    ANCHORING_VERSION,
    MAX_MESSAGE_BYTES,
    b64,
    certifies,
    error_body,
    parse_activation_request,
    parse_chain_upload,
)
from ..errors import ConfigurationError, CredentialError, EvidenceError, ProtocolError
from ..tpm._public import parse_public
from ..wire import ACTIVATION_PATH, AIK_CERTIFICATE_PATH, ENDORSEMENT_PATH
from ._requests import bearer_matches, read_bounded

if TYPE_CHECKING:
    from ._app import RouterConfig

__all__ = ["AnchoringRejected", "RateLimit", "anchoring_routes"]

logger = logging.getLogger("nomyo_audit.router")


class AnchoringRejected(Exception):
    """An anchoring request answered with ``status`` and a stable ``code``; ``message`` is safe to send."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class RateLimit:
    """A token bucket: ``rate`` operations per second on average, ``burst`` at once. Pure (the caller
    passes the time); the router runs on one event loop, so no lock is needed."""

    def __init__(self, rate: float, burst: int) -> None:
        if not (math.isfinite(rate) and rate > 0 and burst >= 1):
            raise ConfigurationError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate, self.burst = rate, burst
        self._tokens = float(burst)
        self._stamp: float | None = None

    def take(self, now: float) -> float:
        """0 when an operation may run now (and counts it), else the seconds until one may."""
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate


def anchoring_routes(config: RouterConfig) -> list[Route]:
    """The three anchoring routes for ``config``'s attester (each answers 404 ``no_endorsement`` when
    the attester has no EK)."""
    attester = config.attester
    admin_keys = tuple(k.encode() for k in getattr(config, "admin_keys", ()))
    limit = RateLimit(config.activation_rate, config.activation_burst)
    busy = asyncio.Lock()
    has_ek: list[bool] = []

    def method(name: str) -> Callable[..., Any]:
        found = getattr(attester, name, None)
        if found is None:
            raise _no_endorsement()
        return found  # type: ignore[no-any-return]

    async def read_endorsement() -> Any:
        try:
            return await run_in_threadpool(method("endorsement"))
        except LookupError:
            raise _no_endorsement() from None
        except ConfigurationError as exc:
            logger.error("endorsement failed: %s", exc.code)
            raise AnchoringRejected(
                503, "tpm_unavailable", "the TPM could not produce its endorsement"
            ) from None

    async def require_endorsement() -> None:
        """404 for an attester without an EK (a software one has the methods, but no EK behind them)."""
        if not has_ek:
            await read_endorsement()  # a TPM source keeps its EK: later calls cost nothing
            has_ek.append(True)

    async def endorsement(request: Request) -> Response:
        return JSONResponse(await read_endorsement())

    async def activation(request: Request) -> Response:
        activate = method("activate_credential")
        aik_public: bytes = method("aik_public")()
        await require_endorsement()
        challenge = _parse(parse_activation_request, await _read(request, config.body_timeout))
        if not hmac.compare_digest(challenge.aik_name, parse_public(aik_public).name):
            raise AnchoringRejected(
                409, "aik_mismatch", "the credential is for another AIK than this router's current one"
            )
        # Only what reaches the TPM counts against the limit: one at a time, and a bucket over all callers.
        wait = 1.0 if busy.locked() else limit.take(time.monotonic())
        if wait:
            retry = str(max(1, math.ceil(wait)))
            raise AnchoringRejected(
                429, "rate_limited", "too many credential activations; retry later", {"Retry-After": retry}
            )
        async with busy:
            try:
                secret: bytes = await run_in_threadpool(
                    activate, challenge.id_object, challenge.encrypted_secret
                )
            except LookupError:
                raise _no_endorsement() from None
            except CredentialError as exc:
                status = 422 if exc.code == "activation_failed" else 400
                raise AnchoringRejected(status, exc.code, exc.message) from None
            except EvidenceError as exc:  # the contract's EvidenceError(code="activation_failed")
                raise AnchoringRejected(422, exc.code, exc.message) from None
            except ConfigurationError as exc:
                logger.error("activation failed: %s", exc.code)
                raise AnchoringRejected(
                    503, "tpm_unavailable", "the TPM could not run the activation"
                ) from None
        return JSONResponse({"version": ANCHORING_VERSION, "secret_b64": b64(secret)})

    async def aik_certificate(request: Request) -> Response:
        install = method("set_aik_certificate_chain")
        aik_public: bytes = method("aik_public")()
        _check_admin(request, admin_keys)  # before anything reaches the TPM
        await require_endorsement()
        chain = _parse(parse_chain_upload, await _read(request, config.body_timeout))
        try:
            for der in chain:
                x509.load_der_x509_certificate(der)
        except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError
            raise AnchoringRejected(400, "cert_malformed", "a certificate is not DER X.509") from None
        if not certifies(chain[0], aik_public):
            raise AnchoringRejected(
                409, "cert_key_mismatch", "the AK certificate does not certify this router's current AIK"
            )
        install(list(chain))
        logger.info("AK certificate chain installed (%d certificates)", len(chain))
        name = parse_public(aik_public).name
        return JSONResponse(
            {"version": ANCHORING_VERSION, "aik_name_b64": b64(name), "installed": len(chain)}
        )

    return [
        Route(ENDORSEMENT_PATH, _answering(endorsement), methods=["GET"]),
        Route(ACTIVATION_PATH, _answering(activation), methods=["POST"]),
        Route(AIK_CERTIFICATE_PATH, _answering(aik_certificate), methods=["POST"]),
    ]


def _answering(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
    """The handler, with every refusal as its JSON error and anything unexpected as a 503 naming only
    the exception type: never a 500, never a secret."""

    async def endpoint(request: Request) -> Response:
        try:
            response: Response = await handler(request)
            return response
        except AnchoringRejected as reject:
            return JSONResponse(
                error_body(reject.code, reject.message), reject.status, headers=reject.headers
            )
        except Exception as exc:
            logger.error("%s failed: %s", request.url.path, type(exc).__name__)
            message = f"the router could not answer ({type(exc).__name__})"
            return JSONResponse(error_body("internal", message), 503)

    return endpoint


def _parse(parser: Callable[[bytes], Any], body: bytes) -> Any:
    try:
        return parser(body)
    except ProtocolError as exc:
        status = 413 if exc.code == "body_too_large" else 400
        raise AnchoringRejected(status, exc.code, exc.message) from None


def _check_admin(request: Request, admin_keys: tuple[bytes, ...]) -> None:
    if not admin_keys:
        raise AnchoringRejected(
            403, "enrollment_disabled", "this router accepts no AK certificate: it has no admin key"
        )
    matched = bearer_matches(request, admin_keys)
    if matched is None:
        raise AnchoringRejected(
            401, "unauthorized", "send the router's admin key: Authorization: Bearer <key>"
        )
    if not matched:
        raise AnchoringRejected(401, "unauthorized", "invalid admin key")


async def _read(request: Request, timeout: float) -> bytes:
    """The body, at most :data:`MAX_MESSAGE_BYTES` (413 ``body_too_large``) within ``timeout`` (408)."""

    def refuse(why: str) -> AnchoringRejected:
        if why == "body_too_large":
            return _too_large()
        if why == "body_timeout":
            return AnchoringRejected(
                408, why, f"the body did not arrive within {timeout:g} s", {"Connection": "close"}
            )
        return AnchoringRejected(400, why, "the connection closed before the body arrived")

    return await read_bounded(request, MAX_MESSAGE_BYTES, timeout, refuse)


def _no_endorsement() -> AnchoringRejected:
    return AnchoringRejected(404, "no_endorsement", "this router's attester has no endorsement key")


def _too_large() -> AnchoringRejected:
    return AnchoringRejected(
        413, "body_too_large", f"the body is over the {MAX_MESSAGE_BYTES}-byte limit", {"Connection": "close"}
    )
