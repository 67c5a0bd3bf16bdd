"""The `platform` extension object (issue 17): read strictly and bounded, garbage in any field is
`platform_malformed` (never a pass, never a traceback), its anchor is cached by its bytes, kept in
AnchorEvidence next to the old kinds (old records still read), required by `aik_trust` modes, and
re-appraised by `verify --log` from what the audit log kept."""

from __future__ import annotations

import base64
import copy
import json
import time
from datetime import datetime, timezone

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_gce_anchor import AK_CERT, COS_VM, GCE, NONCES, ROOTS, cos_aik, cos_block, pem

from nomyo_audit.audit import AuditLog, build_record
from nomyo_audit.cli import cli
from nomyo_audit.errors import EvidenceError
from nomyo_audit.policy import Policy, Record, appraise
from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._anchor import AnchorEvidence, platform_digest
from nomyo_audit.tpm._anchoring import AnchorCache, Anchoring, evidence_in_block
from nomyo_audit.tpm._platform import (
    MAX_HCL_REPORT,
    MAX_PEM,
    MAX_TD_QUOTE,
    PlatformEvidence,
    appraise_platform,
    read_platform,
)

NONCE = NONCES["gce-cos-85-nonce9009"]
AT = datetime(2026, 11, 26, tzinfo=timezone.utc)
GOOD = {
    "gce": {"kind": "gce", "ak_cert_pem": pem(AK_CERT), "intermediates_pem": []},
    "azure-sev-snp": {
        "kind": "azure-sev-snp",
        "hcl_report_b64": base64.b64encode(b"HCLA" + bytes(60)).decode(),
        "vcek_pem": pem(AK_CERT),
        "cert_chain_pem": [pem(AK_CERT)],
    },
    "azure-tdx": {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(b"HCLA" + bytes(60)).decode(),
        "td_quote_b64": base64.b64encode(bytes(64)).decode(),
        "collateral": {"tcb_info": {"version": 3}},
    },
}


def malformed(value: object) -> str:
    with pytest.raises(EvidenceError) as raised:
        read_platform(value)
    assert raised.value.code == "platform_malformed"
    return raised.value.message


def _bad_pem(text: str) -> str:
    return text.replace("MII", "M!I", 1)


#: (kind, field, garbage): every field of every kind, each way it can be wrong
GARBAGE = [
    (kind, field, value)
    for kind, document in GOOD.items()
    for field in document
    if field != "kind"
    for value in (
        None if field in ("intermediates_pem", "cert_chain_pem", "collateral") else 7,
        "",
        42,
        ["x"] if not field.endswith("_pem") or field in ("ak_cert_pem", "vcek_pem") else "not a list",
        "%%% not base64 %%%",
        "A" * (MAX_PEM + 1) if field.endswith("_pem") else "A" * (MAX_TD_QUOTE * 2),
        _bad_pem(pem(AK_CERT)) if field.endswith("pem") else "QUJD=QUJD",
        pem(AK_CERT) + pem(AK_CERT),
        {"nested": True},
    )
    if not (value is None and field in ("intermediates_pem", "cert_chain_pem", "collateral"))
]


@pytest.mark.parametrize(("kind", "field", "garbage"), GARBAGE)
def test_garbage_in_each_platform_field_is_platform_malformed(kind, field, garbage):
    document = copy.deepcopy(GOOD[kind])
    if field in ("intermediates_pem", "cert_chain_pem"):
        document[field] = garbage if not isinstance(garbage, str) or garbage == "not a list" else [garbage]
    else:
        document[field] = garbage
    if field == "collateral" and isinstance(garbage, dict):
        return  # an object is what collateral is
    message = malformed(document)
    assert "Traceback" not in message and len(message) < 300


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_each_good_object_reads_and_round_trips(kind):
    evidence = read_platform(GOOD[kind])
    assert evidence.kind == kind
    assert read_platform(evidence.to_dict()) == evidence


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "gce",
        {},
        {"kind": "aws-nitro", "ak_cert_pem": "x"},
        {"kind": "gce"},
        {**GOOD["gce"], "surprise": 1},
        {**GOOD["azure-sev-snp"], "ak_cert_pem": GOOD["gce"]["ak_cert_pem"]},
        {**GOOD["gce"], "intermediates_pem": [GOOD["gce"]["ak_cert_pem"]] * 8},  # 9 certificates
        {**GOOD["azure-tdx"], "hcl_report_b64": base64.b64encode(bytes(MAX_HCL_REPORT + 1)).decode()},
        {**GOOD["azure-tdx"], "td_quote_b64": base64.b64encode(bytes(MAX_TD_QUOTE + 1)).decode()},
        {**GOOD["azure-tdx"], "collateral": {"big": "x" * 70_000}},
        {**GOOD["azure-tdx"], "collateral": {"nan": float("nan")}},
        {**GOOD["gce"], "ak_cert_pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"},
    ],
)
def test_wrong_shapes_and_bounds_are_platform_malformed(document):
    malformed(document)


def test_a_malformed_platform_fails_the_anchor_never_passes():
    block = cos_block()
    block["platform"] = {**block["platform"], "ak_cert_pem": "garbage"}
    verdict = verify_attestation(block, None, expected_nonce=NONCE, anchor=Anchoring(TrustStore.bundled()))
    finding = verdict.finding("aik_anchor")
    assert (finding.status, finding.code) == ("fail", "platform_malformed")
    assert verdict.finding("signature").status == "pass"  # the quote itself is fine


def test_the_cpu_kinds_reach_their_appraiser_and_never_pass_on_garbage():
    for kind in ("azure-sev-snp", "azure-tdx"):
        result = appraise_platform(cos_aik(), read_platform(GOOD[kind]), TrustStore.bundled(), at=AT)
        assert result.finding.status == "fail", result.finding
        assert result.finding.code != "platform_unsupported"  # the appraiser ran, and refused it


# -- fuzz ---------------------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["kind", "ak_cert_pem", "intermediates_pem", "hcl_report_b64", "vcek_pem", "cert_chain_pem",
          "td_quote_b64", "collateral", "other"]  # fmt: skip


def _read_or_malformed(value: object) -> None:
    try:
        evidence = read_platform(value)
    except EvidenceError as exc:
        assert exc.code == "platform_malformed"
        return
    assert isinstance(evidence, PlatformEvidence)
    assert read_platform(evidence.to_dict()) == evidence


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_fuzz_any_json_value_reads_or_is_platform_malformed(value):
    _read_or_malformed(value)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(GOOD)),
    st.dictionaries(st.sampled_from(FIELDS), JSON | st.sampled_from([pem(AK_CERT), "QUJD", ""]), max_size=3),
    st.lists(st.sampled_from(FIELDS), max_size=2),
)
def test_fuzz_mutated_good_objects_read_or_are_platform_malformed(kind, changes, removed):
    document = {**copy.deepcopy(GOOD[kind]), **changes}
    for field in removed:
        document.pop(field, None)
    _read_or_malformed(document)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.integers(min_value=0, max_value=2000))
def test_fuzz_a_pem_with_bytes_spliced_in_reads_or_is_malformed(splice, at):
    text = pem(AK_CERT)
    at = min(at, len(text))
    spliced = text[:at] + splice.decode("latin-1") + text[at:]
    _read_or_malformed({"kind": "gce", "ak_cert_pem": spliced})


# -- the anchor's evidence and its cache ---------------------------------------------------------------------


def test_anchor_evidence_keeps_the_platform_and_old_records_still_read():
    evidence = evidence_in_block(cos_block())
    assert evidence is not None and evidence.kind == "gce-ak-cert" and evidence.chain == ()
    kept = AnchorEvidence(evidence.kind, (), platform=evidence.platform, validated_at=AT)
    again = AnchorEvidence.from_dict(json.loads(json.dumps(kept.to_dict())))
    # the record keeps the evidence's digest, not a second copy of it (the block keeps it once)
    assert again == AnchorEvidence(evidence.kind, (), validated_at=AT, platform_sha256=platform_digest(
        evidence.platform))
    assert AnchorEvidence.from_dict(again.to_dict()) == again
    inline = {**kept.to_dict(), "platform": evidence.platform.to_dict()}  # as records kept it before
    inline.pop("platform_evidence_sha256")
    assert AnchorEvidence.from_dict(inline) == kept
    old = AnchorEvidence("ca", (AK_CERT,), validated_at=AT).to_dict()
    assert "platform" not in old and AnchorEvidence.from_dict(old).kind == "ca"
    for document in (
        {**inline, "platform": None},
        {**inline, "platform": {**GOOD["gce"], "ak_cert_pem": "x"}},
        {**inline, "kind": "azure-tdx"},  # a GCE object under another kind
        {**old, "platform": GOOD["gce"]},
        {**kept.to_dict(), "platform": GOOD["gce"]},  # both the copy and the digest
        {**kept.to_dict(), "platform_evidence_sha256": None},
    ):
        with pytest.raises(EvidenceError) as raised:
            AnchorEvidence.from_dict(document)
        assert raised.value.code == "anchor_malformed"


def test_a_block_with_both_anchors_offers_each_by_kind():
    block = cos_block()
    block["aik_cert_chain_b64"] = [base64.b64encode(AK_CERT).decode()]
    assert evidence_in_block(block).kind == "gce-ak-cert"
    assert evidence_in_block(block, "ca").kind == "ca"
    assert evidence_in_block(block, "azure-tdx") is None


def test_repeated_evidence_costs_a_dictionary_lookup():
    cache = AnchorCache()
    store = TrustStore.bundled()
    started = time.perf_counter()
    first = verify_attestation(cos_block(), None, expected_nonce=NONCE, anchor=Anchoring(store, cache=cache))
    cold = time.perf_counter() - started
    assert first.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    blocks = [json.loads(json.dumps(cos_block())) for _ in range(50)]  # fresh objects, as replies parse
    anchoring = Anchoring(store, cache=cache)
    started = time.perf_counter()
    for block in blocks:
        assert anchoring(cos_aik(), block, {}).code == "aik_anchored_gce_ak_cert"
    warm = (time.perf_counter() - started) / len(blocks)
    assert len(cache._entries) == 1
    assert warm < cold / 5 and warm < 0.002, (cold, warm)


# -- policy -------------------------------------------------------------------------------------------------


def _record(block) -> Record:
    return Record("gce", {"tpm_attestation": block}, None, "none", expected_nonce=NONCE)


def _rule(mode: str, block) -> tuple[str, str]:
    policy = Policy.from_document({"metadata": {"name": mode}, "spec": {"aik_trust": {"mode": mode}}})
    appraisal = appraise(_record(block), policy, at=time.time())
    assert appraisal.result is not None
    rule = next(r for r in appraisal.result.rules if r.rule == "aik_trust")
    return rule.status, rule.detail


def test_aik_trust_gce_ak_cert_requires_the_google_anchor():
    status, detail = _rule("gce-ak-cert", cos_block())
    assert status == "pass", detail
    status, detail = _rule("azure-sev-snp", cos_block())
    assert status == "fail" and "azure-sev-snp platform evidence" in detail
    status, _ = _rule("ca", cos_block())
    assert status == "fail"
    other = cos_block(cert=(GCE / "ak-certs" / "GCE_AK_RSA_UCA.der").read_bytes())  # another VM's AK
    status, detail = _rule("gce-ak-cert", other)
    assert status == "fail" and "another key" in detail


def test_aik_trust_platform_modes_validate_and_unknown_modes_do_not():
    from nomyo_audit.policy import PolicyError
    from nomyo_audit.policy._loader import validate_document

    def document(mode: str) -> dict:
        return {"apiVersion": "nomyo-audit/v1", "kind": "AttestationPolicy", "metadata": {"name": "m"},
                "spec": {"aik_trust": {"mode": mode}}}  # fmt: skip

    for mode in ("gce-ak-cert", "azure-sev-snp", "azure-tdx"):
        validate_document(document(mode))
    with pytest.raises(PolicyError):
        validate_document(document("aws-nitro"))


# -- verify --log re-appraises the platform anchor from the stored evidence -----------------------------


def append_metadata(log: AuditLog, payload_id: str, metadata: dict) -> None:
    """One record of a reply's ``_metadata`` (its ``verification``, the client's verdict, kept apart)."""
    log.append(
        payload_id,
        lambda seq, salt: build_record(
            seq=seq,
            timestamp=AT.timestamp(),
            salt=salt,
            payload_id=payload_id,
            router="https://gce.example",
            server_key=None,
            model=None,
            security_tier=None,
            outcome="ok",
            request=None,
            response=None,
            metadata=metadata,
        ),
        AT.timestamp(),
    )


def _log_with(tmp_path, block, anchor=None):
    path = tmp_path / "gce.db"
    metadata = {"tpm_attestation": block}
    if anchor is not None:
        metadata["verification"] = {"result": "pass", "findings": [], "facts": {}, "anchor": anchor}
    with AuditLog(path) as log:
        append_metadata(log, "gce-1", metadata)
    return path


def _verify_log(path, *args):
    result = CliRunner().invoke(cli, ["verify", "--format", "json", "--log", str(path), *args])
    verdicts = json.loads(result.stdout) if result.stdout.startswith("[") else None
    return result.exit_code, verdicts, result


def test_verify_log_reappraises_the_platform_anchor_from_the_stored_block(tmp_path):
    path = _log_with(tmp_path, cos_block())
    code, verdicts, result = _verify_log(path, "--nonce", "9009", "--roots", str(ROOTS / "Google"))
    assert code == 0, result.output
    anchor = next(f for f in verdicts[0]["findings"] if f["check"] == "aik_anchor")
    assert (anchor["status"], anchor["code"]) == ("pass", "aik_anchored_gce_ak_cert")
    assert verdicts[0]["facts"]["platform"] == COS_VM
    code, verdicts, _ = _verify_log(path, "--nonce", "9009", "--roots", str(ROOTS / "Infineon"))
    anchor = next(f for f in verdicts[0]["findings"] if f["check"] == "aik_anchor")
    assert code == 1 and (anchor["status"], anchor["code"]) == ("fail", "cert_unchained")


def test_verify_log_reappraises_the_recorded_platform_anchor_at_its_time(tmp_path):
    evidence = evidence_in_block(cos_block())
    recorded = AnchorEvidence(evidence.kind, (), platform=evidence.platform, validated_at=AT).to_dict()
    path = _log_with(tmp_path, cos_block(), anchor=recorded)
    code, verdicts, result = _verify_log(path, "--nonce", "9009", "--roots", str(ROOTS))
    assert code == 0, result.output
    anchor = next(f for f in verdicts[0]["findings"] if f["check"] == "aik_anchor")
    assert anchor["code"] == "aik_anchored_gce_ak_cert"


def test_the_client_records_the_platform_anchor_it_judged():
    """What a client keeps beside a reply anchored under aik_trust gce-ak-cert: the platform evidence and
    when it was validated, so verify --log re-checks exactly that, at that time."""
    from nomyo_audit.client._activation import PreparedAnchor, anchor_mode, anchor_reply

    policy = Policy.from_document({"metadata": {"name": "g"}, "spec": {"aik_trust": {"mode": "gce-ak-cert"}}})
    assert anchor_mode(policy) == "gce-ak-cert"
    response = {"_metadata": {"tpm_attestation": cos_block()}}
    verdict = verify_attestation(response["_metadata"]["tpm_attestation"], None, expected_nonce=NONCE)
    anchored = anchor_reply(response, verdict, PreparedAnchor(None, TrustStore.bundled()))
    assert anchored.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    recorded = AnchorEvidence.from_dict(response["_metadata"]["verification"]["anchor"])
    platform = evidence_in_block(cos_block()).platform
    assert recorded.kind == "gce-ak-cert" and recorded.platform_sha256 == platform_digest(platform)
    assert recorded.validated_at is not None
