"""Review R3 of the anchoring appraisal (issue 12 section 5): "never trust the router's word".

A software AIK (nomyo_audit's SoftwareTPM) with a made-up credential activation "for" a real,
public EK certificate (Infineon's, which chains to the shipped manufacturer roots) must never be
anchored: not by a policy reading a reply's ``_metadata.verification``, not by ``verify
--tpm-roots`` on a saved reply file, not in the EAR hardware claim.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from click.testing import CliRunner
from tpm_cert_factory import AT, fixture

from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.cli import cli
from nomyo_audit.policy import Policy, evaluate
from nomyo_audit.tpm import TrustStore, parse_ek_certificate, parse_public
from nomyo_audit.tpm._anchor import ActivationOutcome, AnchorEvidence, appraise_anchor
from nomyo_audit.tpm._anchoring import Anchoring
from nomyo_audit.tpm._binding import response_binding
from nomyo_audit.tpm._verify import verify_attestation

PID = "review-anchor"
DIGEST = bytes(32)
IFX_EK = "ek/Infineon_OPTIGA_RSA_EK__234480e4f236.der"
IFX_CHAIN = ("ca/Infineon_OPTIGA_TM_RSA_Manufacturing_CA_035__9efd7b3c07f9.der",)
IFX_ROOT = "ca/Infineon_OPTIGA_TM_RSA_Root_CA__899e35474c98.der"


@pytest.fixture(scope="module")
def software():
    return TPMAttester(SoftwareTPM("ecc256-ecdsa"), "sha256:0")


def forged_ek_anchor(attester: TPMAttester) -> AnchorEvidence:
    """A 'recorded activation' nobody ran: a public EK certificate and the software AIK's name."""
    ek_der = fixture(IFX_EK)
    aik_name = parse_public(attester.source.aik_public).name.hex()
    outcome = ActivationOutcome(aik_name, parse_ek_certificate(ek_der).sha256, "pass", AT)
    return AnchorEvidence("ek", (ek_der, *map(fixture, IFX_CHAIN)), outcome, None, AT)


def forged_metadata(attester: TPMAttester) -> dict:
    block = attester.evidence(response_binding(PID, DIGEST))
    return {
        "payload_id": PID,
        "tpm_attestation": block,
        "verification": {"anchor": forged_ek_anchor(attester).to_dict()},
    }


def ek_policy(**extra) -> Policy:
    trust = {"mode": "ek", **extra}  # no roots: the shipped manufacturer roots (Infineon's among them)
    return Policy.from_document({"metadata": {"name": "ek"}, "spec": {"aik_trust": trust}})


def _review_ca(days: float = 9):
    """A CA (key, certificate) valid from a day before AT for ``days`` after it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "review CA")])
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(AT - timedelta(days=1)).not_valid_after(AT + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(*[False] * 5, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, ca


def _ak_under(ca_days: float, aik_public: bytes, ak_days: float = 1) -> tuple[TrustStore, bytes]:
    """A store holding a review CA, and an AK certificate it issued for ``aik_public`` (TCG profile,
    with Infineon's EK identity)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from nomyo_audit.tpm import build_ak_certificate

    key, ca = _review_ca(ca_days)
    ak = build_ak_certificate(
        issuer_key=key, issuer_cert=ca, aik=parse_public(aik_public),
        ek=parse_ek_certificate(fixture(IFX_EK)), not_before=AT - timedelta(hours=1),
        not_after=AT + timedelta(days=ak_days),
    )  # fmt: skip
    return TrustStore.from_der([ca.public_bytes(Encoding.DER)]), ak


def test_an_ek_policy_never_believes_an_activation_the_metadata_claims(software):
    metadata = forged_metadata(software)
    verdict = verify_attestation(metadata["tpm_attestation"], PID)
    assert verdict.finding("signature").status == "pass"
    (rule,) = evaluate(ek_policy(), metadata, verdict=verdict).rules
    assert rule.status == "fail", rule
    (rule,) = evaluate(ek_policy(), metadata).rules  # the verifier's own verdict: the same
    assert rule.status == "fail", rule


def test_verify_tpm_roots_never_anchors_a_saved_file_from_its_recorded_activation(software, tmp_path):
    saved = tmp_path / "metadata.json"
    saved.write_text(json.dumps(forged_metadata(software)))
    roots = tmp_path / "roots"
    roots.mkdir()
    for name in (IFX_ROOT, *IFX_CHAIN):
        (roots / name.split("/")[-1]).write_bytes(fixture(name))
    for fmt in ("json", "ear"):
        result = CliRunner().invoke(cli, ["verify", "--format", fmt, "--tpm-roots", str(roots), str(saved)])
        (document,) = json.loads(result.stdout)
        if fmt == "json":
            (anchor,) = [f for f in document["findings"] if f["check"] == "aik_anchor"]
            assert anchor["status"] != "pass", anchor
        else:
            vector = document["submods"]["tpm"]["ear.trustworthiness-vector"]
            assert vector["hardware"] != 2  # never "genuine" for a software key
    policy = tmp_path / "ek.yaml"
    policy.write_text(
        "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: ek}\n"
        "spec:\n  aik_trust: {mode: ek}\n"
    )
    result = CliRunner().invoke(cli, ["verify", "--format", "json", "--policy", str(policy), str(saved)])
    (document,) = json.loads(result.stdout)
    assert document["policy"]["outcome"] == "deny", document["policy"]
    assert result.exit_code == 1


def _anchored(software: TPMAttester, **manufacturers) -> tuple:
    """The software AIK's verdict anchored by the caller itself (as the client does after the
    activation it ran) to Infineon's EK certificate: only to exercise how the rule matches vendors."""
    block = software.evidence(response_binding(PID, DIGEST))
    store = TrustStore.from_der([fixture(IFX_ROOT)])
    anchoring = Anchoring(store, evidence=forged_ek_anchor(software), at=AT, **manufacturers)
    return block, verify_attestation(block, PID, content_digest=DIGEST, anchor=anchoring)


@pytest.mark.parametrize(
    ("accepted", "status"),
    [(["id:49465800"], "pass"), (["ID:49465800"], "pass"), (["infineon"], "pass"), (["Nuvoton"], "fail"),
     (["id:4E544300"], "fail")],
)  # fmt: skip
def test_manufacturers_match_the_vendor_id_or_its_registered_name(software, tmp_path, accepted, status):
    root = tmp_path / "root.der"
    root.write_bytes(fixture(IFX_ROOT))
    block, verdict = _anchored(software)
    assert verdict.facts["manufacturer"] == "Infineon"
    policy = ek_policy(roots=[str(root)], manufacturers=accepted)
    (rule,) = evaluate(policy, {"tpm_attestation": block}, verdict=verdict).rules
    assert rule.status == status, rule
    _, restricted = _anchored(software, manufacturers=accepted)
    assert restricted.finding("aik_anchor").status == status


def test_an_ak_certificate_names_its_vendor_as_an_ek_certificate_does(software):
    store, ak = _ak_under(9, software.source.aik_public)
    for accepted in (["Infineon"], ["id:49465800"]):
        result = appraise_anchor(
            parse_public(software.source.aik_public), AnchorEvidence("ca", (ak,)), store, at=AT,
            manufacturers=accepted,
        )  # fmt: skip
        assert result.finding.status == "pass", result.finding
        assert result.facts["manufacturer"] == "Infineon"  # the same fact an EK anchor gives


@pytest.mark.swtpm
@pytest.mark.parametrize("protocol", ["1.0", "2"])
def test_ek_mode_with_key_attestation_passes_on_a_real_tpm(swtpm, make_router, client_keys_dir, protocol):
    """aik_trust ek with require_key_attestation (as production asks): the key's attestation is
    quoted by the same AIK the activation anchors, so a genuine TPM router is served."""
    import asyncio

    from nomyo_audit import SecureChatCompletion
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester(swtpm.spec), activation_burst=100)
    trust = {"mode": "ek", "roots": [str(swtpm.ca_root_path)]}
    spec = {"require_key_attestation": True, "aik_trust": trust}
    policy = Policy.from_document({"metadata": {"name": "ek-keyatt"}, "spec": spec})

    async def go():
        async with SecureChatCompletion(
            router.url, allow_http=True, key_dir=str(client_keys_dir), policy=policy, protocol=protocol
        ) as client:
            return await client.create("echo", [{"role": "user", "content": "hi"}], security_tier="high")

    reply = asyncio.run(go())
    assert reply["_metadata"]["policy"]["outcome"] == "pass"


def _client_calls(url, keys_dir, calls):
    """Run ``calls`` (each (policy, between) with between() run before that call) in one client
    session; each call's outcome is the reply or the exception."""
    import asyncio

    from nomyo_audit import SecureChatCompletion

    async def go():
        outcomes = []
        async with SecureChatCompletion(
            url, allow_http=True, key_dir=str(keys_dir), protocol="1.0"
        ) as client:
            for policy, between in calls:
                between()
                try:
                    outcomes.append(
                        await client.create("echo", [{"role": "user", "content": "hi"}], policy=policy)
                    )
                except Exception as exc:  # the outcome under test
                    outcomes.append(exc)
        return outcomes

    return asyncio.run(go())


def _ek(roots) -> Policy:
    return Policy.from_document(
        {"metadata": {"name": "ek"}, "spec": {"aik_trust": {"mode": "ek", "roots": roots}}}
    )


@pytest.mark.swtpm
def test_an_aik_rotated_on_the_router_is_activated_again(swtpm, router_keys, client_keys_dir):
    from conftest import RecordingBackend

    from nomyo_audit.router import RouterConfig
    from nomyo_audit.router._attestation import make_attester
    from nomyo_audit.router._server import RouterThread

    def serve(aik_parent, port=0):
        config = RouterConfig(
            private_key=router_keys.private_key,
            backend=RecordingBackend(),
            attester=make_attester(swtpm.spec, aik_parent=aik_parent),
            activation_burst=100,
        )
        return RouterThread(config, port=port).start()

    first = serve("primary")
    routers = [first]

    def rotate():
        first.stop()
        routers.append(serve("ek", port=int(first.url.rsplit(":", 1)[1])))  # the same URL, a new AIK

    policy = _ek([str(swtpm.ca_root_path)])
    try:
        before, during, after = _client_calls(
            first.url, client_keys_dir, [(policy, lambda: None), (policy, rotate), (policy, lambda: None)]
        )
    finally:
        for router in routers:
            router.stop()
    assert isinstance(before, dict) and before["_metadata"]["policy"]["outcome"] == "pass"
    assert not isinstance(during, dict) or during["_metadata"]["policy"]["outcome"] != "pass"
    assert isinstance(after, dict), after  # the new AIK was activated, not refused for the TTL
    assert after["_metadata"]["policy"]["outcome"] == "pass"


@pytest.mark.swtpm
def test_an_activation_validated_against_other_roots_is_not_reused(
    swtpm, make_router, client_keys_dir, tmp_path
):
    """One client, two policies: an activation whose EK chain validated against the first policy's
    roots is not taken for the second's, whose roots do not anchor that EK: refused before any prompt."""
    from nomyo_audit import SecurityError
    from nomyo_audit.ca import init_authority
    from nomyo_audit.router._attestation import make_attester
    from nomyo_audit.wire import COMPLETION_PATH

    router = make_router(attester=make_attester(swtpm.spec), activation_burst=100)
    init_authority(tmp_path / "stranger", "not the TPM maker")
    sent = []
    trusted, stranger = _ek([str(swtpm.ca_root_path)]), _ek([str(tmp_path / "stranger" / "ca.pem")])
    first, second = _client_calls(
        router.url,
        client_keys_dir,
        [
            (trusted, lambda: None),
            (stranger, lambda: sent.append(router.app.state.requests[COMPLETION_PATH])),
        ],
    )
    assert isinstance(first, dict) and first["_metadata"]["policy"]["outcome"] == "pass"
    assert isinstance(second, SecurityError) and second.code == "cert_unchained", second
    assert router.app.state.requests[COMPLETION_PATH] == sent[0]  # no prompt was sent under the stranger


def test_ear_never_says_genuine_hardware_for_an_aik_whose_identity_failed(software):
    """An AK certificate certifies a key, not a public area: a router can present the anchored key
    with attributes it does not have in a TPM (here fixedTPM cleared). aik_anchor passes (the key
    is certified) but the AIK's identity fails, and EAR must not call it genuine hardware."""
    import base64

    from nomyo_audit.tpm import to_ear

    block = software.evidence(response_binding(PID, DIGEST))
    public = bytearray(base64.b64decode(block["aik_pubkey_b64"]))
    public[9] &= ~0x02  # TPMA_OBJECT fixedTPM (bit 1) cleared: the key may live outside any TPM
    block["aik_pubkey_b64"] = base64.b64encode(bytes(public)).decode()
    store, ak = _ak_under(9, bytes(public))
    block["aik_cert_chain_b64"] = [base64.b64encode(ak).decode()]
    verdict = verify_attestation(block, PID, content_digest=DIGEST, anchor=Anchoring(store, at=AT))
    assert verdict.finding("aik_anchor").status == "pass"
    assert verdict.finding("aik_attributes").status == "fail"
    vector = to_ear(verdict, issued_at=0)["submods"]["tpm"]["ear.trustworthiness-vector"]
    assert vector["hardware"] != 2


def test_a_cached_pass_ends_when_a_trust_store_certificate_of_its_path_expires(software):
    """The chain a quote carries may stop below the root (the store supplies the rest): a cached
    pass must not outlive the root or a store intermediate of its path."""
    from nomyo_audit.tpm._anchoring import AnchorCache

    store, ak = _ak_under(2, software.source.aik_public, ak_days=30)
    evidence = AnchorEvidence("ca", (ak,))
    aik = parse_public(software.source.aik_public)
    cache = AnchorCache()
    assert cache.appraise(aik, evidence, store, at=AT).finding.status == "pass"
    later = AT + timedelta(days=5)  # the CA root has expired, the AK certificate has not
    assert appraise_anchor(aik, evidence, store, at=later).finding.code == "cert_expired"
    assert cache.appraise(aik, evidence, store, at=later).finding.code == "cert_expired"


def test_a_report_never_shows_an_aik_whose_identity_failed_as_anchored(software):
    """A record's verdict in which aik_anchor passed for a key the router presented with attributes
    it lacks (the EAR case above): the report must not list that AIK as anchored hardware."""
    import base64

    from nomyo_audit.audit._records import _compact_verdict
    from nomyo_audit.audit._report_anchor import anchor_of

    block = software.evidence(response_binding(PID, DIGEST))
    honest_store, honest_ak = _ak_under(9, software.source.aik_public)
    block["aik_cert_chain_b64"] = [base64.b64encode(honest_ak).decode()]
    honest = verify_attestation(block, PID, content_digest=DIGEST, anchor=Anchoring(honest_store, at=AT))
    assert anchor_of(_compact_verdict(honest.to_dict())) is not None  # the pass case is shown
    public = bytearray(base64.b64decode(block["aik_pubkey_b64"]))
    public[9] &= ~0x02  # fixedTPM cleared
    block["aik_pubkey_b64"] = base64.b64encode(bytes(public)).decode()
    store, ak = _ak_under(9, bytes(public))
    block["aik_cert_chain_b64"] = [base64.b64encode(ak).decode()]
    verdict = verify_attestation(block, PID, content_digest=DIGEST, anchor=Anchoring(store, at=AT))
    assert verdict.finding("aik_anchor").status == "pass"
    assert anchor_of(_compact_verdict(verdict.to_dict())) is None
