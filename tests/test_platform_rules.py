"""The policy rules gce, sev_snp and tdx over cloud anchor facts, with real Azure SEV-SNP evidence
(tests/fixtures/cloud-anchors/azure/PROVENANCE.md) going through the real verifier and evaluate().

Each rule passes only on facts of an aik_anchor that passed with its kind: from the caller's
anchored verdict, or appraised from the reply's platform evidence; a router's word (platform facts
put in the metadata, an anchor of another kind, none at all) never passes one.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest
from sev_snp_evidence import AT, AZURE, EXPECTED, platform_object, read, tpm_block, vtpm_block

from nomyo_audit.policy import Policy, PolicyError, evaluate
from nomyo_audit.policy._loader import validate_document
from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._anchoring import Anchoring

NAME = "trustee-evidence-v0"
NONCE = bytes.fromhex(EXPECTED[NAME]["tpm_quote_nonce"])
MEASUREMENT = EXPECTED[NAME]["measurement"]
NOW = AT.timestamp()


def metadata(with_platform: bool = True) -> dict:
    block = tpm_block(NAME)
    if with_platform:
        block["platform"] = platform_object(NAME)
    return {"tpm_attestation": block}


def policy(spec: dict) -> Policy:
    """A policy of ``spec``, validated against the shipped schema as load_policy does."""
    document = {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "cloud"}}
    validate_document({**document, "spec": spec})
    return Policy.from_document({**document, "spec": spec})


def judge(spec: dict, meta: dict, *, anchored: bool = False):
    anchor = Anchoring(TrustStore.bundled(), at=AT) if anchored else None
    verdict = verify_attestation(meta["tpm_attestation"], None, expected_nonce=NONCE, anchor=anchor)
    result = evaluate(policy(spec), meta, now=NOW, verdict=verdict)
    return {o.rule: o for o in result.rules}


SNP_OK = {"measurements": [MEASUREMENT], "min_tcb": {"bootloader": 4, "snp": 24}, "debug": False,
          "products": ["Milan"]}  # fmt: skip


@pytest.mark.parametrize("anchored", [True, False])
def test_sev_snp_rule_passes_on_the_real_anchor(anchored: bool) -> None:
    outcome = judge({"sev_snp": SNP_OK}, metadata(), anchored=anchored)["sev_snp"]
    assert outcome.status == "pass", outcome
    assert outcome.findings == ("aik_anchored_azure_sev_snp",)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"measurements": ["00" * 48]}, "measurement"),
        ({"min_tcb": {"microcode": 220}}, "microcode 219 < 220"),
        ({"min_tcb": {"tee": 1}}, "tee 0 < 1"),
        ({"products": ["Genoa", "Turin"]}, "'Milan' is not one of Genoa, Turin"),
    ],
)
def test_sev_snp_rule_fails_on_each_fact(change: dict, expected: str) -> None:
    outcome = judge({"sev_snp": {**SNP_OK, **change}}, metadata())["sev_snp"]
    assert outcome.status == "fail" and expected in outcome.detail


def test_without_an_anchor_of_the_kind_every_platform_rule_fails_closed() -> None:
    spec = {"sev_snp": SNP_OK, "gce": {"projects": ["p"]}, "tdx": {"debug": False}}
    without = judge(spec, metadata(with_platform=False))
    assert {rule: o.status for rule, o in without.items()} == {
        "sev_snp": "fail",
        "gce": "fail",
        "tdx": "fail",
    }
    with_snp = judge(spec, metadata(), anchored=True)
    assert with_snp["sev_snp"].status == "pass"
    assert with_snp["gce"].status == "fail" and "gce-ak-cert" in with_snp["gce"].detail
    assert with_snp["tdx"].status == "fail" and "azure-tdx" in with_snp["tdx"].detail


def test_the_routers_word_is_never_a_fact() -> None:
    meta = metadata(with_platform=False)
    meta["platform"] = {"measurement": MEASUREMENT, "product": "Milan", "debug": False}
    meta["tpm_attestation"]["anchor_kind"] = "azure-sev-snp"
    assert judge({"sev_snp": SNP_OK}, meta)["sev_snp"].status == "fail"


def test_a_failed_anchor_fails_the_rule_with_its_code() -> None:
    meta = metadata()
    data = bytearray(read(NAME, "hcl_report.bin"))
    data[1300] ^= 0x01
    meta["tpm_attestation"]["platform"]["hcl_report_b64"] = base64.b64encode(bytes(data)).decode()
    for anchored in (True, False):
        outcome = judge({"sev_snp": SNP_OK}, meta, anchored=anchored)["sev_snp"]
        assert outcome.status == "fail"
        assert outcome.findings[0] in ("hcl_binding_mismatch", "hcl_malformed")


def test_an_expired_anchor_fails_the_rule() -> None:
    verdict = verify_attestation(metadata()["tpm_attestation"], None, expected_nonce=NONCE)
    later = datetime(2040, 1, 1, tzinfo=timezone.utc).timestamp()
    result = evaluate(policy({"sev_snp": SNP_OK}), metadata(), now=later, verdict=verdict)
    (outcome,) = result.rules
    assert outcome.status == "fail" and outcome.findings == ("cert_expired",)


@pytest.mark.parametrize(
    "spec",
    [
        {"sev_snp": {}},
        {"sev_snp": {"debug": True}},
        {"sev_snp": {"measurements": ["AB" * 48]}},
        {"sev_snp": {"min_tcb": {"bootloader": 256}}},
        {"sev_snp": {"min_tcb": {"fmc": 1}}},
        {"sev_snp": {"products": ["Naples"]}},
        {"gce": {"projects": []}},
        {"gce": {"instances": ["x"]}},
        {"tdx": {"mrtd": ["00"]}},
        {"tdx": {"debug": True}},
    ],
)
def test_invalid_platform_rules_are_refused(spec: dict) -> None:
    with pytest.raises(PolicyError):
        policy(spec)


def test_the_platform_rules_change_the_policy_digest() -> None:
    base = policy({"sev_snp": SNP_OK}).digest
    assert policy({"sev_snp": {**SNP_OK, "products": ["Genoa"]}}).digest != base
    assert policy({"tdx": {"debug": False}}).digest != policy({"gce": {"zones": ["z"]}}).digest


def test_platform_rules_judge_a_key_attestation() -> None:
    from nomyo_audit.policy import KEY_SCOPE

    assert {"gce", "sev_snp", "tdx"} <= set(KEY_SCOPE)


# -- gce and tdx over real anchors (C1's and C3's fixtures) -----------------------------------------


def gce_verdict():
    from test_gce_anchor import NONCES, NOW, cos_block

    block = cos_block()
    anchoring = Anchoring(TrustStore.bundled(), at=NOW)
    verdict = verify_attestation(block, None, expected_nonce=NONCES["gce-cos-85-nonce9009"], anchor=anchoring)
    return {"tpm_attestation": block}, verdict, NOW.timestamp()


@pytest.mark.parametrize(
    ("rule", "status"),
    [
        ({"projects": ["google.com:wuale-gcp-testing"], "zones": ["us-central1-a"]}, "pass"),
        ({"projects": ["google.com:wuale-gcp-testing"]}, "pass"),
        ({"projects": ["another-project"]}, "fail"),
        ({"zones": ["europe-west4-a"]}, "fail"),
    ],
)
def test_gce_rule_on_the_real_gce_anchor(rule: dict, status: str) -> None:
    meta, verdict, now = gce_verdict()
    assert verdict.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    (outcome,) = evaluate(policy({"gce": rule}), meta, now=now, verdict=verdict).rules
    assert outcome.status == status, outcome
    unanchored = verify_attestation(meta["tpm_attestation"], None, expected_nonce=bytes.fromhex("9009"))
    (again,) = evaluate(policy({"gce": rule}), meta, now=now, verdict=unanchored).rules
    assert again.status == status  # appraised from the reply's own platform evidence
    (snp,) = evaluate(policy({"sev_snp": {"debug": False}}), meta, now=now, verdict=verdict).rules
    assert snp.status == "fail" and "azure-sev-snp" in snp.detail


def tdx_verdict():
    """C3's real trustee TDX VM: its vTPM quote with its HCL report and TD quote as the platform."""
    where = AZURE.parent / "azure-tdx" / "trustee"
    block = vtpm_block(where)
    block["platform"] = {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode((where / "hcl_report.bin").read_bytes()).decode(),
        "td_quote_b64": base64.b64encode((where / "td_quote.bin").read_bytes()).decode(),
    }
    at = datetime(2025, 11, 1, tzinfo=timezone.utc)
    anchoring = Anchoring(TrustStore.bundled(), at=at)
    return (
        {"tpm_attestation": block},
        verify_attestation(block, None, expected_nonce=b"challenge", anchor=anchoring),
        at,
    )


def test_tdx_rule_on_the_real_tdx_anchor() -> None:
    meta, verdict, at = tdx_verdict()
    assert verdict.passed, [f for f in verdict.findings if f.status == "fail"]  # signer_name too
    mrtd = verdict.facts["platform"]["mrtd"]
    now = at.timestamp()
    for rule, status in [
        ({"mrtd": [mrtd], "debug": False}, "pass"),
        ({"mrtd": ["00" * 48]}, "fail"),
        ({"tcb_status": ["UpToDate"]}, "fail"),  # no collateral: unknown, never assumed up to date
        ({"tcb_status": ["UpToDate", "unknown"]}, "pass"),
    ]:
        (outcome,) = evaluate(policy({"tdx": rule}), meta, now=now, verdict=verdict).rules
        assert outcome.status == status, (rule, outcome)
