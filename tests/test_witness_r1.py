"""Adversarial review R1 of witness cosigning: threshold counting, keys that are no witness,
the witness's own answers (monitor endpoint, duplicate signature lines), bounded servers and clients."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import subprocess
import sys
import threading
import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_witness import spec_cosignature_timestamp
from test_witness_cosign import ORIGIN, Setup
from test_witness_server import OWN_LOG, OWN_ORIGIN, body, leaves, own_checkpoint, post
from test_witness_server import witness as witness  # the fixture

from nomyo_audit.audit import AuditLog, Checkpoint, verifier_key
from nomyo_audit.audit._cosignature import WitnessKey, add_signature_lines, check_cosigned, cosign
from nomyo_audit.audit._merkle import root_of
from nomyo_audit.audit._note import parse_checkpoint, sign_checkpoint, verify_checkpoint
from nomyo_audit.audit._witness_client import COSIGNED_META
from nomyo_audit.errors import IntegrityError
from nomyo_audit.witness import Witness, WitnessServer, WitnessState

DASH = "\u2014"


def renamed(line: str, key: WitnessKey) -> str:
    """The same cosignature under ``key``'s name and key ID: the signed message names no witness."""
    blob = base64.b64decode(line.split(" ")[2])
    return f"{DASH} {key.name} {base64.b64encode(key.key_id + blob[4:]).decode()}\n"


def test_one_key_under_two_names_is_one_witness_not_two():
    log_key, private = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    checkpoint = Checkpoint("example.com/log", 3, b"\1" * 32)
    first, second = WitnessKey.of("w1.example", private), WitnessKey.of("w2.example", private)
    line = cosign(checkpoint, first, private, 1000)
    note = add_signature_lines(sign_checkpoint(checkpoint, log_key), line + renamed(line, second))
    with pytest.raises(IntegrityError, match="same key"):
        check_cosigned(note, log_key.public_key(), [first, second], 2)


def test_a_cosignature_by_the_logs_own_key_is_no_witness():
    log_key = Ed25519PrivateKey.generate()
    checkpoint = Checkpoint("example.com/log", 3, b"\1" * 32)
    itself = WitnessKey.of("example.com/log", log_key)
    note = add_signature_lines(sign_checkpoint(checkpoint, log_key), cosign(checkpoint, itself, log_key, 9))
    with pytest.raises(IntegrityError, match="log's own key"):
        check_cosigned(note, log_key.public_key(), [itself], 1)


# -- log verify --witness -----------------------------------------------------------------------


@pytest.fixture
def cosigned_log(tmp_path):
    """A log with a checkpoint of size 3 and a witness key (not running) to cosign it by hand."""
    setup = Setup(tmp_path)
    setup.append(3)
    assert setup.checkpoint() == 0
    with AuditLog.open(setup.db) as log:
        note = log.latest_checkpoint().note
    private = Ed25519PrivateKey.generate()
    return setup, note, private


def store_cosigned(setup: Setup, note: str) -> None:
    with AuditLog(setup.db) as log:
        log.store.set_meta(COSIGNED_META, note.encode(), replace=True)


def test_verify_refuses_one_witness_key_given_twice_as_a_usage_error(cosigned_log, capsys):
    setup, note, private = cosigned_log
    first, second = WitnessKey.of("w1.example", private), WitnessKey.of("w2.example", private)
    line = cosign(parse_checkpoint(note)[0], first, private, 1000)
    store_cosigned(setup, add_signature_lines(note, line + renamed(line, second)))
    code = setup.cli("log", "verify", "--witness", first.vkey, "--witness", second.vkey)
    assert code == 2
    assert "same key" in capsys.readouterr().err


def test_verify_with_the_logs_own_key_as_witness_is_a_usage_error(cosigned_log, capsys):
    setup, note, _ = cosigned_log
    itself = WitnessKey.of(ORIGIN, setup.log_private)
    store_cosigned(setup, add_signature_lines(note, cosign(parse_checkpoint(note)[0], itself,
                                                           setup.log_private, 1000)))
    assert setup.cli("log", "verify", "--witness", itself.vkey) == 2
    assert "log's own key" in capsys.readouterr().err


def test_a_cosignature_from_the_far_future_is_shown_without_a_traceback(cosigned_log, capsys):
    setup, note, private = cosigned_log
    one = WitnessKey.of("w1.example", private)
    far = (1 << 63) - 1
    store_cosigned(setup, add_signature_lines(note, cosign(parse_checkpoint(note)[0], one, private, far)))
    code = setup.cli("log", "verify", "--witness", one.vkey)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and "internal" not in captured.err.lower()
    assert code == 0
    assert f"time {far}" in captured.out and "in the future" in captured.out


# -- the witness server --------------------------------------------------------------------------


def test_the_monitor_checkpoint_carries_the_witness_cosignature_and_only_verified_lines(witness):
    _, http, key = witness
    stranger = Ed25519PrivateKey.generate()
    note = own_checkpoint(leaves(4))
    junk = sign_checkpoint(parse_checkpoint(note)[0], stranger).partition("\n\n")[2].replace(
        OWN_ORIGIN, "junk.example", 1)
    reply = post(http, body(0, [], note + junk))
    assert reply.status_code == 200, reply.text
    served = http.get(f"/{hashlib.sha256(OWN_ORIGIN.encode()).hexdigest()}/checkpoint")
    assert served.status_code == 200
    # c2sp.org/tlog-witness: it MUST include the witness's cosignature and the log's verified one
    assert spec_cosignature_timestamp(served.text, key.vkey) > 0
    assert reply.text in served.text
    assert verify_checkpoint(served.text, OWN_LOG.public_key()).size == 4
    assert "junk.example" not in served.text


def test_a_log_signature_line_that_does_not_verify_is_403_even_beside_a_valid_one(witness):
    _, http, _ = witness
    note = own_checkpoint(leaves(4))
    line = note.partition("\n\n")[2].rstrip("\n")
    blob = bytearray(base64.b64decode(line.split(" ")[2]))
    blob[-1] ^= 1
    forged = f"{DASH} {OWN_ORIGIN} {base64.b64encode(bytes(blob)).decode()}\n"
    # c2sp.org/tlog-witness: 403 if a line's key name and ID match a trusted key but it fails
    reply = post(http, body(0, [], note + forged))
    assert reply.status_code == 403, reply.text
    assert post(http, body(0, [], note)).status_code == 200


def serving_threads() -> int:
    return sum("process_request" in t.name for t in threading.enumerate())


def test_idle_connections_cannot_pile_up_threads_in_the_witness(witness):
    server, http, _ = witness
    host, port = server.server_address[:2]
    before, most, done = serving_threads(), [0], threading.Event()

    def sample() -> None:  # the most connection threads alive at once (an idle one lives 10 s)
        while not done.wait(0.02):
            most[0] = max(most[0], serving_threads() - before)

    sampler = threading.Thread(target=sample)
    sampler.start()
    idle = [socket.create_connection((host, port), timeout=10) for _ in range(100)]
    try:
        time.sleep(1)
        done.set()
        sampler.join()
        assert most[0] <= 64
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 15
    while True:  # the slots come back as the closed connections end
        try:
            if post(http, body(0, [], own_checkpoint(leaves(2)))).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_witness_serve_refuses_two_keys_for_one_origin_and_a_log_key_as_its_own(tmp_path):
    from cryptography.hazmat.primitives import serialization

    private = Ed25519PrivateKey.generate()
    key_file = tmp_path / "w.key"
    key_file.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def serve(*log_keys: str) -> subprocess.CompletedProcess[str]:
        args = [arg for vkey in log_keys for arg in ("--log-key", vkey)]
        try:
            return subprocess.run(
                [sys.executable, "-c", "from nomyo_audit.cli import main; raise SystemExit(main())",
                 "witness", "serve", "--key", str(key_file), *args, "--port", "0"],
                capture_output=True, text=True, timeout=20,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("the witness started serving")

    one = verifier_key(OWN_ORIGIN, OWN_LOG.public_key())
    other = verifier_key(OWN_ORIGIN, Ed25519PrivateKey.generate().public_key())
    # a second --log-key for the same origin silently replaced the first
    twice = serve(one, other)
    assert twice.returncode == 2 and "two --log-key" in twice.stderr
    itself = serve(verifier_key("log.example/x", private.public_key()))
    assert itself.returncode == 2 and "witness's own key" in itself.stderr


def test_a_client_that_resets_its_connection_leaves_no_traceback(witness, capfd):
    server, http, _ = witness
    host, port = server.server_address[:2]
    for _ in range(3):
        raw = socket.create_connection((host, port), timeout=5)
        raw.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Le")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # an RST, mid-request
    time.sleep(0.5)
    assert post(http, body(0, [], own_checkpoint(leaves(2)))).status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("control", ["\r", "\x00", "\x1b", "\t"])
def test_a_checkpoint_with_a_control_character_is_400_never_cosigned(witness, control):
    _, http, _ = witness
    tree = leaves(2)
    checkpoint = Checkpoint(OWN_ORIGIN, 2, root_of(tree), (f"ext{control}value",))
    note = sign_checkpoint(checkpoint, OWN_LOG)
    # signed-note: a note MUST NOT contain ASCII control characters other than newline
    reply = post(http, body(0, [], note))
    assert reply.status_code == 400, reply.text


def test_two_witness_processes_sharing_a_state_file_never_both_cosign_divergent_heads(tmp_path):
    """Two witnesses on one --state (each its own WitnessState, so only flock orders them):
    concurrent checkpoints of two forks at the same size: at most one is ever cosigned."""
    private = Ed25519PrivateKey.generate()
    key = WitnessKey.of("witness.test/shared", private)
    servers = [
        WitnessServer(Witness(key, private, {OWN_ORIGIN: OWN_LOG.public_key()},
                              WitnessState(tmp_path / "state.json")), quiet=True)
        for _ in range(2)
    ]
    for server in servers:
        server.start()
    try:
        statuses: list[int] = []

        def submit(url: str, tag: bytes) -> None:
            with httpx.Client(base_url=url, timeout=20) as own:
                statuses.append(post(own, body(0, [], own_checkpoint(leaves(6, tag)))).status_code)

        threads = [
            threading.Thread(target=submit, args=(servers[n % 2].url, b"fork%d" % n)) for n in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200] + [409] * 15
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_checkpoint_size_of_thousands_of_digits_is_400_not_500(witness):
    _, http, _ = witness
    note = own_checkpoint(leaves(2)).replace("\n2\n", "\n" + "9" * 5000 + "\n", 1)
    reply = post(http, body(0, [], note))
    assert reply.status_code == 400, reply.text


def test_a_cosigned_checkpoint_size_of_thousands_of_digits_is_an_integrity_failure(cosigned_log, capsys):
    setup, note, private = cosigned_log
    store_cosigned(setup, note.replace("\n3\n", "\n" + "9" * 5000 + "\n", 1))
    one = WitnessKey.of("w1.example", private)
    assert setup.cli("log", "verify", "--witness", one.vkey) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_duplicate_cosignature_fails_whichever_comes_first():
    log_key, private = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    checkpoint = Checkpoint("example.com/log", 3, b"\1" * 32)
    one = WitnessKey.of("w1.example", private)
    good = cosign(checkpoint, one, private, 1000)
    bad = cosign(Checkpoint("example.com/log", 4, b"\1" * 32), one, private, 1000)
    note = sign_checkpoint(checkpoint, log_key)
    for lines in (bad + good, good + bad):  # signed-note: a known key's bad signature rejects the note
        with pytest.raises(IntegrityError, match="does not verify"):
            check_cosigned(add_signature_lines(note, lines), log_key.public_key(), [one], 1)


def test_log_witness_add_refuses_a_key_already_configured_or_the_logs_own(cosigned_log, capsys):
    setup, _, private = cosigned_log
    first, second = WitnessKey.of("w1.example", private), WitnessKey.of("w2.example", private)
    assert setup.cli("log", "witness", "add", "http://127.0.0.1:1", "--key", first.vkey) == 0
    assert setup.cli("log", "witness", "add", "http://127.0.0.1:2", "--key", second.vkey) == 2
    assert "same key" in capsys.readouterr().err
    itself = WitnessKey.of("w3.example", setup.log_private)
    assert setup.cli("log", "witness", "add", "http://127.0.0.1:3", "--key", itself.vkey) == 2
    assert "log's own key" in capsys.readouterr().err


def test_a_body_trickled_a_byte_at_a_time_does_not_hold_the_witness(witness):
    server, _, _ = witness
    host, port = server.server_address[:2]
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /add-checkpoint HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        answer = b""
        raw.settimeout(1.5)
        while time.monotonic() - started < 40:
            try:
                raw.sendall(b"o")
                answer = raw.recv(200)
                if answer == b"" or answer.startswith(b"HTTP/1.1"):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        assert time.monotonic() - started < 25
        assert answer in (b"",) or answer.startswith(b"HTTP/1.1 408")


def test_a_witness_url_with_a_password_is_refused_without_showing_it(cosigned_log, capsys):
    setup, _, private = cosigned_log
    vkey = WitnessKey.of("w1.example", private).vkey
    # every outcome line and 'log witness list' print the URL: a password there would be shown
    assert setup.cli("log", "witness", "add", "http://user:s3cret@127.0.0.1:1", "--key", vkey) == 2
    captured = capsys.readouterr()
    assert "s3cret" not in captured.out + captured.err
    assert "user name or password" in captured.err
