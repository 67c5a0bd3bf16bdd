"""The client's pooled connections to one router, and one bounded exchange over them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ._errors import within
from ._http import ACCEPT_ENCODING, Reply, exchange

__all__ = ["MAX_ERROR_BODY_BYTES", "ConnectionPool"]

#: How much of an error reply is read for its ``detail``; the rest is not read.
MAX_ERROR_BODY_BYTES = 64 * 1024


class ConnectionPool:
    """One keep-alive ``httpx.AsyncClient`` per event loop (a pooled client is tied to its loop).

    ``transport`` swaps in any httpx transport (an in-process ASGI app, ``httpx.MockTransport``).
    Redirects are never followed: a router that redirects is answering with an error.
    """

    def __init__(
        self, router_url: str, timeout: httpx.Timeout | float, transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self.router_url = router_url
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    async def request(self, method: str, url: str, *, limit: int, deadline: float, **options: Any) -> Reply:
        """One HTTP exchange, its body bounded by ``limit`` and its time by ``deadline`` seconds.

        Raises :class:`APITimeoutError` past the deadline, :class:`APIConnectionError` when the
        router cannot be reached, :class:`ProtocolError` for a 200 body over ``limit``.
        """
        client = self._client()
        request = client.build_request(method, url, **options)
        reading = exchange(
            client, request, limit=limit, error_limit=MAX_ERROR_BODY_BYTES, server=self.router_url
        )
        return await within(deadline, reading, f"{method} {url}")

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop:
            self._http = httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=32),
                headers={"Accept-Encoding": ACCEPT_ENCODING},
                follow_redirects=False,
            )
            self._http_loop = loop
        return self._http

    async def aclose(self) -> None:
        """Close the pooled connections (a later request opens new ones)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None
