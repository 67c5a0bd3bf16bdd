"""``nomyo-audit log serve``: the tiles over HTTP, in a real process on a loopback port.

Same bytes as ``log tiles``; read by the client written from the spec (tests/tile_client.py);
headers as c2sp.org/tlog-tiles says; bad paths and bad requests are 404/405/400, never a
traceback and never a crash; a newer checkpoint is picked up; SIGTERM leaves no directory behind.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_log_integrity import make_log, sql
from test_tiles_cli import files_under, grow
from tile_client import SpecTileClient, verify_path

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._tiles_server import MAX_CONNECTIONS
from nomyo_audit.cli import main


class Served:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc, self.url = proc, url
        self.host, self.port = url.split("//")[1].rstrip("/").split(":")

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=10)
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        with socket.create_connection((self.host, int(self.port)), timeout=10) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def start(db, tmp_path, *extra: str) -> Served:
    env = {**os.environ, "TMPDIR": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nomyo_audit.cli._main", "log", "serve", "--log", str(db), "--port=0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
    reader.start()
    reader.join(60)
    assert line and line[0].startswith("serving "), (line, proc.poll())
    return Served(proc, line[0].split(" at ")[1].strip())


def stop(served: Served) -> str:
    served.proc.terminate()
    _, err = served.proc.communicate(timeout=30)
    return err


@pytest.fixture(scope="module")
def key():
    return Ed25519PrivateKey.generate()


def serving(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=600, every=1000)
    server = start(db, tmp_path, "--refresh", "0.2")
    yield db, server
    if server.proc.poll() is None:
        stop(server)


@pytest.fixture
def served(tmp_path, key):
    """A server of its own, for a test that changes the log or stops the server."""
    yield from serving(tmp_path, key)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, key):
    """One server for the tests that only read."""
    yield from serving(tmp_path_factory.mktemp("shared"), key)


def test_log_serve_gives_the_same_bytes_as_log_tiles_with_the_specs_headers(shared, tmp_path):
    db, server = shared
    out = tmp_path / "www"
    assert main(["log", "tiles", "--log", str(db), "-o", str(out)]) == 0
    assert server.url.startswith("http://127.0.0.1:")
    for path in files_under(out):
        status, headers, body = server.get("/" + path)
        assert status == 200 and body == (out / path).read_bytes(), path
        assert headers["Content-Length"] == str(len(body))
        if path == "checkpoint":
            assert headers["Content-Type"] == "text/plain; charset=utf-8"
            assert headers["Cache-Control"] == "max-age=5"
        else:
            assert headers["Content-Type"] == "application/octet-stream"
            assert "immutable" in headers["Cache-Control"]
    status, headers, body = server.get("/tile/0/000", "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", "8192")


def test_a_client_from_the_spec_verifies_the_served_log_over_http(shared, key):
    db, server = shared
    client = SpecTileClient(lambda path: urllib.request.urlopen(server.url + path, timeout=10).read())
    client.open_checkpoint(key.public_key())
    assert client.size == 600 and client.tree_root() == client.root
    with AuditLog.open(db) as log:
        records = [r.data for r in log.store.records()]
    entries = [e for n in range(3) for e in client.entries(n)]
    assert entries == records
    for index in (0, 300, 599):
        assert verify_path(records[index], index, 600, client.inclusion_proof(index), client.root)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/index.html",
        "/checkpoint/",
        "/tile/0/x000/001",
        "/tile/0/000.p/0",
        "/tile/00/000",
        "/tile/entries/999",  # canonical, not part of this log
        "/tile/5/000",
        "/../../../../etc/passwd",
        "/tile/0/%2e%2e/%2e%2e/etc/passwd",
        "/tile/0/../../checkpoint",
        "/" + "x" * 5000,
        "/tile/0/%D9%A0%D9%A0%D9%A0",  # Arabic-Indic digits
    ],
)
def test_anything_but_a_resource_is_404(shared, path):
    _, server = shared
    status, _, body = server.get(path)
    assert (status, body) == (404, b"not found\n")


def test_other_methods_are_405_and_malformed_requests_400_and_the_server_goes_on(served):
    _, server = served
    status, headers, _ = server.get("/checkpoint", "POST")
    assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert server.get("/checkpoint", "DELETE")[0] == 405
    assert server.raw(b"GARBAGE\r\n\r\n") == b"400 Bad request syntax ('GARBAGE')\n"  # HTTP/0.9 style
    assert server.raw(b"GET /checkpoint HTTP/9.9.9\r\n\r\n").startswith(b"400 Bad request version")
    assert b" 400 " in server.raw(b"GET /\xd9\xa0\x00\xff HTTP/1.1\r\n\r\n")
    assert server.raw("GET /tile/0/\u0660\u0660 HTTP/1.1\r\n\r\n".encode()).startswith(b"HTTP/1.1 400 ")
    with contextlib.suppress(ConnectionError):  # 431, then a reset: it closes with headers unread
        server.raw(b"GET /checkpoint HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n")
    server.raw(b"")  # connect and leave
    assert server.get("/checkpoint")[0] == 200
    err = stop(server)
    assert "Traceback" not in err


def test_idle_connections_beyond_the_limit_are_closed_and_the_server_recovers(served):
    _, server = served
    address = (server.host, int(server.port))
    idle = [socket.create_connection(address, timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        deadline = time.monotonic() + 15
        while True:  # once all idle ones are accepted (each holding a thread), one more is closed at once
            with socket.create_connection(address, timeout=10) as extra:
                extra.sendall(b"GET /checkpoint HTTP/1.1\r\n\r\n")
                if extra.recv(100) == b"":
                    break
            assert time.monotonic() < deadline, "a connection beyond the limit was served"
            time.sleep(0.2)
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 10
    while server.get("/checkpoint")[0] != 200:  # slots freed as the idle connections end
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_a_newer_checkpoint_is_served_after_a_refresh_and_sigterm_cleans_up(served, key, tmp_path):
    db, server = served
    grow(db, key, 600, 100)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.get("/checkpoint")[2].split(b"\n")[1] == b"700":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the newer checkpoint was not served")
    assert server.get("/tile/0/002.p/188")[0] == 200
    err = stop(server)
    assert "now serving size 700" in err and "Traceback" not in err
    assert server.proc.returncode == 0 and err.endswith("stopped\n")
    assert os.listdir(tmp_path / "scratch") == []  # the private directory is removed


def test_a_log_that_stops_verifying_is_not_published_and_the_last_verified_state_stays(served, key):
    db, server = served
    before = server.get("/checkpoint")[2]
    grow(db, key, 600, 10)
    altered = "CAST(REPLACE(CAST(data AS TEXT), 'req-1', 'req-Z') AS BLOB)"
    sql(db, f"UPDATE records SET data = {altered} WHERE seq = 1")
    time.sleep(1.5)
    assert server.get("/checkpoint")[2] == before
    err = stop(server)
    assert "error[integrity]" in err and "still serving the last verified state" in err


def test_serving_a_log_that_does_not_verify_is_exit_3_before_listening(tmp_path, key):
    db = make_log(tmp_path / "audit.db", key, count=5)
    sql(db, "DELETE FROM records WHERE seq = 2")
    done = subprocess.run(
        [sys.executable, "-m", "nomyo_audit.cli._main", "log", "serve", "--log", str(db), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3 and done.stdout == ""
    assert "no tiles were written" in done.stderr and "Traceback" not in done.stderr
