"""Review R2 of issue 13 (protocol 1.0 client-key binding and protocol 2): attacks that found defects.

Every attacker here is a real httpx transport around a real loopback connection to our router: it
changes bytes on the wire and nothing in the client or the router.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomyo_audit import SecureChatCompletion
from nomyo_audit._protocol2 import DHKEM_X25519, XWING, KeyConfig, RouterKeys, seal_request
from nomyo_audit.errors import ProtocolError
from nomyo_audit.wire import COMPLETION_V2_PATH, KEY_CONFIG_PATH

HELLO = [{"role": "user", "content": "review secret"}]


class RewriteKeyConfig(httpx.AsyncBaseTransport):
    """On the path: rewrites the JSON of ``GET /pki/v2/key_config`` with ``change``."""

    def __init__(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.change = change

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != KEY_CONFIG_PATH:
            return response
        document = json.loads(await response.aread())
        return httpx.Response(200, json=self.change(document))

    async def aclose(self) -> None:
        await self.inner.aclose()


def chat(router, keys_dir, *, transport=None, protocol="auto", policy=None):
    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(keys_dir), transport=transport, protocol=protocol,
            policy=policy,
        ) as client:
            return await client.create("echo", HELLO)

    return asyncio.run(go())


def _huge_kem_name(document: dict[str, Any]) -> dict[str, Any]:
    document["public_keys"]["0" * 5000] = document["public_keys"].pop("32")
    return document


def test_key_config_with_a_5000_digit_kem_id_is_bad_key_config_not_value_error() -> None:
    """Before: int() of a 5000-digit key name raised ValueError (Python's 4300-digit limit) out of
    KeyConfig.from_json, the one parser that promises only ProtocolError."""
    document = RouterKeys.generate(60, now=1_700_000_000).config.to_json()
    with pytest.raises(ProtocolError) as refused:
        KeyConfig.from_json(_huge_kem_name(document))
    assert refused.value.code == "v2_bad_key_config"


def test_client_refuses_a_key_config_with_a_5000_digit_kem_id(router, client_keys_dir):
    with pytest.raises(ProtocolError) as refused:
        chat(router, client_keys_dir, transport=RewriteKeyConfig(_huge_kem_name))
    assert refused.value.code == "v2_bad_key_config"
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0


def _zero_x25519(document: dict[str, Any]) -> dict[str, Any]:
    """Every X25519 public key (DHKEM's, and X-Wing's X25519 half) becomes the all-zero point."""
    for name, encoded in document["public_keys"].items():
        raw = base64.b64decode(encoded)
        document["public_keys"][name] = base64.b64encode(raw[:-32] + bytes(32)).decode()
    return document


@pytest.mark.parametrize("suite", [DHKEM_X25519, XWING], ids=["x25519", "x-wing"])
def test_sealing_to_a_low_order_x25519_key_is_bad_key_config(suite) -> None:
    """Before: cryptography's 'Error computing shared key' ValueError escaped seal_request."""
    config = KeyConfig.from_json(_zero_x25519(RouterKeys.generate(60, now=1_700_000_000).config.to_json()))
    with pytest.raises(ProtocolError) as refused:
        seal_request(config, b"{}", payload_id="p", security_tier="standard", model="m", suite=suite)
    assert refused.value.code == "v2_bad_key_config"


def test_client_refuses_a_key_config_with_a_low_order_key(router, client_keys_dir):
    with pytest.raises(ProtocolError) as refused:
        chat(router, client_keys_dir, transport=RewriteKeyConfig(_zero_x25519))
    assert refused.value.code == "v2_bad_key_config"
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0


# -- protocol 1.0: what the client-key binding does not catch ----------------------------------


class DuplicatingProxy(httpx.AsyncBaseTransport):
    """On the path: sends the client's 1.0 package a second time with ``X-Public-Key`` swapped for
    its own key, reads that reply, and forwards the client's request and the router's reply untouched."""

    def __init__(self) -> None:
        from nomyo_audit.client._keys import generate_key_pair

        self.inner = httpx.AsyncHTTPTransport()
        self.attacker = generate_key_pair(2048)
        self.seen: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import urllib.parse

        from nomyo_audit.wire import COMPLETION_PATH, decrypt_package, parse_package

        if request.url.path == COMPLETION_PATH:
            body = await request.aread()
            headers = dict(request.headers)
            headers["x-public-key"] = urllib.parse.quote(self.attacker.public_key_pem)
            copy = await self.inner.handle_async_request(
                httpx.Request(request.method, request.url, headers=headers, content=body)
            )
            sealed = await copy.aread()
            self.seen.append(json.loads(decrypt_package(parse_package(sealed), self.attacker.private_key)))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def bound_policy() -> Any:
    """production's checks with require_key_binding, and any AIK (a software TPM here)."""
    from nomyo_audit import load_policy
    from nomyo_audit.policy import Policy

    base = load_policy("production")
    spec = {**base.spec, "require_key_binding": True, "aik_trust": {"mode": "any"}}
    return Policy(base.name, base.description, spec)  # type: ignore[typeddict-item]


def test_protocol_1_0_binding_does_not_detect_a_duplicated_request(make_router, client_keys_dir, router_keys):
    """Protocol 1.0 has no replay protection: an attacker who sends the client's package again with
    its own X-Public-Key reads a reply to the same prompt, and the client, which gets the genuine
    reply bound to its own key, accepts it under production with nothing to detect. The docs said
    the binding makes the client refuse a read reply ("only after the attacker has read it"); they
    now say this read is silent, and only protocol 2 (or TLS) prevents it."""
    from nomyo_audit.attest._attester import TPMAttester
    from nomyo_audit.attest._software import SoftwareTPM
    from nomyo_audit.tpm._measurements import measure_demo_boot
    from nomyo_audit.wire import key_fingerprint

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    proxy = DuplicatingProxy()

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), transport=proxy, protocol="1.0",
            policy=bound_policy(),
            server_key_fingerprint=key_fingerprint(router_keys.private_key.public_key()),
        ) as client:
            return await client.create("echo", HELLO)

    reply = asyncio.run(go())
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert reply["_metadata"]["verification"]["facts"]["key_binding"] == "bound"
    assert proxy.seen[0]["choices"][0]["message"]["content"] == "echo: review secret"
    docs = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    assert "without the client ever seeing a substitution" in docs


# -- protocol 2: the replay window ---------------------------------------------------------------


def test_a_wall_clock_step_does_not_open_the_replay_window(router, monkeypatch):
    """The replay window needs a clock that does not jump (ReplayWindow's contract); the router fed
    it time.time(), so an NTP step forward of ten minutes forgot every encapsulation and a replay
    within the real window was processed again. It now uses time.monotonic()."""
    import time as time_module

    config = KeyConfig.from_json(httpx.get(router.url + KEY_CONFIG_PATH).json())
    payload = json.dumps({"model": "echo", "messages": HELLO}).encode()
    body, _ = seal_request(config, payload, payload_id="pid-r2", security_tier="standard", model="echo")
    assert httpx.post(router.url + COMPLETION_V2_PATH, content=body).status_code == 200
    real = time_module.time
    monkeypatch.setattr(time_module, "time", lambda: real() + 700)  # the wall clock steps 700 s ahead
    replayed = httpx.post(router.url + COMPLETION_V2_PATH, content=body)
    assert replayed.status_code == 409
    assert replayed.json()["error"]["code"] == "v2_replay"
    assert len(router.config.backend.payloads) == 1


# -- protocol 2 carries what 1.0 carries ---------------------------------------------------------


def _big_chat(router, keys_dir, protocol: str, size: int) -> dict[str, Any]:
    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(keys_dir), protocol=protocol
        ) as client:
            return await client.create("echo", [{"role": "user", "content": "x" * size}])

    return asyncio.run(go())


def test_protocol_2_carries_a_9_mib_prompt_as_1_0_does(router, client_keys_dir):
    """Before: seal_request capped the payload at 8 MiB (half the package limit), so with protocol 2,
    now the default, a 9 MiB prompt that 1.0 carries failed as ProtocolError v2_malformed."""
    reply = _big_chat(router, client_keys_dir, "2", 9 * 1024 * 1024)
    assert reply["_metadata"]["protocol"] == "2"
    assert len(reply["choices"][0]["message"]["content"]) == 9 * 1024 * 1024 + len("echo: ")


@pytest.mark.parametrize("protocol", ["1.0", "2"])
def test_a_payload_over_10_mib_is_the_same_invalid_request_in_both_protocols(
    router, client_keys_dir, protocol
):
    from nomyo_audit import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="over the 10485760-byte limit"):
        _big_chat(router, client_keys_dir, protocol, 10 * 1024 * 1024 + 1)
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0


# -- the router's refusal code is its word: only a plain code is believed -------------------------


class RefuseWith(httpx.AsyncBaseTransport):
    """On the path: answers every protocol 2 completion with a 400 whose code the attacker chose."""

    def __init__(self, code: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.code = code

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == COMPLETION_V2_PATH:
            return httpx.Response(400, json={"error": {"code": self.code, "message": "no"}})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_refusal_code_with_control_characters_is_not_carried_into_errors_or_the_audit_log(
    router, client_keys_dir, tmp_path
):
    """Before: any string of up to 32 characters starting with v2_ became the ProtocolError's code and
    message and the audit record's outcome, terminal escapes and newlines included."""
    import sqlite3

    from nomyo_audit.errors import NomyoAuditError

    forged = "v2_\x1b[2J\nFAKE: ok"

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), transport=RefuseWith(forged),
            audit_log=str(tmp_path / "audit.db"),
        ) as client:
            return await client.create("echo", HELLO)

    with pytest.raises(NomyoAuditError) as refused:
        asyncio.run(go())
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
    assert "\x1b" not in str(getattr(refused.value, "code", ""))
    with sqlite3.connect(tmp_path / "audit.db") as db:
        (outcome,) = [json.loads(row[0])["outcome"] for row in db.execute("SELECT data FROM records")]
    assert "\x1b" not in outcome and "\n" not in outcome


def test_key_config_signature_is_over_the_digest_as_a_message_as_the_spec_now_says(router, router_keys):
    """The spec said 'signature over the digest' with SHA-256, which reads as well as a prehashed
    signature (mHash = digest); the router signs the digest as a message (mHash = SHA-256(digest)).
    Rebuilt from the spec text: the message form verifies, the prehashed form does not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    response = httpx.get(router.url + KEY_CONFIG_PATH)
    digest = KeyConfig.from_json(response.json()).digest()
    signature = base64.b64decode(response.headers["x-key-config-signature"])
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    public = router_keys.private_key.public_key()
    public.verify(signature, digest, pss, hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public.verify(signature, digest, pss, utils.Prehashed(hashes.SHA256()))
    spec = (Path(__file__).resolve().parent.parent / "docs" / "protocol-v2.md").read_text()
    assert "`mHash` is\n`SHA-256(digest)`" in spec
