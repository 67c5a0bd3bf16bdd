"""``nomyo-audit witness serve``: the witness over HTTP (stdlib ``http.server``, no extra needed).

``POST /add-checkpoint`` (c2sp.org/tlog-witness) and ``GET /<hex SHA-256 of origin>/checkpoint``
(the monitor retrieval: the latest cosigned checkpoint with the log's and the witness's
signatures). Bodies need a Content-Length and are at most :data:`._witness.MAX_REQUEST`
bytes; a client gets a few seconds per read; any unexpected failure is a plain 500 line,
never a traceback, and the server keeps serving.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..audit._tiles_server import BoundedThreadingServer
from ..errors import NomyoAuditError
from ._witness import MAX_REQUEST, Reply, Witness

__all__ = ["WitnessServer"]

_TIMEOUT = 10.0


class _Handler(BaseHTTPRequestHandler):
    server: WitnessServer
    timeout = _TIMEOUT
    protocol_version = "HTTP/1.1"  # keep-alive, as the specification recommends
    server_version = "nomyo-audit-witness"
    sys_version = ""

    def do_POST(self) -> None:
        try:
            if self.path.split("?", 1)[0] != "/add-checkpoint":
                self._reply(Reply(404, "not found\n"))
                return
            length = self._content_length()
            if length is None:
                return
            body = self._body(length)
            if body is None:
                return
            self._reply(self.server.witness.add_checkpoint(body))
        except NomyoAuditError as exc:  # the state could not be read or saved: nothing was cosigned
            self.server.complain(exc.message)
            self._reply(Reply(500, "the witness cannot save its state; nothing was cosigned\n"))
        except (OSError, TimeoutError):
            self.close_connection = True
        except Exception:
            self._reply(Reply(500, "internal error\n"))  # a bug costs one request, never the witness

    def do_GET(self) -> None:
        try:
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            if len(parts) == 2 and parts[1] == "checkpoint":
                for origin in self.server.witness.logs:
                    if hashlib.sha256(origin.encode()).hexdigest() == parts[0]:
                        head = self.server.witness.state.get(origin)
                        if head is not None:
                            self._reply(Reply(200, head.note))
                            return
            self._reply(Reply(404, "not found\n"))
        except (OSError, TimeoutError):
            self.close_connection = True
        except Exception:
            self._reply(Reply(500, "internal error\n"))

    def _body(self, length: int) -> bytes | None:
        """The request body, if it arrives whole within the timeout (a trickle is 408, then closed).

        Each read may wait the socket timeout, so the whole body is bounded too: otherwise a
        client sending a byte every few seconds would hold a connection slot for hours.
        """
        deadline = time.monotonic() + _TIMEOUT
        body = bytearray()
        while len(body) < length:
            if time.monotonic() > deadline:
                self.close_connection = True
                self._reply(Reply(408, f"the request body did not arrive within {_TIMEOUT:g} s\n"))
                return None
            chunk = self.rfile.read1(length - len(body))
            if not chunk:
                self.close_connection = True
                return None
            body += chunk
        return bytes(body)

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None or not raw.isdigit():
            self.close_connection = True
            self._reply(Reply(411, "a Content-Length is required\n"))
            return None
        length = int(raw)
        if length > MAX_REQUEST:
            self.close_connection = True
            self._reply(Reply(413, f"the request is larger than {MAX_REQUEST} bytes\n"))
            return None
        return length

    def _reply(self, reply: Reply) -> None:
        data = reply.body.encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.quiet:
            return
        sys.stderr.write(f"witness: {self.address_string()} {format % args}\n")


class WitnessServer(BoundedThreadingServer):
    """A witness listening on ``(host, port)``; port 0 picks a free one (see :attr:`url`).

    At most 64 connections are served at once (a thread each); one more is closed at once.
    A connection that fails (a client gone) is one line on stderr, never a traceback.
    """

    name = "witness"

    def __init__(self, witness: Witness, host: str = "127.0.0.1", port: int = 0, *, quiet: bool = False):
        self.witness = witness
        self.quiet = quiet
        super().__init__((host, port), _Handler)

    def complain(self, message: str) -> None:
        """A problem the operator must see (even when quiet): the state cannot be saved."""
        sys.stderr.write(f"witness: {message}\n")

    @property
    def url(self) -> str:
        """The submission prefix clients use: ``http://host:port``."""
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}"

    def start(self) -> threading.Thread:
        """Serve in a daemon thread (tests, the demo); :meth:`shutdown` stops it."""
        thread = threading.Thread(target=self.serve_forever, name="witness", daemon=True)
        thread.start()
        return thread
