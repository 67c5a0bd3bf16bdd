"""The client against routers that lie, flood, drip or speak the wrong protocol (issue 10).

Every hostile reply ends in a specific, documented exception, never a stray
``RecursionError`` or unbounded memory, and every request leaves exactly one
record in a real SQLite audit log whatever happened to it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from nomyo_audit import (
    APIConnectionError,
    APITimeoutError,
    InvalidRequestError,
    NomyoAuditError,
    PolicyViolationError,
    ProtocolError,
    SecureCompletionClient,
)
from nomyo_audit.client import DEFAULT_TIMEOUT
from nomyo_audit.router import ServerThread
from nomyo_audit.wire import (
    ALGORITHM,
    MAX_PACKAGE_BYTES,
    encrypt_package,
    load_public_key_pem,
    public_key_pem,
)

REPO = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "hello"}]
MiB = 1 << 20
Handler = Callable[[Request], Awaitable[Response]]


def lying_router(router_keys: Any, completion: Handler, public_key: Handler | None = None) -> ServerThread:
    """A router on loopback whose completion endpoint answers through ``completion(request)``."""
    pem = public_key_pem(router_keys.private_key.public_key())

    async def serve_key(request: Request) -> Response:
        return PlainTextResponse(pem)

    app = Starlette(
        routes=[
            Route("/pki/public_key", public_key or serve_key),
            Route("/v1/chat/secure_completion", completion, methods=["POST"]),
        ]
    )
    return ServerThread(app).start()


def sealed(request: Request, body: dict[str, Any] | bytes, processed_at: Any = None) -> Response:
    """``body`` encrypted to the requesting client's key, as an honest router would seal it."""
    client_key = load_public_key_pem(urllib.parse.unquote(request.headers["x-public-key"]))
    plaintext = body if isinstance(body, bytes) else json.dumps(body).encode()
    package = json.loads(encrypt_package(plaintext, client_key))
    if processed_at is not None:
        package["processed_at"] = processed_at
    return Response(json.dumps(package).encode(), media_type="application/json")


def completion_with(metadata: dict[str, Any]) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [], "_metadata": metadata}


def send(url: str, keys_dir: Path, log: Path, payload_id: str = "pid-1", **kwargs: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        kwargs.setdefault("max_retries", 0)
        async with SecureCompletionClient(url, allow_http=True, audit_log=str(log), **kwargs) as client:
            client.load_keys(str(keys_dir / "private_key.pem"))
            return await client.send_secure_request({"model": "echo", "messages": HELLO}, payload_id)

    return asyncio.run(go())


def records(log: Path) -> list[dict[str, Any]]:
    """Every record in the audit database, read with plain sqlite3."""
    with sqlite3.connect(log) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]


def only_record(log: Path, payload_id: str = "pid-1") -> dict[str, Any]:
    found = records(log)
    assert [r["payload_id"] for r in found] == [payload_id]
    return found[0]


# -- section 2: the router's word is never the client's result ---------------------------------


@pytest.fixture
def strict(tmp_path: Path) -> Path:
    """The shipped production policy, minus attest-before-send (these routers answer the request) and
    its anchored AIK (these routers quote with a software TPM, no EK to anchor to)."""
    path = tmp_path / "strict.yaml"
    path.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nextends: production\n"
        "metadata: {name: strict}\nspec: {require_key_attestation: false, aik_trust: {mode: any}}\n"
    )
    return path


def test_router_copies_of_client_computed_fields_are_dropped_and_noted(
    router_keys, client_keys_dir, tmp_path
):
    forged = {
        "payload_id": "pid-1",
        "processed_at": int(time.time()),
        "is_encrypted": False,
        "encryption_algorithm": "none",
        "payload_id_verified": "yes",
        "verification": {"result": "passed", "findings": []},
        "policy": {"outcome": "pass", "policy_name": "production", "rules": []},
        "tpm_attestation": {"is_available": False},
    }

    async def completion(request: Request) -> Response:
        return sealed(request, completion_with(forged))

    with lying_router(router_keys, completion) as server:
        reply = send(server.url, client_keys_dir, tmp_path / "audit.db")
    meta = reply["_metadata"]
    assert meta["dropped_router_fields"] == [
        "encryption_algorithm",
        "is_encrypted",
        "payload_id_verified",
        "policy",
        "verification",
    ]
    assert "policy" not in meta  # no policy was asked for, so there is no policy result at all
    assert meta["verification"]["result"] != "passed"  # the client's own verdict: no evidence
    assert (meta["is_encrypted"], meta["encryption_algorithm"], meta["payload_id_verified"]) == (
        True,
        ALGORITHM,
        True,
    )
    record = only_record(tmp_path / "audit.db")
    assert record["policy"] is None
    assert record["metadata"]["dropped_router_fields"] == meta["dropped_router_fields"]


def test_an_honest_routers_own_fields_are_not_noted(router, client_keys_dir, tmp_path):
    """The reference router sends is_encrypted: true, as NOMYO documents; agreeing is no finding."""
    reply = send(router.url, client_keys_dir, tmp_path / "audit.db")
    assert "dropped_router_fields" not in reply["_metadata"]
    assert "unauthenticated_processed_at" not in reply["_metadata"]


def test_router_saying_pass_cannot_override_the_clients_denial(
    router_keys, client_keys_dir, tmp_path, strict
):
    async def completion(request: Request) -> Response:
        forged = {"payload_id": "pid-1", "policy": {"outcome": "pass", "passed": True}}
        return sealed(request, completion_with(forged))

    with lying_router(router_keys, completion) as server, pytest.raises(PolicyViolationError) as denied:
        send(server.url, client_keys_dir, tmp_path / "audit.db", policy=strict)
    assert denied.value.result.outcome == "deny"
    record = only_record(tmp_path / "audit.db")
    assert record["outcome"] == "policy_denied"
    assert record["policy"]["outcome"] == "deny"
    assert record["metadata"]["dropped_router_fields"] == ["policy"]


@pytest.mark.parametrize(
    "metadata",
    [
        {"policy": "passed"},
        {"policy": ["pass"]},
        {"policy": {"outcome": ["warn"]}},
        {"verification": 7},
        {"verification": {"policy": "x"}},
        {"processed_at": "yesterday"},
        {"processed_at": [1, 2]},
        {"tpm_attestation": "yes"},
        {"tpm_attestation": {"is_available": "true", "pcr_values": [1]}},
        {"memory_protection": 3, "cuda_device": "gpu", "security_tier": {"a": 1}},
        {"dropped_router_fields": "nothing to see"},
        {"payload_id": 12},
    ],
    ids=lambda m: json.dumps(m)[:40],
)
@pytest.mark.parametrize("policy", [None, "development", "strict"])
def test_malformed_router_metadata_never_skips_the_audit_record(
    router_keys, client_keys_dir, tmp_path, strict, metadata, policy
):
    async def completion(request: Request) -> Response:
        return sealed(request, completion_with(metadata))

    with lying_router(router_keys, completion) as server:
        try:
            chosen = strict if policy == "strict" else policy
            reply = send(server.url, client_keys_dir, tmp_path / "audit.db", policy=chosen)
        except NomyoAuditError as failure:
            outcome = "refused"
            assert isinstance(failure, (ProtocolError, PolicyViolationError)), repr(failure)
        else:
            outcome = "returned"
            assert reply["_metadata"].get("policy", {}).get("outcome") in (None, "pass", "warn")
    record = only_record(tmp_path / "audit.db")
    assert (record["outcome"] in ("ok", "policy_warned")) == (outcome == "returned")


def max_age_policy(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            apiVersion: nomyo-audit/v1
            kind: AttestationPolicy
            metadata: {name: fresh}
            spec:
              require_attestation: false
              max_age: 5m
              clock_skew: 60s
              on_failure: deny
            """
        )
    )
    return path


def test_freshness_uses_the_authenticated_processed_at(router_keys, client_keys_dir, tmp_path):
    """A stale reply whose unauthenticated outer copy claims it is new is still stale."""
    stale, now = int(time.time()) - 86400, int(time.time())

    async def completion(request: Request) -> Response:
        return sealed(request, completion_with({"payload_id": "pid-1", "processed_at": stale}), now)

    with lying_router(router_keys, completion) as server, pytest.raises(PolicyViolationError) as denied:
        send(server.url, client_keys_dir, tmp_path / "audit.db", policy=max_age_policy(tmp_path))
    assert [r.rule for r in denied.value.result.failures] == ["max_age"]
    record = only_record(tmp_path / "audit.db")
    assert record["metadata"]["processed_at"] == stale
    assert record["metadata"]["unauthenticated_processed_at"] == now


def test_fresh_authenticated_time_passes_whatever_the_outer_copy_says(router_keys, client_keys_dir, tmp_path):
    now = int(time.time())

    async def completion(request: Request) -> Response:
        return sealed(request, completion_with({"payload_id": "pid-1", "processed_at": now}), "long ago")

    with lying_router(router_keys, completion) as server:
        reply = send(server.url, client_keys_dir, tmp_path / "audit.db", policy=max_age_policy(tmp_path))
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert reply["_metadata"]["processed_at"] == now
    assert reply["_metadata"]["unauthenticated_processed_at"] == "non-numeric (string)"


def test_outer_processed_at_alone_is_never_taken_as_the_reply_time(router_keys, client_keys_dir, tmp_path):
    now = int(time.time())

    async def completion(request: Request) -> Response:
        return sealed(request, completion_with({"payload_id": "pid-1"}), now)

    with lying_router(router_keys, completion) as server, pytest.raises(PolicyViolationError):
        send(server.url, client_keys_dir, tmp_path / "audit.db", policy=max_age_policy(tmp_path))
    metadata = only_record(tmp_path / "audit.db")["metadata"]
    assert "processed_at" not in metadata
    assert metadata["unauthenticated_processed_at"] == now


# -- section 3: malformed replies are ProtocolErrors, and are recorded ----------------------------


def deep(depth: int) -> bytes:
    return b'{"object": "chat.completion", "choices": ' + b"[" * depth + b"]" * depth + b"}"


MALFORMED_PLAINTEXTS = {
    "100k-deep JSON": deep(100_000),
    "500-deep JSON": deep(500),
    "lone surrogate in content": b'{"choices": [{"message": {"content": "\\ud800"}}], "_metadata": {}}',
    "lone surrogate in a key": b'{"\\udfff": 1}',
    "lone surrogate in metadata": b'{"_metadata": {"security_tier": "\\udc00x"}}',
    "NaN": b'{"_metadata": {"processed_at": NaN}}',
    "Infinity": b'{"usage": {"total_tokens": -Infinity}}',
    "a number that overflows": b'{"_metadata": {"processed_at": 1e400}}',
    "top-level list": b"[1, 2]",
    "metadata is a list": b'{"_metadata": [1]}',
    "choices is a string": b'{"choices": "hello"}',
    "a choice is a number": b'{"choices": [3]}',
    "message is a string": b'{"choices": [{"message": "hi"}]}',
    "payload_id is a number": b'{"_metadata": {"payload_id": 7}}',
    "not UTF-8": b'{"choices": "\xff\xfe"}',
}


@pytest.mark.parametrize("plaintext", MALFORMED_PLAINTEXTS.values(), ids=MALFORMED_PLAINTEXTS.keys())
def test_malformed_decrypted_reply_is_a_protocol_error_and_is_recorded(
    router_keys, client_keys_dir, tmp_path, plaintext
):
    async def completion(request: Request) -> Response:
        return sealed(request, plaintext, 1)

    with lying_router(router_keys, completion) as server, pytest.raises(ProtocolError):
        send(server.url, client_keys_dir, tmp_path / "audit.db")
    record = only_record(tmp_path / "audit.db")
    assert record["outcome"].startswith("security_error:")
    assert record["error"]["class"] == "ProtocolError"


MALFORMED_PACKAGES = {
    "100k-deep package": b"[" * 100_000 + b"]" * 100_000,
    "lone surrogate in processed_at": None,  # built below: a valid package otherwise
    "NaN processed_at": None,
}


@pytest.mark.parametrize("case", MALFORMED_PACKAGES, ids=MALFORMED_PACKAGES.keys())
def test_malformed_package_is_a_protocol_error_and_is_recorded(router_keys, client_keys_dir, tmp_path, case):
    async def completion(request: Request) -> Response:
        if MALFORMED_PACKAGES[case] is not None:
            return Response(MALFORMED_PACKAGES[case])
        body = sealed(request, completion_with({})).body.decode()
        value = '"\\ud800"' if "surrogate" in case else "NaN"
        return Response(body[:-1] + f', "processed_at": {value}}}')

    with lying_router(router_keys, completion) as server, pytest.raises(ProtocolError):
        send(server.url, client_keys_dir, tmp_path / "audit.db")
    assert only_record(tmp_path / "audit.db")["error"]["class"] == "ProtocolError"


def test_deep_json_error_body_is_still_the_status_error(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        return Response(b"[" * 100_000, status_code=400, media_type="application/json")

    with lying_router(router_keys, completion) as server, pytest.raises(InvalidRequestError) as err:
        send(server.url, client_keys_dir, tmp_path / "audit.db")
    assert err.value.status_code == 400
    assert only_record(tmp_path / "audit.db")["outcome"] == "http_error:InvalidRequestError"


def test_deep_json_key_attestation_is_refused_cleanly(router_keys, client_keys_dir, tmp_path):
    pem = public_key_pem(router_keys.private_key.public_key())

    async def key_or_attestation(request: Request) -> Response:
        return PlainTextResponse(pem)

    async def attestation(request: Request) -> Response:
        return Response(b'{"tpm_attestation": ' + b"[" * 100_000, media_type="application/json")

    async def completion(request: Request) -> Response:
        raise AssertionError("nothing may be sent before the key is attested")

    app = Starlette(
        routes=[
            Route("/pki/public_key", key_or_attestation),
            Route("/pki/attestation", attestation),
            Route("/v1/chat/secure_completion", completion, methods=["POST"]),
        ]
    )
    policy = tmp_path / "attest.yaml"
    policy.write_text(
        max_age_policy(tmp_path).read_text().replace("max_age: 5m", "require_key_attestation: true")
    )
    with ServerThread(app).start() as server, pytest.raises(NomyoAuditError) as err:
        send(server.url, client_keys_dir, tmp_path / "audit.db", policy=policy)
    assert isinstance(err.value, (ProtocolError, PolicyViolationError))
    assert only_record(tmp_path / "audit.db")["outcome"] == "policy_denied"


# -- section 3: size limits hold while the body streams in, before decompression ----------------


CHILD = textwrap.dedent(
    """\
    import asyncio, json, resource, sys
    # A regression must fail this test quickly, not take the machine's memory with it.
    resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
    from nomyo_audit import NomyoAuditError, SecureCompletionClient

    url, keys, log = sys.argv[1:4]

    async def main():
        async with SecureCompletionClient(url, allow_http=True, audit_log=log, max_retries=0) as client:
            client.load_keys(keys + "/private_key.pem")
            await client.fetch_server_public_key()
            await client.encrypt_payload({"warm": "up"})
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                await client.send_secure_request({"model": "echo", "messages": []}, "pid-1")
                error = None
            except NomyoAuditError as failure:
                error = [type(failure).__name__, failure.code]
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            print(json.dumps({"error": error, "growth_kib": after - before}))

    asyncio.run(main())
    """
)


def client_in_subprocess(url: str, keys_dir: Path, log: Path) -> dict[str, Any]:
    """Run one request in a fresh interpreter and report how far its peak RSS grew."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(keys_dir), str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


async def gigabyte() -> AsyncIterator[bytes]:
    chunk = b"A" * MiB
    for _ in range(1024):
        yield chunk


def gzip_bomb(inflated_mib: int = 2048) -> bytes:
    """A valid gzip stream of ``inflated_mib`` MiB of zeros, about 2 MB long, built in a second."""
    zeros = bytes(MiB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    steady = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)  # the same bytes for every MiB
    end = packer.flush()[:-8]
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(zeros, crc)
    trailer = struct.pack("<II", crc, (inflated_mib * MiB) & 0xFFFFFFFF)
    return first + steady * (inflated_mib - 1) + end + trailer


# The growth a request may add to peak RSS: the limit, a copy of it, and change.
RSS_GROWTH_LIMIT_KIB = 4 * MAX_PACKAGE_BYTES // 1024


def test_a_gigabyte_body_is_refused_while_it_streams(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        return StreamingResponse(gigabyte(), media_type="application/json")  # chunked: no length

    with lying_router(router_keys, completion) as server:
        result = client_in_subprocess(server.url, client_keys_dir, tmp_path / "audit.db")
    assert result["error"] == ["ProtocolError", "response_too_large"]
    assert result["growth_kib"] < RSS_GROWTH_LIMIT_KIB
    assert only_record(tmp_path / "audit.db")["outcome"] == "security_error:response_too_large"


def test_a_declared_oversized_body_is_refused_before_reading(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        return StreamingResponse(gigabyte(), headers={"content-length": str(1024 * MiB)})

    with lying_router(router_keys, completion) as server:
        result = client_in_subprocess(server.url, client_keys_dir, tmp_path / "audit.db")
    assert result["error"] == ["ProtocolError", "response_too_large"]
    assert result["growth_kib"] < RSS_GROWTH_LIMIT_KIB


def test_a_gzip_bomb_is_refused_before_it_inflates(router_keys, client_keys_dir, tmp_path):
    bomb = gzip_bomb()
    assert len(bomb) < 3 * MiB

    async def completion(request: Request) -> Response:
        return Response(bomb, headers={"content-encoding": "gzip"}, media_type="application/json")

    with lying_router(router_keys, completion) as server:
        result = client_in_subprocess(server.url, client_keys_dir, tmp_path / "audit.db")
    assert result["error"] == ["ProtocolError", "response_too_large"]
    assert result["growth_kib"] < RSS_GROWTH_LIMIT_KIB
    assert only_record(tmp_path / "audit.db")["outcome"] == "security_error:response_too_large"


def test_a_gzipped_honest_reply_still_works(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        body = sealed(request, completion_with({"payload_id": "pid-1"})).body
        return Response(zlib.compress(body, wbits=31), headers={"content-encoding": "gzip"})

    with lying_router(router_keys, completion) as server:
        reply = send(server.url, client_keys_dir, tmp_path / "audit.db")
    assert reply["_metadata"]["payload_id_verified"] is True


def test_an_unknown_content_encoding_is_a_protocol_error(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        return Response(b"\x00" * 100, headers={"content-encoding": "compress"})

    with lying_router(router_keys, completion) as server, pytest.raises(ProtocolError) as err:
        send(server.url, client_keys_dir, tmp_path / "audit.db")
    assert err.value.code == "response_encoding"


def test_an_oversized_public_key_reply_is_refused(router_keys, client_keys_dir, tmp_path):
    async def huge_key(request: Request) -> Response:
        return StreamingResponse(gigabyte())

    async def completion(request: Request) -> Response:
        raise AssertionError("unreachable")

    with lying_router(router_keys, completion, public_key=huge_key) as server:
        with pytest.raises(ProtocolError) as err:
            send(server.url, client_keys_dir, tmp_path / "audit.db")
    assert err.value.code == "response_too_large"


# -- section 3: a deadline per request ----------------------------------------------------------


async def drip() -> AsyncIterator[bytes]:
    while True:
        yield b" "
        await asyncio.sleep(2)


def test_default_timeout_is_a_finite_total_deadline():
    client = SecureCompletionClient("https://example.org")
    assert client.timeout == DEFAULT_TIMEOUT == 600.0
    assert (
        SecureCompletionClient("https://example.org", timeout=None).timeout == DEFAULT_TIMEOUT
    )
    assert SecureCompletionClient("https://example.org", timeout=5).timeout == 5


def test_a_dripping_server_cannot_hold_the_client(router_keys, client_keys_dir, tmp_path):
    async def completion(request: Request) -> Response:
        return StreamingResponse(drip(), media_type="application/json")

    with lying_router(router_keys, completion) as server:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            send(server.url, client_keys_dir, tmp_path / "audit.db", timeout=3)
        assert time.monotonic() - started < 6
    assert only_record(tmp_path / "audit.db")["outcome"] == "http_error:APITimeoutError"


def test_a_dripping_key_endpoint_cannot_hold_the_client(router_keys, client_keys_dir, tmp_path):
    async def slow_key(request: Request) -> Response:
        return StreamingResponse(drip())

    async def completion(request: Request) -> Response:
        raise AssertionError("unreachable")

    async def go() -> None:
        async with SecureCompletionClient(server.url, allow_http=True, timeout=3) as client:
            await client.fetch_server_public_key()

    with lying_router(router_keys, completion, public_key=slow_key) as server:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            asyncio.run(go())
        assert time.monotonic() - started < 6


# -- section 6 support: what went wrong with the connection, in words --------------------------


def test_plain_http_server_at_an_https_url_is_named_as_such(router, client_keys_dir, tmp_path):
    url = router.url.replace("http://", "https://")
    with pytest.raises(APIConnectionError) as err:
        send(url, client_keys_dir, tmp_path / "audit.db", max_retries=2)
    assert err.value.code == "tls"
    assert f"the server at {url} does not speak HTTPS" in str(err.value)
    assert router.app.state.requests.get("/pki/public_key", 0) == 0
    assert only_record(tmp_path / "audit.db")["outcome"] == "http_error:APIConnectionError"


def test_an_unresolvable_host_is_a_name_resolution_error(client_keys_dir, tmp_path):
    with pytest.raises(APIConnectionError) as err:
        send("https://no-such-host.invalid", client_keys_dir, tmp_path / "audit.db", max_retries=2)
    assert err.value.code == "name_resolution"
    assert "no-such-host.invalid" in str(err.value)


def test_connection_failures_are_not_retried_when_retrying_cannot_help(client_keys_dir, tmp_path):
    started = time.monotonic()
    with pytest.raises(APIConnectionError):
        send("https://no-such-host.invalid", client_keys_dir, tmp_path / "audit.db", max_retries=5)
    assert time.monotonic() - started < 3  # five backoffs would take 0.5 + 1 + 2 + 4 + 8 s


def test_audit_records_survive_an_unexpected_internal_error(router_keys, client_keys_dir, tmp_path):
    """Even a bug (here: an exception from a broken custom transport) leaves its record."""

    class Broken(Exception):
        pass

    import httpx

    class ExplodingTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise Broken("boom")

    async def go() -> None:
        async with SecureCompletionClient(
            "http://127.0.0.1:9",
            allow_http=True,
            audit_log=str(tmp_path / "audit.db"),
            transport=ExplodingTransport(),
        ) as client:
            client.load_keys(str(client_keys_dir / "private_key.pem"))
            await client.send_secure_request({"model": "echo", "messages": HELLO}, "pid-1")

    with pytest.raises(Broken):
        asyncio.run(go())
    record = only_record(tmp_path / "audit.db")
    assert record["outcome"] == "error:internal"
    assert record["error"]["class"] == "Broken"
    assert "boom" not in json.dumps(record)  # an unknown error's text may hold anything: not kept
