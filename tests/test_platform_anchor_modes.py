"""Review R5: a block may carry a cloud ``platform`` object and an AK certificate chain. The verifier
judges the platform first; a policy requiring ``aik_trust: {mode: ca}`` must be judged by the chain,
not fail with the platform's code (the client anchors by the chain, verify re-appraises it), and a
policy requiring a cloud kind is never satisfied by the chain."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from test_gce_anchor import OwnCa, cos_block
from test_platform import GOOD, NONCE

from nomyo_audit.client._activation import PreparedAnchor, anchor_reply
from nomyo_audit.policy import Policy, Record, appraise
from nomyo_audit.tpm import verify_attestation

AIK_EKU = x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.3")])


def _ca_and_block(platform):
    ca = OwnCa("Acme Inc", "Acme AK CA")
    block = cos_block()
    block["aik_cert_chain_b64"] = [
        base64.b64encode(ca.ak_cert(extension=None, extra=[(AIK_EKU, False)])).decode()
    ]
    if platform is None:
        block.pop("platform")
    else:
        block["platform"] = platform
    return ca, block


def _policy(tmp_path, ca, mode):
    root = tmp_path / "root.pem"
    root.write_bytes(x509.load_der_x509_certificate(ca.root).public_bytes(serialization.Encoding.PEM))
    spec = {"aik_trust": {"mode": mode, "roots": [str(root)]}}
    return Policy.from_document({"metadata": {"name": f"{mode}-{tmp_path.name}"}, "spec": spec})


def _rule(policy, block):
    appraisal = appraise(Record("r", {"tpm_attestation": block}, None, "none", expected_nonce=NONCE), policy)
    rule = next(r for r in appraisal.result.rules if r.rule == "aik_trust")
    return rule.status, rule.detail


def test_mode_ca_is_judged_by_the_chain_beside_a_failing_platform_object(tmp_path):
    ca, block = _ca_and_block(GOOD["azure-tdx"])  # reads, but is no real TDX evidence: fails
    assert _rule(_policy(tmp_path, ca, "ca"), block)[0] == "pass"
    response = {"_metadata": {"tpm_attestation": block}}
    verdict = verify_attestation(block, None, expected_nonce=NONCE)
    anchored = anchor_reply(response, verdict, PreparedAnchor(None, ca.store, mode="ca"))
    assert anchored.finding("aik_anchor").code == "aik_anchored_ca"
    assert response["_metadata"]["verification"]["anchor"]["kind"] == "ca"


def test_mode_ca_still_fails_when_the_chain_does_not_anchor(tmp_path):
    _, block = _ca_and_block(GOOD["azure-tdx"])
    other = OwnCa("Acme Inc", "Acme AK CA")  # same name, another key: the chain is not this root's
    status, detail = _rule(_policy(tmp_path, other, "ca"), block)
    assert status == "fail" and "AK certificate chain" in detail


def test_a_cloud_mode_is_never_satisfied_by_the_chain(tmp_path):
    ca, block = _ca_and_block(GOOD["azure-tdx"])
    for mode in ("gce-ak-cert", "azure-tdx", "azure-sev-snp"):
        assert _rule(_policy(tmp_path, ca, mode), block)[0] == "fail"
        response = {"_metadata": {"tpm_attestation": block}}
        verdict = verify_attestation(block, None, expected_nonce=NONCE)
        anchored = anchor_reply(response, verdict, PreparedAnchor(None, ca.store, mode=mode))
        assert anchored.finding("aik_anchor").status != "pass"
