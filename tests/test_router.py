"""The reference router refuses every malformed or hostile request with the right status,
never crashes, and never lets plaintext into logs or error bodies."""

from __future__ import annotations

import json
import logging
import urllib.parse

import httpx
import pytest

from nomyo_audit.client._keys import load_key_pair
from nomyo_audit.wire import MAX_PACKAGE_BYTES, encrypt_package, public_key_pem

SECRET = "PATIENT-RECORD-4711"


@pytest.fixture(scope="module")
def client_pem(client_keys_dir) -> str:
    return load_key_pair(client_keys_dir / "private_key.pem").public_key_pem


def post(router, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(router.url + "/v1/chat/secure_completion", content=body, headers=headers, timeout=10)


def headers_for(client_pem: str, **extra: str) -> dict[str, str]:
    return {"X-Payload-ID": "p-1", "X-Public-Key": urllib.parse.quote(client_pem), **extra}


def seal(router_keys, payload) -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return encrypt_package(data, router_keys.private_key.public_key())


def test_public_key_endpoint(router, router_keys):
    response = httpx.get(router.url + "/pki/public_key")
    assert response.status_code == 200
    assert response.text == public_key_pem(router_keys.private_key.public_key())


@pytest.mark.parametrize(
    ("mutate", "status", "detail"),
    [
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Payload-ID"}, b), 400, "X-Payload-ID"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "X-Public-Key"}, b), 400, "X-Public-Key"),
        (lambda h, b: ({**h, "X-Public-Key": "garbage"}, b), 400, "not a valid PEM"),
        (lambda h, b: ({**h, "X-Security-Tier": "ultra"}, b), 400, "X-Security-Tier"),
        (lambda h, b: (h, b"not json"), 400, "not valid JSON"),
        (lambda h, b: (h, b.replace(b'"1.0"', b'"0.1"')), 400, "unsupported protocol version"),
        (lambda h, b: (h, b.replace(b"hybrid-aes256-rsa4096", b"hybrid-aes128-rsa2048")), 400, "algorithm"),
        (lambda h, b: (h, b[: len(b) // 2]), 400, "JSON"),
    ],
)
def test_malformed_requests_are_400(router, router_keys, client_pem, mutate, status, detail):
    headers, body = mutate(headers_for(client_pem), seal(router_keys, {"model": "m", "messages": [{}]}))
    response = post(router, body, headers)
    assert response.status_code == status
    assert detail in response.json()["detail"]


def test_bad_base64_is_400(router, router_keys, client_pem):
    package = json.loads(seal(router_keys, {"model": "m", "messages": [{}]}))
    package["encrypted_aes_key"] = "%%%"
    response = post(router, json.dumps(package).encode(), headers_for(client_pem))
    assert response.status_code == 400
    assert "base64" in response.json()["detail"]


def test_undecryptable_package_is_400(router, client_pem, client_keys_dir):
    other = load_key_pair(client_keys_dir / "private_key.pem").private_key.public_key()
    response = post(router, encrypt_package(b"{}", other), headers_for(client_pem))
    assert response.status_code == 400
    assert "could not decrypt" in response.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (b"\x00\x01 not json", "not valid JSON"),
        ([1, 2, 3], "JSON object"),
        ({"messages": [{"role": "user"}]}, "payload.model"),
        ({"model": "m", "messages": []}, "payload.messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ],
)
def test_bad_decrypted_payloads(router, router_keys, client_pem, payload, detail):
    response = post(router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 400
    assert detail in response.json()["detail"]


def test_oversized_body_is_413(router, client_pem):
    response = post(router, b" " * (MAX_PACKAGE_BYTES + 1), headers_for(client_pem))
    assert response.status_code == 413


def test_tier_policy_is_403(make_router, router_keys, client_pem):
    router = make_router(model_tiers={"gpt-*": ("high", "maximum")})
    body = seal(router_keys, {"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]})
    assert post(router, body, headers_for(client_pem)).status_code == 403  # default tier: standard
    body = seal(router_keys, {"model": "gpt-x", "messages": [{"role": "user", "content": "x"}]})
    assert post(router, body, headers_for(client_pem, **{"X-Security-Tier": "high"})).status_code == 200


def test_backend_crash_is_a_500_without_plaintext(make_router, router_keys, client_pem, caplog):
    class Exploding:
        async def complete(self, payload):
            raise RuntimeError(payload["messages"][0]["content"])

        async def aclose(self):
            return None

    router = make_router(backend=Exploding())
    body = seal(router_keys, {"model": "m", "messages": [{"role": "user", "content": SECRET}]})
    with caplog.at_level(logging.DEBUG):
        response = post(router, body, headers_for(client_pem))
    assert response.status_code == 500
    assert SECRET not in response.text
    assert SECRET not in caplog.text
    # and the router is still serving
    assert httpx.get(router.url + "/pki/public_key").status_code == 200


def test_plaintext_never_in_error_bodies_or_logs(router, router_keys, client_pem, caplog):
    cases = [
        {"model": "m", "messages": [{"role": "user", "content": SECRET}], "stream": True},
        {"model": "", "messages": [{"role": "user", "content": SECRET}]},
        [SECRET],
        SECRET.encode(),
    ]
    with caplog.at_level(logging.DEBUG):
        for payload in cases:
            response = post(router, seal(router_keys, payload), headers_for(client_pem))
            assert response.status_code == 400
            assert SECRET not in response.text
    assert SECRET not in caplog.text


def test_upstream_backend_forwards_decrypted_request(make_router, router_keys, client_pem, client_keys_dir):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from nomyo_audit.router import ServerThread, UpstreamBackend
    from nomyo_audit.wire import decrypt_package, parse_package

    seen = []

    async def completions(request: Request):
        seen.append(await request.json())
        return JSONResponse(
            {"id": "x", "object": "chat.completion", "model": "up", "choices": [], "usage": {}}
        )

    with ServerThread(Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])) as up:
        router = make_router(backend=UpstreamBackend(up.url + "/v1"))
        payload = {"model": "up", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
        response = post(router, seal(router_keys, payload), headers_for(client_pem))
    assert response.status_code == 200
    assert seen == [payload]
    private = load_key_pair(client_keys_dir / "private_key.pem").private_key
    reply = json.loads(decrypt_package(parse_package(response.content), private))
    assert reply["model"] == "up" and reply["_metadata"]["payload_id"] == "p-1"


def test_unreachable_upstream_is_503(make_router, router_keys, client_pem):
    from nomyo_audit.router import UpstreamBackend
    from nomyo_audit.router._server import free_port

    port = free_port()
    router = make_router(backend=UpstreamBackend(f"http://127.0.0.1:{port}"))
    body = seal(router_keys, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    response = post(router, body, headers_for(client_pem))
    assert response.status_code == 503
    assert "unreachable" in response.json()["detail"]
