"""Review R5: ``verify --nonce`` input forms, and what it says when it replaces an audit log's own
binding (each record's quote is then checked against the nonce, not against its request and reply)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_gce_anchor import cos_block
from test_platform_blobs import make_log

from nomyo_audit.cli import cli


def _verify(*args):
    return CliRunner().invoke(cli, ["verify", "--format", "json", *args])


def test_nonce_with_log_says_the_records_binding_is_not_checked(tmp_path):
    path = make_log(tmp_path / "a.db", detach=True, count=1)
    result = _verify("--log", str(path), "--nonce", "9009")
    assert result.exit_code == 0, result.output
    assert "not bound to its request and reply" in result.stderr
    result = _verify("--log", str(path))
    assert "not bound to its request and reply" not in result.stderr


@pytest.mark.parametrize("nonce", ["9009", "9009".upper(), " 90 09 "])
def test_nonce_forms_that_name_the_same_bytes_agree(tmp_path, nonce):
    evidence = tmp_path / "e.json"
    evidence.write_text(json.dumps({"_metadata": {"tpm_attestation": cos_block()}}))
    result = _verify(str(evidence), "--nonce", nonce)
    assert result.exit_code == 0, result.output
    assert "not bound" not in result.stderr  # a file made outside NOMYO has no record binding


@pytest.mark.parametrize("nonce", ["0x9009", "900", "zz", "00" * 65])
def test_a_bad_nonce_is_a_usage_error(tmp_path, nonce):
    evidence = tmp_path / "e.json"
    evidence.write_text(json.dumps({"_metadata": {"tpm_attestation": cos_block()}}))
    result = _verify(str(evidence), "--nonce", nonce)
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_an_empty_nonce_fails_a_quote_with_a_nonce(tmp_path):
    evidence = tmp_path / "e.json"
    evidence.write_text(json.dumps({"_metadata": {"tpm_attestation": cos_block()}}))
    result = _verify(str(evidence), "--nonce", "")
    assert result.exit_code == 1
    (verdict,) = json.loads(result.stdout)
    assert any(f["code"] == "nonce_mismatch" for f in verdict["findings"])
