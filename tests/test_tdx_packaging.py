"""The Intel SGX Root CA ships in the wheel, and an installed wheel anchors the real TD quote with it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from test_packaging import installed  # noqa: F401 - the fixture: a wheel built and installed in a venv

from nomyo_audit.tpm import TrustStore

INTEL_ROOT_SHA256 = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
FIXTURES = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure-tdx" / "trustee"


def test_the_bundled_store_holds_the_intel_sgx_root_and_its_provenance():
    assert INTEL_ROOT_SHA256 in TrustStore.bundled().sha256s
    provenance = (REPO / "tpm-roots" / "Intel-SGX" / "PROVENANCE.md").read_text()
    assert INTEL_ROOT_SHA256 in provenance and "Apache-2.0" in provenance
    der = next(c.der for c in TrustStore.bundled().certificates if c.sha256 == INTEL_ROOT_SHA256)
    assert hashlib.sha256(der).hexdigest() == INTEL_ROOT_SHA256


@pytest.mark.slow
def test_an_installed_wheel_anchors_the_real_td_quote(installed, tmp_path):  # noqa: F811
    script = f"""
import sys
from datetime import datetime, timezone
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._public import Public
from nomyo_audit.tpm._tdx import appraise_tdx
where = Path({str(FIXTURES)!r})
n = load_pem_public_key((where / "ak_pub.pem").read_bytes()).public_numbers().n.to_bytes(256, "big")
aik = Public(1, 11, 0x50072, b"", (16,), 20, 11, rsa_key_bits=2048, rsa_modulus=n)
result = appraise_tdx(aik, (where / "hcl_report.bin").read_bytes(), (where / "td_quote.bin").read_bytes(),
                      TrustStore.bundled(), at=datetime(2025, 11, 1, tzinfo=timezone.utc))
print(result.finding.code, result.facts["anchor_root_sha256"])
"""
    done = subprocess.run(
        [str(installed / "python"), "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aik_anchored_azure_tdx", INTEL_ROOT_SHA256]
