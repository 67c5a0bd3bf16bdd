"""The Azure TDX anchor (``azure-tdx``) against real evidence from trustee and openpcc, and forgeries.

tests/fixtures/cloud-anchors/azure-tdx/PROVENANCE.md names the sources. The collection's MANIFEST
records what independent code found for each set (quote signature by the attestation key, QE report
by the PCK, QE binding, PCK chain to the Intel SGX Root CA, FMSPC, MRTD): here our appraiser must
find the same, with the root shipped in tpm-roots/Intel-SGX, and give each forgery its own code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from sev_snp_evidence import azure_aik, vtpm_block
from tdx_forge import ForgedPck, QuoteParts

from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._anchoring import Anchoring
from nomyo_audit.tpm._hcl import parse_hcl_report
from nomyo_audit.tpm._public import Public
from nomyo_audit.tpm._tdx import appraise_tdx
from nomyo_audit.tpm._tdx_quote import parse_td_quote

FIXTURES = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure-tdx"
AT = datetime(2025, 11, 1, tzinfo=timezone.utc)
#: from the collection's MANIFEST.json (its own DCAP-layout reader): FMSPC and MRTD of each quote
EXPECTED = {
    "trustee": (
        "00806f050000",
        "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b",
    ),
    "openpcc-DCesv6": (
        "90c06f000000",
        "f858414aef26d52a3b21614bab4bafab13b3ed62ebdd9d46a6be799228c2e27bc0d025cc6e4e90daff827cbe0316bbd9",
    ),
}
INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"


def aik_of(name: str) -> Public:
    """The quoting AIK with the set's HCLAkPub, in the Azure vTPM AK template."""
    return azure_aik((FIXTURES / name / "ak_pub.pem").read_bytes())


def files(name: str) -> tuple[bytes, bytes]:
    return (FIXTURES / name / "hcl_report.bin").read_bytes(), (FIXTURES / name / "td_quote.bin").read_bytes()


def appraise(hcl: bytes, quote: bytes, *, aik: Public | None = None, store: TrustStore | None = None, **kw):
    return appraise_tdx(aik or aik_of("trustee"), hcl, quote, store or TrustStore.bundled(), at=AT, **kw)


def code(result) -> tuple[str, str]:
    return result.finding.status, result.finding.code


@pytest.fixture(scope="module")
def trustee() -> tuple[bytes, bytes, QuoteParts]:
    hcl, quote = files("trustee")
    return hcl, quote, QuoteParts.of(parse_td_quote(quote), padding=70)


# -- real evidence ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_td_quote_anchors_its_hcl_ak(name):
    hcl, quote = files(name)
    result = appraise(hcl, quote, aik=aik_of(name))
    assert code(result) == ("pass", "aik_anchored_azure_tdx"), result.finding.detail
    fmspc, mrtd = EXPECTED[name]
    facts = result.facts
    assert facts["anchor_kind"] == "azure-tdx" and facts["manufacturer"] == "Intel"
    assert facts["anchor_root_sha256"] == INTEL_ROOT_SHA256
    assert [s.split("CN=")[1] for s in facts["chain_subjects"]] == [
        "Intel SGX PCK Certificate", "Intel SGX PCK Platform CA", "Intel SGX Root CA"]  # fmt: skip
    platform = facts["platform"]
    assert (platform["fmspc"], platform["mrtd"]) == (fmspc, mrtd)
    assert platform["cloud"] == "azure" and platform["cpu"] == "intel-tdx" and platform["debug"] is False
    assert len(platform["rtmrs"]) == 4 and all(len(r) == 96 for r in platform["rtmrs"])
    # no collateral for this FMSPC exists anywhere: the status is stated unknown, never "UpToDate"
    assert platform["tcb_status"] == "unknown" and "TCB status unknown" in result.finding.detail
    assert result.valid_from is not None and result.valid_until is not None


def test_collateral_for_another_fmspc_leaves_the_tcb_unknown():
    hcl, quote = files("trustee")
    collateral = json.loads((FIXTURES / "tcbInfo.json").read_text())
    assert collateral["tcbInfo"]["fmspc"] != EXPECTED["trustee"][0].upper()
    result = appraise(hcl, quote, collateral=collateral)
    assert code(result) == ("pass", "aik_anchored_azure_tdx")
    assert result.facts["platform"]["tcb_status"] == "unknown"


def test_the_quote_tdreport_and_hcl_agree_as_the_manifest_says():
    """Independent of the appraiser: the layout constants put the TD quote's report_data where the
    TDREPORT's is, and both are SHA-256 of the HCL variable data, zero-extended."""
    hcl, quote = files("trustee")
    report = parse_hcl_report(hcl)
    digest = hashlib.sha256(report.variable_data).digest() + bytes(32)
    assert quote[48 + 520 : 48 + 584] == digest == report.hw_report[128:192]
    assert digest.hex().startswith("9734504f161d104c")  # MANIFEST var_data_sha256


@pytest.mark.parametrize("name", ["trustee", "openpcc-DCesv6", "kinvolk"])
def test_every_real_tdx_hcl_report_binds_its_ak(name):
    """All three TDX HCL reports (kinvolk's has no TD quote) hold a TDREPORT whose report_data is
    SHA-256 of their variable data, and their HCLAkPub is the key the collection extracted."""
    from nomyo_audit.tpm._hcl import hcl_ak_matches

    report = parse_hcl_report((FIXTURES / name / "hcl_report.bin").read_bytes())
    assert report.report_type == "tdx" and len(report.hw_report) == 1024
    assert hashlib.sha256(report.variable_data).digest() == report.hw_report[128:160]
    assert hcl_ak_matches(report, aik_of(name))


def test_the_real_tpm_quote_passes_the_whole_verifier_with_its_tdx_anchor():
    """The trustee VM's vTPM quote (nonce "challenge") with its HCL report and TD quote as the
    ``platform`` a router would attach: every check passes, the azure-tdx anchor included (the AK
    template C2 recovered from the real quotes makes its qualifiedSigner, tests/sev_snp_evidence.py)."""
    hcl, quote = files("trustee")
    block = vtpm_block(FIXTURES / "trustee")
    block["platform"] = {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(hcl).decode(),
        "td_quote_b64": base64.b64encode(quote).decode(),
    }
    verdict = verify_attestation(
        block, None, expected_nonce=b"challenge", anchor=Anchoring(TrustStore.bundled(), at=AT)
    )
    assert verdict.passed, {f.check: f.code for f in verdict.findings if f.status == "fail"}
    anchor = verdict.finding("aik_anchor")
    assert (anchor.status, anchor.code) == ("pass", "aik_anchored_azure_tdx")
    assert verdict.facts["platform"]["fmspc"] == EXPECTED["trustee"][0]
    # the same quote with another machine's TDX evidence: the HCL AK is not this AIK
    block["platform"]["hcl_report_b64"], block["platform"]["td_quote_b64"] = (
        base64.b64encode(b).decode() for b in files("openpcc-DCesv6")
    )
    other = verify_attestation(
        block, None, expected_nonce=b"challenge", anchor=Anchoring(TrustStore.bundled(), at=AT)
    )
    assert (other.finding("aik_anchor").status, other.finding("aik_anchor").code) == (
        "fail",
        "hcl_ak_mismatch",
    )


# -- mutations of real evidence: each its own code ----------------------------------------------------


def test_a_broken_td_quote_signature(trustee):
    hcl, _, parts = trustee
    broken = bytearray(parts.signature)
    broken[5] ^= 0x01
    assert code(appraise(hcl, replace(parts, signature=bytes(broken)).assemble())) == (
        "fail", "tdx_signature_invalid")  # fmt: skip


@pytest.mark.parametrize("offset", [0x88, 0x148, 0x208 + 40, 0x78])  # MRTD, RTMR0, report_data, attributes
def test_a_changed_td_body_breaks_the_quote_signature(trustee, offset):
    hcl, _, parts = trustee
    body = bytearray(parts.body)
    body[offset] ^= 0x01
    assert code(appraise(hcl, replace(parts, body=bytes(body)).assemble())) == (
        "fail",
        "tdx_signature_invalid",
    )


def test_a_changed_byte_in_the_hcl_variable_data(trustee):
    hcl, quote, _ = trustee
    at = hcl.index(b'"user-data":"') + len(b'"user-data":"')  # a hex digit: the JSON stays valid
    changed = bytearray(hcl)
    changed[at] = ord("1")
    assert code(appraise(bytes(changed), quote)) == ("fail", "hcl_binding_mismatch")


def test_any_changed_byte_in_the_hcl_variable_data_never_passes(trustee):
    hcl, quote, _ = trustee
    start = 1236
    size = struct.unpack_from("<I", hcl, 1216 + 16)[0]
    for at in range(start, start + size, 3):
        changed = bytearray(hcl)
        changed[at] ^= 0x20
        assert code(appraise(bytes(changed), quote))[1] in ("hcl_binding_mismatch", "hcl_malformed"), at


@pytest.mark.parametrize("offset", [264, 264 + 0x77, 512, 512 + 16, 512 + 0x18F])  # TEE_TCB_SVN .. RTMR3
def test_a_tdreport_that_is_not_the_quotes(trustee, offset):
    """The HCL report's TDREPORT must hold what the quote signs (its MRTD, RTMRs, SEAM fields...)."""
    hcl, quote, _ = trustee
    changed = bytearray(hcl)
    changed[32 + offset] ^= 0x01
    assert code(appraise(bytes(changed), quote)) == ("fail", "tdx_tdreport_mismatch")


def test_a_qe_report_whose_binding_breaks(trustee):
    hcl, _, parts = trustee
    auth = bytearray(parts.qe_auth_data)
    auth[0] ^= 0x01
    assert code(appraise(hcl, replace(parts, qe_auth_data=bytes(auth)).assemble())) == (
        "fail",
        "tdx_qe_binding",
    )
    key = bytearray(parts.attestation_key)
    key[7] ^= 0x01
    assert code(appraise(hcl, replace(parts, attestation_key=bytes(key)).assemble())) == (
        "fail",
        "tdx_qe_binding",
    )


def test_a_qe_report_not_signed_by_the_pck(trustee):
    hcl, _, parts = trustee
    report = bytearray(parts.qe_report)
    report[0x40] ^= 0x01  # MRENCLAVE
    assert code(appraise(hcl, replace(parts, qe_report=bytes(report)).assemble())) == (
        "fail", "tdx_qe_report_invalid")  # fmt: skip


def test_a_pck_chain_to_another_root(trustee):
    """A forger's hierarchy under a root named "Intel SGX Root CA": the bundled store does not hold
    it (cert_unknown_root); a store that holds a root of another name still refuses (tdx_pck_chain)."""
    hcl, _, parts = trustee
    forged = ForgedPck().forge(parts)
    assert code(appraise(hcl, forged)) == ("fail", "cert_unknown_root")
    other = ForgedPck(root_cn="Some Other Root CA")
    store = TrustStore.bundled() | TrustStore.from_pem(other.root_pem)
    assert code(appraise(hcl, other.forge(parts), store=store)) == ("fail", "tdx_pck_chain")


def test_the_embedded_chain_with_the_real_pck_but_the_root_left_out_still_anchors(trustee):
    """The quote's own root copy is never what is trusted: leaving it out changes nothing."""
    hcl, quote, parts = trustee
    pck, platform_ca, _ = (x509.load_der_x509_certificate(d) for d in parse_td_quote(quote).pck_chain)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (pck, platform_ca))
    assert code(appraise(hcl, replace(parts, chain_pem=pem).assemble())) == ("pass", "aik_anchored_azure_tdx")


def test_an_expired_pck_certificate(trustee):
    hcl, quote, _ = trustee
    late = appraise_tdx(
        aik_of("trustee"), hcl, quote, TrustStore.bundled(), at=datetime(2031, 1, 1, tzinfo=timezone.utc)
    )
    assert code(late) == ("fail", "cert_expired")


def test_the_hcl_ak_must_be_the_quoting_aik(trustee):
    hcl, quote, _ = trustee
    assert code(appraise(hcl, quote, aik=aik_of("openpcc-DCesv6"))) == ("fail", "hcl_ak_mismatch")


def test_another_vms_hcl_report_with_this_td_quote(trustee):
    """kinvolk's HCL report binds its own variable data, but this TD quote signs another report_data."""
    _, quote, _ = trustee
    hcl = (FIXTURES / "kinvolk" / "hcl_report.bin").read_bytes()
    assert code(appraise(hcl, quote, aik=aik_of("kinvolk"))) == ("fail", "tdx_report_data_mismatch")


# -- forged end to end under a trusted test root: the checks after the signatures ----------------------


def with_tdreport(hcl: bytes, body: bytes) -> bytes:
    """The HCL report with its TDREPORT's TEE_TCB_INFO and TDINFO fields set to a TD body's (the
    report_data, which the variable data binds, unchanged): as if the TDREPORT held that TD."""
    changed = bytearray(hcl)
    changed[32 + 264 : 32 + 264 + 0x78] = body[:0x78]
    changed[32 + 512 : 32 + 512 + 0x190] = body[0x78:0x208]
    return bytes(changed)


@pytest.fixture(scope="module")
def forger() -> tuple[ForgedPck, TrustStore]:
    pck = ForgedPck()
    return pck, TrustStore.from_pem(pck.root_pem)


def test_a_forged_quote_passes_only_when_its_root_is_trusted(trustee, forger):
    hcl, _, parts = trustee
    pck, store = forger
    assert code(appraise(hcl, pck.forge(parts), store=store)) == ("pass", "aik_anchored_azure_tdx")


@pytest.mark.parametrize(
    "offset, value",
    [(0x80, 0x8C), (0x100, 0x01), (0x30, 0x17), (0x10, 0x01)],  # MRSIGNER, ISVPRODID, DEBUG, MISCSELECT
)
def test_a_pck_signed_report_of_another_enclave_is_not_a_quoting_enclave(trustee, forger, offset, value):
    """The PCK signs any enclave with the provisioning key: only Intel's TD QE identity (its MRSIGNER,
    ISVPRODID 2, non-debug attributes, MISCSELECT 0) makes the attestation key Intel's."""
    hcl, _, parts = trustee
    pck, store = forger
    report = bytearray(parts.qe_report)
    report[offset] = value
    result = appraise(hcl, pck.forge(parts, qe_report=bytes(report)), store=store)
    assert code(result) == ("fail", "tdx_qe_identity")


def test_a_debug_td(trustee, forger):
    hcl, _, parts = trustee
    pck, store = forger
    body = bytearray(parts.body)
    body[0x78] |= 0x01  # TDATTRIBUTES.DEBUG
    forged = pck.forge(parts, body=bytes(body))
    assert code(appraise(with_tdreport(hcl, bytes(body)), forged, store=store)) == ("fail", "tdx_debug")


@pytest.mark.parametrize("offset", [0x40, 0x6F, 0x70])  # MRSIGNERSEAM first and last byte, SEAMATTRIBUTES
def test_a_tdx_module_not_signed_by_intel(trustee, forger, offset):
    """Intel's TDX module has a zero MRSIGNERSEAM and SEAMATTRIBUTES (the tdxModule identity of
    every tcbInfo, e.g. tests/fixtures/cloud-anchors/azure-tdx/tcbInfo.json)."""
    hcl, _, parts = trustee
    pck, store = forger
    body = bytearray(parts.body)
    body[offset] = 0x01
    forged = pck.forge(parts, body=bytes(body))
    assert code(appraise(with_tdreport(hcl, bytes(body)), forged, store=store)) == (
        "fail",
        "tdx_module_identity",
    )


def test_the_tcbinfo_fixture_names_intels_tdx_module_identity():
    module = json.loads((FIXTURES / "tcbInfo.json").read_text())["tcbInfo"]["tdxModule"]
    assert module == {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8}


def test_a_signed_report_data_that_is_not_the_tdreports(trustee, forger):
    hcl, _, parts = trustee
    pck, store = forger
    body = bytearray(parts.body)
    body[0x208 + 63] = 0x01  # report_data[63]: the HCL binds only [0:32], the rest must match too
    assert code(appraise(hcl, pck.forge(parts, body=bytes(body)), store=store)) == (
        "fail", "tdx_report_data_mismatch")  # fmt: skip


def test_a_pck_certificate_without_fmspc(trustee):
    hcl, _, parts = trustee
    pck = ForgedPck(fmspc=None)
    assert code(appraise(hcl, pck.forge(parts), store=TrustStore.from_pem(pck.root_pem))) == (
        "fail", "tdx_pck_chain")  # fmt: skip


def test_an_snp_hcl_report_is_not_tdx_evidence(trustee):
    snp = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure" / "snp" / "trustee-evidence-v0"
    _, quote, _ = trustee
    result = appraise((snp / "hcl_report.bin").read_bytes(), quote)
    assert code(result) == ("fail", "hcl_malformed") and "SEV-SNP" in result.finding.detail
