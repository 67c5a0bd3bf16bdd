"""Adversarial review of issue 10 (client, wire, router, policies): what a second look found.

Each test names a way a careless caller, a hostile router or a hostile file could still get
past a gate, and pins the fixed behaviour against real components on loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import Response
from test_client_hardening import lying_router, send
from test_gating import chat, measured_router

from nomyo_audit import InvalidRequestError, ProtocolError, SecureCompletionClient, ServiceUnavailableError
from nomyo_audit.cli import main as cli_main
from nomyo_audit.policy import PolicyError, load_policy


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def outcomes(log: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(log) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]


# -- section 3: a payload the caller got wrong is an InvalidRequestError, and is recorded ----------

UNSENDABLE_PAYLOADS = {
    "lone surrogate in a prompt": {"model": "echo", "messages": [{"role": "user", "content": "\ud800"}]},
    "an object JSON cannot hold": {"model": "echo", "messages": [{"role": "user", "content": object()}]},
    "NaN": {"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": float("nan")},
    "5000-deep": {"model": "echo", "messages": [{"role": "user", "content": "x"}], "extra": nested(5000)},
    "a model that is no string": {"model": object(), "messages": [{"role": "user", "content": "x"}]},
    "not a dict": [1, 2],
}


@pytest.mark.parametrize("payload", UNSENDABLE_PAYLOADS.values(), ids=UNSENDABLE_PAYLOADS.keys())
def test_an_unsendable_payload_is_refused_before_sending_and_recorded(
    router, client_keys_dir, tmp_path, payload
):
    log = tmp_path / "audit.db"

    async def go() -> None:
        client = SecureCompletionClient(router.url, allow_http=True, audit_log=str(log), max_retries=0)
        async with client:
            client.load_keys(str(client_keys_dir / "private_key.pem"))
            await client.send_secure_request(payload, "pid-1")

    with pytest.raises(InvalidRequestError):
        asyncio.run(go())
    assert router.config.backend.payloads == []  # nothing reached the model
    [record] = outcomes(log)
    assert record["payload_id"] == "pid-1"
    assert record["error"]["class"] == "InvalidRequestError"
    assert record["request_digest"] is None  # no canonical JSON holds it, so no digest of it


# -- section 3: a hostile router's Retry-After never escapes as an OverflowError -------------------


def test_a_retry_after_date_beyond_any_calendar_is_ignored(router_keys, client_keys_dir, tmp_path):
    calls = []

    async def completion(request: Request) -> Response:
        calls.append(1)
        far = "Mon, 01 Jan 99999999999 00:00:00 GMT"
        return Response(b"busy", status_code=503, headers={"Retry-After": far})

    log = tmp_path / "audit.db"
    with lying_router(router_keys, completion) as server, pytest.raises(ServiceUnavailableError):
        send(server.url, client_keys_dir, log, max_retries=1)
    assert len(calls) == 2  # retried after the default backoff, the server's date ignored
    [record] = outcomes(log)
    assert record["outcome"] == "http_error:ServiceUnavailableError"


# -- section 5: hostile policy files ----------------------------------------------------------------

POLICY_HEAD = "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: hostile}\n"
GOLDEN = "1d618e77c4264ffc936e3eb66607a8a6a4159002ddadec8a4e66fa24446760be"
EVIL = "ab" * 32


@pytest.mark.parametrize("spelling", ["0x7", "07", "+7", "'7'", "0b111"])
def test_one_pcr_written_twice_in_another_spelling_is_a_duplicate_key(tmp_path, spelling):
    """YAML reads 7, 0x7, 07 and +7 as one integer: the later one would silently replace the golden value."""
    path = tmp_path / "dup.yaml"
    pcrs = f"spec:\n  pcrs:\n    sha256:\n      7: [{GOLDEN}]\n      {spelling}: [{EVIL}]\n"
    path.write_text(POLICY_HEAD + pcrs)
    with pytest.raises(PolicyError, match=r"dup.yaml:8: duplicate key"):
        load_policy(path)
    assert cli_main(["policy", "lint", str(path)]) == 2


def test_a_lone_surrogate_in_a_policy_is_exit_2_not_an_internal_error(tmp_path, capsys):
    path = tmp_path / "surrogate.yaml"
    path.write_text(POLICY_HEAD + 'spec: {models: ["\\ud800"]}\n')
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert err.value.code == "policy_not_text"
    assert cli_main(["policy", "lint", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("key", ["max_age", "clock_skew", "key_attestation_ttl"])
@pytest.mark.parametrize("value", ["9" * 400 + "s", "9" * 400, "99999999999d"])
def test_a_duration_past_any_clock_is_refused_when_the_policy_loads(tmp_path, key, value):
    """Else the client adds it to its clock when it caches a key attestation: OverflowError."""
    path = tmp_path / "forever.yaml"
    path.write_text(POLICY_HEAD + f"spec: {{{key}: {value}}}\n")
    with pytest.raises(PolicyError, match=rf"forever.yaml:4 spec.{key}: .*at most"):
        load_policy(path)
    assert cli_main(["policy", "lint", str(path)]) == 2


def test_a_long_duration_within_the_cap_still_loads(tmp_path):
    path = tmp_path / "decade.yaml"
    path.write_text(POLICY_HEAD + "spec: {max_age: 3650d, clock_skew: 1h, key_attestation_ttl: 100000s}\n")
    policy = load_policy(path)
    assert (policy.clock_skew, policy.key_attestation_ttl) == (3600, 100000)


# -- section 3: a router key no one can encrypt to is a ProtocolError, not a ValueError --------------


def odd_public_key_pem(bits: int, exponent: int) -> str:
    modulus = int.from_bytes(os.urandom(bits // 8), "big") | (1 << (bits - 1)) | 1
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_bytes(serialization.Encoding.PEM, spki).decode()


@pytest.mark.parametrize(
    ("bits", "exponent"), [(20000, 65537), (4096, 2**100 + 1)], ids=["20000-bit", "e=2^100+1"]
)
def test_a_router_key_too_large_to_encrypt_to_is_a_protocol_error(
    router_keys, client_keys_dir, tmp_path, bits, exponent
):
    pem = odd_public_key_pem(bits, exponent)

    async def public_key(request: Request) -> Response:
        return Response(pem)

    async def completion(request: Request) -> Response:
        raise AssertionError("nothing can have been encrypted to that key")

    log = tmp_path / "audit.db"
    with lying_router(router_keys, completion, public_key) as server, pytest.raises(ProtocolError) as err:
        send(server.url, client_keys_dir, log)
    assert err.value.code == "public_key"
    [record] = outcomes(log)
    assert record["error"]["class"] == "ProtocolError"


# -- section 5: from-evidence writes where it was told, never through a planted symlink -------------


@pytest.fixture
def saved_replies(make_router, client_keys_dir, tmp_path):
    """One reply from a measured (software-attested) router, as a user would save it."""
    router, _ = measured_router(make_router)
    path = tmp_path / "replies.jsonl"
    path.write_text(json.dumps(chat(router, client_keys_dir)) + "\n")
    return path


def test_from_evidence_never_writes_through_a_dangling_symlink(saved_replies, tmp_path):
    planted = tmp_path / "elsewhere" / "victim.yaml"
    planted.parent.mkdir()
    output = tmp_path / "golden.yaml"
    output.symlink_to(planted)
    command = ["policy", "from-evidence", "--allow-software-attester", str(saved_replies), "-o", str(output)]
    assert cli_main(command) == 2
    assert cli_main([*command, "--force"]) == 2
    assert not planted.exists() and output.is_symlink()


def test_from_evidence_writes_a_readable_file_once(saved_replies, tmp_path):
    output = tmp_path / "golden.yaml"
    command = ["policy", "from-evidence", "--allow-software-attester", str(saved_replies), "-o", str(output)]
    assert cli_main(command) == 0
    assert output.stat().st_mode & 0o777 == 0o644
    assert cli_main(command) == 2  # never over an existing file without --force
    assert cli_main([*command, "--force"]) == 0


# -- section 4: serve's deadlines are finite seconds ------------------------------------------------


@pytest.mark.parametrize("option", ["--header-timeout", "--body-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e400"])
def test_serve_refuses_a_deadline_that_is_not_finite(capsys, option, value):
    """NaN made every request time out at once (asyncio waits 'nan' seconds as none); inf waits forever."""
    assert cli_main(["serve", "--port", "0", option, value]) == 2
    assert "finite" in capsys.readouterr().err
