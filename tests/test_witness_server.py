"""``witness serve`` over real HTTP on loopback: every add-checkpoint status c2sp.org/tlog-witness
fixes, with checkpoints and a consistency proof made by transparency-dev's witness tests."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_witness import spec_cosignature_timestamp

from nomyo_audit.audit import Checkpoint, verifier_key
from nomyo_audit.audit._cosignature import WitnessKey, parse_log_vkey
from nomyo_audit.audit._merkle import EMPTY_ROOT, consistency_proof, leaf_hash, root_of
from nomyo_audit.audit._note import sign_checkpoint
from nomyo_audit.witness import Witness, WitnessServer, WitnessState

FIXTURES = Path(__file__).parent / "fixtures" / "witness"
MONKEYS = json.loads((FIXTURES / "transparency-dev-witness-monkeys.json").read_text(encoding="utf-8"))
PROOF_5_8 = [bytes.fromhex(h) for h in MONKEYS["consistency_proof_5_to_8_hex"]]
OWN_LOG = Ed25519PrivateKey.generate()
OWN_ORIGIN = "nomyo-audit.test/own"


def body(old: int, proof: list[bytes], note: str) -> bytes:
    lines = [f"old {old}", *(base64.b64encode(p).decode() for p in proof)]
    return ("\n".join(lines) + "\n\n" + note).encode()


@pytest.fixture
def witness(tmp_path):
    private = Ed25519PrivateKey.generate()
    key = WitnessKey.of("witness.test/w1", private)
    logs = dict([parse_log_vkey(MONKEYS["log_vkey"]), (OWN_ORIGIN, OWN_LOG.public_key())])
    server = WitnessServer(Witness(key, private, logs, WitnessState(tmp_path / "state.json")), quiet=True)
    server.start()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield server, http, key
    server.shutdown()
    server.server_close()


def post(http: httpx.Client, data: bytes) -> httpx.Response:
    return http.post("/add-checkpoint", content=data)


def own_checkpoint(leaves: list[bytes]) -> str:
    return sign_checkpoint(Checkpoint(OWN_ORIGIN, len(leaves), root_of(leaves)), OWN_LOG)


def leaves(n: int, tag: bytes = b"r") -> list[bytes]:
    return [leaf_hash(tag + str(i).encode()) for i in range(n)]


def test_cosigns_transparency_dev_checkpoints_and_their_consistency_proof(witness):
    _, http, key = witness
    first = post(http, body(0, [], MONKEYS["checkpoint_5"]))
    assert first.status_code == 200, first.text
    assert first.text.startswith("\u2014 witness.test/w1 ") and first.text.endswith("\n")
    assert spec_cosignature_timestamp(MONKEYS["checkpoint_5"] + first.text, key.vkey) > 0
    stale = post(http, body(0, [], MONKEYS["checkpoint_8"]))
    assert (stale.status_code, stale.text) == (409, "5\n")
    assert stale.headers["content-type"] == "text/x.tlog.size"
    second = post(http, body(5, PROOF_5_8, MONKEYS["checkpoint_8"]))
    assert second.status_code == 200, second.text
    assert spec_cosignature_timestamp(MONKEYS["checkpoint_8"] + second.text, key.vkey) > 0
    # the monitor retrieval endpoint serves the latest, with the log's and the witness's signatures
    origin_hash = hashlib.sha256(b"monkeys").hexdigest()
    latest = http.get(f"/{origin_hash}/checkpoint")
    assert latest.status_code == 200 and latest.text.startswith("monkeys\n8\n")
    assert http.get(f"/{'0' * 64}/checkpoint").status_code == 404


def test_rolled_back_checkpoint_gets_no_cosignature(witness):
    _, http, _ = witness
    assert post(http, body(0, [], MONKEYS["checkpoint_5"])).status_code == 200
    assert post(http, body(5, PROOF_5_8, MONKEYS["checkpoint_8"])).status_code == 200
    back = post(http, body(5, [], MONKEYS["checkpoint_5"]))
    assert (back.status_code, back.text) == (409, "8\n")  # the witness says what it has seen
    claimed = post(http, body(8, [], MONKEYS["checkpoint_5"]))
    assert claimed.status_code == 400 and "larger than the checkpoint" in claimed.text


def test_forked_checkpoints_get_no_cosignature(witness):
    _, http, _ = witness
    honest = leaves(5)
    assert post(http, body(0, [], own_checkpoint(honest))).status_code == 200
    # same size, another root
    other = leaves(5, b"x")
    same = post(http, body(5, [], own_checkpoint(other)))
    assert same.status_code == 422 and "not consistent" in same.text
    # larger, with a proof from a tree that is not the one cosigned
    forked = leaves(5, b"x") + leaves(3, b"y")
    larger = post(http, body(5, consistency_proof(forked, 5), own_checkpoint(forked)))
    assert larger.status_code == 422
    # a monkeys proof that was altered
    assert post(http, body(0, [], MONKEYS["checkpoint_5"])).status_code == 200
    bad = [*PROOF_5_8[:-1], bytes(32)]
    assert post(http, body(5, bad, MONKEYS["checkpoint_8"])).status_code == 422
    # and the honest extension is still cosigned afterwards
    extended = honest + leaves(4, b"z")
    assert post(http, body(5, consistency_proof(extended, 5), own_checkpoint(extended))).status_code == 200


def test_spec_statuses_for_bad_checkpoints(witness):
    _, http, _ = witness
    stranger = Ed25519PrivateKey.generate()
    unknown = sign_checkpoint(Checkpoint("unknown.example/log", 1, bytes(32)), stranger)
    assert post(http, body(0, [], unknown)).status_code == 404
    wrong_key = sign_checkpoint(Checkpoint(OWN_ORIGIN, 1, bytes(32)), stranger)
    forbidden = post(http, body(0, [], wrong_key))
    assert forbidden.status_code == 403
    note = own_checkpoint(leaves(2))
    head, _, stamp = note.rpartition(" ")
    raw = base64.b64decode(stamp)
    tampered = head + " " + base64.b64encode(raw[:4] + bytes(64)).decode() + "\n"
    assert post(http, body(0, [], tampered)).status_code == 403
    empty_wrong = sign_checkpoint(Checkpoint(OWN_ORIGIN, 0, bytes(32)), OWN_LOG)
    assert post(http, body(0, [], empty_wrong)).status_code == 422
    empty = sign_checkpoint(Checkpoint(OWN_ORIGIN, 0, EMPTY_ROOT), OWN_LOG)
    assert post(http, body(0, [], empty)).status_code == 200
    assert post(http, body(0, [bytes(32)], note)).status_code == 422  # a proof from size 0
    for bad in (b"old 01\n\n" + note.encode(), b"old 1" + note.encode(), b"new 0\n\n" + note.encode(),
                b"old 0\nnot base64\n\n" + note.encode(), b"\xff\xfe\n\n",
                body(0, [bytes(32)] * 64, note), b"old 0\n\nnot a checkpoint\n"):
        assert post(http, bad).status_code == 400, bad[:40]
    assert post(http, b"x" * (64 * 1024 + 1)).status_code == 413
    assert http.post("/other", content=b"").status_code == 404
    assert post(http, body(0, [], note)).status_code == 200  # still serving


def test_no_content_length_and_slow_clients_do_not_hurt_the_witness(witness):
    server, http, _ = witness
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as raw:
        raw.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411")
    idle = socket.create_connection((host, port), timeout=5)  # connects and sends nothing
    assert post(http, body(0, [], MONKEYS["checkpoint_5"])).status_code == 200
    idle.close()


def test_concurrent_requests_are_checked_and_recorded_atomically(witness):
    server, http, _ = witness
    assert post(http, body(0, [], MONKEYS["checkpoint_5"])).status_code == 200
    statuses: list[int] = []

    def submit() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as own:
            statuses.append(post(own, body(5, PROOF_5_8, MONKEYS["checkpoint_8"])).status_code)

    threads = [threading.Thread(target=submit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] + [409] * 11


def test_state_survives_a_restart_so_a_rollback_is_still_refused(tmp_path):
    private = Ed25519PrivateKey.generate()
    key = WitnessKey.of("witness.test/w2", private)
    logs = dict([parse_log_vkey(MONKEYS["log_vkey"])])
    first = Witness(key, private, logs, WitnessState(tmp_path / "state.json"))
    assert first.add_checkpoint(body(0, [], MONKEYS["checkpoint_5"])).status == 200
    assert first.add_checkpoint(body(5, PROOF_5_8, MONKEYS["checkpoint_8"])).status == 200
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"
    again = Witness(key, private, logs, WitnessState(tmp_path / "state.json"))
    reply = again.add_checkpoint(body(0, [], MONKEYS["checkpoint_5"]))
    assert (reply.status, reply.body) == (409, "8\n")
    (tmp_path / "bad.json").write_text("{not json")
    from nomyo_audit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a witness state file"):
        WitnessState(tmp_path / "bad.json")


def test_witness_serve_cli_as_a_real_process(tmp_path):
    from cryptography.hazmat.primitives import serialization

    key_file = tmp_path / "w.key"
    key_file.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    own_vkey = verifier_key(OWN_ORIGIN, OWN_LOG.public_key())
    process = subprocess.Popen(
        [sys.executable, "-c", "from nomyo_audit.cli import main; raise SystemExit(main())", "witness",
         "serve", "--key", str(key_file), "--log-key", MONKEYS["log_vkey"], "--log-key", own_vkey,
         "--state", str(tmp_path / "state.json"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        vkey_line = process.stdout.readline()
        url_line = process.stdout.readline()
        assert vkey_line.startswith("witness vkey: nomyo-audit.local/witness+"), vkey_line
        url = url_line.split()[2]
        reply = httpx.post(f"{url}/add-checkpoint", content=body(0, [], MONKEYS["checkpoint_5"]), timeout=10)
        assert reply.status_code == 200
        assert spec_cosignature_timestamp(MONKEYS["checkpoint_5"] + reply.text, vkey_line.split()[2]) > 0
        printed = subprocess.run(
            [sys.executable, "-c", "from nomyo_audit.cli import main; raise SystemExit(main())", "witness",
             "vkey", "--key", str(key_file)], capture_output=True, text=True, timeout=60,
        )
        assert printed.stdout.strip() == vkey_line.split()[2]
    finally:
        process.terminate()
        process.wait(timeout=10)
    bad = subprocess.run(
        [sys.executable, "-c", "from nomyo_audit.cli import main; raise SystemExit(main())", "witness",
         "serve", "--key", str(key_file), "--log-key", "nonsense", "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_state_that_cannot_be_saved_is_a_500_and_no_cosignature(tmp_path, capfd):
    import shutil

    from nomyo_audit.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="no such directory"):
        WitnessState(tmp_path / "missing" / "state.json")
    (tmp_path / "sub").mkdir()
    private = Ed25519PrivateKey.generate()
    key = WitnessKey.of("witness.test/w3", private)
    logs = dict([parse_log_vkey(MONKEYS["log_vkey"])])
    state = WitnessState(tmp_path / "sub" / "state.json")
    server = WitnessServer(Witness(key, private, logs, state), quiet=True)
    server.start()
    first = body(0, [], MONKEYS["checkpoint_5"])
    try:
        shutil.rmtree(tmp_path / "sub")
        reply = httpx.post(f"{server.url}/add-checkpoint", content=first, timeout=10)
        assert reply.status_code == 500 and "\u2014" not in reply.text
        assert "cannot lock witness state" in capfd.readouterr().err
        (tmp_path / "sub").mkdir()  # and it serves again once the directory is back
        reply = httpx.post(f"{server.url}/add-checkpoint", content=first, timeout=10)
        assert reply.status_code == 200
    finally:
        server.shutdown()
        server.server_close()
