"""Serve a directory of tlog-tiles (what :func:`._tiles_writer.publish_tiles` wrote) read-only over HTTP.

Stdlib ``http.server`` with one thread per connection. Only ``GET`` and ``HEAD`` of
``/checkpoint`` and of canonical tile paths (:func:`._tiles.parse_tile_path`) are answered;
anything else is 404 (405 for other methods). The file opened is named by the parsed tile,
never by the request's own text, so no path can leave the directory. Headers follow
c2sp.org/tlog-tiles: ``text/plain; charset=utf-8`` and a few seconds of caching for the
checkpoint, ``application/octet-stream`` and ``immutable`` for tiles (the bytes at a tile
path never change). A bad request never gets a traceback, on the wire or on stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ._tiles import TilePathError, parse_tile_path

__all__ = ["BoundedThreadingServer", "TileServer"]

#: The longest request path looked at (the longest tile path is about 60 characters).
MAX_PATH = 256
CHECKPOINT_CACHE = "max-age=5"
TILE_CACHE = "public, max-age=31536000, immutable"
#: Connections served at once; each holds a thread for at most the handler's timeout when idle.
MAX_CONNECTIONS = 64


class BoundedThreadingServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``max_connections`` connections at once.

    Each connection holds a thread; one more is closed at once, so a flood of idle
    connections costs no more than that many threads (the tile and the witness servers).
    """

    daemon_threads = True
    #: How its one-line errors on stderr start.
    name = "server"

    def __init__(self, *args: Any, max_connections: int = MAX_CONNECTIONS, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own if a slot is free, else close it."""
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: the connection is closed, its slot given back
            self._slots.release()
            self.shutdown_request(request)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The connection's thread; its slot is freed when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line on stderr for a connection that failed (a client gone mid-reply), never a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"{self.name}: a request failed: {type(error).__name__}", file=sys.stderr)


class TileServer(BoundedThreadingServer):
    """An HTTP server of the tiles in ``directory`` on an already listening socket.

    At most ``max_connections`` connections are served at once (:class:`BoundedThreadingServer`).
    """

    name = "log serve"

    def __init__(
        self, sock: socket.socket, directory: Path, *, max_connections: int = MAX_CONNECTIONS
    ) -> None:
        super().__init__(
            sock.getsockname()[:2], _TileHandler, bind_and_activate=False, max_connections=max_connections
        )
        self.socket.close()
        self.socket = sock
        self.server_address = sock.getsockname()
        self.directory = directory

    def stop_on_signals(self) -> None:
        """SIGTERM and SIGINT end :meth:`serve_forever` cleanly (its caller's ``finally`` runs).

        The handler asks another thread to call :meth:`shutdown` instead of raising in the
        middle of whatever the serving thread is doing. Signals are the main thread's: from
        any other thread this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            return

        def stop(signum: int, frame: object) -> None:
            threading.Thread(target=self.shutdown, daemon=True).start()

        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, stop)



class _TileHandler(BaseHTTPRequestHandler):
    server: TileServer
    server_version = "nomyo-audit-tiles"
    protocol_version = "HTTP/1.1"
    timeout = 30  # a client that stops sending does not hold a thread
    error_message_format = "%(code)d %(message)s\n"  # what http.server says for a malformed request
    error_content_type = "text/plain; charset=utf-8"

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _refuse_method(self) -> None:
        self._reply(405, b"method not allowed\n", extra={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def version_string(self) -> str:
        """The Server header: the server's name, not the Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a static log server does not log every fetch."""

    def _serve(self, *, body: bool) -> None:
        relative = self._resource()
        if relative is None:
            self._reply(404, b"not found\n", body=body)
            return
        checkpoint = relative == "checkpoint"
        try:
            handle = open(self.server.directory / relative, "rb")  # noqa: SIM115
        except OSError:
            self._reply(404, b"not found\n", body=body)
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header(
                "Content-Type", "text/plain; charset=utf-8" if checkpoint else "application/octet-stream"
            )
            self.send_header("Cache-Control", CHECKPOINT_CACHE if checkpoint else TILE_CACHE)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if body:
                shutil.copyfileobj(handle, self.wfile)

    def _resource(self) -> str | None:
        """The file below the directory a request path names, or None (404)."""
        path = self.path.partition("?")[0]
        if len(path) > MAX_PATH or not path.startswith("/"):
            return None
        if path == "/checkpoint":
            return "checkpoint"
        try:
            return parse_tile_path(path[1:]).path
        except TilePathError:
            return None

    def _reply(
        self, status: int, text: bytes, *, body: bool = True, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(text)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(text)
