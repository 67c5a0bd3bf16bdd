"""aik_anchor appraisal (issue 12 section 5) with real chains: the EK certificate swtpm's local CA
issued (read from the TPM's NV index by tpm2-tools), and an AK certificate built with the
certificate layer's build_ak_certificate by a CA made here, which plays the enrollment CA."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.errors import EvidenceError
from nomyo_audit.policy import Policy, evaluate
from nomyo_audit.tpm import TrustStore, build_ak_certificate, parse_ek_certificate, parse_public
from nomyo_audit.tpm._anchor import ActivationOutcome, AnchorEvidence, appraise_anchor
from nomyo_audit.tpm._anchoring import AnchorCache, Anchoring, with_anchor
from nomyo_audit.tpm._binding import response_binding
from nomyo_audit.tpm._verify import verify_attestation

PID = "anchor-test"
NOW = datetime.now(timezone.utc)
DIGEST = bytes(32)


def later() -> datetime:
    """A time after swtpm issued the EK certificate (its notBefore is when the fixture ran)."""
    return datetime.now(timezone.utc) + timedelta(seconds=2)


def _tool(*args: str) -> bytes:
    return subprocess.run(args, check=True, capture_output=True, timeout=60).stdout


@pytest.fixture(scope="module")
def endorsement(swtpm, tmp_path_factory):
    """The RSA EK certificate, its intermediate, the EK public area, and the local CA's root."""
    require(shutil.which("tpm2_nvread") is not None, "tpm2-tools are needed")
    require(swtpm.ca_root_path is not None, "swtpm_setup with --create-ek-cert is needed")
    work = tmp_path_factory.mktemp("ek")
    tcti = f"swtpm:host={swtpm.host},port={swtpm.port}"
    ek_der = _tool("tpm2_nvread", "-T", tcti, "0x01c00002")
    ek_der = ek_der[: 4 + int.from_bytes(ek_der[2:4], "big")]  # NV padding after the DER
    _tool("tpm2_createek", "-T", tcti, "-c", str(work / "ek.ctx"), "-G", "rsa", "-u", str(work / "ek.pub"))
    _tool("tpm2_flushcontext", "-T", tcti, "-t")
    intermediate = x509.load_pem_x509_certificate(Path(swtpm.ca_intermediate_path).read_bytes())
    return {
        "ek_der": ek_der,
        "chain": (ek_der, intermediate.public_bytes(serialization.Encoding.DER)),
        "ek_public": (work / "ek.pub").read_bytes(),
        "store": TrustStore.from_pem(Path(swtpm.ca_root_path).read_bytes()),
        "root_path": str(swtpm.ca_root_path),
    }


@pytest.fixture(scope="module")
def enrollment_ca(tmp_path_factory):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anchor test enrollment CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return {"key": key, "cert": cert, "path": str(path), "store": TrustStore.from_pem(path.read_bytes())}


@pytest.fixture(scope="module")
def aik():
    source = SoftwareTPM("ecc256-ecdsa")
    source.extend("sha256", 0, b"firmware")
    return TPMAttester(source, "sha256:0,7")


def _ak_cert(ca, endorsement, attester, **validity):
    return build_ak_certificate(
        issuer_key=ca["key"],
        issuer_cert=ca["cert"],
        aik=parse_public(attester.source.aik_public),
        ek=parse_ek_certificate(endorsement["ek_der"]),
        not_before=validity.get("not_before", NOW - timedelta(hours=1)),
        not_after=validity.get("not_after", NOW + timedelta(days=30)),
    )


def _activation(attester, endorsement, result="pass"):
    name = parse_public(attester.source.aik_public).name.hex()
    return ActivationOutcome(name, parse_ek_certificate(endorsement["ek_der"]).sha256, result, later())


def test_an_ak_certificate_chain_to_the_ca_anchors_the_aik_with_the_tpm_facts(
    enrollment_ca, endorsement, aik
):
    evidence = AnchorEvidence("ca", (_ak_cert(enrollment_ca, endorsement, aik),))
    result = appraise_anchor(parse_public(aik.source.aik_public), evidence, enrollment_ca["store"], at=NOW)
    assert result.finding.status == "pass", result.finding
    ek = parse_ek_certificate(endorsement["ek_der"])
    assert result.facts["anchor_kind"] == "ca"
    assert result.facts["manufacturer"] in (ek.manufacturer, ek.manufacturer_name)
    assert result.facts["tpm_model"] == ek.model and result.facts["tpm_firmware_version"] == ek.version


def test_each_bad_ak_chain_is_its_own_failure_never_a_pass(enrollment_ca, endorsement, aik):
    cert = _ak_cert(enrollment_ca, endorsement, aik)
    other = parse_public(SoftwareTPM("ecc256-ecdsa").aik_public)
    mine = parse_public(aik.source.aik_public)
    cases = {
        "cert_key_mismatch": (other, (cert,), enrollment_ca["store"], NOW),
        "cert_unchained": (mine, (cert,), endorsement["store"], NOW),  # no issuer in that store
        "cert_expired": (mine, (cert,), enrollment_ca["store"], NOW + timedelta(days=400)),
        "cert_not_yet_valid": (mine, (cert,), enrollment_ca["store"], NOW - timedelta(days=30)),
    }
    for code, (key, chain, store, at) in cases.items():
        result = appraise_anchor(key, AnchorEvidence("ca", chain), store, at=at)
        assert (result.finding.status, result.finding.code) == ("fail", code)
        assert result.facts == {}
    empty = appraise_anchor(mine, AnchorEvidence("ca", ()), enrollment_ca["store"], at=NOW)
    assert (empty.finding.status, empty.finding.code) == ("fail", "anchor_empty")


def test_an_activation_against_the_certified_ek_anchors_the_aik(endorsement, aik):
    evidence = AnchorEvidence(
        "ek", endorsement["chain"], _activation(aik, endorsement), endorsement["ek_public"], NOW
    )
    result = appraise_anchor(parse_public(aik.source.aik_public), evidence, endorsement["store"], at=later())
    assert result.finding.status == "pass", result.finding
    assert result.facts["anchor_kind"] == "ek"
    assert len(result.facts["chain_subjects"]) == 3  # EK, intermediate, root


def test_each_bad_activation_is_its_own_failure(endorsement, aik):
    mine = parse_public(aik.source.aik_public)
    good = _activation(aik, endorsement)
    cases = {
        "activation_missing": AnchorEvidence("ek", endorsement["chain"], None),
        "activation_failed": AnchorEvidence(
            "ek", endorsement["chain"], good._replace(result="activation_mismatch")
        ),
        "activation_other_aik": AnchorEvidence(
            "ek", endorsement["chain"], good._replace(aik_name="000b" + "00" * 32)
        ),
        "activation_other_ek": AnchorEvidence(
            "ek", endorsement["chain"], good._replace(ek_certificate_sha256="0" * 64)
        ),
        "ek_public_mismatch": AnchorEvidence(
            "ek",
            endorsement["chain"],
            good,
            aik.source.aik_public,  # the AIK's public area is not the EK's
        ),
        "cert_unchained": AnchorEvidence(
            "ek", endorsement["chain"], good
        ),  # the bundled roots do not hold it
    }
    for code, evidence in cases.items():
        store = TrustStore.bundled() if code == "cert_unchained" else endorsement["store"]
        result = appraise_anchor(mine, evidence, store, at=later())
        assert (result.finding.status, result.finding.code) == ("fail", code), code
    vendor = appraise_anchor(
        mine,
        AnchorEvidence("ek", endorsement["chain"], good),
        endorsement["store"],
        at=later(),
        manufacturers=["id:00000000"],
    )
    assert vendor.finding.code == "anchor_manufacturer"


def test_anchor_evidence_round_trips_and_refuses_malformed_input(endorsement, aik):
    evidence = AnchorEvidence(
        "ek", endorsement["chain"], _activation(aik, endorsement), endorsement["ek_public"], NOW
    )
    again = AnchorEvidence.from_dict(evidence.to_dict())
    assert again.chain == evidence.chain and again.activation.aik_name == evidence.activation.aik_name
    assert again.validated_at == evidence.validated_at.replace(microsecond=evidence.validated_at.microsecond)
    for bad in (
        None,
        [],
        {"version": 2},
        {"version": 1, "kind": "x"},
        {"version": 1, "kind": "ca", "chain_b64": "x"},
        {"version": 1, "kind": "ca", "chain_b64": ["@@"]},
        {"version": 1, "kind": "ca", "chain_b64": ["AA"] * 9},
    ):
        with pytest.raises(EvidenceError) as caught:
            AnchorEvidence.from_dict(bad)
        assert caught.value.code == "anchor_malformed"


def test_verify_anchors_a_quote_carrying_its_ak_chain_and_caches_the_validation(
    enrollment_ca, endorsement, aik
):
    block = aik.evidence(response_binding(PID, DIGEST))
    assert verify_attestation(block, PID).finding("aik_anchor").code == "aik_not_anchored"
    block["aik_cert_chain_b64"] = [base64.b64encode(_ak_cert(enrollment_ca, endorsement, aik)).decode()]
    cache = AnchorCache()
    anchoring = Anchoring(enrollment_ca["store"], cache=cache)
    first = verify_attestation(block, PID, content_digest=DIGEST, anchor=anchoring)
    assert first.finding("aik_anchor").status == "pass" and first.passed
    assert first.facts["anchor_kind"] == "ca" and first.facts["chain_subjects"]
    second = verify_attestation(block, PID, content_digest=DIGEST, anchor=anchoring)
    # no chain validation: the very finding of the first appraisal, from the cache (a timing bound
    # could not tell: validating this chain takes under a millisecond)
    assert second.finding("aik_anchor") is first.finding("aik_anchor")
    fresh = Anchoring(enrollment_ca["store"], cache=cache)  # another hook, the same shared cache
    third = verify_attestation(block, PID, content_digest=DIGEST, anchor=fresh)
    assert third.finding("aik_anchor") is first.finding("aik_anchor")
    # another store (or none of the CA's roots): the cache is not used, the chain fails
    wrong = verify_attestation(
        block, PID, content_digest=DIGEST, anchor=Anchoring(endorsement["store"], cache=cache)
    )
    assert wrong.finding("aik_anchor").code == "cert_unchained" and not wrong.passed
    # an unsigned change does not reach the anchor
    forged = dict(block, signature_b64=block["signature_b64"][:-8] + "AAAAAAA=")
    assert verify_attestation(forged, PID, anchor=anchoring).finding("aik_anchor").code == "not_reached"


def _policy(**aik_trust):
    return Policy.from_document({"spec": {"aik_trust": aik_trust}})


def test_policy_ca_mode_anchors_from_the_evidence_and_any_says_not_anchored(enrollment_ca, endorsement, aik):
    block = aik.evidence(response_binding(PID, DIGEST))
    metadata = {"tpm_attestation": block, "payload_id": PID}
    assert evaluate(_policy(mode="any"), metadata).rules[0].findings == (
        "signature_valid",
        "aik_not_anchored",
    )
    ca = _policy(mode="ca", roots=[enrollment_ca["path"]])
    unanchored = evaluate(ca, metadata, now=time.time()).rules[0]
    assert unanchored.status == "fail" and unanchored.findings == ("aik_not_anchored",)
    block["aik_cert_chain_b64"] = [base64.b64encode(_ak_cert(enrollment_ca, endorsement, aik)).decode()]
    assert evaluate(ca, metadata, now=time.time()).rules[0].status == "pass"
    other_root = evaluate(
        _policy(mode="ca", roots=[endorsement["root_path"]]), metadata, now=time.time()
    ).rules[0]
    assert (other_root.status, other_root.findings) == ("fail", ("cert_unchained",))
    as_ek = evaluate(_policy(mode="ek", roots=[enrollment_ca["path"]]), metadata, now=time.time()).rules[0]
    assert as_ek.status == "fail"  # a CA chain is not an activation


def test_policy_ek_mode_judges_the_activation_the_caller_ran_never_one_metadata_claims(endorsement, aik):
    block = aik.evidence(response_binding(PID, DIGEST))
    verdict = verify_attestation(block, PID)
    evidence = AnchorEvidence(
        "ek", endorsement["chain"], _activation(aik, endorsement), endorsement["ek_public"], later()
    )
    metadata = {"tpm_attestation": block, "payload_id": PID, "verification": {"anchor": evidence.to_dict()}}
    ek = _policy(mode="ek", roots=[endorsement["root_path"]])
    # a reply's (or a file's) metadata is not the caller's: an activation it claims is not believed
    assert evaluate(ek, metadata, verdict=verdict).rules[0].status == "fail"
    # the client anchors its verdict itself, from the activation it ran: the rule reads that finding
    anchored = with_anchor(verdict, block, Anchoring(endorsement["store"], evidence=evidence))
    assert anchored.finding("aik_anchor").code == "aik_anchored_ek" and anchored.facts["anchor_kind"] == "ek"
    assert evaluate(ek, {"tpm_attestation": block}, verdict=anchored).rules[0].status == "pass"
    restricted = _policy(mode="ek", roots=[endorsement["root_path"]], manufacturers=["id:00000000"])
    assert evaluate(restricted, {"tpm_attestation": block}, verdict=anchored).rules[0].status == "fail"


def test_ear_claims_genuine_hardware_only_for_an_anchored_aik(enrollment_ca, endorsement, aik):
    from nomyo_audit.tpm import to_ear

    block = aik.evidence(response_binding(PID, DIGEST))

    def hardware(verdict):
        return to_ear(verdict, issued_at=0)["submods"]["tpm"]["ear.trustworthiness-vector"]["hardware"]

    assert hardware(verify_attestation(block, PID, content_digest=DIGEST)) == 0  # no claim: not anchored
    block["aik_cert_chain_b64"] = [base64.b64encode(_ak_cert(enrollment_ca, endorsement, aik)).decode()]
    anchored = verify_attestation(block, PID, content_digest=DIGEST, anchor=Anchoring(enrollment_ca["store"]))
    assert hardware(anchored) == 2  # affirming: the AIK is anchored to a TPM manufacturer's EK
    refused = verify_attestation(block, PID, content_digest=DIGEST, anchor=Anchoring(endorsement["store"]))
    assert hardware(refused) == 97  # a chain offered that does not anchor: unrecognized


def test_the_audit_record_keeps_the_anchor_evidence_and_records_without_it_are_unchanged(endorsement, aik):
    from nomyo_audit.audit._records import _compact_verdict

    verdict = verify_attestation(aik.evidence(response_binding(PID, DIGEST)), PID, content_digest=DIGEST)
    plain = _compact_verdict(verdict.to_dict())
    assert "anchor" not in plain
    evidence = AnchorEvidence(
        "ek", endorsement["chain"], _activation(aik, endorsement), endorsement["ek_public"], later()
    )
    kept = _compact_verdict({**verdict.to_dict(), "anchor": evidence.to_dict()})
    assert AnchorEvidence.from_dict(kept["anchor"]) == evidence
