"""Adversarial review R1 of the witness client (log cosign): misbehaving witnesses cost only their
cosignature, in bounded time and memory, and overlapping rounds neither cry rollback nor lose the
newer cosigned checkpoint."""

from __future__ import annotations

import gzip
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_witness_cosign import Setup

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._cosignature import WitnessKey
from nomyo_audit.audit._note import parse_checkpoint
from nomyo_audit.audit._witness_client import COSIGNED_META, cosign_latest


class _Misbehaving(BaseHTTPRequestHandler):
    """A witness that answers 200 and then trickles (``slow``) or sends a gzip bomb (``bomb``)."""

    mode = "slow"
    bomb = b""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        if self.mode == "bomb":
            data = self.bomb
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("Content-Length", "65000")
        self.end_headers()
        try:
            for _ in range(65000):
                self.wfile.write(b"a")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("mode", ["slow", "bomb"])
def test_a_misbehaving_witness_costs_only_its_cosignature_in_bounded_time_and_memory(tmp_path, mode):
    setup = Setup(tmp_path)
    setup.append(3)
    assert setup.checkpoint() == 0
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9) if mode == "bomb" else b""
    handler = type("Handler", (_Misbehaving,), {"mode": mode, "bomb": bomb})
    bad = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    bad.daemon_threads = True
    threading.Thread(target=bad.serve_forever, daemon=True).start()
    vkey = WitnessKey.of("witness.test/bad", Ed25519PrivateKey.generate()).vkey
    results: list[object] = []
    try:
        assert setup.cli("log", "witness", "add", f"http://127.0.0.1:{bad.server_address[1]}",
                         "--key", vkey) == 0
        tracemalloc.start()
        worker = threading.Thread(target=lambda: results.append(cosign_with_timeout(setup, 1.0)))
        started = time.monotonic()
        worker.start()
        worker.join(20)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert not worker.is_alive(), "one slow witness held the round"
        assert elapsed < 10
        assert peak < 16 * 1024 * 1024
        (result,) = results
        assert [o.status for o in result.outcomes] == ["failed"]
    finally:
        bad.shutdown()
        bad.server_close()


def cosign_with_timeout(setup: Setup, timeout: float):
    with AuditLog(setup.db) as log:
        return cosign_latest(log.store, timeout=timeout)


def test_a_newer_checkpoint_cosigned_meanwhile_is_no_rollback(tmp_path):
    """Two cosigning rounds overlap (two `log checkpoint` runs): the slower one, holding the older
    checkpoint, hears from the witness a size beyond it. The log has that checkpoint, signed by
    its key: nothing was rolled back, so no exit 3."""
    setup = Setup(tmp_path)
    server, vkey = setup.witness("witness.test/a")
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    setup.append(3)
    assert setup.checkpoint() == 0  # cosigned at 3
    setup.append(2)
    with AuditLog(setup.db, key=setup.log_private) as log:
        log.checkpoint()  # size 5, not cosigned yet
    ran = []

    def another_round_first(request: httpx.Request) -> None:
        if not ran:
            ran.append(True)
            setup.append(2)
            assert setup.checkpoint() == 0  # size 7, cosigned by the witness

    hooks = {"request": [another_round_first]}
    with AuditLog(setup.db) as log, httpx.Client(timeout=10, event_hooks=hooks) as http:
        result = cosign_latest(log.store, client=http)
    assert [o.status for o in result.outcomes] == ["failed"]
    assert "newer checkpoint" in result.outcomes[0].detail


def test_a_slower_round_never_replaces_a_newer_cosigned_checkpoint(tmp_path):
    setup = Setup(tmp_path)
    first, first_vkey = setup.witness("witness.test/a")
    second, second_vkey = setup.witness("witness.test/b")
    for server, vkey in ((first, first_vkey), (second, second_vkey)):
        assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    setup.append(3)
    assert setup.checkpoint() == 0
    setup.append(2)
    with AuditLog(setup.db, key=setup.log_private) as log:
        log.checkpoint()  # size 5, not cosigned yet
    ran = []

    def another_round_first(request: httpx.Request) -> None:
        if not ran:  # a faster round cosigns 7 while the second witness is away
            ran.append(True)
            logs, second.witness.logs = second.witness.logs, {}
            setup.append(2)
            setup.checkpoint()
            second.witness.logs = logs

    hooks = {"request": [another_round_first]}
    with AuditLog(setup.db) as log, httpx.Client(timeout=10, event_hooks=hooks) as http:
        result = cosign_latest(log.store, client=http)
    assert [o.status for o in result.outcomes] == ["failed", "cosigned"]
    assert parse_checkpoint(setup.meta(COSIGNED_META).decode())[0].size == 7
