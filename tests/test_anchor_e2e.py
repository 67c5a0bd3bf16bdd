"""Anchored AIKs end to end (issue 12 sections 3 to 5): the real client against a real router on a
real swtpm whose EK certificate comes from swtpm's local CA (the 'manufacturer'), and the enrollment
CA's AK certificates.

``aik_trust: {mode: ek}``: the client runs a credential activation before any prompt is sent; a
wrong root, a router that answers for another AIK or with another secret, or a software attester is
a SecurityError with a stable code, no prompt reaches the router, and the audit log keeps the
failure. ``aik_trust: {mode: ca}``: the router's replies carry the AK certificate chain, and any
verifier anchors them offline with only the CA root.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from nomyo_audit import SecureChatCompletion, SecurityError
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.ca import enroll_router, init_authority
from nomyo_audit.policy import Policy
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm import TrustStore
from nomyo_audit.wire import ACTIVATION_PATH, COMPLETION_PATH, ENDORSEMENT_PATH

pytestmark = pytest.mark.swtpm
HELLO = [{"role": "user", "content": "anchored hello"}]
ADMIN = "admin-key-for-tests"


def policy(mode: str, roots: list[Any], **extra: Any) -> Policy:
    trust = {"mode": mode, "roots": [str(r) for r in roots], **extra}
    return Policy.from_document({"metadata": {"name": f"anchor-{mode}"}, "spec": {"aik_trust": trust}})


def chat(router, keys_dir, pol: Policy, *, audit_log: Path | None = None, transport=None, calls: int = 1):
    async def go():
        async with SecureChatCompletion(
            router.url,
            allow_http=True,
            key_dir=str(keys_dir),
            policy=pol,
            audit_log=str(audit_log) if audit_log else None,
            transport=transport,
        ) as client:
            return [await client.create("echo", HELLO, security_tier="high") for _ in range(calls)]

    return asyncio.run(go())


def records(log: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(log) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT data FROM records ORDER BY seq")]


def anchor_finding(reply: dict[str, Any]) -> dict[str, str]:
    (finding,) = [f for f in reply["_metadata"]["verification"]["findings"] if f["check"] == "aik_anchor"]
    return finding


@pytest.fixture
def tpm_router(swtpm, make_router):
    return make_router(attester=make_attester(swtpm.spec), admin_keys=(ADMIN,), activation_burst=100)


# -- ek: credential activation before any prompt ----------------------------------------------------


def test_ek_mode_activates_once_then_every_reply_is_anchored(swtpm, tpm_router, client_keys_dir, tmp_path):
    log, seen = tmp_path / "audit.db", OnPath()
    pol = policy("ek", [swtpm.ca_root_path])
    first, second = chat(tpm_router, client_keys_dir, pol, audit_log=log, calls=2, transport=seen)
    for reply in (first, second):
        assert reply["_metadata"]["policy"]["outcome"] == "pass"
        assert anchor_finding(reply) == {
            "check": "aik_anchor",
            "status": "pass",
            "code": "aik_anchored_ek",
            "detail": anchor_finding(reply)["detail"],
        }
        facts = reply["_metadata"]["verification"]["facts"]
        assert facts["anchor_kind"] == "ek"
        assert facts["manufacturer"] == "id:00001014"  # IBM, as swtpm's local CA writes it
        assert facts["tpm_model"] and facts["tpm_firmware_version"]
        assert len(facts["chain_subjects"]) >= 2  # the EK certificate and swtpm's CA above it
    assert seen.paths.count(ACTIVATION_PATH) == 1  # cached for the policy's TTL
    anchors = [r["verdict"]["anchor"] for r in records(log)]
    assert [a["kind"] for a in anchors] == ["ek", "ek"]
    assert anchors[0]["activation"]["result"] == "pass"
    assert "secret" not in json.dumps(anchors)  # the activated secret is never recorded


def refused_before_any_prompt(router, keys_dir, pol, log, code, *, transport=None) -> None:
    with pytest.raises(SecurityError) as refused:
        chat(router, keys_dir, pol, audit_log=log, transport=transport)
    assert refused.value.code == code, refused.value
    assert router.app.state.requests[COMPLETION_PATH] == 0  # no prompt reached the router
    (record,) = records(log)
    assert record["outcome"] == f"security_error:{code}"


def test_ek_mode_with_the_wrong_roots_is_refused(tpm_router, client_keys_dir, tmp_path):
    stranger = tmp_path / "stranger"
    init_authority(stranger, "not the TPM maker")
    log = tmp_path / "audit.db"
    refused_before_any_prompt(
        tpm_router, client_keys_dir, policy("ek", [stranger / "ca.pem"]), log, "cert_unchained"
    )


def test_ek_mode_with_a_software_attester_is_refused(make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester("software"))
    log = tmp_path / "audit.db"
    refused_before_any_prompt(router, client_keys_dir, policy("ek", []), log, "activation_unavailable")


class OnPath(httpx.AsyncBaseTransport):
    """A router that answers the anchoring endpoints wrongly: real loopback bytes, rewritten."""

    def __init__(self, *, endorsement=None, activation=None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rewrite = {ENDORSEMENT_PATH: endorsement, ACTIVATION_PATH: activation}
        self.paths: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        reply = await self.inner.handle_async_request(request)
        change = self.rewrite.get(request.url.path)
        if change is None:
            return reply
        body = json.loads(await reply.aread())
        return httpx.Response(reply.status_code, json=change(body))

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_ek_mode_refuses_an_endorsement_naming_another_aik(swtpm, tpm_router, client_keys_dir, tmp_path):
    other = TPMAttester(SoftwareTPM()).aik_public()  # another AIK, in no TPM the router has
    swap = OnPath(endorsement=lambda body: {**body, "aik_pubkey_b64": base64.b64encode(other).decode()})
    refused_before_any_prompt(
        tpm_router,
        client_keys_dir,
        policy("ek", [swtpm.ca_root_path]),
        tmp_path / "audit.db",
        "activation_failed",  # the TPM holds no object of that name: it refuses
        transport=swap,
    )


def test_ek_mode_refuses_a_wrong_or_replayed_secret(swtpm, tpm_router, client_keys_dir, tmp_path):
    wrong = OnPath(activation=lambda body: {**body, "secret_b64": base64.b64encode(b"r" * 32).decode()})
    refused_before_any_prompt(
        tpm_router,
        client_keys_dir,
        policy("ek", [swtpm.ca_root_path]),
        tmp_path / "audit.db",
        "activation_mismatch",
        transport=wrong,
    )


# -- ca: the AK certificate chain rides on every quote ----------------------------------------------


@pytest.fixture
def enrolled(swtpm, tpm_router, tmp_path):
    """The router enrolled with a fresh enrollment CA (trusting swtpm's local CA as the maker)."""
    authority = init_authority(tmp_path / "ca", "test enrollment CA")
    store = TrustStore.from_pem(swtpm.ca_root_path.read_bytes())
    enroll_router(tpm_router.url, authority, store, admin_key=ADMIN)
    return tpm_router, tmp_path / "ca" / "ca.pem"


def test_ca_mode_passes_with_only_the_ca_root(enrolled, client_keys_dir, tmp_path):
    router, ca_root = enrolled
    log, seen = tmp_path / "audit.db", OnPath()
    (reply,) = chat(router, client_keys_dir, policy("ca", [ca_root]), audit_log=log, transport=seen)
    assert reply["_metadata"]["tpm_attestation"]["aik_cert_chain_b64"]
    assert reply["_metadata"]["policy"]["outcome"] == "pass"
    assert anchor_finding(reply)["status"] == "pass"
    facts = reply["_metadata"]["verification"]["facts"]
    assert (facts["anchor_kind"], facts["manufacturer"]) == ("ca", "id:00001014")
    assert ACTIVATION_PATH not in seen.paths  # offline: no activation needed
    (record,) = records(log)
    assert record["metadata"]["tpm_attestation"]["aik_cert_chain_b64"]  # re-checkable offline
    assert record["verdict"]["findings"]["aik_anchor"] == ["pass", "aik_anchored_ca"]


def test_ca_mode_with_another_root_is_denied(enrolled, swtpm, client_keys_dir, tmp_path):
    router, _ = enrolled
    with pytest.raises(SecurityError) as denied:
        chat(router, client_keys_dir, policy("ca", [swtpm.ca_root_path]), audit_log=tmp_path / "a.db")
    assert "aik_trust" in str(denied.value)
    assert records(tmp_path / "a.db")[0]["outcome"] == "policy_denied"


def test_ca_mode_without_enrollment_is_denied(tpm_router, tmp_path, client_keys_dir):
    authority_dir = tmp_path / "ca"
    init_authority(authority_dir, "test enrollment CA")
    with pytest.raises(SecurityError) as denied:
        chat(tpm_router, client_keys_dir, policy("ca", [authority_dir / "ca.pem"]))
    assert "aik_trust" in str(denied.value)
