"""Protocol 1.0 client-key binding (issue 13, section 1), proved end to end on loopback.

The attack: over plain HTTP, with the router key pinned and the ``production`` policy, an
on-path attacker rewrites the unauthenticated ``X-Public-Key`` header to its own key, reads the
router's reply, and re-encrypts it to the client's key. Before the binding the client accepted
that reply (verdict pass, policy pass). Now the router's quote covers SHA-256 of the DER SPKI of
the client key it received, and the client checks it against its own key.

The attacker is a real httpx transport wrapped around a real loopback connection: it changes
bytes on the wire and nothing in the client or the router.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import urllib.parse
from typing import Any

import httpx
import pytest

from nomyo_audit import PolicyViolationError, SecureChatCompletion, SecurityError, load_policy
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.client._keys import generate_key_pair, load_key_pair
from nomyo_audit.policy import Policy, evaluate
from nomyo_audit.tpm import response_binding, response_content_digest, verify_attestation
from nomyo_audit.tpm._binding import client_key_binding, match_derivation
from nomyo_audit.tpm._measurements import measure_demo_boot
from nomyo_audit.wire import (
    COMPLETION_PATH,
    decrypt_package,
    encrypt_package,
    key_fingerprint,
    load_public_key_pem,
    parse_package,
)

HELLO = [{"role": "user", "content": "secret question"}]


class KeySwappingProxy(httpx.AsyncBaseTransport):
    """An on-path attacker: swaps ``X-Public-Key`` for its own, reads the reply, re-seals it.

    ``strip_claim`` also removes the router's ``_metadata.client_key_sha256`` (the attacker reads
    and rewrites the whole reply, so it can); ``seen`` keeps every reply it read in the clear.
    """

    def __init__(self, *, strip_claim: bool = False) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.attacker = generate_key_pair(2048)
        self.strip_claim = strip_claim
        self.seen: list[dict[str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path != COMPLETION_PATH:
            return await self.inner.handle_async_request(request)
        victim = load_public_key_pem(urllib.parse.unquote(request.headers["x-public-key"]).encode())
        headers = dict(request.headers)
        headers["x-public-key"] = urllib.parse.quote(self.attacker.public_key_pem)
        body = await request.aread()
        forwarded = httpx.Request(request.method, request.url, headers=headers, content=body)
        reply = await self.inner.handle_async_request(forwarded)
        sealed = await reply.aread()
        if reply.status_code != 200:
            return httpx.Response(reply.status_code, headers=reply.headers, content=sealed)
        opened = json.loads(decrypt_package(parse_package(sealed), self.attacker.private_key))
        self.seen.append(opened)
        if self.strip_claim:
            opened["_metadata"].pop("client_key_sha256", None)
        resealed = encrypt_package(bytearray(json.dumps(opened).encode()), victim)
        return httpx.Response(200, headers={"content-type": "application/json"}, content=resealed)

    async def aclose(self) -> None:
        await self.inner.aclose()


def measured_router(make_router):
    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return make_router(attester=TPMAttester(tpm))


def chat(router, keys_dir, router_keys, *, transport=None, policy: Any = None, audit_log=None):
    # production's checks with any AIK: these routers quote with a software TPM (no EK to anchor)
    policy = production_any_aik() if policy is None else policy

    async def go():
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            key_dir=str(keys_dir),
            policy=policy,
            protocol="1.0",  # the 1.0 client-key binding; protocol 2 has no client key (test_protocol2_e2e)
            server_key_fingerprint=key_fingerprint(router_keys.private_key.public_key()),
            transport=transport,
            audit_log=audit_log,
        ) as client:
            return await client.create("echo", HELLO, security_tier="high")

    return asyncio.run(go())


def own_key_sha256(keys_dir) -> str:
    return key_fingerprint(load_key_pair(str(keys_dir / "private_key.pem")).private_key.public_key())


def test_swapped_client_key_is_refused_as_key_substitution(
    make_router, client_keys_dir, router_keys, tmp_path
):
    router = measured_router(make_router)
    proxy = KeySwappingProxy()
    log = tmp_path / "audit.db"
    with pytest.raises(SecurityError) as refused:
        chat(router, client_keys_dir, router_keys, transport=proxy, audit_log=str(log))
    assert refused.value.code == "key_substitution"
    # the attacker did read the reply: protocol 1.0 detects the swap, it cannot prevent the read
    assert proxy.seen and proxy.seen[0]["choices"][0]["message"]["content"] == "echo: secret question"
    with sqlite3.connect(log) as db:
        (record,) = [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]
    assert record["outcome"] == "security_error:key_substitution"


def test_swap_with_the_claim_stripped_fails_the_binding_and_the_policy(
    make_router, client_keys_dir, router_keys
):
    router = measured_router(make_router)
    with pytest.raises(PolicyViolationError) as denied:
        chat(router, client_keys_dir, router_keys, transport=KeySwappingProxy(strip_claim=True))
    assert "nonce_binding" in str(denied.value)


def test_swap_without_a_policy_is_still_refused(make_router, client_keys_dir, router_keys):
    router = measured_router(make_router)
    with pytest.raises(SecurityError) as refused:
        chat(router, client_keys_dir, router_keys, transport=KeySwappingProxy(), policy=None)
    assert refused.value.code == "key_substitution"


def test_honest_path_is_bound_to_our_key(make_router, client_keys_dir, router_keys):
    router = measured_router(make_router)
    reply = chat(router, client_keys_dir, router_keys)
    metadata = reply["_metadata"]
    assert metadata["policy"]["outcome"] == "pass"
    facts = metadata["verification"]["facts"]
    assert facts["nonce_derivation"] == "nomyo-audit-v2"
    assert facts["key_binding"] == "bound"
    assert metadata["client_key_sha256"] == own_key_sha256(client_keys_dir)
    assert metadata["tpm_attestation"]["nonce_binding"] == "nomyo-audit-v2"


def test_binding_derivation_is_the_documented_one():
    """The derivation, computed here from the text of docs/protocol.md with hashlib alone."""
    pid, content, key = "req-1", hashlib.sha256(b"c").digest(), hashlib.sha256(b"k").digest()
    label = b"nomyo-audit/response-binding/v2"
    expected = hashlib.sha256(label + b"\x00" + len(pid).to_bytes(2, "big") + pid.encode() + content + key)
    assert client_key_binding(pid, content, key) == expected.digest()
    assert match_derivation(expected.digest(), pid, content, client_key_sha256=key) == "nomyo-audit-v2"
    assert match_derivation(expected.digest(), pid, content) is None  # no key: cannot be bound
    assert match_derivation(expected.digest(), pid, content, client_key_sha256=bytes(32)) is None
    assert match_derivation(response_binding(pid, content), pid, content, client_key_sha256=key) == (
        "nomyo-audit-v1"
    )


def _unbound_router(make_router):
    """A router that quotes with the older binding (nomyo-audit-v1), as routers before this one."""

    class OlderAttester(TPMAttester):
        def attest_response(self, payload_id: str, completion: Any) -> dict[str, Any]:
            return self.evidence(response_binding(payload_id, response_content_digest(completion)))

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    return make_router(attester=OlderAttester(tpm))


def test_router_that_does_not_bind_is_accepted_and_reported_absent(make_router, client_keys_dir, router_keys):
    router = _unbound_router(make_router)
    lenient = _production_with(require_key_binding=False)
    reply = chat(router, client_keys_dir, router_keys, policy=lenient)
    facts = reply["_metadata"]["verification"]["facts"]
    assert facts["nonce_derivation"] == "nomyo-audit-v1"
    assert facts["key_binding"] == "absent"
    assert reply["_metadata"]["policy"]["outcome"] == "pass"


def test_policy_can_require_the_binding(make_router, client_keys_dir, router_keys):
    router = _unbound_router(make_router)
    assert load_policy("production").spec["require_key_binding"] is True
    with pytest.raises(PolicyViolationError) as denied:
        chat(router, client_keys_dir, router_keys)
    assert "key_binding" in str(denied.value)


def test_key_binding_rule_reads_only_the_verdict():
    """A router's claim in _metadata cannot satisfy require_key_binding: only the verdict's fact can."""
    policy = _production_with(require_key_binding=True)
    verdict = verify_attestation(None, "p")
    response = {"_metadata": {"client_key_sha256": "00" * 32, "tpm_attestation": None}}
    result = evaluate(policy, response, verdict=verdict)
    assert any(r.rule == "require_key_binding" and r.status == "fail" for r in result.rules)


def _production_with(**spec: Any) -> Policy:
    base = load_policy("production")
    spec = {"aik_trust": {"mode": "any"}, **spec}  # a software TPM here: nothing to anchor
    return Policy(base.name, base.description, {**base.spec, **spec})  # type: ignore[typeddict-item]


def production_any_aik() -> Policy:
    return _production_with()


def test_nomyo_reference_client_still_completes(nomyo_reference, make_router):
    router = measured_router(make_router)

    async def go():
        client = nomyo_reference.SecureChatCompletion(router.url, allow_http=True, secure_memory=False)
        return await client.create(model="echo", messages=HELLO)

    with pytest.warns(UserWarning):
        reply = asyncio.run(go())
    assert reply["choices"][0]["message"]["content"] == "echo: secret question"
    assert reply["_metadata"]["tpm_attestation"]["nonce_binding"] == "nomyo-audit-v2"
    assert len(reply["_metadata"]["client_key_sha256"]) == 64


def test_saved_bound_reply_reappraises_offline(make_router, client_keys_dir, router_keys):
    """`nomyo-audit verify` re-checks the binding against the client key the saved reply names."""
    from nomyo_audit.policy import appraise, parse_records

    router = measured_router(make_router)
    reply = chat(router, client_keys_dir, router_keys)
    (record,) = parse_records(json.dumps(reply).encode(), "saved.json")
    appraisal = appraise(record, production_any_aik(), at=reply["_metadata"]["processed_at"])
    assert appraisal.verdict.facts["key_binding"] == "bound"
    assert appraisal.result is not None and appraisal.result.outcome == "pass"
    reply["_metadata"]["client_key_sha256"] = "11" * 32  # another key named: the quote does not bind it
    (record,) = parse_records(json.dumps(reply).encode(), "saved.json")
    assert appraise(record, production_any_aik(), at=0).verdict.finding("nonce_binding").status == "fail"
