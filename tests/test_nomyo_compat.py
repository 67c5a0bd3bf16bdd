"""Wire compatibility, proved against code we did not write: the real nomyo 0.2.9 from PyPI.

* the nomyo client completes chats against our router;
* our client decrypts packages built by nomyo's own encryption code (which is
  also how a NOMYO server seals responses: same package, other direction);
* nomyo's decryption code opens packages built by ours.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from nomyo_audit import SecureCompletionClient
from nomyo_audit.client._keys import load_key_pair
from nomyo_audit.router import ServerThread
from nomyo_audit.wire import decrypt_package, encrypt_package, parse_package

HELLO = [{"role": "user", "content": "hello from nomyo"}]

# nomyo warns on every http:// client; these tests run on loopback on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*Using HTTP instead of HTTPS:UserWarning")


def nomyo_chat(nomyo_reference, router, **kwargs):
    async def go():
        client = nomyo_reference.SecureChatCompletion(router.url, allow_http=True, secure_memory=False)
        return await client.create(model="echo", messages=HELLO, **kwargs)

    return asyncio.run(go())


def test_nomyo_client_completes_a_plain_chat(nomyo_reference, router):
    reply = nomyo_chat(nomyo_reference, router, temperature=0.2)
    assert reply["choices"][0]["message"]["content"] == "echo: hello from nomyo"
    assert reply["_metadata"]["is_encrypted"] is True
    assert reply["_metadata"]["tpm_attestation"] == {"is_available": False}
    assert router.config.backend.payloads[-1]["temperature"] == 0.2


def test_nomyo_client_with_tools(nomyo_reference, router):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    reply = nomyo_chat(nomyo_reference, router, tools=tools, tool_choice="auto")
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert reply["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert router.config.backend.payloads[-1]["tools"] == tools


@pytest.mark.parametrize("tier", ["standard", "high", "maximum"])
def test_nomyo_client_with_each_security_tier(nomyo_reference, router, tier):
    reply = nomyo_chat(nomyo_reference, router, security_tier=tier)
    assert reply["_metadata"]["security_tier"] == tier
    assert "security_tier" not in router.config.backend.payloads[-1]


def test_nomyo_client_with_api_key(nomyo_reference, make_router):
    router = make_router(api_keys=("k-123",))

    async def go(key):
        client = nomyo_reference.SecureChatCompletion(
            router.url, allow_http=True, api_key=key, secure_memory=False
        )
        return await client.create(model="echo", messages=HELLO)

    assert asyncio.run(go("k-123"))["choices"][0]["message"]["content"].startswith("echo:")
    with pytest.raises(nomyo_reference.AuthenticationError):
        asyncio.run(go("wrong"))


def test_nomyo_sees_our_status_codes(nomyo_reference, make_router):
    router = make_router(model_tiers={"echo": ("standard",)})
    with pytest.raises(nomyo_reference.ForbiddenError):
        nomyo_chat(nomyo_reference, router, security_tier="maximum")


def test_our_client_decrypts_a_package_sealed_by_nomyo(nomyo_reference, client_keys_dir):
    """nomyo's encryption code seals a response to our client's key, as a NOMYO server would."""
    ours = load_key_pair(client_keys_dir / "private_key.pem")
    key_server = ServerThread(
        Starlette(routes=[Route("/pki/public_key", lambda request: PlainTextResponse(ours.public_key_pem))])
    )
    response_body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "sealed by nomyo"}}],
        "_metadata": {
            "payload_id": "pid-9",
            "security_tier": "high",
            "tpm_attestation": {"is_available": False},
        },
    }

    async def go():
        sealer = nomyo_reference.SecureCompletionClient.SecureCompletionClient(
            router_url=key_server.url, allow_http=True
        )
        sealer.generate_keys()
        package = json.loads(await sealer.encrypt_payload(response_body))
        package["processed_at"] = 1700000000
        client = SecureCompletionClient("https://unused.example")
        client.load_keys(str(client_keys_dir / "private_key.pem"))
        return await client.decrypt_response(json.dumps(package).encode(), "pid-9")

    with key_server:
        reply = asyncio.run(go())
    assert reply["choices"][0]["message"]["content"] == "sealed by nomyo"
    assert reply["_metadata"]["payload_id_verified"] is True
    # The package's processed_at is outside the ciphertext: kept aside, never taken as the reply's time.
    assert "processed_at" not in reply["_metadata"]
    assert reply["_metadata"]["unauthenticated_processed_at"] == 1700000000
    assert reply["_metadata"]["security_tier"] == "high"


def test_nomyo_decrypts_a_package_sealed_by_us(nomyo_reference, client_keys_dir):
    ours = load_key_pair(client_keys_dir / "private_key.pem")
    body = {"object": "chat.completion", "choices": [], "_metadata": {"payload_id": "pid-1"}}
    sealed = encrypt_package(json.dumps(body).encode(), ours.private_key.public_key(), processed_at=5)

    async def go():
        reference = nomyo_reference.SecureCompletionClient.SecureCompletionClient(
            router_url="https://unused.example"
        )
        reference.load_keys(str(client_keys_dir / "private_key.pem"))
        return await reference.decrypt_response(sealed, "pid-1")

    reply = asyncio.run(go())
    assert reply["_metadata"]["processed_at"] == 5
    assert reply["_metadata"]["encryption_algorithm"] == "hybrid-aes256-rsa4096"


def test_nomyo_request_package_opens_with_our_router_code(nomyo_reference, router_keys):
    """The request direction, byte for byte: nomyo seals, our wire module opens."""
    from nomyo_audit.wire import public_key_pem

    pem = public_key_pem(router_keys.private_key.public_key())
    key_server = ServerThread(Starlette(routes=[Route("/pki/public_key", lambda r: PlainTextResponse(pem))]))
    payload = {"model": "m", "messages": HELLO, "seed": 1}

    async def go():
        sealer = nomyo_reference.SecureCompletionClient.SecureCompletionClient(
            router_url=key_server.url, allow_http=True
        )
        sealer.generate_keys()
        return await sealer.encrypt_payload(payload)

    with key_server:
        sealed = asyncio.run(go())
    assert json.loads(decrypt_package(parse_package(sealed), router_keys.private_key)) == payload
