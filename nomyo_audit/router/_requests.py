"""What the router's endpoint modules (:mod:`._app`, :mod:`._protocol2`, :mod:`._anchoring`) read from a
request the same way: its body, bounded in size and time; its bearer key; a ``?nonce=`` query."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request

from .._deadline import run_within

__all__ = ["bearer_matches", "query_nonce", "read_bounded"]


async def read_bounded(
    request: Request,
    limit: int,
    timeout: float,
    refuse: Callable[[str], Exception],
    take: Callable[[int], None] | None = None,
) -> bytes:
    """The whole body, at most ``limit`` bytes within ``timeout`` seconds.

    Raises ``refuse(why)`` for ``why`` one of ``"body_too_large"`` (declared or streamed over
    ``limit``), ``"body_timeout"`` and ``"body_incomplete"`` (the connection closed first).
    ``take`` is called with each chunk's size before it is kept (the router's budget of bodies).
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise refuse("body_too_large")

    async def read() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise refuse("body_too_large")
            if take is not None:
                take(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await run_within(timeout, read())
    except asyncio.TimeoutError:
        raise refuse("body_timeout") from None
    except ClientDisconnect:  # nobody to answer; not worth a log line either
        raise refuse("body_incomplete") from None


def bearer_matches(request: Request, keys: tuple[bytes, ...]) -> bool | None:
    """None when the request carries no ``Authorization: Bearer <key>``, else whether its key is one
    of ``keys`` (compared against every key, so timing does not reveal which one is close)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    presented = token.strip().encode()
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented, key)
    return matched


def query_nonce(request: Request) -> bytes | None:
    """The ``?nonce=`` query as bytes when it is 16-64 bytes of hex, else None."""
    try:
        nonce = bytes.fromhex(request.query_params.get("nonce", ""))
    except ValueError:
        return None
    return nonce if 16 <= len(nonce) <= 64 else None
