"""Running the router: in the foreground (``nomyo-audit serve``) or on a thread.

The listening socket is bound here, before uvicorn starts, so the port is
known (port 0 picks a free one) with no race between choosing a port and
listening on it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import uvicorn

from ..memory import prevent_core_dumps
from .app import RouterConfig, create_app

__all__ = ["RouterThread", "ServerThread", "bind_socket", "free_port", "run_router"]


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY on Linux: without it, a keep-alive
    # response written as headers then body waits ~40 ms on delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a process that binds it itself)."""
    with bind_socket(host, 0) as sock:
        return int(sock.getsockname()[1])


def _uvicorn(app: Any, log_level: str) -> uvicorn.Server:
    return uvicorn.Server(
        uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", server_header=False)
    )


def run_router(
    config: RouterConfig, host: str = "127.0.0.1", port: int = 12434, log_level: str = "info"
) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    prevent_core_dumps()
    sock = bind_socket(host, port)
    server = _uvicorn(create_app(config), log_level)

    async def main() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            await config.aclose()

    try:
        asyncio.run(main())
    finally:
        sock.close()


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
    ) -> None:
        self.app = app
        self._sock = bind_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self._server = _uvicorn(app, "warning")
        self._on_stop = on_stop
        self._thread = threading.Thread(target=self._run, name="nomyo-audit-server", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        async def main() -> None:
            try:
                await self._server.serve(sockets=[self._sock])
            finally:
                if self._on_stop is not None:
                    await self._on_stop()

        asyncio.run(main())

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
        super().__init__(create_app(config), host, port, on_stop=config.aclose)

    def __enter__(self) -> RouterThread:
        self.start()
        return self
