"""The anchor a client records for a cloud (platform) anchor (review R5): ``verdict.anchor`` keeps the
SHA-256 of the platform evidence, not a second copy of it (the record's ``tpm_attestation`` keeps the
object once, as a blob); re-appraisal takes the evidence from the record's block, checked against
that digest. Old records with the inline copy still read and re-appraise. Real GCE COS-85 evidence.
"""

from __future__ import annotations

import asyncio
import copy
import json

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from test_gce_anchor import GCE, NONCES, ROOTS, cos_block

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._bundle import build_bundle
from nomyo_audit.audit._bundle_verify import verify_bundle
from nomyo_audit.cli import cli
from nomyo_audit.client._activation import PreparedAnchor, anchor_reply
from nomyo_audit.client._audit import record_call
from nomyo_audit.client._call import CompletionCall
from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._anchor import AnchorEvidence
from nomyo_audit.tpm._anchoring import evidence_in_block, recorded_anchoring

NONCE = NONCES["gce-cos-85-nonce9009"]


def _anchored_reply(block: dict) -> dict:
    """A reply the client anchored under aik_trust gce-ak-cert (its _metadata.verification filled)."""
    response = {"_metadata": {"payload_id": "p0", "tpm_attestation": block}}
    verdict = verify_attestation(block, None, expected_nonce=NONCE)
    anchored = anchor_reply(response, verdict, PreparedAnchor(None, TrustStore.bundled()))
    assert anchored.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    return response


def _record_reply(path, response: dict, payload_id: str = "p0") -> None:
    with AuditLog(path) as log:
        call = CompletionCall(payload={"model": "m", "messages": []}, payload_id=payload_id)
        asyncio.run(
            record_call(
                log, call, router="https://r", server_key=None, outcome="ok", request=None, response=response
            )
        )


def _stored(path) -> dict:
    with AuditLog.open(path) as log:
        return json.loads(next(iter(log.store.records())).data)


def _verify_log(path):
    options = ["--nonce", "9009", "--roots", str(ROOTS / "Google")]
    result = CliRunner().invoke(cli, ["verify", "--format", "json", "--log", str(path), *options])
    verdicts = json.loads(result.stdout) if result.stdout.startswith("[") else None
    return result, verdicts


def _anchor_finding(verdict: dict) -> tuple[str, str]:
    finding = next(f for f in verdict["findings"] if f["check"] == "aik_anchor")
    return finding["status"], finding["code"]


def test_the_recorded_anchor_keeps_a_digest_not_a_second_copy_of_the_platform(tmp_path):
    response = _anchored_reply(cos_block())
    recorded = response["_metadata"]["verification"]["anchor"]
    assert "platform" not in recorded and len(recorded["platform_evidence_sha256"]) == 64
    path = tmp_path / "audit.db"
    _record_reply(path, response)
    document = _stored(path)
    anchor_text = json.dumps(document["verdict"]["anchor"])
    assert "BEGIN CERTIFICATE" not in anchor_text and len(anchor_text) < 400, anchor_text
    result, verdicts = _verify_log(path)
    assert result.exit_code == 0, result.output
    assert _anchor_finding(verdicts[0]) == ("pass", "aik_anchored_gce_ak_cert")
    assert verdicts[0]["facts"]["platform"]["cloud"] == "gce"
    # log verify: the anchor's digest is no blob reference (no blob of that name, no problem)
    assert CliRunner().invoke(cli, ["log", "verify", "--log", str(path)]).exit_code == 0


def test_the_recorded_digest_must_name_the_blocks_own_platform_evidence():
    """A recorded digest-only anchor re-appraised beside other platform evidence fails, never passes."""
    recorded = _anchored_reply(cos_block())["_metadata"]["verification"]["anchor"]
    other = cos_block(cert=(GCE / "ak-certs" / "GCE_AK_RSA_UCA.der").read_bytes())
    anchoring = recorded_anchoring(TrustStore.bundled(), recorded, at=None)
    verdict = verify_attestation(other, None, expected_nonce=NONCE, anchor=anchoring)
    finding = verdict.finding("aik_anchor")
    assert (finding.status, finding.code) == ("fail", "anchor_platform_mismatch")
    bare = {k: v for k, v in cos_block().items() if k != "platform"}
    verdict = verify_attestation(
        bare, None, expected_nonce=NONCE, anchor=recorded_anchoring(TrustStore.bundled(), recorded, at=None)
    )
    assert (verdict.finding("aik_anchor").status, verdict.finding("aik_anchor").code) == (
        "fail",
        "anchor_platform_missing",
    )
    # the same anchor beside its own evidence passes, at its recorded time
    verdict = verify_attestation(
        cos_block(),
        None,
        expected_nonce=NONCE,
        anchor=recorded_anchoring(TrustStore.bundled(), recorded, at=None),
    )
    assert verdict.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"


@pytest.mark.parametrize(
    "change",
    [
        {"platform_evidence_sha256": "00" * 31},
        {"platform_evidence_sha256": "AB" * 32},
        {"kind": "ca"},
        {"kind": "azure-tdx"},  # the digest cannot say which kind, the block's evidence is GCE
    ],
)
def test_a_bad_digest_only_anchor_never_passes(change):
    recorded = {**_anchored_reply(cos_block())["_metadata"]["verification"]["anchor"], **change}
    try:
        anchoring = recorded_anchoring(TrustStore.bundled(), recorded, at=None)
    except EvidenceError:  # pragma: no cover - recorded_anchoring raises nothing
        raise
    verdict = verify_attestation(cos_block(), None, expected_nonce=NONCE, anchor=anchoring)
    assert verdict.finding("aik_anchor").status == "fail"
    with pytest.raises(EvidenceError) if change.get("kind") != "azure-tdx" else _nothing():
        AnchorEvidence.from_dict(recorded)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_an_old_record_with_the_inline_copy_still_reappraises(tmp_path):
    evidence = evidence_in_block(cos_block())
    response = _anchored_reply(cos_block())
    old = {**response["_metadata"]["verification"]["anchor"], "platform": evidence.platform.to_dict()}
    old.pop("platform_evidence_sha256")
    assert AnchorEvidence.from_dict(old).platform == evidence.platform
    response["_metadata"]["verification"]["anchor"] = old
    path = tmp_path / "old.db"
    _record_reply(path, response)
    assert "platform" in _stored(path)["verdict"]["anchor"]
    result, verdicts = _verify_log(path)
    assert result.exit_code == 0, result.output
    assert _anchor_finding(verdicts[0]) == ("pass", "aik_anchored_gce_ak_cert")


def test_a_bundle_of_a_digest_only_anchor_reappraises(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "audit.db"
    with AuditLog(path, key=key) as log:
        call = CompletionCall(payload={"model": "m", "messages": []}, payload_id="p0")
        response = _anchored_reply(cos_block())
        asyncio.run(
            record_call(
                log, call, router="https://r", server_key=None, outcome="ok", request=None, response=response
            )
        )
        log.checkpoint()
        bundle = build_bundle(log, "p0")
    assert "BEGIN CERTIFICATE" not in json.dumps(bundle["anchor"])
    result = verify_bundle(bundle, key=key.public_key(), roots=TrustStore.from_directory(ROOTS / "Google"))
    assert result.intact, result.checks
    assert result.verdict.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    altered = copy.deepcopy(bundle)
    altered["anchor"]["recorded"]["platform_evidence_sha256"] = "0" * 64
    assert not verify_bundle(altered, key=key.public_key(), roots=TrustStore.bundled()).intact


def test_collateral_with_a_lone_surrogate_is_platform_malformed_and_the_client_records_it():
    """A valid JSON escape (\\ud800) that no UTF-8 text can hold: the recorded anchor's digest (RFC 8785)
    cannot be taken over it, so reading it is platform_malformed, never an exception in the client."""
    import base64

    tdx = {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(b"HCLA" + bytes(60)).decode(),
        "td_quote_b64": base64.b64encode(bytes(64)).decode(),
        "collateral": json.loads('{"tcb_info": "\\ud800"}'),
    }
    with pytest.raises(EvidenceError) as raised:
        evidence_in_block({"platform": tdx})
    assert raised.value.code == "platform_malformed"
    block = {**cos_block(), "platform": tdx}
    response = {"_metadata": {"payload_id": "p0", "tpm_attestation": block}}
    verdict = verify_attestation(block, None, expected_nonce=NONCE)
    anchored = anchor_reply(response, verdict, PreparedAnchor(None, TrustStore.bundled()))
    assert (anchored.finding("aik_anchor").status, anchored.finding("aik_anchor").code) == (
        "fail",
        "platform_malformed",
    )


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(collateral=st.dictionaries(st.text(max_size=8), JSON, max_size=4))
def test_fuzz_every_platform_that_reads_has_a_recorded_digest(collateral):
    import base64

    tdx = {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(b"HCLA" + bytes(60)).decode(),
        "td_quote_b64": base64.b64encode(bytes(64)).decode(),
        "collateral": collateral,
    }
    try:
        evidence = evidence_in_block({"platform": tdx})
    except EvidenceError as exc:
        assert exc.code == "platform_malformed"
        return
    document = AnchorEvidence(evidence.kind, (), platform=evidence.platform).to_dict()
    assert AnchorEvidence.from_dict(document).platform_sha256 == document["platform_evidence_sha256"]
