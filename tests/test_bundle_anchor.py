"""Bundles of anchored replies (swtpm): the anchor evidence the record holds (an EK certificate chain and
the credential activation the client ran, or an enrollment CA's AK certificate chain) travels in the
bundle and is re-checked offline at its recorded time against the auditor's roots, with the router
and its TPM gone."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil

import pytest
from click.testing import CliRunner

from nomyo_audit import SecureChatCompletion
from nomyo_audit.audit import AuditLog, generate_audit_key
from nomyo_audit.audit._keys import ed25519_private
from nomyo_audit.ca import enroll_router, init_authority
from nomyo_audit.cli import cli
from nomyo_audit.cli._bundle import bundle_bytes
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import Policy
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm import TrustStore

pytestmark = pytest.mark.swtpm
ADMIN = "admin-key-for-tests"
HELLO = [{"role": "user", "content": "kept for years"}]


def _chat_and_bundle(router, keys_dir, trust, directory):
    """One anchored reply, logged and checkpointed; the router stopped; its bundle written."""
    key = ed25519_private(generate_audit_key(directory / "audit.key")[0])
    policy = Policy.from_document({"metadata": {"name": "anchored"}, "spec": {"aik_trust": trust}})

    async def go():
        with AuditLog(directory / "audit.db", key=key) as log:
            async with SecureChatCompletion(
                router.url, allow_http=True, key_dir=str(keys_dir), policy=policy, audit_log=log
            ) as client:
                reply = await client.create("echo", HELLO, security_tier="high")
            log.checkpoint()
        return reply["_metadata"]["payload_id"]

    payload_id = asyncio.run(go())
    router.stop()
    out = directory / "anchored.bundle.json"
    result = CliRunner().invoke(
        cli, ["bundle", payload_id, "--log", str(directory / "audit.db"), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture
def ek_bundle(swtpm, make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester(swtpm.spec), activation_burst=100)
    roots = tmp_path / "roots"
    roots.mkdir()
    shutil.copy(swtpm.ca_root_path, roots / "swtpm-root.pem")
    bundle = _chat_and_bundle(router, client_keys_dir, {"mode": "ek", "roots": [str(roots)]}, tmp_path)
    return bundle, roots, tmp_path / "audit.key.pub"


@pytest.fixture
def ca_bundle(swtpm, make_router, client_keys_dir, tmp_path):
    router = make_router(attester=make_attester(swtpm.spec), admin_keys=(ADMIN,))
    authority = init_authority(tmp_path / "ca", "test enrollment CA")
    enroll_router(
        router.url, authority, TrustStore.from_pem(swtpm.ca_root_path.read_bytes()), admin_key=ADMIN
    )
    trust = {"mode": "ca", "roots": [str(tmp_path / "ca" / "ca.pem")]}
    bundle = _chat_and_bundle(router, client_keys_dir, trust, tmp_path)
    return bundle, tmp_path / "ca", tmp_path / "audit.key.pub"


def verify(*args):
    result = CliRunner().invoke(cli, ["verify", "--offline", "--format", "json", *map(str, args)])
    document = json.loads(result.stdout)[0] if result.stdout.startswith("[") else None
    return result.exit_code, document, result


def anchor(document):
    return next(f for f in document["verdict"]["findings"] if f["check"] == "aik_anchor")


def test_an_activation_anchored_bundle_reanchors_offline_with_the_manufacturer_root(ek_bundle):
    path, roots, key = ek_bundle
    bundle = json.loads(path.read_text())
    recorded = bundle["anchor"]["recorded"]
    assert recorded["kind"] == "ek" and len(recorded["chain_b64"]) >= 1 and recorded["activation"]
    code, document, result = verify(path, "--key", key, "--roots", roots)
    assert code == ExitCode.OK, result.output
    assert (anchor(document)["status"], anchor(document)["code"]) == ("pass", "aik_anchored_ek")
    assert "not run again" in anchor(document)["detail"]  # the activation rests on the signed record


def test_an_ak_certificate_bundle_reanchors_offline_with_the_ca_root(ca_bundle):
    path, ca_dir, key = ca_bundle
    bundle = json.loads(path.read_text())
    assert bundle["anchor"]["aik_cert_chain_b64"] or bundle["anchor"]["recorded"]
    code, document, result = verify(path, "--key", key, "--roots", ca_dir)
    assert code == ExitCode.OK, result.output
    assert anchor(document)["code"] == "aik_anchored_ca"


def test_without_the_auditors_roots_the_shipped_roots_do_not_anchor_a_test_tpm(ek_bundle):
    """The swtpm's EK chain is to a test root no manufacturer ships: intact evidence, failed anchor."""
    path, _, key = ek_bundle
    code, document, _ = verify(path, "--key", key)
    assert (code, document["result"], document["intact"]) == (ExitCode.FINDING, "attestation_failed", True)
    assert anchor(document)["status"] == "fail"


def test_an_altered_chain_certificate_is_an_integrity_failure(ek_bundle, tmp_path):
    path, roots, key = ek_bundle
    bundle = json.loads(path.read_text())
    chain = bundle["anchor"]["recorded"]["chain_b64"]
    der = bytearray(base64.b64decode(chain[0]))
    der[-5] ^= 1  # a byte of the EK certificate's signature
    chain[0] = base64.b64encode(bytes(der)).decode()
    altered = tmp_path / "altered.bundle.json"
    altered.write_bytes(bundle_bytes(bundle))
    code, document, _ = verify(altered, "--key", key, "--roots", roots)
    assert (code, document["result"], document["verdict"]) == (ExitCode.INTEGRITY, "anchor_altered", None)
