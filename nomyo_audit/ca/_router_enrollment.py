"""``nomyo-audit ca enroll``: the CA enrolls a running router over its anchoring endpoints (I/O).

GET ``/pki/endorsement``, :class:`~nomyo_audit.ca.Enrollment` (validate the EK chain, make the
credential), POST ``/pki/activation``, compare the secret, issue, and, with the router's admin
key, POST ``/pki/aik_certificate`` so that every later quote carries the chain. Every refusal,
the CA's or the router's, is an :class:`~nomyo_audit.errors.EnrollmentError` (or a
``CertificateError``) whose ``code`` is the refusing side's; nothing is issued then.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, NamedTuple

import httpx

from .._anchoring_wire import (
    ANCHORING_VERSION,
    MAX_MESSAGE_BYTES,
    b64,
    parse_activation_response,
    parse_endorsement,
)
from ..errors import APIConnectionError, EnrollmentError, ProtocolError
from ..tpm import TrustStore
from ..wire import ACTIVATION_PATH, AIK_CERTIFICATE_PATH, ENDORSEMENT_PATH, parse_json
from ._authority import CertificateAuthority
from ._enrollment import Enrollment, SpentSecrets

__all__ = ["EnrollmentResult", "enroll_router"]


class EnrollmentResult(NamedTuple):
    """An enrollment's outcome: the AK certificate chain (DER, leaf first), what it states, and
    whether the router accepted it (``installed``)."""

    chain: tuple[bytes, ...]
    facts: dict[str, Any]
    installed: bool


# NamedTuple's generated __new__ lives outside this module, so its postponed annotation resolves
# nowhere (the API reference): give it the type itself.
EnrollmentResult.__new__.__annotations__["facts"] = dict[str, Any]


def enroll_router(
    url: str,
    authority: CertificateAuthority,
    store: TrustStore,
    *,
    admin_key: str | None = None,
    days: int = 30,
    client: httpx.Client | None = None,
    spent: SpentSecrets | None = None,
) -> EnrollmentResult:
    """Enroll the router at ``url``: prove its AIK lives in a TPM whose EK certificate ``store``
    trusts, issue the AK certificate, and hand it over when ``admin_key`` is given."""
    own = client is None
    http = client or httpx.Client(timeout=30.0)
    base = url.rstrip("/")
    try:
        endorsement = _decode(parse_endorsement, _exchange(http, "GET", base + ENDORSEMENT_PATH))
        enrollment = Enrollment.start(endorsement, store, at=datetime.now(timezone.utc))
        answer = _exchange(http, "POST", base + ACTIVATION_PATH, json=enrollment.activation_request())
        proof = enrollment.complete(_decode(parse_activation_response, answer), spent or SpentSecrets())
        chain = authority.issue(proof, now=datetime.now(timezone.utc), days=days)
        if admin_key is not None:
            body = {"version": ANCHORING_VERSION, "aik_cert_chain_b64": [b64(der) for der in chain]}
            headers = {"Authorization": f"Bearer {admin_key}"}
            _exchange(http, "POST", base + AIK_CERTIFICATE_PATH, json=body, headers=headers)
        facts = {**enrollment.facts(), "ca_sha256": authority.sha256}
        return EnrollmentResult(chain, facts, admin_key is not None)
    finally:
        if own:
            http.close()


def _exchange(http: httpx.Client, method: str, url: str, **kwargs: Any) -> bytes:
    """The body of a 2xx answer; a router's error answer as EnrollmentError with its code."""
    try:
        with http.stream(method, url, **kwargs) as response:
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_MESSAGE_BYTES:
                    raise EnrollmentError(
                        f"{url} answered more than {MAX_MESSAGE_BYTES} bytes", code="router_malformed"
                    )
    except httpx.HTTPError as exc:
        raise APIConnectionError(f"cannot reach {url}: {type(exc).__name__}") from None
    if response.is_success:
        return body
    code, message = _error_of(body)
    raise EnrollmentError(f"the router refused ({response.status_code} {code}): {message}", code=code)


def _error_of(body: bytes) -> tuple[str, str]:
    try:
        doc = parse_json(body, what="error", code="router_malformed")
        error = doc["error"]
        code, message = str(error["code"])[:64], str(error["message"])[:300]
    except (ProtocolError, KeyError, TypeError):
        return "router_error", "the router's error body is not an anchoring error"
    return (code if code.replace("_", "").isalnum() else "router_error"), message


def _decode(parser: Any, body: bytes) -> Any:
    try:
        return parser(body)
    except ProtocolError as exc:
        raise EnrollmentError(
            f"the router's answer is malformed: {exc.message}", code="router_malformed"
        ) from None
