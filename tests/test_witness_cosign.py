"""The log asks real witnesses (HTTP on loopback) to cosign: several checkpoints, rollback and fork
detection, a threshold with a witness down, and ``log verify --witness``."""

from __future__ import annotations

import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_witness import spec_cosignature_timestamp

from nomyo_audit.audit import AuditLog, build_record, verifier_key
from nomyo_audit.audit._cosignature import WitnessKey
from nomyo_audit.audit._witness_client import COSIGNED_META, load_witnesses
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode
from nomyo_audit.witness import Witness, WitnessServer, WitnessState

ORIGIN = "nomyo-audit.test/fleet"


class Setup:
    def __init__(self, tmp_path: Path, location: str | None = None, key: Ed25519PrivateKey | None = None):
        self.tmp = tmp_path
        self.db: Path | str = location or tmp_path / "audit.db"
        self.log_private = key or Ed25519PrivateKey.generate()
        self.key_file = tmp_path / f"audit-{id(self)}.key"
        self.key_file.write_bytes(self.log_private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.log_vkey = verifier_key(ORIGIN, self.log_private.public_key())
        self.servers: list[WitnessServer] = []
        AuditLog(self.db, origin=ORIGIN).close()
        self.count = 0

    def append(self, n: int, tag: str = "p") -> None:
        with AuditLog(self.db) as log:
            for _ in range(n):
                payload = f"{tag}{self.count}"
                self.count += 1
                log.append(payload, lambda seq, salt, payload=payload: build_record(
                    seq=seq, timestamp=time.time(), salt=salt, payload_id=payload, router="http://r",
                    server_key=None, model="m", security_tier=None, outcome="ok", request=None,
                    response=None))

    def witness(self, name: str) -> tuple[WitnessServer, str]:
        private = Ed25519PrivateKey.generate()
        key = WitnessKey.of(name, private)
        logs = {ORIGIN: self.log_private.public_key()}
        state = WitnessState(self.tmp / f"{len(self.servers)}.json")
        server = WitnessServer(Witness(key, private, logs, state), quiet=True)
        server.start()
        self.servers.append(server)
        return server, key.vkey

    def stop(self, server: WitnessServer) -> None:
        server.shutdown()
        server.server_close()

    def cli(self, *args: str) -> int:
        return main([*args, "--log", str(self.db)])

    def checkpoint(self) -> int:
        return self.cli("log", "checkpoint", "--key", str(self.key_file))

    def snapshot(self, name: str) -> Path:
        copy = self.tmp / name
        with sqlite3.connect(self.db) as source, sqlite3.connect(copy) as target:
            source.backup(target)
        return copy

    def restore(self, copy: Path) -> None:
        with sqlite3.connect(copy) as source, sqlite3.connect(self.db) as target:
            source.backup(target)

    def meta(self, key: str) -> bytes | None:
        with AuditLog.open(self.db) as log:
            return log.store.meta(key)


@pytest.fixture
def setup(tmp_path):
    state = Setup(tmp_path)
    yield state
    for server in state.servers:
        server.shutdown()
        server.server_close()


def test_cosigning_over_several_checkpoints(setup, capsys):
    server, vkey = setup.witness("witness.test/a")
    setup.append(3)
    assert setup.checkpoint() == 0
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    assert setup.cli("log", "cosign") == 0
    for more in (4, 2, 1):
        setup.append(more)
        assert setup.checkpoint() == 0  # signs, then asks the configured witnesses
        note = setup.meta(COSIGNED_META).decode()
        assert note.startswith(f"{ORIGIN}\n{setup.count}\n")
        assert spec_cosignature_timestamp(note, vkey) > 0
    with AuditLog.open(setup.db) as log:
        assert [(w.url, w.size) for w in load_witnesses(log.store)] == [(server.url, 10)]
    capsys.readouterr()
    assert setup.cli("log", "verify", "--witness", vkey) == 0
    out = capsys.readouterr().out
    assert "cosigned: size 10 by witness.test/a" in out and "ok: 10 records" in out
    assert setup.cli("log", "witness", "list") == 0
    listed = capsys.readouterr().out
    assert f"log vkey: {setup.log_vkey}" in listed and f"{server.url}  size 10  {vkey}" in listed


def test_rollback_is_detected_as_soon_as_one_honest_witness_saw_a_later_checkpoint(setup, capsys):
    server, vkey = setup.witness("witness.test/a")
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    setup.append(3)
    assert setup.checkpoint() == 0
    old = setup.snapshot("at-3.db")  # what an attacker keeps to roll the log back to
    setup.append(4)
    assert setup.checkpoint() == 0
    setup.restore(old)  # records 3..6 are gone; the log alone cannot tell
    capsys.readouterr()
    assert setup.cli("log", "verify") == 0
    assert setup.cli("log", "cosign") == ExitCode.INTEGRITY
    err = capsys.readouterr().err
    assert "witness witness.test/a" in err and "size 7" in err and "only 3 records" in err
    assert "rolled back" in err
    assert "proven: it holds checkpoint 7 signed by this log's key" in err  # not just the witness's word
    # the learned size is kept: the next attempt fails before sending anything
    assert setup.cli("log", "cosign") == ExitCode.INTEGRITY


def test_a_rolled_back_log_that_grew_again_is_a_fork(setup, capsys):
    server, vkey = setup.witness("witness.test/a")
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    setup.append(3)
    assert setup.checkpoint() == 0
    old = setup.snapshot("at-3.db")
    setup.append(4)
    assert setup.checkpoint() == 0
    setup.restore(old)
    setup.append(6, tag="rewritten")  # 9 records, larger than the witness's 7, another history
    capsys.readouterr()
    assert setup.checkpoint() == ExitCode.INTEGRITY
    err = capsys.readouterr().err
    assert "forked" in err and "size 7" in err and "witness.test/a" in err
    assert "proven: it holds checkpoint 7 signed by this log's key, whose root" in err


def test_a_witness_that_only_claims_a_larger_size_is_reported_as_its_word(setup, capsys):
    """The 409 size is unauthenticated: without a checkpoint the log signed, the report says so."""

    class Liar(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send(409, b"1000\n")

        def do_GET(self) -> None:
            self._send(404, b"not found\n")

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    liar = ThreadingHTTPServer(("127.0.0.1", 0), Liar)
    threading.Thread(target=liar.serve_forever, daemon=True).start()
    try:
        _, vkey = setup.witness("witness.test/liar")
        url = f"http://127.0.0.1:{liar.server_address[1]}"
        assert setup.cli("log", "witness", "add", url, "--key", vkey) == 0
        setup.append(2)
        capsys.readouterr()
        # A size a witness only claims (unauthenticated, plain HTTP) is no rollback verdict: one lying
        # witness must not pin the log in "rolled back". It costs that witness's cosignature, and the
        # witness is asked again next round (its claim is not kept as its size).
        assert setup.checkpoint() == 0
        err = capsys.readouterr().err
        assert "has cosigned size 1000" in err and "the witness's word only" in err
        assert "not judged a rollback" in err
        assert setup.cli("log", "cosign") == ExitCode.FINDING
        assert "has cosigned size 1000" in capsys.readouterr().err  # asked again, not remembered
    finally:
        liar.shutdown()
        liar.server_close()


def test_threshold_two_of_three_with_one_witness_down(setup, capsys):
    started = [setup.witness(f"witness.test/{n}") for n in "abc"]
    for server, vkey in started:
        assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    setup.stop(started[2][0])
    setup.append(5)
    capsys.readouterr()
    assert setup.checkpoint() == 0  # a witness down never fails the checkpoint
    assert "failed" in capsys.readouterr().err
    assert setup.cli("log", "cosign") == ExitCode.FINDING
    vkeys = [arg for _, vkey in started for arg in ("--witness", vkey)]
    assert setup.cli("log", "verify", *vkeys, "--witness-threshold", "2") == 0
    capsys.readouterr()
    assert setup.cli("log", "verify", *vkeys) == ExitCode.INTEGRITY
    assert "missing: witness.test/c" in capsys.readouterr().err
    assert setup.cli("log", "verify", *vkeys, "--witness-threshold", "4") == ExitCode.USAGE


def test_verify_witness_fails_on_a_log_cut_below_its_cosigned_checkpoint(setup, capsys):
    server, vkey = setup.witness("witness.test/a")
    setup.append(3)
    assert setup.checkpoint() == 0
    assert setup.cli("log", "verify", "--witness", vkey) == ExitCode.INTEGRITY  # none cosigned yet
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    old = setup.snapshot("at-3.db")
    setup.append(4)
    assert setup.checkpoint() == 0
    cosigned = setup.meta(COSIGNED_META)
    setup.restore(old)
    with sqlite3.connect(setup.db) as db:  # the attacker keeps the newer cosigned checkpoint
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (COSIGNED_META, cosigned))
    capsys.readouterr()
    assert setup.cli("log", "verify", "--witness", vkey) == ExitCode.INTEGRITY
    assert "FAIL" in capsys.readouterr().out
    # an altered cosignature fails too
    note = cosigned.decode()
    body, _, lines = note.partition("\n\n")
    forged = body.replace("\n7\n", "\n3\n") + "\n\n" + lines
    with sqlite3.connect(setup.db) as db:
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (COSIGNED_META, forged.encode()))
    assert setup.cli("log", "verify", "--witness", vkey) == ExitCode.INTEGRITY


def test_bad_witness_configuration_is_a_usage_error(setup, capsys):
    _, vkey = setup.witness("witness.test/a")
    assert setup.cli("log", "witness", "add", "ftp://x", "--key", vkey) == ExitCode.USAGE
    assert setup.cli("log", "witness", "add", "http://127.0.0.1:1", "--key", setup.log_vkey) == ExitCode.USAGE
    assert setup.cli("log", "cosign") == ExitCode.USAGE  # no witness configured
    assert setup.cli("log", "verify", "--witness", "nonsense") == ExitCode.USAGE
    assert setup.cli("log", "verify", "--witness-threshold", "1") == ExitCode.USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_a_postgresql_log_is_cosigned_and_its_rollback_detected(setup, postgres_url, capsys):
    """Witnesses live in meta, so a PostgreSQL log works the same; a copy of the log (same origin
    and key) that is behind what the witness cosigned is caught as a rollback."""
    server, vkey = setup.witness("witness.test/a")
    setup.append(7)
    assert setup.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    assert setup.checkpoint() == 0  # the witness has now cosigned size 7
    fleet = Setup(setup.tmp, postgres_url, key=setup.log_private)
    fleet.append(3)
    assert fleet.cli("log", "witness", "add", server.url, "--key", vkey) == 0
    capsys.readouterr()
    assert fleet.checkpoint() == ExitCode.INTEGRITY
    assert "has cosigned size 7, but the log now has only 3 records" in capsys.readouterr().err
    fleet.append(5)
    other, other_vkey = setup.witness("witness.test/b")
    with AuditLog.open(postgres_url) as log:
        assert log.size == 8
    assert fleet.cli("log", "witness", "add", other.url, "--key", other_vkey) == 0
    assert fleet.checkpoint() == ExitCode.INTEGRITY  # witness a: a fork (8 records, another history)
    capsys.readouterr()
    assert fleet.cli("log", "verify", "--witness", other_vkey) == 0  # witness b cosigned size 8
    assert "cosigned: size 8 by witness.test/b" in capsys.readouterr().out
