"""The verifier against committed evidence vectors: real swtpm quotes and tampered copies.

Regenerate with tests/fixtures/make_vectors.py. No TPM and no TSS library is needed here,
as on an auditor's laptop.
"""

from __future__ import annotations

import base64
import json

import pytest
from conftest import FIXTURES

from nomyo_audit.tpm import parse_attest, verify_attestation

VECTORS = json.loads((FIXTURES / "vectors" / "tpm-evidence.json").read_text())["vectors"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector):
    digest = bytes.fromhex(vector["content_digest"]) if vector["content_digest"] else None
    verdict = verify_attestation(vector["tpm_attestation"], vector["payload_id"], content_digest=digest)
    assert verdict.result == vector["expect"]["result"]
    assert {f.check: f.code for f in verdict.failures} == vector["expect"]["failing"]


def test_vectors_cover_real_tpm_quotes_of_every_aik_kind():
    genuine = {v["name"] for v in VECTORS if v["source"] == "swtpm" and v["expect"]["result"] == "pass"}
    assert genuine == {
        "swtpm-rsa2048-rsassa-genuine",
        "swtpm-rsa2048-rsapss-genuine",
        "swtpm-ecc256-ecdsa-genuine",
        "tpm2-tools-empty-sha1-bank",
    }


def test_a_real_quote_with_a_bank_with_no_pcrs_selected_is_kept_with_its_provenance():
    """Made by tpm2_quote against swtpm and accepted by tpm2_checkquote when it was made."""
    vector = next(v for v in VECTORS if v["name"] == "tpm2-tools-empty-sha1-bank")
    assert vector["tpm_attestation"]["pcr_banks"] == "sha1:+sha256:0,7"
    assert "tpm2_quote -l sha1:none+sha256:0,7" in vector["provenance"]
    assert "tpm2_checkquote accepted it" in vector["provenance"]
    quote = parse_attest(base64.b64decode(vector["tpm_attestation"]["quote_b64"]))
    assert [(s.bank, s.indices, s.size_of_select) for s in quote.pcr_select] == [
        ("sha1", (), 3),
        ("sha256", (0, 7), 3),
    ]
