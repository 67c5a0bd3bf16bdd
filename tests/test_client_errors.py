"""The client's error paths, driven by ``httpx.MockTransport`` through ``transport=`` (issue 11).

No router runs: each test scripts what the network does (a refused connection, a timeout, a
reply that decrypts to something malformed, an attestation that fails), then asserts two things:
the exception the caller gets, and the one record a real SQLite audit log keeps of the call.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PRODUCTION_UNANCHORED

from nomyo_audit import (
    APIConnectionError,
    APITimeoutError,
    InvalidRequestError,
    PolicyViolationError,
    ProtocolError,
    SecureCompletionClient,
    SecurityError,
    ServiceUnavailableError,
)
from nomyo_audit.wire import (
    COMPLETION_PATH,
    KEY_ATTESTATION_PATH,
    PUBLIC_KEY_PATH,
    encrypt_package,
    load_public_key_pem,
    public_key_pem,
)

ROUTER = "https://router.test"
PAYLOAD = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
Handler = Callable[[httpx.Request], httpx.Response]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff in milliseconds, so retried tests run in no time (the schedule is test_retry's)."""
    monkeypatch.setattr("nomyo_audit.client._retry.INITIAL_DELAY", 0.001)


class Network:
    """A scripted router: a handler per path, and every request it saw."""

    def __init__(self, router_keys: Any, **handlers: Handler) -> None:
        pem = public_key_pem(router_keys.private_key.public_key())
        self.handlers: dict[str, Handler] = {
            PUBLIC_KEY_PATH: lambda request: httpx.Response(200, text=pem),
            **{_PATHS[name]: handler for name, handler in handlers.items()},
        }
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.url.path)
        handler = self.handlers.get(request.url.path)
        if handler is None:
            return httpx.Response(404, json={"detail": "not found"})
        return handler(request)

    def count(self, path: str) -> int:
        return self.seen.count(path)


_PATHS = {"completion": COMPLETION_PATH, "attestation": KEY_ATTESTATION_PATH}


def sealed(request: httpx.Request, plaintext: bytes) -> httpx.Response:
    """``plaintext`` encrypted to the requesting client's key, as a router seals a reply."""
    client_key = load_public_key_pem(urllib.parse.unquote(request.headers["x-public-key"]))
    return httpx.Response(200, content=encrypt_package(plaintext, client_key))


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def call(network: Network, keys_dir: Path, log: Path, **kwargs: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        kwargs.setdefault("max_retries", 0)
        client = SecureCompletionClient(
            ROUTER, transport=httpx.MockTransport(network), audit_log=str(log), **kwargs
        )
        async with client:
            client.load_keys(str(keys_dir / "private_key.pem"))
            return await client.send_secure_request(PAYLOAD, "pid-1")

    return asyncio.run(go())


def only_record(log: Path) -> dict[str, Any]:
    with sqlite3.connect(log) as db:
        found = [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]
    assert [r["payload_id"] for r in found] == ["pid-1"]
    return found[0]


# -- connection errors and timeouts, with their retries -------------------------------------------


def test_connection_refused_is_retried_then_raised_and_recorded(router_keys, client_keys_dir, tmp_path):
    network = Network(router_keys, completion=raising(httpx.ConnectError("connection refused")))
    log = tmp_path / "audit.db"
    with pytest.raises(APIConnectionError) as caught:
        call(network, client_keys_dir, log, max_retries=2)
    assert type(caught.value) is APIConnectionError
    assert "connection refused" in caught.value.message and ROUTER in caught.value.message
    assert network.count(COMPLETION_PATH) == 3  # the first attempt and two retries
    record = only_record(log)
    assert record["outcome"] == "http_error:APIConnectionError"
    assert record["error"]["code"] == "connection"
    assert record["request_digest"] is not None and record["response_digest"] is None


def test_connection_error_then_success_returns_the_reply(router_keys, client_keys_dir, tmp_path):
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:
            raise httpx.ConnectError("connection reset")
        return sealed(request, json.dumps({"choices": [], "_metadata": {"payload_id": "pid-1"}}).encode())

    log = tmp_path / "audit.db"
    reply = call(Network(router_keys, completion=flaky), client_keys_dir, log, max_retries=1)
    assert reply["_metadata"]["payload_id_verified"] is True
    assert len(attempts) == 2
    assert only_record(log)["outcome"] == "ok"


@pytest.mark.parametrize(
    "timeout", [httpx.ConnectTimeout("connect"), httpx.ReadTimeout("read"), httpx.PoolTimeout("pool")]
)
def test_a_timeout_is_api_timeout_error_after_its_retries(router_keys, client_keys_dir, tmp_path, timeout):
    network = Network(router_keys, completion=raising(timeout))
    log = tmp_path / "audit.db"
    with pytest.raises(APITimeoutError):
        call(network, client_keys_dir, log, max_retries=1)
    assert network.count(COMPLETION_PATH) == 2
    record = only_record(log)
    assert record["outcome"] == "http_error:APITimeoutError"
    assert record["error"]["code"] == "timeout"


def test_fetching_the_router_key_times_out_as_api_timeout_error(router_keys, client_keys_dir, tmp_path):
    network = Network(router_keys)
    network.handlers[PUBLIC_KEY_PATH] = raising(httpx.ReadTimeout("read"))
    log = tmp_path / "audit.db"
    with pytest.raises(APITimeoutError):
        call(network, client_keys_dir, log)
    assert network.count(COMPLETION_PATH) == 0
    assert only_record(log)["outcome"] == "http_error:APITimeoutError"


def test_a_503_is_retried_and_ends_as_service_unavailable(router_keys, client_keys_dir, tmp_path):
    busy = Network(router_keys, completion=lambda request: httpx.Response(503, json={"detail": "busy"}))
    log = tmp_path / "audit.db"
    with pytest.raises(ServiceUnavailableError) as caught:
        call(busy, client_keys_dir, log, max_retries=2)
    assert caught.value.status_code == 503 and "busy" in caught.value.message
    assert busy.count(COMPLETION_PATH) == 3
    assert only_record(log)["outcome"] == "http_error:ServiceUnavailableError"


def test_a_final_connection_error_is_not_retried(router_keys, client_keys_dir, tmp_path):
    import socket

    unresolvable = httpx.ConnectError("no such host")
    unresolvable.__cause__ = socket.gaierror(-2, "Name or service not known")
    network = Network(router_keys, completion=raising(unresolvable))
    log = tmp_path / "audit.db"
    with pytest.raises(APIConnectionError) as caught:
        call(network, client_keys_dir, log, max_retries=2)
    assert caught.value.code == "name_resolution"
    assert network.count(COMPLETION_PATH) == 1
    assert only_record(log)["error"]["code"] == "name_resolution"


# -- malformed decrypted JSON ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plaintext", "message"),
    [
        (b"{not json", "decrypted response"),
        (b'{"choices": [], "_metadata": {}, "x": NaN}', "NaN"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'{"choices": {"0": {}}}', "choices must be a list"),
        (b'{"choices": [], "_metadata": []}', "_metadata"),
        (b'{"choices": [], "_metadata": {"payload_id": 7}}', "payload_id must be a string"),
    ],
)
def test_malformed_decrypted_json_is_a_protocol_error(
    router_keys, client_keys_dir, tmp_path, plaintext, message
):
    network = Network(router_keys, completion=lambda request: sealed(request, plaintext))
    log = tmp_path / "audit.db"
    with pytest.raises(ProtocolError) as caught:
        call(network, client_keys_dir, log, max_retries=2)
    assert caught.value.code == "response_json"
    assert message in caught.value.message
    assert network.count(COMPLETION_PATH) == 1  # a malformed reply is final, never retried
    record = only_record(log)
    assert record["outcome"] == "security_error:response_json"
    error = {"code": "response_json", "class": "ProtocolError", "message": caught.value.message}
    assert record["error"] == error
    assert record["response_digest"] is None


def test_a_reply_bound_to_another_request_is_refused_and_recorded(router_keys, client_keys_dir, tmp_path):
    other = json.dumps({"choices": [], "_metadata": {"payload_id": "someone-else"}}).encode()
    network = Network(router_keys, completion=lambda request: sealed(request, other))
    log = tmp_path / "audit.db"
    with pytest.raises(SecurityError) as caught:
        call(network, client_keys_dir, log)
    assert caught.value.code == "payload_id_mismatch"
    assert only_record(log)["outcome"] == "security_error:payload_id_mismatch"


def test_an_invalid_payload_is_refused_before_sending_and_recorded(router_keys, client_keys_dir, tmp_path):
    network = Network(router_keys, completion=lambda request: httpx.Response(500))
    log = tmp_path / "audit.db"

    async def go() -> None:
        async with SecureCompletionClient(
            ROUTER, transport=httpx.MockTransport(network), audit_log=str(log)
        ) as client:
            client.load_keys(str(client_keys_dir / "private_key.pem"))
            await client.send_secure_request({"model": "echo", "x": float("nan")}, "pid-1")

    with pytest.raises(InvalidRequestError):
        asyncio.run(go())
    assert network.seen == []
    record = only_record(log)
    assert record["outcome"] == "http_error:InvalidRequestError" and record["request_digest"] is None


# -- key attestation failures: nothing is sent ---------------------------------------------------


def test_no_key_attestation_endpoint_sends_nothing(router_keys, client_keys_dir, tmp_path):
    network = Network(router_keys, completion=lambda request: httpx.Response(500))
    log = tmp_path / "audit.db"
    with pytest.raises(SecurityError) as caught:
        call(network, client_keys_dir, log, policy=PRODUCTION_UNANCHORED)
    assert caught.value.code == "key_attestation_unavailable"
    assert network.count(COMPLETION_PATH) == 0
    record = only_record(log)
    assert record["outcome"] == "security_error:key_attestation_unavailable"
    assert record["server_key_sha256"] is not None


def test_a_key_attestation_that_does_not_verify_is_a_policy_denial(router_keys, client_keys_dir, tmp_path):
    network = Network(
        router_keys,
        attestation=lambda request: httpx.Response(200, json={"tpm_attestation": {"quote": "forged"}}),
        completion=lambda request: httpx.Response(500),
    )
    log = tmp_path / "audit.db"
    with pytest.raises(PolicyViolationError) as caught:
        call(network, client_keys_dir, log, policy=PRODUCTION_UNANCHORED)
    assert "nothing was sent" in caught.value.message
    assert network.count(COMPLETION_PATH) == 0
    record = only_record(log)
    assert record["outcome"] == "policy_denied"
    assert record["policy"]["outcome"] == "deny"
    assert record["metadata"]["key_attestation"]["verification"]["result"] == "fail"


@pytest.mark.parametrize("timeout", [httpx.ReadTimeout("read"), httpx.ConnectTimeout("connect")])
def test_a_key_attestation_timeout_is_api_timeout_error(router_keys, client_keys_dir, tmp_path, timeout):
    network = Network(router_keys, attestation=raising(timeout), completion=lambda r: httpx.Response(500))
    log = tmp_path / "audit.db"
    with pytest.raises(APITimeoutError):
        call(network, client_keys_dir, log, policy=PRODUCTION_UNANCHORED)
    assert network.count(COMPLETION_PATH) == 0
    record = only_record(log)
    assert record["outcome"] == "http_error:APITimeoutError"
    assert record["error"]["code"] == "timeout"


def test_a_key_attestation_that_hangs_past_the_deadline_is_api_timeout_error(
    router_keys, client_keys_dir, tmp_path
):
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(500)

    network = Network(router_keys, completion=lambda r: httpx.Response(500))
    network.handlers[KEY_ATTESTATION_PATH] = hang  # type: ignore[assignment]
    log = tmp_path / "audit.db"
    with pytest.raises(APITimeoutError):
        call(network, client_keys_dir, log, policy=PRODUCTION_UNANCHORED, timeout=0.3)
    assert network.count(COMPLETION_PATH) == 0
    assert only_record(log)["outcome"] == "http_error:APITimeoutError"


def test_a_key_attestation_connection_error_is_api_connection_error(router_keys, client_keys_dir, tmp_path):
    network = Network(router_keys, attestation=raising(httpx.ConnectError("refused")))
    log = tmp_path / "audit.db"
    with pytest.raises(APIConnectionError) as caught:
        call(network, client_keys_dir, log, policy=PRODUCTION_UNANCHORED)
    assert type(caught.value) is APIConnectionError
    assert only_record(log)["outcome"] == "http_error:APIConnectionError"


# -- the rooms on their own: error mapping and the pure exchange step ----------------------------


@pytest.mark.parametrize(
    "timeout", [httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout]
)
def test_every_httpx_timeout_maps_to_api_timeout_error(timeout):
    from nomyo_audit.client._errors import map_httpx_exceptions

    with pytest.raises(APITimeoutError), map_httpx_exceptions(ROUTER + "/x", ROUTER):
        raise timeout("slow")


def test_other_httpx_errors_map_to_api_connection_error():
    from nomyo_audit.client._errors import map_httpx_exceptions

    with pytest.raises(APIConnectionError) as caught, map_httpx_exceptions(ROUTER + "/x", ROUTER):
        raise httpx.RemoteProtocolError("peer closed connection")
    assert type(caught.value) is APIConnectionError and caught.value.code == "connection"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_open_reply_is_bytes_in_and_a_bound_verified_reply_out(client_keys_dir):
    from nomyo_audit.client import load_key_pair
    from nomyo_audit.client._exchange import open_reply

    keys = load_key_pair(client_keys_dir / "private_key.pem")
    reply = {"choices": [{"message": {"content": "hi"}}], "_metadata": {"payload_id": "pid-1", "policy": "x"}}
    body = encrypt_package(json.dumps(reply).encode(), keys.private_key.public_key(), processed_at=5)
    opened = open_reply(body, "pid-1", keys.private_key)
    metadata = opened.response["_metadata"]
    assert metadata["payload_id_verified"] is True and metadata["dropped_router_fields"] == ["policy"]
    assert metadata["unauthenticated_processed_at"] == 5
    assert metadata["verification"] == opened.verdict.to_dict() and not opened.verdict.passed
    with pytest.raises(SecurityError, match="another request"):
        open_reply(body, "pid-2", keys.private_key)
    with pytest.raises(ProtocolError):
        open_reply(b"{}", "pid-1", keys.private_key)
