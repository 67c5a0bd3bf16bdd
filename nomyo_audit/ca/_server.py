"""``nomyo-audit ca serve``: an enrollment CA routers enroll themselves with (``serve --enroll URL``).

Two requests, each a small strict JSON body (docs/anchoring.md):

* ``POST /ca/v1/enrollments``: the router's endorsement, exactly as ``GET /pki/endorsement`` serves
  it. The CA validates it (:meth:`~nomyo_audit.ca.Enrollment.start`) and answers the challenge:
  ``{"version": 1, "enrollment_id", "expires_in", "aik_name_b64", "id_object_b64",
  "encrypted_secret_b64"}``.
* ``POST /ca/v1/enrollments/{enrollment_id}``: ``{"version": 1, "secret_b64"}``, the activated
  secret. Right: ``{"version": 1, "aik_cert_chain_b64": [...]}``; anything else is refused with its
  code and the challenge is spent (one answer each).

Bounded: bodies of :data:`~nomyo_audit.ca._messages.MAX_MESSAGE_BYTES`, at most ``max_pending``
challenges alive (each for ``ttl`` seconds; more is 503 ``ca_busy``), and a token bucket on new
challenges (429 ``rate_limited``). Errors are ``{"error": {"code", "message"}}`` 4xx; never a 500.
An AK certificate says only where the AIK lives (a genuine TPM of the named manufacturer), not
who runs it: any router whose TPM the trust store accepts can enroll.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from datetime import datetime, timezone

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._anchoring_wire import ANCHORING_VERSION, b64, parse_activation_response, parse_endorsement
from ..errors import CertificateError, CredentialError, EnrollmentError
from ..router._anchoring import AnchoringRejected, RateLimit, _answering, _parse, _read
from ..tpm import TrustStore
from ._authority import CertificateAuthority
from ._enrollment import Enrollment, SpentSecrets

__all__ = ["ENROLLMENTS_PATH", "create_ca_app"]

#: Where a router posts its endorsement to ``ca serve``; its answer goes to ``{this}/{enrollment_id}``.
ENROLLMENTS_PATH = "/ca/v1/enrollments"
_ID = re.compile(r"[0-9a-f]{32}")


def create_ca_app(
    authority: CertificateAuthority,
    store: TrustStore,
    *,
    days: int = 30,
    ttl: float = 120.0,
    max_pending: int = 1024,
    rate: float = 5.0,
    burst: int = 20,
    body_timeout: float = 30.0,
) -> Starlette:
    """The CA's ASGI app (starlette)."""
    pending: OrderedDict[str, tuple[Enrollment, float]] = OrderedDict()
    spent = SpentSecrets()
    limit = RateLimit(rate, burst)

    def expire(now: float) -> None:
        while pending and next(iter(pending.values()))[1] <= now:
            pending.popitem(last=False)

    async def start(request: Request) -> Response:
        endorsement = _parse(parse_endorsement, await _read(request, body_timeout))
        now = time.monotonic()
        expire(now)
        if len(pending) >= max_pending:
            raise AnchoringRejected(503, "ca_busy", "too many enrollments in progress; retry later")
        wait = limit.take(now)
        if wait:
            raise AnchoringRejected(
                429, "rate_limited", "too many enrollments; retry later", {"Retry-After": "1"}
            )
        try:
            enrollment = Enrollment.start(endorsement, store, at=datetime.now(timezone.utc))
        except (EnrollmentError, CertificateError, CredentialError) as exc:
            raise AnchoringRejected(422, exc.code, exc.message) from None
        enrollment_id = secrets.token_hex(16)
        pending[enrollment_id] = (enrollment, now + ttl)
        body = {"version": ANCHORING_VERSION, "enrollment_id": enrollment_id, "expires_in": int(ttl)}
        body.update({k: v for k, v in enrollment.activation_request().items() if k != "version"})
        return JSONResponse(body, status_code=201)

    async def answer(request: Request) -> Response:
        enrollment_id = request.path_params["enrollment_id"]
        secret = _parse(parse_activation_response, await _read(request, body_timeout))
        expire(time.monotonic())
        entry = pending.get(enrollment_id) if _ID.fullmatch(enrollment_id) else None
        if entry is None:
            raise AnchoringRejected(
                404, "unknown_enrollment", "no such enrollment in progress (or it expired)"
            )
        try:
            proof = entry[0].complete(secret, spent)
        except EnrollmentError as exc:
            raise AnchoringRejected(422, exc.code, exc.message) from None
        chain = await run_in_threadpool(authority.issue, proof, now=datetime.now(timezone.utc), days=days)
        return JSONResponse({"version": ANCHORING_VERSION, "aik_cert_chain_b64": [b64(der) for der in chain]})

    return Starlette(
        routes=[
            Route(ENROLLMENTS_PATH, _answering(start), methods=["POST"]),
            Route(ENROLLMENTS_PATH + "/{enrollment_id}", _answering(answer), methods=["POST"]),
        ]
    )
