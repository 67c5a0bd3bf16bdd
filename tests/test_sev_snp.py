"""The azure-sev-snp anchor against real Azure SEV-SNP evidence (trustee, openpcc, kinvolk:
tests/fixtures/cloud-anchors/azure/PROVENANCE.md) and AMD's real ARK/ASK as shipped in the wheel.

Every coherent real set passes with the facts the collection's MANIFEST.json recorded (three
independent verifiers: trustee, kinvolk, Constellation); its real TPM quote passes our verifier with
the real nonce, by the very AIK the HCL report names. Each mutation fails with its own code, never a
pass. Checks the real CPUs never fail (debug, VMPL) are reached with a test AMD hierarchy.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import pytest
from sev_snp_evidence import (
    AT,
    AZURE,
    COHERENT,
    EXPECTED,
    SEV_ROOTS,
    SNP,
    AmdTestHierarchy,
    aik,
    amd_store,
    azure_aik,
    patch,
    pem_certificates,
    platform_object,
    read,
    tpm_block,
    vcek,
    with_hw_report,
)

from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._sev_snp import appraise_sev_snp

REPO_ROOTS = SEV_ROOTS


def appraise(
    name: str,
    *,
    hcl: bytes | None = None,
    certificate: bytes | None = None,
    chain=(),
    store=None,
    key=None,
    at: datetime = AT,
):
    return appraise_sev_snp(
        key or aik(name),
        read(name, "hcl_report.bin") if hcl is None else hcl,
        vcek(name) if certificate is None else certificate,
        list(chain),
        TrustStore.bundled() if store is None else store,
        at=at,
    )


def code(result) -> str:
    assert result.finding.status == "fail" or result.finding.code.startswith("aik_anchored")
    return result.finding.code


# -- real evidence passes ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COHERENT))
def test_every_real_snp_set_anchors_its_aik(name: str) -> None:
    result = appraise(name)
    assert result.finding.status == "pass", result.finding
    assert result.finding.code == "aik_anchored_azure_sev_snp"
    facts, platform = result.facts, result.facts["platform"]
    product = COHERENT[name]
    assert facts["anchor_kind"] == "azure-sev-snp" and facts["manufacturer"] == "AMD"
    amd = "O=Advanced Micro Devices,ST=CA,L=Santa Clara,C=US,OU=Engineering"
    assert facts["chain_subjects"] == [
        f"CN=SEV-VCEK,{amd}",
        f"CN=SEV-{product},{amd}",
        f"CN=ARK-{product},{amd}",
    ]
    ark = next(REPO_ROOTS.glob(f"ARK-{product}__*.pem"))
    assert facts["anchor_root_sha256"] == hashlib.sha256(pem_certificates(ark.read_bytes())[0]).hexdigest()
    assert platform["product"] == product and platform["tcb_status"] == "unknown"
    assert platform["debug"] is False and platform["vmpl"] == 0 and platform["cloud"] == "azure"
    assert platform["cpu"] == "amd-sev-snp"
    expected = EXPECTED[name]
    assert platform["report_version"] == expected["report_version"]
    assert platform["measurement"] == expected["measurement"]
    assert platform["chip_id"] == expected["chip_id"]
    assert platform["host_data"] == expected["host_data"]
    assert hex(platform["policy"]) == expected["policy"]
    raw = bytes.fromhex(expected["reported_tcb"])
    assert platform["reported_tcb"] == {
        "bootloader": raw[0],
        "tee": raw[1],
        "snp": raw[6],
        "microcode": raw[7],
    }
    assert result.valid_from is not None and result.valid_from <= AT <= result.valid_until


@pytest.mark.parametrize("name", sorted(n for n in COHERENT if EXPECTED[n]["tpm_quote_nonce"]))
def test_the_real_tpm_quote_verifies_with_the_real_nonce_by_the_hcl_ak(name: str) -> None:
    """The AIK the HCL report binds signed the VM's real quote: the whole verifier, real nonce."""
    nonce = bytes.fromhex(EXPECTED[name]["tpm_quote_nonce"])
    block = tpm_block(name)
    verdict = verify_attestation(block, None, expected_nonce=nonce)
    assert verdict.passed, [f for f in verdict.findings if f.status == "fail"]
    assert verdict.finding("nonce_binding").status == "pass"
    other = verify_attestation(block, None, expected_nonce=nonce[:-1] + bytes([nonce[-1] ^ 1]))
    assert other.finding("nonce_binding").code == "nonce_mismatch"
    assert base64.b64decode(block["aik_pubkey_b64"])[2:] == aik(name).marshal()[2:]
    assert appraise(name).finding.status == "pass"


def test_the_shipped_amd_roots_are_the_collected_ones_and_licensed() -> None:
    shipped = sorted(p.name for p in REPO_ROOTS.glob("*.pem"))
    assert shipped == sorted(p.name for p in (AZURE / "amd-certs").glob("*.pem") if "VLEK" not in p.name)
    provenance = (REPO_ROOTS / "PROVENANCE.md").read_text()
    for name in shipped:
        assert (REPO_ROOTS / name).read_bytes() == (AZURE / "amd-certs" / name).read_bytes()
        row = next(line for line in provenance.splitlines() if line.startswith(f"| `{name}`"))
        digest = hashlib.sha256(pem_certificates((REPO_ROOTS / name).read_bytes())[0]).hexdigest()
        assert digest in row and "(Apache-2.0)" in row
    subjects = {c.subject_text.split(",")[0] for c in TrustStore.bundled().certificates}
    assert {f"CN={k}-{p}" for k in ("ARK", "SEV") for p in ("Milan", "Genoa", "Turin")} <= subjects


# -- mutations of real evidence: each its own code -------------------------------------------------


def test_every_changed_byte_of_the_hcl_variable_data_fails() -> None:
    data = read("trustee-evidence-v0", "hcl_report.bin")
    size = int.from_bytes(data[1232:1236], "little")
    codes = set()
    for at in range(1236, 1236 + size):
        changed = data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1 :]
        result = appraise("trustee-evidence-v0", hcl=changed)
        assert result.finding.status == "fail"
        codes.add(result.finding.code)
    assert codes == {"hcl_binding_mismatch", "hcl_malformed"}


def test_another_aik_is_not_the_hcl_ak() -> None:
    assert code(appraise("trustee-evidence-v0", key=aik("trustee-evidence-genoa"))) == "hcl_ak_mismatch"
    repo_ak = azure_aik(read("kinvolk-az-cvm-vtpm", "akpub-repo.pem"))
    assert code(appraise("kinvolk-az-cvm-vtpm", key=repo_ak)) == "hcl_ak_mismatch"


@pytest.mark.parametrize("other", ["kinvolk-az-cvm-vtpm", "trustee-evidence-v2", "trustee-unit-fixtures"])
def test_a_vcek_of_another_chip_fails(other: str) -> None:
    """Three real Milan VCEKs of other chips (kinvolk's is the incoherent set's own: README)."""
    assert code(appraise("trustee-evidence-v0", certificate=vcek(other))) == "snp_chip_mismatch"


def test_the_incoherent_kinvolk_set_fails_on_its_vcek() -> None:
    assert code(appraise("kinvolk-az-cvm-vtpm")) == "snp_chip_mismatch"


def test_a_chain_to_another_products_ark_fails() -> None:
    genoa = pem_certificates(b"".join(p.read_bytes() for p in sorted(REPO_ROOTS.glob("*-Genoa__*.pem"))))
    assert code(appraise("trustee-evidence-v0", chain=genoa)) == "snp_wrong_product"
    # a Milan VCEK with only Genoa's and Turin's roots trusted: no ARK-Milan
    assert code(appraise("trustee-evidence-v0", store=amd_store("Genoa", "Turin"))) == "cert_unknown_root"
    # a Genoa VCEK for a Milan CPU's report (CPUID family 19h model 01h)
    assert (
        code(appraise("trustee-evidence-v0", certificate=vcek("trustee-evidence-genoa")))
        == "snp_wrong_product"
    )
    # the store's other roots (TPM vendors, Google, Azure) never anchor a VCEK
    store = TrustStore([c for c in TrustStore.bundled().certificates if "ARK-" not in c.subject_text])
    assert code(appraise("trustee-evidence-v0", store=store)) == "cert_unknown_root"


def test_the_real_chain_presented_passes_too() -> None:
    chain = pem_certificates(read("trustee-unit-fixtures", "vcek.pem"))
    assert len(chain) == 3
    result = appraise("trustee-unit-fixtures", chain=chain[1:], store=amd_store("Milan"))
    assert result.finding.status == "pass"


def hw_patched(name: str, offset: int, value: bytes) -> bytes:
    hcl = read(name, "hcl_report.bin")
    return with_hw_report(hcl, patch(read(name, "snp_report.bin"), offset, value))


@pytest.mark.parametrize(
    ("what", "offset", "value", "expected"),
    [
        (
            "debug allowed in the policy",
            0x08,
            (0x3001F | 1 << 19).to_bytes(8, "little"),
            "snp_signature_invalid",
        ),
        ("VMPL 1", 0x30, (1).to_bytes(4, "little"), "snp_signature_invalid"),
        ("measurement", 0x90, b"\x00", "snp_signature_invalid"),
        ("signature r", 0x2A0, b"\x01", "snp_signature_invalid"),
        ("signature s", 0x2E8, b"\x01", "snp_signature_invalid"),
        ("chip id", 0x1A0, b"\x00", "snp_chip_mismatch"),
        ("chip id masked", 0x1A0, bytes(64), "snp_chip_mismatch"),
        ("reported tcb", 0x186, b"\x00", "snp_tcb_mismatch"),
        ("report data", 0x50, b"\x00", "hcl_binding_mismatch"),
        ("version", 0x00, b"\x05", "snp_malformed"),
        ("signature algorithm", 0x34, b"\x02", "snp_malformed"),
        ("signature high bytes", 0x2A0 + 48, b"\x01", "snp_malformed"),
        ("signed by a VLEK", 0x48, b"\x04", "snp_signing_key"),
        ("key info reserved bit", 0x48, b"\x20", "snp_malformed"),
        ("reserved before the signature", 0x1F8, b"\x01", "snp_malformed"),
        ("reserved after the cpuid", 0x18B, b"\x01", "snp_malformed"),
        ("cpu family", 0x188, b"\x1a", "snp_wrong_product"),
    ],
)
def test_a_changed_snp_report_field_fails_with_its_code(
    what: str, offset: int, value: bytes, expected: str
) -> None:
    assert (
        code(appraise("trustee-evidence-v0", hcl=hw_patched("trustee-evidence-v0", offset, value)))
        == expected
    )


def test_certificate_time_and_trust_store() -> None:
    assert (
        code(appraise("trustee-evidence-v0", at=datetime(2040, 1, 1, tzinfo=timezone.utc))) == "cert_expired"
    )
    assert (
        code(appraise("trustee-evidence-v0", at=datetime(2024, 1, 1, tzinfo=timezone.utc)))
        == "cert_not_yet_valid"
    )
    assert code(appraise("trustee-evidence-v0", certificate=b"\x30\x03\x02\x01\x00")) == "cert_malformed"
    ark = pem_certificates(next(REPO_ROOTS.glob("ARK-Milan__*.pem")).read_bytes())[0]
    assert code(appraise("trustee-evidence-v0", certificate=ark)) == "snp_wrong_product"  # issuer ARK-Milan


def test_a_tdx_hcl_report_is_not_an_snp_anchor() -> None:
    tdx = bytearray(read("trustee-evidence-v0", "hcl_report.bin"))
    tdx[1224:1228] = (4).to_bytes(4, "little")
    assert code(appraise("trustee-evidence-v0", hcl=bytes(tdx))) == "hcl_malformed"


# -- a test AMD hierarchy reaches the checks after the signature ------------------------------------


def make_amd(product: str = "Milan") -> tuple[AmdTestHierarchy, bytes]:
    report = read("trustee-evidence-v0", "snp_report.bin")
    raw = report[0x180:0x188]
    tcb = {"bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}
    return AmdTestHierarchy(product, report[0x1A0:0x1E0], tcb), report


def signed_by(amd: AmdTestHierarchy, report: bytes, **kwargs):
    hcl = with_hw_report(read("trustee-evidence-v0", "hcl_report.bin"), amd.sign(report))
    options = {"certificate": amd.vcek, "chain": amd.chain, "store": amd.store} | kwargs
    return appraise("trustee-evidence-v0", hcl=hcl, **options)


def test_a_report_signed_by_a_test_vcek_passes_with_its_root_only() -> None:
    amd, report = make_amd()
    assert signed_by(amd, report).finding.status == "pass"
    assert code(signed_by(amd, report, store=TrustStore.bundled())) == "cert_unknown_root"


def test_debug_allowed_fails_even_when_signed() -> None:
    amd, report = make_amd()
    debug = patch(report, 0x08, (0x3001F | 1 << 19).to_bytes(8, "little"))
    assert code(signed_by(amd, debug)) == "snp_debug_allowed"


def test_vmpl_other_than_zero_fails_even_when_signed() -> None:
    amd, report = make_amd()
    assert code(signed_by(amd, patch(report, 0x30, (2).to_bytes(4, "little")))) == "snp_vmpl"


def test_turin_tcb_layout_and_short_hwid() -> None:
    """Turin: TCB bytes fmc, bootloader, tee, snp, 3 reserved, microcode; hwID is 8 bytes and the
    report's CHIP_ID those 8 followed by zeros (AMD 57230 Table 11; virtee from_turin_bytes)."""
    _, report = make_amd()
    chip = bytes(range(1, 9))
    amd = AmdTestHierarchy("Turin", chip, {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5})
    turin = patch(report, 0x188, bytes([0x1A, 0x02, 0x01]))
    turin = patch(turin, 0x1A0, chip + bytes(56))
    turin = patch(turin, 0x180, bytes([1, 2, 3, 4, 0, 0, 0, 5]))
    result = signed_by(amd, turin)
    assert result.finding.status == "pass", result.finding
    assert result.facts["platform"]["reported_tcb"] == {"bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
    assert result.facts["platform"]["product"] == "Turin"
    milan_layout = patch(turin, 0x180, bytes([2, 3, 0, 0, 0, 0, 4, 5]))
    assert code(signed_by(amd, milan_layout)) == "snp_tcb_mismatch"
    assert code(signed_by(amd, patch(turin, 0x1A8, b"\x01"))) == "snp_chip_mismatch"  # beyond the 8 bytes
    other_fmc = AmdTestHierarchy(
        "Turin", chip, {"fmc": 9, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
    )
    assert code(signed_by(other_fmc, turin)) == "snp_tcb_mismatch"


def test_a_vcek_whose_product_name_is_another_product_fails() -> None:
    _, report = make_amd()
    raw = report[0x180:0x188]
    amd = AmdTestHierarchy(
        "Milan",
        report[0x1A0:0x1E0],
        {"bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]},
        product_name="Genoa",
    )
    assert code(signed_by(amd, report)) == "snp_wrong_product"


def test_fixture_sets_are_all_known() -> None:
    assert {p.name for p in SNP.iterdir() if p.is_dir()} == {*COHERENT, "kinvolk-az-cvm-vtpm"}


# -- through the whole verifier: the router's platform object, the real quote, the real nonce ------


@pytest.mark.parametrize("name", sorted(n for n in COHERENT if EXPECTED[n]["tpm_quote_nonce"]))
def test_the_whole_verifier_anchors_the_real_quote(name: str) -> None:
    from nomyo_audit.tpm._anchoring import Anchoring

    block = tpm_block(name)
    block["platform"] = platform_object(name)
    nonce = bytes.fromhex(EXPECTED[name]["tpm_quote_nonce"])
    verdict = verify_attestation(
        block, None, expected_nonce=nonce, anchor=Anchoring(TrustStore.bundled(), at=AT)
    )
    assert verdict.passed, [f for f in verdict.findings if f.status == "fail"]
    anchor = verdict.finding("aik_anchor")
    assert (anchor.status, anchor.code) == ("pass", "aik_anchored_azure_sev_snp")
    assert verdict.facts["anchor_kind"] == "azure-sev-snp"
    assert verdict.facts["platform"]["measurement"] == EXPECTED[name]["measurement"]
    assert verdict.facts["platform"]["tcb_status"] == "unknown"
    # another VM's HCL report beside this quote: the AK it binds did not sign the quote
    block["platform"]["hcl_report_b64"] = base64.b64encode(
        read("openpcc-azure-sevsnp", "hcl_report.bin")
    ).decode()
    block["platform"]["vcek_pem"] = (SNP / "openpcc-azure-sevsnp" / "vcek.pem").read_text()
    other = verify_attestation(
        block, None, expected_nonce=nonce, anchor=Anchoring(TrustStore.bundled(), at=AT)
    )
    assert other.finding("aik_anchor").code == "hcl_ak_mismatch"
