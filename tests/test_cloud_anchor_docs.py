"""docs/cloud-anchors.md names every failure code the Azure appraisers give (the HCL, SEV-SNP and TDX
readers and appraisers): an operator who meets a code finds what was checked. Read from the
sources, so a new code without its line in the docs fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOC = (ROOT / "docs" / "cloud-anchors.md").read_text()
MODULES = ["_hcl.py", "_sev_snp.py", "_sev_snp_report.py", "_sev_snp_vcek.py", "_tdx.py", "_tdx_quote.py"]
_CODE = re.compile(r'code="([a-z0-9_]+)"|_fail\(\s*"([a-z0-9_]+)"')


def codes() -> list[str]:
    found: set[str] = set()
    for module in MODULES:
        text = (ROOT / "nomyo_audit" / "tpm" / module).read_text()
        found |= {a or b for a, b in _CODE.findall(text)}
    return sorted(found)


def test_the_sources_give_codes() -> None:
    assert {"hcl_binding_mismatch", "snp_signature_invalid", "tdx_qe_identity"} <= set(codes())


@pytest.mark.parametrize("code", codes())
def test_every_code_is_documented(code: str) -> None:
    assert f"`{code}`" in DOC
