"""One bounded HTTP exchange: the body is counted as it streams in, before any decompression.

A router is not trusted with the client's memory or time. :func:`exchange`
reads a reply into at most ``limit`` bytes: a declared ``Content-Length``
over the limit is refused before a byte is read, the raw bytes on the wire
are counted as they arrive, and ``gzip``/``deflate`` bodies are inflated
piecewise with a cap on the output, so a 2 MB gzip bomb stops at the limit
instead of inflating to gigabytes. Network failures are mapped to API errors
in :mod:`._errors`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import APIError, ProtocolError
from ..wire import parse_json
from ._errors import api_error, map_httpx_exceptions

__all__ = ["ACCEPT_ENCODING", "Reply", "exchange"]

#: What the client accepts; anything else a server sends is refused (``response_encoding``).
ACCEPT_ENCODING = "gzip, deflate"
_INFLATE_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


@dataclass(frozen=True)
class Reply:
    """A status, headers and a body that fit the limit (an error body may be cut short)."""

    status_code: int
    headers: httpx.Headers
    body: bytes

    def json_or_none(self, what: str) -> Any:
        """The body as strict JSON, or None when it is not (error bodies are advisory)."""
        try:
            return parse_json(self.body, what=what, code="response_json")
        except ProtocolError:
            return None

    def error(self, during: str | None = None) -> APIError:
        """The API error this (non-200) reply stands for, quoting its ``detail``."""
        return api_error(self.status_code, self.json_or_none("error reply"), during)


async def exchange(
    client: httpx.AsyncClient, request: httpx.Request, *, limit: int, error_limit: int, server: str
) -> Reply:
    """Send ``request``; read a 200 body of at most ``limit`` bytes, other bodies cut at ``error_limit``.

    A 200 body over the limit raises :class:`ProtocolError` (``response_too_large``): a reply
    that does not fit cannot be the protocol's. Network failures raise
    :class:`APIConnectionError` (or :class:`APITimeoutError`) naming ``server``, mapped in
    :func:`._errors.map_httpx_exceptions`.
    """
    with map_httpx_exceptions(request.url, server):
        response = await client.send(request, stream=True)
        try:
            if response.status_code == 200:
                body = await _read(response, limit, cut_short=False)
            else:
                body = await _error_body(response, error_limit)
        finally:
            await response.aclose()
    return Reply(response.status_code, response.headers, body)


async def _error_body(response: httpx.Response, limit: int) -> bytes:
    """An error reply's body, cut at ``limit``; undecodable is empty (the status says enough)."""
    try:
        return await _read(response, limit, cut_short=True)
    except ProtocolError:
        return b""


async def _read(response: httpx.Response, limit: int, *, cut_short: bool) -> bytes:
    declared = response.headers.get("content-length", "")
    if not cut_short and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, f"it declares {int(declared)} bytes")
    inflater = _Inflater(response.headers.get("content-encoding", ""), limit)
    received = 0
    if response.is_stream_consumed:
        # Built with its body in hand (what httpx.MockTransport handlers return): httpx read and
        # decoded it when the response was made, so there is no raw stream left to count.
        if inflater.keep(response.content) and not cut_short:
            raise _too_large(limit, "it was refused as it arrived")
        return bytes(inflater.output)
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > limit or inflater.feed(chunk):
            if cut_short:
                break
            raise _too_large(limit, "it was refused as it streamed in")
    else:
        if inflater.finish() and not cut_short:
            raise _too_large(limit, "it was refused as it inflated")
    return bytes(inflater.output)


class _Inflater:
    """Content-decoding into a buffer that never grows past ``limit`` (plus nothing)."""

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in _INFLATE_WBITS):
            raise ProtocolError(
                f"the reply uses Content-Encoding {content_encoding[:64]!r}; "
                f"the client accepts only {ACCEPT_ENCODING}",
                code="response_encoding",
            )
        self._zlib = zlib.decompressobj(_INFLATE_WBITS[codings[0]]) if codings else None
        self._limit = limit
        self.output = bytearray()

    def feed(self, chunk: bytes) -> bool:
        """Take one raw chunk; True when the decoded body passed the limit (the rest is dropped)."""
        if self._zlib is None:
            return self.keep(chunk)
        pending = chunk
        while pending:
            # Ask for one byte more than there is room for: getting it means over the limit.
            room = self._limit - len(self.output)
            try:
                piece = self._zlib.decompress(pending, room + 1)
            except zlib.error:
                raise ProtocolError(
                    "the reply's compressed body is corrupt", code="response_encoding"
                ) from None
            if self.keep(piece):
                return True
            pending = self._zlib.unconsumed_tail
        return False

    def finish(self) -> bool:
        if self._zlib is None:
            return False
        try:
            return self.keep(self._zlib.flush())
        except zlib.error:
            raise ProtocolError("the reply's compressed body is corrupt", code="response_encoding") from None

    def keep(self, data: bytes) -> bool:
        """Add decoded bytes up to the limit; True when some did not fit (they are dropped)."""
        room = self._limit - len(self.output)
        self.output += data[:room]
        return len(data) > room


def _too_large(limit: int, how: str) -> ProtocolError:
    return ProtocolError(f"the reply is over the {limit}-byte limit; {how}", code="response_too_large")
