"""The router attaches the cloud's ``platform`` evidence read from its TPM's NV, exactly, and a verifier
never passes it for a TPM the cloud did not certify.

A real swtpm gets the NV indices a cloud vTPM has, defined and written with tpm2-tools (code we did
not write) from real fixture bytes: the GCE AK certificate at 0x01c10000. swtpm 0.7 (libtpms) refuses
NV indices over 2048 bytes (TPM2_PT_NV_INDEX_MAX = 0x800), and a real Azure HCL report fills a
2600-byte index with 2431-2437 bytes of content, so the real HCL report cannot sit in swtpm's NV:
here its first 2048 bytes are written there (the router refuses to start on them, naming why), and
the whole report given through ``--platform-evidence`` with the real TD quote names another key
than swtpm's AIK, so the router refuses to start (``cloud_aik_mismatch``; the exact attachment of a
file's evidence for the router's own key: tests/test_cloud_aik_file_anchor.py). ``platform_object``
(pure) is tested with the full-size NV contents. swtpm's AIK is not the certified key, so for the
GCE certificate in NV the verifier must fail ``gce_ak_mismatch``: never a pass.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require

from nomyo_audit.attest._platform import (
    NV_GCE_AK_CERT_ECC,
    NV_GCE_AK_CERT_RSA,
    NV_HCL_REPORT,
    load_platform_file,
    platform_object,
)
from nomyo_audit.errors import ConfigurationError
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._aik import aik_material
from nomyo_audit.tpm._anchoring import Anchoring

pytestmark = pytest.mark.swtpm

ANCHORS = Path(__file__).parent / "fixtures" / "cloud-anchors"
TDX = ANCHORS / "azure-tdx" / "trustee"
GCE_CERT = ANCHORS / "gce" / "cos-85" / "ak_cert.der"
SNP_HCL = ANCHORS / "azure" / "snp" / "trustee-evidence-v0" / "hcl_report.bin"
#: swtpm's TPM2_PT_NV_INDEX_MAX
SWTPM_NV_INDEX_MAX = 2048


@pytest.fixture
def cloud_tpm():
    """A fresh swtpm of our own (the session one must not get cloud NV indices), and a writer of
    NV indices through tpm2-tools."""
    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    require(shutil.which("tpm2_nvdefine") is not None, "tpm2-tools is not installed")
    with SwtpmProcess(ek_certificates=False) as tpm:

        def define(index: int, data: bytes) -> None:
            env = {**os.environ, "TPM2TOOLS_TCTI": tpm.spec}
            attributes = "ownerread|ownerwrite|authread|authwrite"
            tools = [
                ["tpm2_nvdefine", "-C", "o", "-s", str(len(data)), "-a", attributes, f"0x{index:08x}"],
                ["tpm2_nvwrite", "-C", "o", "-i", "-", f"0x{index:08x}"],
            ]
            for command in tools:
                done = subprocess.run(command, input=data, env=env, capture_output=True, timeout=60)
                assert done.returncode == 0, done.stderr.decode(errors="replace")

        tpm.define = define
        yield tpm


def reply_block(router) -> dict:
    from nomyo_audit import SecureChatCompletion

    async def chat():
        async with SecureChatCompletion(router.url, allow_http=True) as client:
            return await client.create("echo", [{"role": "user", "content": "hello cloud"}])

    meta = asyncio.run(chat())["_metadata"]
    assert meta["verification"]["result"] == "pass", meta["verification"]  # the quote itself is fine
    return meta["tpm_attestation"]


def anchor_of(block: dict):
    """What a verifier with the bundled roots (Google, Intel) says about the reply's anchor."""
    aik = aik_material(block["aik_pubkey_b64"]).public
    return Anchoring(TrustStore.bundled())(aik, block, {})


def test_the_router_attaches_the_gce_ak_certificate_from_nv(cloud_tpm, make_router, caplog):
    from nomyo_audit.router._attestation import make_attester

    der = GCE_CERT.read_bytes()
    assert len(der) <= SWTPM_NV_INDEX_MAX
    cloud_tpm.define(NV_GCE_AK_CERT_RSA, der)
    with caplog.at_level(logging.INFO, logger="nomyo_audit.router"):
        router = make_router(attester=make_attester(cloud_tpm.spec))
    assert "gce platform evidence attached" in caplog.text
    assert "a verifier with the bundled roots says: fail gce_ak_mismatch" in caplog.text
    block = reply_block(router)
    platform = block["platform"]
    assert set(platform) == {"kind", "ak_cert_pem"} and platform["kind"] == "gce"
    pem = platform["ak_cert_pem"]
    body = pem.removeprefix("-----BEGIN CERTIFICATE-----\n").removesuffix("-----END CERTIFICATE-----\n")
    assert base64.b64decode(body) == der  # exactly the NV bytes
    finding = anchor_of(block)
    assert (finding.status, finding.code) == ("fail", "gce_ak_mismatch")
    assert reply_block(router)["platform"] == platform  # read once, the same on every reply


def test_a_truncated_hcl_report_in_nv_stops_the_router(cloud_tpm):
    from nomyo_audit.router._attestation import make_attester

    hcl = (TDX / "hcl_report.bin").read_bytes()
    assert len(hcl) > SWTPM_NV_INDEX_MAX  # why the whole report cannot be in swtpm's NV
    cloud_tpm.define(NV_HCL_REPORT, hcl[:SWTPM_NV_INDEX_MAX])
    with pytest.raises(ConfigurationError, match="0x01400001 holds 2048 bytes that are not an HCL report"):
        make_attester(cloud_tpm.spec)


def test_a_file_anchor_for_another_key_stops_the_router(cloud_tpm, tmp_path):
    """NV holds no anchor, the file supplies the real HCL report: swtpm's AIK is not its HCLAkPub, so
    the router refuses to start instead of attaching an anchor its quotes cannot have (the exact
    attachment of a file's evidence for the router's own key: tests/test_cloud_aik_file_anchor.py)."""
    from nomyo_audit.router._attestation import make_attester

    hcl, quote = (TDX / "hcl_report.bin").read_bytes(), (TDX / "td_quote.bin").read_bytes()
    evidence = tmp_path / "platform.json"
    given = {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(hcl).decode(),
        "td_quote_b64": base64.b64encode(quote).decode(),
    }
    evidence.write_text(json.dumps(given))
    for source in ("ephemeral", "auto"):
        with pytest.raises(ConfigurationError) as caught:
            make_attester(cloud_tpm.spec, platform_evidence=evidence, aik_source=source)
        assert caught.value.code == "cloud_aik_mismatch", source


def test_no_cloud_evidence_no_platform(cloud_tpm, make_router):
    from nomyo_audit.router._attestation import make_attester

    router = make_router(attester=make_attester(cloud_tpm.spec))
    assert "platform" not in reply_block(router)


# -- the pure part, with the full-size NV contents -------------------------------------------------


def test_platform_object_from_a_full_size_tdx_hcl_report():
    hcl = (TDX / "hcl_report.bin").read_bytes()
    assert len(hcl) == 2600
    document, note = platform_object({NV_HCL_REPORT: hcl}, {})
    assert document is None and "azure-tdx" in note and "td_quote_b64" in note  # never half-sent
    quote = base64.b64encode((TDX / "td_quote.bin").read_bytes()).decode()
    document, _ = platform_object({NV_HCL_REPORT: hcl}, {"td_quote_b64": quote})
    assert document == {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode(hcl).decode(),
        "td_quote_b64": quote,
    }


def test_platform_object_for_an_snp_hcl_report_needs_the_vcek():
    require(SNP_HCL.exists(), "the SEV-SNP fixtures (C2) are not in this tree")
    document, note = platform_object({NV_HCL_REPORT: SNP_HCL.read_bytes()}, {})
    assert document is None and "azure-sev-snp" in note and "vcek_pem" in note
    with pytest.raises(ConfigurationError, match="says 'azure-tdx', the vTPM holds azure-sev-snp"):
        platform_object({NV_HCL_REPORT: SNP_HCL.read_bytes()}, {"kind": "azure-tdx"})


def test_platform_object_takes_the_gce_certificate_of_the_aik_algorithm_and_trims_nv_padding():
    rsa, ecc = (ANCHORS / "gce" / "ak-certs" / f"GCE_AK_{k}_UCA.der" for k in ("RSA", "ECC"))
    nv = {NV_GCE_AK_CERT_RSA: rsa.read_bytes() + bytes(200), NV_GCE_AK_CERT_ECC: ecc.read_bytes()}
    for aik_is_rsa, expected in ((True, rsa), (False, ecc)):
        document, _ = platform_object(nv, {}, aik_is_rsa=aik_is_rsa)
        assert document is not None and document["kind"] == "gce"
        body = document["ak_cert_pem"].split("-----")[2]
        assert base64.b64decode(body) == expected.read_bytes()


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"kind": "gce", "kind": "gce"}', "not a strict UTF-8 JSON object"),
        ('{"td_quote_b64": "AA==", "secret": 1}', "unknown fields secret"),
        ("[1, 2]", "not a JSON object"),
        ("not json", "not a strict UTF-8 JSON object"),
    ],
)
def test_a_bad_platform_evidence_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "platform.json"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=message):
        load_platform_file(path)


def test_serve_refuses_platform_evidence_without_a_real_tpm(tmp_path, capsys):
    from nomyo_audit.cli import main

    path = tmp_path / "platform.json"
    path.write_text("{}")
    status = main(["serve", "--port", "0", "--tpm", "software", "--platform-evidence", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and "needs a real TPM" in err and "Traceback" not in err
