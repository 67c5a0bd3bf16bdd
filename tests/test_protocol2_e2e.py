"""Protocol 2 end to end (issue 13, sections 2 and 4): our router on loopback, our client, no mocks.

Negotiation and no downgrade, both suites, key rotation retried once, replays refused, every bad
input of section 4 with its own code (4xx from the router, never a 500, before the model runs),
attest-before-send over the key configuration, and the audit log recording the protocol.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import httpx
import pytest

from nomyo_audit import PolicyViolationError, SecureChatCompletion, SecurityError, load_policy
from nomyo_audit._protocol2 import KeyConfig, open_response, seal_request
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.errors import ConfigurationError, ProtocolError
from nomyo_audit.tpm._measurements import measure_demo_boot
from nomyo_audit.wire import COMPLETION_V2_PATH, KEY_CONFIG_PATH, key_fingerprint

HELLO = [{"role": "user", "content": "v2 hello"}]


def chat(router, keys_dir, *, protocol=None, policy=None, audit_log=None, pin=None, transport=None, calls=1):
    async def go():
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            key_dir=str(keys_dir),
            protocol=protocol,
            policy=policy,
            audit_log=audit_log,
            server_key_fingerprint=pin,
            transport=transport,
        ) as client:
            return [await client.create("echo", HELLO, security_tier="high") for _ in range(calls)]

    replies = asyncio.run(go())
    return replies[0] if calls == 1 else replies


def production_any_aik() -> Any:
    """production's checks with any AIK: these routers quote with a software TPM (no EK to anchor)."""
    from nomyo_audit.policy import Policy

    base = load_policy("production")
    return Policy(base.name, base.description, {**base.spec, "aik_trust": {"mode": "any"}})  # type: ignore[typeddict-item]


def key_config(router) -> KeyConfig:
    return KeyConfig.from_json(httpx.get(router.url + KEY_CONFIG_PATH).json())


def post(router, body: bytes) -> httpx.Response:
    return httpx.post(router.url + COMPLETION_V2_PATH, content=body)


def sealed(router, *, suite=None, payload_id="pid-1", model="echo") -> tuple[bytes, Any]:
    payload = json.dumps({"model": model, "messages": HELLO}).encode()
    return seal_request(
        key_config(router), payload, payload_id=payload_id, security_tier="high", model=model, suite=suite
    )


# -- negotiation -------------------------------------------------------------------------------


def test_auto_uses_protocol_2_when_the_router_offers_it(router, client_keys_dir):
    reply = chat(router, client_keys_dir)
    assert reply["choices"][0]["message"]["content"] == "echo: v2 hello"
    assert reply["_metadata"]["protocol"] == "2"
    assert reply["_metadata"]["payload_id_verified"] is True
    assert router.app.state.requests[COMPLETION_V2_PATH] == 1
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_protocol_1_0_stays_on_1_0(router, client_keys_dir):
    reply = chat(router, client_keys_dir, protocol="1.0")
    assert reply["_metadata"]["protocol"] == "1.0"
    assert router.app.state.requests[KEY_CONFIG_PATH] == 0


def test_environment_chooses_the_protocol(router, client_keys_dir, monkeypatch):
    monkeypatch.setenv("NOMYO_PROTOCOL", "1.0")
    assert chat(router, client_keys_dir)["_metadata"]["protocol"] == "1.0"
    monkeypatch.setenv("NOMYO_PROTOCOL", "3")
    with pytest.raises(ConfigurationError, match="NOMYO_PROTOCOL"):
        SecureChatCompletion(router.url, allow_http=True)


@pytest.mark.parametrize("suite_index", [0, -1])
def test_both_suites_complete(router, suite_index):
    config = key_config(router)
    body, context = sealed(router, suite=config.suites[suite_index])
    response = post(router, body)
    assert response.status_code == 200
    reply = json.loads(open_response(context, response.content))
    assert reply["choices"][0]["message"]["content"] == "echo: v2 hello"
    assert reply["_metadata"]["payload_id"] == "pid-1"
    assert reply["_metadata"]["tpm_attestation"] == {"is_available": False}


class V1Only(httpx.AsyncBaseTransport):
    """An on-path attacker (or an old router) that hides protocol 2: its endpoints answer 404."""

    def __init__(self, *, hiding: bool = True) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hiding = hiding

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        v2_path = request.url.path.startswith("/pki/v2/") or request.url.path == COMPLETION_V2_PATH
        if self.hiding and v2_path:
            return httpx.Response(404, json={"detail": "Not Found"})
        return await self.inner.handle_async_request(request)


def test_protocol_2_required_refuses_a_v1_only_router(router, client_keys_dir):
    with pytest.raises(SecurityError) as refused:
        chat(router, client_keys_dir, protocol="2", transport=V1Only())
    assert refused.value.code == "downgrade"
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_a_router_seen_v2_capable_cannot_be_downgraded(router, client_keys_dir, router_keys):
    """Pinned: the signed key configuration makes the router v2-capable; a later 404 is refused."""
    pin = key_fingerprint(router_keys.private_key.public_key())

    async def go():
        transport = V1Only(hiding=False)
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), server_key_fingerprint=pin,
            transport=transport,
        ) as client:
            first = await client.create("echo", HELLO)
            transport.hiding = True
            client.client._v2.config = None  # forget the configuration: the next call fetches it
            with pytest.raises(SecurityError) as refused:
                await client.create("echo", HELLO)
            return first, refused.value

    first, refused = asyncio.run(go())
    assert first["_metadata"]["protocol"] == "2"
    assert refused.code == "downgrade"
    assert router.app.state.requests["/v1/chat/secure_completion"] == 0


def test_auto_falls_back_to_1_0_for_a_router_never_seen_v2(router, client_keys_dir):
    assert chat(router, client_keys_dir, transport=V1Only())["_metadata"]["protocol"] == "1.0"


# -- rotation, replay, attestation -------------------------------------------------------------


def test_rotated_key_is_retried_once_with_the_carried_configuration(router, client_keys_dir):
    async def go():
        async with SecureChatCompletion(router.url, allow_http=True, key_dir=str(client_keys_dir)) as client:
            await client.create("echo", HELLO)
            router.app.state.v2.rotate()
            return await client.create("echo", HELLO)

    reply = asyncio.run(go())
    assert reply["_metadata"]["protocol"] == "2"
    assert router.app.state.requests[COMPLETION_V2_PATH] == 3  # one, then the refused one and its retry


def test_stale_key_gets_v2_key_rotated_with_the_current_configuration(router):
    body, _ = sealed(router)
    current = router.app.state.v2.rotate()
    response = post(router, body)
    assert response.status_code == 409
    document = response.json()
    assert document["error"]["code"] == "v2_key_rotated"
    assert KeyConfig.from_json(document["key_config"]) == current


def test_replay_is_refused(router):
    body, _ = sealed(router)
    assert post(router, body).status_code == 200
    replayed = post(router, body)
    assert replayed.status_code == 409
    assert replayed.json()["error"]["code"] == "v2_replay"
    assert len(router.config.backend.payloads) == 1  # the model ran once


def test_attest_before_send_covers_the_v2_key(make_router, client_keys_dir):
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(attester=TPMAttester(tpm))
    reply = chat(router, client_keys_dir, policy=production_any_aik())
    assert reply["_metadata"]["protocol"] == "2"
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert router.app.state.requests["/pki/v2/attestation"] == 1
    assert router.app.state.requests["/pki/attestation"] == 0


def test_changed_pcr_fails_the_v2_key_attestation_before_sending(make_router, client_keys_dir):
    from nomyo_audit.tpm._measurements import TAMPER_EVENT

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    tpm.extend("sha256", *TAMPER_EVENT)
    router = make_router(attester=TPMAttester(tpm))
    with pytest.raises(PolicyViolationError, match="nothing was sent"):
        chat(router, client_keys_dir, policy=production_any_aik())
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0


def test_audit_log_records_the_protocol(router, client_keys_dir, tmp_path):
    log = tmp_path / "audit.db"
    chat(router, client_keys_dir, audit_log=str(log))
    chat(router, client_keys_dir, audit_log=str(log), protocol="1.0")
    with sqlite3.connect(log) as db:
        records = [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]
    assert [r["metadata"]["protocol"] for r in records] == ["2", "1.0"]


# -- bad input (issue 13 section 4) ------------------------------------------------------------


def _refused(response: httpx.Response, code: str) -> None:
    assert 400 <= response.status_code < 500, response.status_code
    assert response.json()["error"]["code"] == code
    assert "Traceback" not in response.text


def test_unknown_key_id(router):
    body, _ = sealed(router)
    document = json.loads(body)
    document["key_id"] = "not-a-key"
    _refused(post(router, json.dumps(document).encode()), "v2_unknown_key_id")


def test_a_suite_that_is_not_an_object_is_malformed(router):
    body, _ = sealed(router)
    document = json.loads(body)
    document["suite"] = "made-up-suite"
    _refused(post(router, json.dumps(document).encode()), "v2_malformed")


def test_unknown_suite(router):
    body, _ = sealed(router)
    document = json.loads(body)
    document["suite"] = {"kem_id": 0x9999, "kdf_id": 1, "aead_id": 2}
    _refused(post(router, json.dumps(document).encode()), "v2_unknown_suite")


def test_truncated_encapsulation(router):
    body, _ = sealed(router)
    document = json.loads(body)
    document["enc"] = document["enc"][:8]
    _refused(post(router, json.dumps(document).encode()), "v2_truncated")


def test_associated_data_mismatch(router):
    body, _ = sealed(router)
    document = json.loads(body)
    document["model"] = "another-model"
    _refused(post(router, json.dumps(document).encode()), "v2_aad_mismatch")


@pytest.mark.parametrize("junk", [b"", b"{", b"[]", b"\xff" * 64, b'{"v": "2"}', b"null"])
def test_malformed_requests_are_4xx_before_the_model(router, junk):
    response = post(router, junk)
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["code"].startswith("v2_")
    assert router.config.backend.payloads == []


def test_a_reply_for_another_request_is_refused(router):
    first, _ = sealed(router, payload_id="pid-a")
    _, other_context = sealed(router, payload_id="pid-b")
    response = post(router, first)
    with pytest.raises(SecurityError) as refused:
        open_response(other_context, response.content)
    assert refused.value.code == "v2_reply_mismatch"


class V1ReplyOnV2(httpx.AsyncBaseTransport):
    """Answers the v2 endpoint with a protocol 1.0 package: a v1 reply where v2 was required."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == COMPLETION_V2_PATH:
            package = {"version": "1.0", "algorithm": "hybrid-aes256-rsa4096", "encrypted_payload": {}}
            return httpx.Response(200, json=package)
        return await self.inner.handle_async_request(request)


def test_a_v1_reply_where_v2_was_required_is_refused(router, client_keys_dir):
    with pytest.raises(SecurityError) as refused:
        chat(router, client_keys_dir, protocol="2", transport=V1ReplyOnV2())
    assert refused.value.code == "v2_reply_mismatch"
    assert not isinstance(refused.value, PolicyViolationError)


def test_router_refusal_is_a_protocol_error_with_the_code(router, client_keys_dir):
    class Replaying(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == COMPLETION_V2_PATH:
                refusal = {"detail": "x", "error": {"code": "v2_replay", "message": "x"}}
                return httpx.Response(409, json=refusal)
            return await self.inner.handle_async_request(request)

    with pytest.raises(ProtocolError) as refused:
        chat(router, client_keys_dir, transport=Replaying())
    assert refused.value.code == "v2_replay"


def test_a_key_id_rotated_out_gets_the_current_configuration_not_a_decryption(router):
    """Sealed to a retired key but changed on the way: still v2_key_rotated (the id decides), no 500."""
    body, _ = sealed(router)
    router.app.state.v2.rotate()
    document = json.loads(body)
    document["model"] = "another-model"
    response = post(router, json.dumps(document).encode())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "v2_key_rotated"


def test_fuzzed_envelopes_are_4xx_never_500(router):
    """Seeded mutations of a real sealed request: every answer a 4xx with a v2_ code, the model never run."""
    import random

    rng = random.Random(13)
    body, _ = sealed(router)
    for _ in range(200):
        mutated = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        response = post(router, bytes(mutated))
        if response.status_code == 200:  # only a change base64 ignores (the unused low bits of a last digit)
            assert _decoded(bytes(mutated)) == _decoded(body)
            continue
        assert 400 <= response.status_code < 500, response.status_code
        assert response.json()["error"]["code"].startswith("v2_")
    assert len(router.config.backend.payloads) <= 1


def _decoded(body: bytes) -> dict[str, Any]:
    import base64

    document = json.loads(body)
    return {**document, **{name: base64.b64decode(document[name]) for name in ("enc", "ciphertext")}}


# -- pinning covers the v2 key -----------------------------------------------------------------


class SwapConfig(httpx.AsyncBaseTransport):
    """An on-path attacker that serves its own key configuration (with the router's signature header)."""

    def __init__(self, config: KeyConfig) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.config = config

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path == KEY_CONFIG_PATH:
            await response.aread()
            headers = {"X-Key-Config-Signature": response.headers.get("x-key-config-signature", "")}
            return httpx.Response(200, json=self.config.to_json(), headers=headers)
        return response


def test_a_pinned_router_key_covers_the_v2_key(router, client_keys_dir, router_keys):
    from nomyo_audit._protocol2 import RouterKeys

    pin = key_fingerprint(router_keys.private_key.public_key())
    assert chat(router, client_keys_dir, pin=pin)["_metadata"]["protocol"] == "2"
    attacker = RouterKeys.generate(3600, now=int(__import__("time").time())).config
    with pytest.raises(SecurityError) as refused:
        chat(router, client_keys_dir, pin=pin, transport=SwapConfig(attacker))
    assert refused.value.code == "server_key_pin"
    assert router.app.state.requests[COMPLETION_V2_PATH] == 1  # nothing sealed to the attacker's key


def test_rotation_with_a_pinned_key_uses_the_signed_configuration(router, client_keys_dir, router_keys):
    pin = key_fingerprint(router_keys.private_key.public_key())

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), server_key_fingerprint=pin
        ) as client:
            await client.create("echo", HELLO)
            router.app.state.v2.rotate()
            return await client.create("echo", HELLO)

    assert asyncio.run(go())["_metadata"]["protocol"] == "2"


def test_the_key_config_signature_verifies_with_the_router_key(router, router_keys):
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    response = httpx.get(router.url + KEY_CONFIG_PATH)
    signature = base64.b64decode(response.headers["X-Key-Config-Signature"])
    digest = KeyConfig.from_json(response.json()).digest()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    router_keys.private_key.public_key().verify(signature, digest, pss, hashes.SHA256())


def test_router_figures_match_the_spec(router):
    """docs/protocol-v2.md: replay window 600 s / 100,000 entries, 24 h validity, two retired keys."""
    v2 = router.app.state.v2
    config = v2.current.config
    assert config.not_after - config.not_before == 24 * 3600
    assert (v2.replays.window_seconds, v2.replays.max_entries) == (600.0, 100_000)
    assert v2.retired.maxlen == 2



class Recording(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


def test_no_client_key_and_no_plaintext_header_on_the_wire(router, client_keys_dir):
    """Issue 13: protocol 2 leaves nothing to substitute: no X-Public-Key, the payload id and tier sealed."""
    transport = Recording()
    chat(router, client_keys_dir, transport=transport)
    (completion,) = [r for r in transport.requests if r.url.path == COMPLETION_V2_PATH]
    assert {"x-public-key", "x-payload-id", "x-security-tier"}.isdisjoint(completion.headers)
    assert b"v2 hello" not in completion.content


def test_the_cryptography_floor_has_hpke():
    """_protocol2_keys imports cryptography.hazmat.primitives.hpke and asymmetric.mlkem (both 47.0.0; the
    code keeps its own enc lengths, so KEM.enc_length of 49.0.0 is not needed)."""
    import re
    from pathlib import Path

    text = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    (floor,) = re.findall(r'"cryptography>=(\d+)', text)
    assert int(floor) >= 47


@pytest.mark.parametrize("window", [(1_000, 2_000), (4_000_000_000, 4_000_000_001)])
def test_a_configuration_outside_its_validity_is_refused(router, client_keys_dir, window):
    from nomyo_audit._protocol2 import RouterKeys

    seeds = {0x0020: bytes(range(32))}
    config = RouterKeys.from_seeds(seeds, not_before=window[0], not_after=window[1]).config
    with pytest.raises(ProtocolError) as refused:
        chat(router, client_keys_dir, transport=SwapConfig(config))
    assert refused.value.code == "v2_bad_key_config"
    assert router.app.state.requests[COMPLETION_V2_PATH] == 0
