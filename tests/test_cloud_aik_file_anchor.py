"""An anchor the operator's ``--platform-evidence`` file supplies (the vTPM's NV holding none) must
name the key the router quotes with, else the router does not start (``cloud_aik_mismatch``).

The key check at start (attest/_cloud_aik.py) covers only the anchors in NV: with ``auto`` and no
anchor in NV the router keeps its ephemeral AIK, and a file holding ``hcl_report_b64`` or
``ak_cert_pem`` would then be attached to every reply for a key the anchor does not certify: the
router would claim an anchor its quotes can never have (docs/cloud-anchors.md: it "never falls back
to a key the anchor does not certify"). Pure: the real Azure and GCE evidence, the router's AIK as a
TPM2B_PUBLIC, no TPM.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import pytest
from sev_snp_evidence import aik as snp_aik
from sev_snp_evidence import platform_object
from test_tdx import aik_of as tdx_aik

from nomyo_audit.attest._platform import NV_HCL_REPORT, attach_platform
from nomyo_audit.errors import ConfigurationError
from nomyo_audit.tpm._platform import PlatformEvidence

FIXTURES = Path(__file__).parent / "fixtures"
TDX = FIXTURES / "cloud-anchors" / "azure-tdx" / "trustee"
REAL_GCE_AK = (FIXTURES / "measured" / "gce-cos-85-no-nonce" / "ak_pub.tpmt_public.bin").read_bytes()
GCE_AK = struct.pack(">H", len(REAL_GCE_AK)) + REAL_GCE_AK  # TPM2B_PUBLIC
REAL_GCE_CERT = (FIXTURES / "cloud-anchors" / "gce" / "cos-85" / "ak_cert.der").read_bytes()


class Source:
    def __init__(self, public: bytes) -> None:
        self.aik_public = public  # TPM2B_PUBLIC


class Attester:
    platform: object = None

    def set_platform(self, platform: object) -> None:
        self.platform = platform


def tdx_file() -> dict:
    return {
        "kind": "azure-tdx",
        "hcl_report_b64": base64.b64encode((TDX / "hcl_report.bin").read_bytes()).decode(),
        "td_quote_b64": base64.b64encode((TDX / "td_quote.bin").read_bytes()).decode(),
    }


def gce_file() -> dict:
    return {"kind": "gce", "ak_cert_pem": PlatformEvidence("gce", (REAL_GCE_CERT,)).to_dict()["ak_cert_pem"]}


CASES = {
    "azure-tdx": (tdx_file, tdx_aik("trustee").marshal(), snp_aik("trustee-evidence-v0").marshal()),
    "azure-sev-snp": (
        lambda: platform_object("trustee-evidence-v0"),
        snp_aik("trustee-evidence-v0").marshal(),
        tdx_aik("trustee").marshal(),
    ),
    "gce": (gce_file, GCE_AK, snp_aik("trustee-evidence-v0").marshal()),
}


def attach(tmp_path: Path, document: dict, public: bytes, nv: dict | None = None) -> Attester:
    file = tmp_path / "platform.json"
    file.write_text(json.dumps(document))
    attester = Attester()
    attach_platform(attester, Source(public), file, read_nv=lambda source: nv or {})
    return attester


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_file_anchor_for_the_routers_own_key_is_attached(tmp_path, kind):
    make, own, _ = CASES[kind]
    document = make()
    assert attach(tmp_path, document, own).platform == document


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_file_anchor_for_another_key_stops_the_router(tmp_path, kind):
    make, _, other = CASES[kind]
    with pytest.raises(ConfigurationError) as caught:
        attach(tmp_path, make(), other)
    assert caught.value.code == "cloud_aik_mismatch"
    assert "--platform-evidence" in caught.value.message


def test_an_nv_anchor_with_an_ephemeral_key_is_still_attached(tmp_path):
    """The vTPM's own anchor with --aik-source ephemeral (chosen knowingly: docs/cloud-anchors.md)
    is attached as before; the file then only completes it."""
    hcl = (TDX / "hcl_report.bin").read_bytes()
    document = tdx_file()
    attester = attach(tmp_path, {"td_quote_b64": document["td_quote_b64"]}, CASES["gce"][2],
                      nv={NV_HCL_REPORT: hcl})  # fmt: skip
    assert attester.platform == {**document}


def test_a_file_without_an_anchor_is_not_checked_against_the_key(tmp_path):
    assert attach(tmp_path, {"td_quote_b64": "AA=="}, CASES["gce"][2]).platform is None


def test_a_platform_evidence_file_that_never_ends_is_refused_without_reading_it_all():
    """``--platform-evidence /dev/zero`` (or a FIFO, or a file growing after its size was read): the
    size of the stat is 0 or stale, so the file is read up to the bound and no further. Run in a
    process whose memory is capped, so a reader without the bound fails instead of eating the host's."""
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))\n"
        "from pathlib import Path\n"
        "from nomyo_audit.attest._platform import load_platform_file\n"
        "from nomyo_audit.errors import ConfigurationError\n"
        "try:\n"
        "    load_platform_file(Path('/dev/zero'))\n"
        "except ConfigurationError as exc:\n"
        "    print(exc.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-400:]
    assert "larger than" in done.stdout


def test_a_platform_evidence_file_over_the_bound_says_so(tmp_path):
    from nomyo_audit.attest._platform import MAX_PLATFORM_FILE, load_platform_file

    big = tmp_path / "platform.json"
    big.write_text('{"kind": "gce", "ak_cert_pem": "' + "A" * MAX_PLATFORM_FILE + '"}')
    with pytest.raises(ConfigurationError, match="larger than"):
        load_platform_file(big)
