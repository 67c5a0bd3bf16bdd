"""Running the router: in the foreground (``nomyo-audit serve``) or on a thread.

The listening socket is bound here, before uvicorn starts, so the port is
known (port 0 picks a free one) with no race between choosing a port and
listening on it.

The connection layer defends the process, not just the app:

* at most ``max_connections`` connections are served at once (and never more
  than half the file descriptors the process may still open); one more is
  answered ``503`` and closed at once, so stalled clients cannot exhaust
  descriptors;
* a request's line and headers must arrive within ``header_timeout`` seconds,
  else ``408`` and the connection is closed (the app gives the body its own
  deadline);
* a failing ``accept()`` (EMFILE, ENFILE, ENOBUFS, ENOMEM) is logged once per
  :data:`ACCEPT_ERROR_INTERVAL` seconds with a count, where asyncio would log
  a traceback per attempt (megabytes a minute).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import resource
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .._memory import prevent_core_dumps
from ._app import RouterConfig, create_app

__all__ = [
    "ACCEPT_ERROR_INTERVAL",
    "RouterThread",
    "ServerThread",
    "bind_socket",
    "connection_cap",
    "free_port",
    "run_router",
]

logger = logging.getLogger("nomyo_audit.router")

#: Seconds between two log lines about failing ``accept()`` calls.
ACCEPT_ERROR_INTERVAL = 10.0
#: Descriptors kept free for everything but client connections (listening socket, epoll, TPM, logs).
_RESERVED_FDS = 32
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _canned_response(status: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


_BUSY = _canned_response("503 Service Unavailable", "too many connections; try again shortly")
_HEADERS_TOO_SLOW = _canned_response("408 Request Timeout", "the request headers did not arrive in time")


def connection_cap(max_connections: int) -> int:
    """``max_connections``, lowered to half the descriptors left under ``RLIMIT_NOFILE``.

    Half, because a connection may need a second descriptor (an upstream
    connection for its request); a cap the process cannot honour would turn
    into EMFILE on ``accept()`` instead of a clean 503.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, (soft - _RESERVED_FDS) // 2))


def _raise_fd_limit(wanted: int) -> None:
    """Let the process open ``wanted`` descriptors if the hard limit allows (as Go and nginx do)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a connection cap and a deadline for request headers."""

    max_connections = 1024
    header_timeout = 10.0

    _refused = False
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            self._refused = True
            transport.write(_BUSY)
            transport.close()
            return
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._request_in_progress():
            self._disarm_header_timer()
        else:  # part of a request line or headers, or body bytes after a finished response
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm_header_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """Broken framing mid-request (a bad chunk size): uvicorn answers 400 while the app still
        runs, and the app's own response then fails with a traceback. Tell the app the client is
        gone instead, so it stops quietly; if it has already started a response, just close."""
        if self._request_in_progress():
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            if self.cycle.response_started:
                self.transport.close()
                return
        super().send_400_response(msg)

    def _request_in_progress(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._request_in_progress() or self.transport.is_closing():
            return
        self.transport.write(_HEADERS_TOO_SLOW)
        self.transport.close()


def _guarded_protocol(max_connections: int, header_timeout: float) -> type[H11Protocol]:
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"max_connections": connection_cap(max_connections), "header_timeout": header_timeout},
    )


class _AcceptErrorLog:
    """A loop exception handler: out-of-resource ``accept()`` failures as one line per interval."""

    def __init__(self, interval: float = ACCEPT_ERROR_INTERVAL) -> None:
        self.interval = interval
        self._last = -interval
        self._since_last = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if not (isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES):
            loop.default_exception_handler(context)
            return
        self._since_last += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        logger.error(
            "cannot accept connections: %s (%s); %d failed accept() call(s) since the last report, "
            "next report in %g s at the earliest",
            exc.strerror,
            errno.errorcode.get(exc.errno or 0, "?"),
            self._since_last,
            self.interval,
        )
        self._last = now
        self._since_last = 0


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit TCP_NODELAY on Linux: without it, a keep-alive
        # response written as headers then body waits ~40 ms on delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a process that binds it itself)."""
    with bind_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


def _uvicorn(app: Any, log_level: str, max_connections: int, header_timeout: float) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http=_guarded_protocol(max_connections, header_timeout),
            log_level=log_level,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
    )


async def _serve(server: uvicorn.Server, sock: socket.socket, on_stop: Callable[[], Awaitable[None]]) -> None:
    asyncio.get_running_loop().set_exception_handler(_AcceptErrorLog())
    try:
        await server.serve(sockets=[sock])
    finally:
        await on_stop()


def run_router(
    config: RouterConfig,
    host: str = "127.0.0.1",
    port: int = 12434,
    log_level: str = "info",
    *,
    sock: socket.socket | None = None,
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM), on ``sock`` if given (already bound) else on host:port."""
    prevent_core_dumps()
    _raise_fd_limit(2 * config.max_connections + _RESERVED_FDS)
    cap = connection_cap(config.max_connections)
    if cap < config.max_connections:
        logger.warning(
            "serving at most %d connections, not %d: the open-file limit (ulimit -n) is too low",
            cap,
            config.max_connections,
        )
    sock = sock if sock is not None else bind_socket(host, port)
    server = _uvicorn(create_app(config), log_level, config.max_connections, config.header_timeout)
    try:
        asyncio.run(_serve(server, sock, config.aclose))
    finally:
        sock.close()


async def _nothing() -> None:
    return None


class ServerThread:
    """Any ASGI app served on loopback from a background thread::

    with ServerThread(app) as server:
        print(server.url)
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        on_stop: Callable[[], Awaitable[None]] | None = None,
        *,
        max_connections: int = 1024,
        header_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self._sock = bind_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = _uvicorn(app, "warning", max_connections, header_timeout)
        self._on_stop = on_stop
        self._thread = threading.Thread(target=self._run, name="nomyo-audit-server", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(_serve(self._server, self._sock, self._on_stop or _nothing))

    def start(self) -> ServerThread:
        if self._thread.is_alive():
            return self
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class RouterThread(ServerThread):
    """The reference router on a background thread, for tests, benchmarks and ``demo``."""

    def __init__(self, config: RouterConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        prevent_core_dumps()
        self.config = config
        super().__init__(
            create_app(config),
            host,
            port,
            on_stop=config.aclose,
            max_connections=config.max_connections,
            header_timeout=config.header_timeout,
        )

    def __enter__(self) -> RouterThread:
        self.start()
        return self
