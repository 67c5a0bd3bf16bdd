"""Reports show a cloud anchor and its facts per attestation key (issue 17 section 4): the cloud, the VM's
project, zone and instance for GCE, the CPU, its TCB and the measurement for a confidential VM, and a TCB
status "unknown" is flagged, never shown as up to date."""

from __future__ import annotations

import json

from test_gce_anchor import cos_block
from test_platform import NONCE, append_metadata

from nomyo_audit.audit import AuditLog, build_report
from nomyo_audit.audit._render import render_report
from nomyo_audit.client._activation import PreparedAnchor, anchor_reply
from nomyo_audit.tpm import TrustStore, verify_attestation

SNP_FACTS = {
    "anchor_kind": "azure-sev-snp",
    "chain_subjects": ["CN=SEV-VCEK", "CN=SEV-Milan", "CN=ARK-Milan"],
    "anchor_root_sha256": "ab" * 32,
    "manufacturer": "AMD",
    "tpm_model": None,
    "tpm_firmware_version": None,
    "platform": {
        "cloud": "azure", "cpu": "amd-sev-snp", "product": "Milan", "report_version": 2,
        "measurement": "cd" * 48, "host_data": "00" * 32, "policy": 196608, "debug": False, "vmpl": 0,
        "reported_tcb": {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115},
        "chip_id": "ef" * 64, "tcb_status": "unknown",
    },
}  # fmt: skip


def _report(tmp_path, metadatas):
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "cloud.db"
    with AuditLog(path) as log:
        for number, metadata in enumerate(metadatas):
            append_metadata(log, f"p{number}", metadata)
    with AuditLog.open(path) as log:
        documents = [json.loads(row.data) for row in log.store.records()]
        report = build_report(documents, generated_at="2026-01-01T00:00:00Z", log_state=log.verified_state())
    rendered = render_report(report, ["md", "html"])
    return report, {name.rsplit(".", 1)[-1]: data.decode() for name, data in rendered.items()}


def _gce_metadata() -> dict:
    response = {"_metadata": {"tpm_attestation": cos_block()}}
    verdict = verify_attestation(response["_metadata"]["tpm_attestation"], None, expected_nonce=NONCE)
    anchor_reply(response, verdict, PreparedAnchor(None, TrustStore.bundled()))
    return response["_metadata"]


def _snp_metadata(tcb_status: str) -> dict:
    metadata = _gce_metadata()  # the same signed quote; the client's verdict says what anchored it
    facts = {**metadata["verification"]["facts"], **SNP_FACTS}
    facts["platform"] = {**SNP_FACTS["platform"], "tcb_status": tcb_status}
    findings = [
        {**f, "code": "aik_anchored_azure_sev_snp"} if f["check"] == "aik_anchor" else f
        for f in metadata["verification"]["findings"]
    ]
    metadata["verification"] = {**metadata["verification"], "facts": facts, "findings": findings}
    return metadata


def test_a_gce_anchor_shows_the_vm_it_names(tmp_path):
    report, files = _report(tmp_path, [_gce_metadata(), _gce_metadata()])
    (aik,) = report["aiks"]
    (anchor,) = aik["anchors"]
    assert (anchor["kind"], anchor["manufacturer"], anchor["records"]) == ("gce-ak-cert", "Google", 2)
    assert anchor["platform"]["project_id"] == "google.com:wuale-gcp-testing"
    assert anchor["platform"]["zone"] == "us-central1-a"
    assert anchor["platform"]["instance_id"] == "6797026933021542085"
    assert anchor["tcb_unknown"] is False
    for name, text in files.items():
        if name == "md":  # Markdown shows the facts as text: its formatting characters escaped
            text = text.replace("\\_", "_")
        assert "anchored (gce-ak-cert)" in text
        assert "project_id google.com:wuale-gcp-testing" in text and "instance_name cos-test" in text
        assert "TCB status unknown" not in text


def test_a_confidential_vm_anchor_flags_an_unknown_tcb(tmp_path):
    report, files = _report(tmp_path, [_snp_metadata("unknown")])
    (anchor,) = report["aiks"][0]["anchors"]
    assert anchor["kind"] == "azure-sev-snp" and anchor["tcb_unknown"] is True
    assert anchor["platform"]["reported_tcb"] == "bootloader=3 microcode=115 snp=8 tee=0"  # as kept: sorted
    assert "**TCB status unknown**" in files["md"]
    assert '<span class="bad">TCB status unknown</span>' in files["html"]
    assert "measurement " + "cd" * 48 in files["md"] and "cpu amd-sev-snp" in files["md"]
    report, files = _report(tmp_path / "uptodate", [_snp_metadata("UpToDate")])
    assert report["aiks"][0]["anchors"][0]["tcb_unknown"] is False
    assert "TCB status unknown" not in files["md"] and "tcb\\_status UpToDate" in files["md"]


def test_an_old_ca_or_ek_anchor_row_is_unchanged():
    from nomyo_audit.audit._report_anchor import anchor_row

    row = anchor_row(("ek", "id:00001014", "swtpm", "1", ("", "CN=root"), ()), 3)
    assert set(row) == {
        "kind",
        "manufacturer",
        "tpm_model",
        "tpm_firmware_version",
        "chain_subjects",
        "records",
    }
