"""The AR4SI vector of a signed EAR is what nomyo_audit.tpm._ear's docstring says, from real
evidence: a software TPM whose measured boot is logged by the router's own measuring API, quoted,
verified, optionally anchored by an AK certificate, judged by a policy, signed, and read back with
jwcrypto (code we did not write)."""

from __future__ import annotations

import json

import pytest
from jwcrypto import jwk
from jwcrypto import jwt as jjwt
from test_policy_measured import NOW, machine, reply, sha256
from test_review_anchor import _ak_under
from tpm_cert_factory import AT

from nomyo_audit.audit import sign_ear
from nomyo_audit.policy import Policy, evaluate
from nomyo_audit.tpm import to_ear
from nomyo_audit.tpm._anchoring import Anchoring
from nomyo_audit.tpm._binding import response_content_digest
from nomyo_audit.tpm._verify import verify_attestation

PCRS = "sha256:0,2,4,7,8,10,23"
FIRMWARE = sha256(b"firmware volume 1.0")
SHIM = sha256(b"shimx64.efi 15.8")
TRUE = b"/usr/bin/true contents"


@pytest.fixture(scope="module")
def attester():
    return machine(PCRS, ima_files=(("/usr/bin/true", TRUE),))


def appraise(attester, spec: dict | None, *, anchored: bool = True, key=None, mutate=None) -> dict:
    """The signed EAR of one reply, verified with jwcrypto, as its ``tpm`` submodule."""
    import base64

    from cryptography.hazmat.primitives import serialization

    response = reply(attester, mutate=mutate)
    block = response["_metadata"]["tpm_attestation"]
    anchor = None
    if anchored:
        store, ak = _ak_under(9, attester.source.aik_public)
        block["aik_cert_chain_b64"] = [base64.b64encode(ak).decode()]
        anchor = Anchoring(store, at=AT)
    verdict = verify_attestation(
        block, "pid-1", content_digest=response_content_digest(response), anchor=anchor
    )
    policy = result = None
    if spec is not None:
        document = {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "e"}}
        policy = Policy.from_document({**document, "spec": spec})
        result = evaluate(policy, response, now=NOW, verdict=verdict)
    claims = to_ear(verdict, issued_at=NOW, policy_result=result, policy=policy)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = key or ed25519.Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = jjwt.JWT(jwt=sign_ear(claims, key), key=jwk.JWK.from_pem(pem), algs=["EdDSA"])
    read = json.loads(token.claims)
    assert read == claims
    return read["submods"]["tpm"]


def golden(attester) -> dict:
    """Every kind of boot code approved: PCR 2 by its golden value, firmware and boot applications by
    the boot_events allow-lists; IMA files by digest; secure boot enabled."""
    verdict = verify_attestation(attester.evidence(b"n"), None, expected_nonce=b"n")
    pcr2 = verdict.facts["pcr_values"]["sha256"]["2"]
    return {
        "pcrs": {"sha256": {"2": [pcr2]}},
        "boot_events": {"firmware": [FIRMWARE], "boot_applications": [SHIM]},
        "ima": {"digests": {"/usr/bin/true": [sha256(TRUE)]}, "excludes": ["^boot_aggregate$"]},
        "secure_boot": "enabled",
        "aik_trust": {"mode": "any"},
    }


def vector(tpm: dict) -> dict:
    return {k: v for k, v in tpm["ear.trustworthiness-vector"].items() if v}


def test_everything_approved_on_an_anchored_aik_is_affirming(attester):
    tpm = appraise(attester, golden(attester))
    assert tpm["nomyo-audit.policy"]["outcome"] == "pass", tpm["nomyo-audit.policy"]
    assert vector(tpm) == {"instance-identity": 2, "hardware": 2, "executables": 2, "configuration": 2}
    assert tpm["ear.status"] == "affirming"
    assert tpm["nomyo-audit.vector-basis"]["executables"] == ["pcrs", "boot_events", "ima"]


def test_without_ima_only_boot_is_approved(attester):
    spec = golden(attester)
    del spec["ima"]
    tpm = appraise(attester, spec)
    assert tpm["ear.trustworthiness-vector"]["executables"] == 3
    assert tpm["ear.status"] == "affirming"


def test_boot_code_left_unappraised_approves_no_executables(attester):
    """Option ROMs (PCR 2) not pinned: the policy approved only some of the boot code."""
    spec = golden(attester)
    del spec["pcrs"]
    tpm = appraise(attester, spec)
    assert tpm["ear.trustworthiness-vector"]["executables"] == 0
    spec = {"pcrs": golden(attester)["pcrs"], "secure_boot": "enabled"}  # PCR 2 alone
    assert appraise(attester, spec)["ear.trustworthiness-vector"]["executables"] == 0


def test_an_unanchored_aik_is_never_affirming(attester):
    tpm = appraise(attester, golden(attester), anchored=False)
    assert vector(tpm) == {"executables": 2, "configuration": 2}
    assert tpm["ear.status"] == "warning"
    assert appraise(attester, None, anchored=False)["ear.status"] == "warning"


def test_a_boot_application_not_allowed_is_unrecognized(attester):
    spec = golden(attester)
    spec["boot_events"]["boot_applications"] = [sha256(b"another shim")]
    tpm = appraise(attester, spec)
    assert tpm["ear.trustworthiness-vector"]["executables"] == 33
    assert tpm["nomyo-audit.vector-basis"]["executables"] == ["boot_events"]
    assert tpm["ear.status"] == "contraindicated"  # the policy denied


def test_a_denied_boot_event_is_contraindicated(attester):
    spec = golden(attester)
    spec["boot_events"]["deny"] = [SHIM]
    tpm = appraise(attester, spec)
    assert tpm["ear.trustworthiness-vector"]["executables"] == 96
    assert tpm["ear.status"] == "contraindicated"


@pytest.mark.parametrize(
    ("on_failure", "claim", "status"), [("deny", 96, "contraindicated"), ("warn", 32, "warning")]
)
def test_a_refused_configuration(attester, on_failure, claim, status):
    spec = {**golden(attester), "secure_boot": "disabled", "on_failure": on_failure}
    tpm = appraise(attester, spec)
    assert tpm["ear.trustworthiness-vector"]["configuration"] == claim
    assert tpm["ear.trustworthiness-vector"]["executables"] == 2  # what passed still says so
    assert tpm["ear.status"] == status


def test_a_forged_reply_is_contraindicated_and_unrecognized(attester):
    def forge(block):
        import base64

        signature = bytearray(base64.b64decode(block["signature_b64"]))
        signature[-1] ^= 1
        block["signature_b64"] = base64.b64encode(bytes(signature)).decode()

    tpm = appraise(attester, golden(attester), mutate=forge)
    assert tpm["ear.trustworthiness-vector"]["instance-identity"] == 99  # crypto_failed, not unrecognized
    assert tpm["ear.trustworthiness-vector"]["hardware"] == 0  # an anchor is not appraised for a forged quote
    assert tpm["ear.trustworthiness-vector"]["executables"] in (0, 99)
    assert tpm["ear.status"] == "contraindicated"


def test_an_aik_the_policy_does_not_pin_is_unrecognized(attester):
    spec = {**golden(attester), "aik_trust": {"mode": "pinned", "pinned": ["00" * 32]}}
    tpm = appraise(attester, spec, anchored=False)
    assert tpm["ear.trustworthiness-vector"]["instance-identity"] == 97
    assert tpm["nomyo-audit.vector-basis"]["instance-identity"] == ["aik_trust"]
    assert tpm["ear.status"] == "contraindicated"


def test_a_pinned_aik_is_a_recognized_instance_but_not_genuine_hardware(attester):
    verdict = verify_attestation(attester.evidence(b"n"), None, expected_nonce=b"n")
    spec = {**golden(attester), "aik_trust": {"mode": "pinned", "pinned": [verdict.facts["aik_fingerprint"]]}}
    tpm = appraise(attester, spec, anchored=False)
    assert tpm["ear.trustworthiness-vector"]["instance-identity"] == 2
    assert tpm["ear.trustworthiness-vector"]["hardware"] == 0
    assert tpm["ear.status"] == "warning"
