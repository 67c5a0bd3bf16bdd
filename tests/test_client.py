"""The secure client against real routers on loopback: honest ones and hostile ones."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.parse
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from nomyo_audit import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    ForbiddenError,
    InvalidRequestError,
    NomyoAuditError,
    ProtocolError,
    RateLimitError,
    SecureChatCompletion,
    SecureCompletionClient,
    SecurityError,
    ServerError,
    ServiceUnavailableError,
    SyncSecureChatCompletion,
)
from nomyo_audit.router import ServerThread
from nomyo_audit.wire import decrypt_package, encrypt_package, key_fingerprint, parse_package, public_key_pem

HELLO = [{"role": "user", "content": "hello"}]


def chat(url: str, keys_dir, **kwargs: Any) -> SecureChatCompletion:
    return SecureChatCompletion(url, allow_http=True, key_dir=str(keys_dir), **kwargs)


def run(coro):
    return asyncio.run(coro)


async def create(client: SecureChatCompletion, *args: Any, **kwargs: Any) -> dict[str, Any]:
    async with client:
        return await client.create(*args, **kwargs)


# -- the seed API, end to end ----------------------------------------------


def test_create_returns_openai_shape_with_metadata(router, client_keys_dir):
    reply = run(create(chat(router.url, client_keys_dir), "echo", HELLO))
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "echo: hello"}
    assert (
        reply["usage"]["total_tokens"]
        == reply["usage"]["prompt_tokens"] + reply["usage"]["completion_tokens"]
    )
    meta = reply["_metadata"]
    assert meta["is_encrypted"] is True
    assert meta["encryption_algorithm"] == "nomyo-audit-v2-hpke"  # protocol 2: our router offers it
    assert meta["protocol"] == "2"
    assert meta["payload_id_verified"] is True
    assert isinstance(meta["processed_at"], int)
    assert meta["security_tier"] == "standard"
    assert set(meta["memory_protection"]) == {
        "platform",
        "memory_locking",
        "secure_zeroing",
        "core_dump_prevention",
    }
    assert meta["cuda_device"]["available"] in (True, False)
    assert meta["tpm_attestation"] == {"is_available": False}


def test_acreate_is_an_alias(router, client_keys_dir):
    async def go():
        async with chat(router.url, client_keys_dir) as client:
            return await client.acreate("echo", HELLO)

    assert run(go())["choices"][0]["message"]["content"] == "echo: hello"


def test_openai_parameters_travel_in_the_encrypted_payload(router, client_keys_dir):
    params = {
        "temperature": 0.3,
        "max_tokens": 12,
        "top_p": 0.9,
        "frequency_penalty": 0.1,
        "presence_penalty": 0.2,
        "stop": ["\n"],
        "n": 1,
        "user": "u-1",
        "seed": 7,
        "logit_bias": {"50256": -100},
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        "tool_choice": "auto",
    }
    reply = run(create(chat(router.url, client_keys_dir), "echo", HELLO, **params))
    received = router.config.backend.payloads[-1]
    assert received == {"model": "echo", "messages": HELLO, **params}
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"


def test_security_tier_is_a_header_never_in_the_payload(router, client_keys_dir):
    reply = run(create(chat(router.url, client_keys_dir), "echo", HELLO, security_tier="maximum"))
    assert reply["_metadata"]["security_tier"] == "maximum"
    assert "security_tier" not in router.config.backend.payloads[-1]


@pytest.mark.parametrize("tier", ["low", "MAXIMUM", "", 3])
def test_invalid_tier_is_a_value_error_before_sending(router, client_keys_dir, tier):
    with pytest.raises(ValueError, match="security_tier"):
        run(create(chat(router.url, client_keys_dir), "echo", HELLO, security_tier=tier))
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_stream_is_refused_before_sending(router, client_keys_dir):
    with pytest.raises(InvalidRequestError, match="stream"):
        run(create(chat(router.url, client_keys_dir), "echo", HELLO, stream=True))
    assert sum(router.app.state.requests.values()) == 0


@pytest.mark.parametrize(
    ("model", "messages"),
    [("", HELLO), ("echo", []), ("echo", "hello"), ("echo", [{"content": "no role"}]), (None, HELLO)],
)
def test_malformed_chat_arguments(router, client_keys_dir, model, messages):
    with pytest.raises(InvalidRequestError):
        run(create(chat(router.url, client_keys_dir), model, messages))
    assert sum(router.app.state.requests.values()) == 0


def test_api_key_travels_only_as_bearer_and_per_call_key_wins(make_router, client_keys_dir):
    router = make_router(api_keys=("instance-key", "call-key"))
    backend = router.config.backend
    run(create(chat(router.url, client_keys_dir, api_key="instance-key"), "echo", HELLO))
    run(create(chat(router.url, client_keys_dir, api_key="wrong"), "echo", HELLO, api_key="call-key"))
    assert all("api_key" not in p for p in backend.payloads)
    with pytest.raises(AuthenticationError) as err:
        run(create(chat(router.url, client_keys_dir, api_key="wrong"), "echo", HELLO))
    assert err.value.status_code == 401
    with pytest.raises(AuthenticationError, match="missing API key"):
        run(create(chat(router.url, client_keys_dir), "echo", HELLO))


def test_forbidden_tier_maps_to_forbidden_error(make_router, client_keys_dir):
    router = make_router(model_tiers={"echo": ("standard",)})
    with pytest.raises(ForbiddenError) as err:
        run(create(chat(router.url, client_keys_dir), "echo", HELLO, security_tier="maximum"))
    assert err.value.status_code == 403


def test_sync_client(router, client_keys_dir):
    with SyncSecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
        first = client.create("echo", HELLO)
        second = client.create("echo", [{"role": "user", "content": "again"}])
    assert first["choices"][0]["message"]["content"] == "echo: hello"
    assert second["choices"][0]["message"]["content"] == "echo: again"
    assert len(router.app.state.clients) == 1  # one pooled connection across calls


def test_sync_client_works_inside_a_running_loop(router, client_keys_dir):
    async def notebook_cell():
        with SyncSecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            return client.create("echo", HELLO)

    assert run(notebook_cell())["choices"][0]["message"]["content"] == "echo: hello"


# -- better than the reference ----------------------------------------------


def test_one_pooled_connection_and_one_key_fetch(router, client_keys_dir):
    async def go():
        async with chat(router.url, client_keys_dir) as client:
            for _ in range(5):
                await client.create("echo", HELLO)

    run(go())
    assert router.app.state.requests["/pki/v2/key_config"] == 1  # protocol 2's key, fetched once
    assert router.app.state.requests["/v2/chat/secure_completion"] == 5
    assert len(router.app.state.clients) == 1


def test_pinned_server_key_accepted(router, client_keys_dir, router_keys):
    pin = key_fingerprint(router_keys.private_key.public_key())
    reply = run(create(chat(router.url, client_keys_dir, server_key_fingerprint=pin.upper()), "echo", HELLO))
    assert reply["_metadata"]["payload_id_verified"]


def test_pin_mismatch_raises_before_any_prompt_is_sent(router, client_keys_dir):
    with pytest.raises(SecurityError) as err:
        run(create(chat(router.url, client_keys_dir, server_key_fingerprint="ab" * 32), "echo", HELLO))
    assert err.value.code == "server_key_pin"
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_bad_pin_format_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="64 hex"):
        SecureChatCompletion("https://example.org", server_key_fingerprint="abc")


def test_https_enforced_unless_allow_http():
    with pytest.raises(SecurityError, match="HTTPS"):
        SecureChatCompletion("http://127.0.0.1:1")
    with pytest.raises(ConfigurationError):
        SecureChatCompletion("ftp://example.org")
    SecureChatCompletion("http://127.0.0.1:1", allow_http=True)
    with pytest.warns(UserWarning, match="non-loopback"):
        SecureChatCompletion("http://example.org", allow_http=True)


def test_concurrent_first_calls_generate_one_key_pair(router, tmp_path):
    client = SecureChatCompletion(router.url, allow_http=True, key_dir=str(tmp_path / "k"))

    async def go():
        async with client:
            return await asyncio.gather(*(client.create("echo", HELLO) for _ in range(4)))

    assert len(run(go())) == 4
    assert sorted(os.listdir(tmp_path / "k")) == ["private_key.pem", "public_key.pem"]
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "private_key.pem").st_mode) == 0o600
    assert client.client.key_bits == 4096 and client.client.private_key.key_size == 4096


def test_key_generation_does_not_block_the_event_loop(router, tmp_path):
    async def go():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        client = SecureCompletionClient(router.url, allow_http=True)
        await client.ensure_keys()
        task.cancel()
        await client.aclose()
        return ticks

    assert run(go()) >= 3  # the loop kept ticking while RSA-4096 was generated


# -- response binding and hostile servers --------------------------------------


def hostile_router(router_keys, handler) -> ServerThread:
    """A router that speaks the protocol but answers through ``handler(request, payload, client_key)``."""
    pem = public_key_pem(router_keys.private_key.public_key())
    state: dict[str, Any] = {"bodies": [], "calls": 0}

    async def public_key(request: Request) -> Response:
        return PlainTextResponse(pem)

    async def completion(request: Request) -> Response:
        from nomyo_audit.wire import load_public_key_pem

        state["calls"] += 1
        body = await request.body()
        state["bodies"].append(body)
        client_key = load_public_key_pem(urllib.parse.unquote(request.headers["x-public-key"]))
        payload = json.loads(decrypt_package(parse_package(body), router_keys.private_key))
        return await handler(request, payload, client_key, state)

    app = Starlette(
        routes=[
            Route("/pki/public_key", public_key),
            Route("/v1/chat/secure_completion", completion, methods=["POST"]),
        ]
    )
    server = ServerThread(app).start()
    server.state = state  # type: ignore[attr-defined]
    return server


def sealed_reply(client_key, metadata: dict[str, Any]) -> Response:
    body = {"object": "chat.completion", "choices": [], "_metadata": metadata}
    return Response(encrypt_package(json.dumps(body).encode(), client_key, processed_at=1))


def test_response_bound_to_another_request_is_refused(router_keys, client_keys_dir):
    async def handler(request, payload, client_key, state):
        return sealed_reply(client_key, {"payload_id": "someone-elses-request"})

    with hostile_router(router_keys, handler) as server, pytest.raises(SecurityError) as err:
        run(create(chat(server.url, client_keys_dir), "echo", HELLO))
    assert err.value.code == "payload_id_mismatch"


def test_server_that_does_not_echo_payload_id_is_accepted_but_flagged(router_keys, client_keys_dir):
    async def handler(request, payload, client_key, state):
        return sealed_reply(client_key, {"security_tier": "standard"})

    with hostile_router(router_keys, handler) as server:
        reply = run(create(chat(server.url, client_keys_dir), "echo", HELLO))
    assert reply["_metadata"]["payload_id_verified"] is False
    assert reply["_metadata"]["security_tier"] == "standard"


def test_tampered_response_is_a_security_error_not_a_connection_error(router_keys, client_keys_dir):
    async def handler(request, payload, client_key, state):
        package = json.loads(encrypt_package(b'{"_metadata": {}}', client_key))
        package["encrypted_payload"]["ciphertext"] = package["encrypted_payload"]["ciphertext"][::-1]
        return Response(json.dumps(package).encode())

    with hostile_router(router_keys, handler) as server, pytest.raises(SecurityError) as err:
        run(create(chat(server.url, client_keys_dir), "echo", HELLO))
    assert not isinstance(err.value, APIConnectionError)


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": "2.0"}',
        json.dumps(
            {"version": "1.0", "algorithm": "none", "encrypted_payload": {}, "encrypted_aes_key": ""}
        ).encode(),
    ],
)
def test_garbage_or_downgraded_response(router_keys, client_keys_dir, body):
    async def handler(request, payload, client_key, state):
        return Response(body)

    with hostile_router(router_keys, handler) as server, pytest.raises(ProtocolError):
        run(create(chat(server.url, client_keys_dir), "echo", HELLO))


def test_response_encrypted_to_another_key(router_keys, client_keys_dir):
    async def handler(request, payload, client_key, state):
        return sealed_reply(router_keys.private_key.public_key(), {})

    with hostile_router(router_keys, handler) as server:
        with pytest.raises(SecurityError, match="decryption failed"):
            run(create(chat(server.url, client_keys_dir), "echo", HELLO))


# -- errors and retries -------------------------------------------------------------


def failing_then_ok(router_keys, statuses: list[int], headers: dict[str, str] | None = None) -> ServerThread:
    async def handler(request, payload, client_key, state):
        if state["calls"] <= len(statuses):
            status = statuses[state["calls"] - 1]
            return JSONResponse({"detail": f"status {status}"}, status_code=status, headers=headers)
        return sealed_reply(client_key, {"payload_id": request.headers["x-payload-id"]})

    return hostile_router(router_keys, handler)


def test_retries_503_then_succeeds_with_fresh_encryption(router_keys, client_keys_dir):
    with failing_then_ok(router_keys, [503, 502], {"retry-after-ms": "10"}) as server:
        reply = run(create(chat(server.url, client_keys_dir), "echo", HELLO))
        bodies = server.state["bodies"]
    assert reply["_metadata"]["payload_id_verified"]
    assert len(bodies) == 3
    nonces = {json.loads(b)["encrypted_payload"]["nonce"] for b in bodies}
    keys = {json.loads(b)["encrypted_aes_key"] for b in bodies}
    assert len(nonces) == 3 and len(keys) == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, RateLimitError), (500, ServerError), (503, ServiceUnavailableError), (504, ServerError)],
)
def test_retryable_status_exhausts_retries(router_keys, client_keys_dir, status, error):
    with failing_then_ok(router_keys, [status] * 5, {"retry-after-ms": "5"}) as server:
        with pytest.raises(error) as err:
            run(create(chat(server.url, client_keys_dir, max_retries=2), "echo", HELLO))
        assert server.state["calls"] == 3
    assert err.value.status_code == status
    assert f"status {status}" in str(err.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, InvalidRequestError), (401, AuthenticationError), (403, ForbiddenError), (404, APIError)],
)
def test_other_4xx_never_retried(router_keys, client_keys_dir, status, error):
    with failing_then_ok(router_keys, [status] * 3) as server:
        with pytest.raises(error):
            run(create(chat(server.url, client_keys_dir), "echo", HELLO))
        assert server.state["calls"] == 1


def test_total_timeout_bounds_the_call(router_keys, client_keys_dir):
    async def handler(request, payload, client_key, state):
        await asyncio.sleep(5)
        return Response(b"")

    with hostile_router(router_keys, handler) as server, pytest.raises(APITimeoutError):
        run(create(chat(server.url, client_keys_dir, timeout=0.5), "echo", HELLO))


def test_unreachable_router_is_an_api_connection_error(client_keys_dir):
    from nomyo_audit.router._server import free_port

    port = free_port()
    with pytest.raises(APIConnectionError) as err:
        run(create(chat(f"http://127.0.0.1:{port}", client_keys_dir, max_retries=0), "echo", HELLO))
    assert isinstance(err.value, APIError) and isinstance(err.value, NomyoAuditError)


# -- keys ----------------------------------------------------------------------------


def test_generate_keys_saves_0600_and_encrypts_with_password(tmp_path):
    client = SecureCompletionClient("https://example.org", key_bits=2048)
    client.generate_keys(save_to_file=True, key_dir=str(tmp_path), password="s3cret")
    private = tmp_path / "private_key.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"ENCRYPTED" in private.read_bytes()
    other = SecureCompletionClient("https://example.org")
    other.load_keys(str(private), password="s3cret")
    assert other.public_key_pem == client.public_key_pem
    with pytest.raises(ConfigurationError, match="wrong password"):
        other.load_keys(str(private), password="nope")
    with pytest.raises(ConfigurationError, match="encrypted"):
        other.load_keys(str(private))


def test_existing_key_files_never_overwritten(tmp_path):
    client = SecureCompletionClient("https://example.org", key_bits=2048)
    client.generate_keys(save_to_file=True, key_dir=str(tmp_path))
    before = (tmp_path / "private_key.pem").read_bytes()
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        client.generate_keys(save_to_file=True, key_dir=str(tmp_path))
    assert (tmp_path / "private_key.pem").read_bytes() == before


def test_corrupt_key_file_is_an_error_not_a_regeneration(router, tmp_path):
    (tmp_path / "private_key.pem").write_text("garbage")
    with pytest.raises(ConfigurationError, match="not a PEM private key"):
        run(create(SecureChatCompletion(router.url, allow_http=True, key_dir=str(tmp_path)), "echo", HELLO))
    assert (tmp_path / "private_key.pem").read_text() == "garbage"


def test_small_keys_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    path = tmp_path / "small.pem"
    path.write_bytes(
        small.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(ConfigurationError, match="1024 bits; at least 2048"):
        SecureCompletionClient("https://example.org").load_keys(str(path))


def test_mismatched_public_key_file(tmp_path, client_keys_dir):
    client = SecureCompletionClient("https://example.org", key_bits=2048)
    client.generate_keys(save_to_file=True, key_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="does not match"):
        client.load_keys(str(tmp_path / "private_key.pem"), str(client_keys_dir / "public_key.pem"))


# -- the lower-level API -------------------------------------------------------------


def test_encrypt_payload_validation(router, client_keys_dir):
    async def go(payload):
        async with SecureCompletionClient(router.url, allow_http=True) as client:
            client.load_keys(str(client_keys_dir / "private_key.pem"))
            return await client.encrypt_payload(payload)

    for bad in ([1, 2], {}, "text"):
        with pytest.raises(InvalidRequestError):
            run(go(bad))
    with pytest.raises(InvalidRequestError, match="JSON"):
        run(go({"x": object()}))
    with pytest.raises(InvalidRequestError, match="limit"):
        run(go({"x": "a" * (11 * 1024 * 1024)}))
    assert json.loads(run(go({"model": "m"})))["version"] == "1.0"


def test_send_secure_request_with_explicit_payload_id(router, client_keys_dir):
    async def go():
        async with SecureCompletionClient(router.url, allow_http=True) as client:
            client.load_keys(str(client_keys_dir / "private_key.pem"))
            assert (await client.fetch_server_public_key()).startswith("-----BEGIN PUBLIC KEY-----")
            return await client.send_secure_request(
                {"model": "echo", "messages": HELLO}, "req-42", None, "high"
            )

    reply = run(go())
    assert reply["_metadata"]["payload_id"] == "req-42"
    assert reply["_metadata"]["security_tier"] == "high"


def test_decrypt_without_keys_is_a_security_error():
    client = SecureCompletionClient("https://example.org")
    with pytest.raises(SecurityError, match="not initialised"):
        run(
            client.decrypt_response(
                b'{"version":"1.0","algorithm":"hybrid-aes256-rsa4096",'
                b'"encrypted_payload":{"ciphertext":"","nonce":"AAAAAAAAAAAAAAAA",'
                b'"tag":"AAAAAAAAAAAAAAAAAAAAAA=="},"encrypted_aes_key":""}',
                "p",
            )
        )


def test_plaintext_never_in_error_messages(router_keys, client_keys_dir):
    secret = "TOP-SECRET-PROMPT-7f3a"

    async def handler(request, payload, client_key, state):
        return JSONResponse({"detail": "bad request"}, status_code=400)

    with hostile_router(router_keys, handler) as server, pytest.raises(InvalidRequestError) as err:
        run(create(chat(server.url, client_keys_dir), "echo", [{"role": "user", "content": secret}]))
    assert secret not in str(err.value) and secret not in repr(err.value.error_details)


def test_key_files_are_never_written_through_a_planted_symlink(tmp_path):
    """A symlink at the key path, even one pointing nowhere yet, is refused; its target stays absent."""
    keys, elsewhere = tmp_path / "keys", tmp_path / "elsewhere.pem"
    keys.mkdir()
    (keys / "private_key.pem").symlink_to(elsewhere)
    client = SecureCompletionClient("https://example.org", key_bits=2048)
    with pytest.raises(ConfigurationError, match="refusing to overwrite"):
        client.generate_keys(save_to_file=True, key_dir=str(keys))
    assert not elsewhere.exists() and not (keys / "public_key.pem").exists()


def test_a_new_key_directory_is_private(tmp_path):
    client = SecureCompletionClient("https://example.org", key_bits=2048)
    client.generate_keys(save_to_file=True, key_dir=str(tmp_path / "new"))
    assert stat.S_IMODE(os.stat(tmp_path / "new").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "public_key.pem").st_mode) == 0o644
