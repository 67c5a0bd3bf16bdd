"""A confidential-VM anchor whose recorded facts do not establish a TCB status is flagged "unknown",
never shown as if its TCB were current; Markdown shows the anchor's facts and chain as text, not as
formatting (a writer chose those bytes)."""

from __future__ import annotations

from test_platform_report import _report, _snp_metadata

from nomyo_audit.audit._report_anchor import anchor_row


def test_a_cpu_anchor_without_a_tcb_status_is_flagged_unknown():
    platform = (("cpu", "amd-sev-snp"), ("measurement", "cd" * 48))
    row = anchor_row(("azure-sev-snp", "AMD", None, None, ("CN=VCEK", "CN=ARK-Milan"), platform), 1)
    assert row["tcb_unknown"] is True
    tdx = anchor_row(("azure-tdx", "Intel", None, None, ("CN=PCK",), (("cpu", "intel-tdx"),)), 1)
    assert tdx["tcb_unknown"] is True


def test_a_gce_anchor_has_no_cpu_tcb_to_flag():
    row = anchor_row(("gce-ak-cert", "Google", None, None, ("CN=ak",), (("cloud", "gce"),)), 1)
    assert row["tcb_unknown"] is False


def test_markdown_shows_anchor_facts_as_text(tmp_path):
    metadata = _snp_metadata("unknown")
    facts = metadata["verification"]["facts"]
    facts["platform"] = {**facts["platform"], "measurement": "*bold* _it_ [link](x)"}
    _, files = _report(tmp_path, [metadata])
    assert "*bold* _it_ [link](x)" not in files["md"]
    assert "\\*bold\\* \\_it\\_ \\[link](x)" in files["md"]
