"""The one place where what went wrong on the network becomes an API error.

Like httpx's ``map_httpcore_exceptions``: every HTTP exchange the client makes runs inside
:func:`map_httpx_exceptions`, every deadline inside :func:`within`, and every error status goes
through :func:`api_error`. So a timeout is :class:`APITimeoutError` wherever it happens (fetching
the router key, its attestation, or the completion), a refused connection is
:class:`APIConnectionError` with words a user can act on, and a 503 is
:class:`ServiceUnavailableError`, the same way on every path.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import urllib.parse
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from .._deadline import run_within
from ..errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ForbiddenError,
    InvalidRequestError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
)

__all__ = ["FINAL_CONNECTION_CODES", "api_error", "connection_error", "map_httpx_exceptions", "within"]

T = TypeVar("T")

#: Connection failures that retrying cannot mend: fail at once.
FINAL_CONNECTION_CODES = frozenset({"tls", "name_resolution"})
#: How much of the router's ``detail`` an error message quotes.
_MAX_DETAIL_CHARS = 500
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: ForbiddenError,
    429: RateLimitError,
    500: ServerError,
    503: ServiceUnavailableError,
}


@contextmanager
def map_httpx_exceptions(url: httpx.URL | str, server: str) -> Iterator[None]:
    """Run one HTTP exchange with httpx's exceptions turned into the client's.

    Any :class:`httpx.TimeoutException` (connect, read, write, pool) raises
    :class:`APITimeoutError`; any other :class:`httpx.HTTPError` raises
    :class:`APIConnectionError` (see :func:`connection_error`). The httpx exception is not
    chained: its text may quote the request, and the mapped message says what a user can act on.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise APITimeoutError(f"request to {url} timed out ({type(exc).__name__})") from None
    except httpx.HTTPError as exc:
        raise connection_error(exc, server) from None


async def within(deadline: float, work: Awaitable[T], what: str) -> T:
    """``work``, or :class:`APITimeoutError` once ``deadline`` seconds have passed, however busy it is
    (:func:`nomyo_audit._deadline.run_within`: in the caller's task on 3.11+; a completion passes two).
    """
    try:
        return await run_within(deadline, work)
    except asyncio.TimeoutError:
        raise APITimeoutError(f"{what} did not complete within {deadline:g} s (timeout=)") from None


def connection_error(exc: httpx.HTTPError, server: str) -> APIConnectionError:
    """The failure in words: TLS spoken to a server that does not, a host that does not resolve...

    The code is ``tls`` or ``name_resolution`` (both in :data:`FINAL_CONNECTION_CODES`: not
    retried) when a cause says so, else ``connection``.
    """
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return APIConnectionError(
                f"the TLS certificate of the server at {server} did not verify ({cause.verify_message})",
                code="tls",
            )
        if isinstance(cause, ssl.SSLError):
            return APIConnectionError(
                f"the server at {server} does not speak HTTPS (the TLS handshake failed: "
                f"{cause.reason or type(cause).__name__})",
                code="tls",
            )
        if isinstance(cause, socket.gaierror):
            host = urllib.parse.urlsplit(server).hostname
            return APIConnectionError(
                f"cannot resolve the host {host} of {server} ({cause.strerror})", code="name_resolution"
            )
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return APIConnectionError(f"cannot reach router at {server}: {described}")


def api_error(status: int, body: Any, during: str | None = None) -> APIError:
    """The exception for an error status, quoting the router's ``detail`` (bounded).

    ``body`` is the error reply as parsed JSON (None when it was not JSON); a dict is kept as
    the error's ``error_details``. 400, 401, 403, 429, 500 and 503 have their own classes;
    another 5xx is :class:`ServerError`, anything else :class:`APIError`.
    """
    details: dict[str, Any] | None = body if isinstance(body, dict) else None
    detail = details.get("detail", "") if details is not None else ""
    detail_text = detail if isinstance(detail, str) else json.dumps(detail)[:_MAX_DETAIL_CHARS]
    if len(detail_text) > _MAX_DETAIL_CHARS:
        detail_text = detail_text[:_MAX_DETAIL_CHARS] + "..."
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else APIError)
    prefix = f"HTTP {status}" + (f" {during}" if during else "")
    message = f"{prefix}: {detail_text}" if detail_text else prefix
    return cls(message, status_code=status, error_details=details)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
