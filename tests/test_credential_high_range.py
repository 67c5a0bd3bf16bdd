"""High-range EKs (TCG EK Credential Profile 2.x, templates H-1..H-n, certificates from 0x01c00012) and
credential activation proved with tpm2-tools (issue 12, sections 2 and 3).

A high-range EK's authPolicy is PolicyOR(PolicyA, PolicyC): the router satisfies it with
PolicySecret(TPM_RH_ENDORSEMENT) then PolicyOR over both branches. swtpm_setup writes a P-384 EK
certificate at 0x01c00016, signed by swtpm's local CA, which plays the manufacturer here."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timezone

import pytest
from conftest import require
from test_child_aik import Tools

from nomyo_audit.attest import TPMAttester
from nomyo_audit.attest._ek_policy import ek_policy_branches, policy_or_digest
from nomyo_audit.attest._endorsement import EK_CHOICES
from nomyo_audit.attest._tpm2 import Tpm2QuoteSource
from nomyo_audit.errors import ConfigurationError, CredentialError
from nomyo_audit.tpm import (
    Public,
    TrustStore,
    ek_matches_public,
    make_credential,
    parse_public,
    validate_ek_chain,
)
from nomyo_audit.tpm._marshal import ALG

SECRET = bytes(range(1, 33))


# -- the profile's policy digests, against tpm2-pytss's templates (code we did not write) ---------------


@pytest.mark.parametrize(
    "template", ["EK-HIGH-RSA2048", "EK-HIGH-ECC256", "EK-HIGH-ECC384", "EK-HIGH-RSA3072"]
)
def test_policy_or_of_the_profile_branches_is_the_templates_auth_policy(template):
    from tpm2_pytss.internal.templates import ek_template

    public = ek_template.lookup(template).template.publicArea
    branches = ek_policy_branches(int(public.nameAlg))
    assert len(branches) == 2
    assert policy_or_digest(int(public.nameAlg), branches) == bytes(public.authPolicy)


def test_policy_a_is_the_low_range_ek_policy():
    from tpm2_pytss.internal.templates import template_policy

    assert ek_policy_branches(ALG.SHA256)[0] == template_policy.low


# -- the high range on swtpm ----------------------------------------------------------------------------


def test_swtpm_holds_a_p384_ek_certificate_in_the_high_range(swtpm, tmp_path):
    listed = Tools(swtpm.spec, tmp_path).run("tpm2_nvreadpublic")
    assert "0x1c00016:" in listed and "0x1c00002:" in listed


@pytest.fixture
def p384(swtpm):
    """Function-scoped: swtpm holds three transient objects, and other tests here load their own."""
    attester = TPMAttester(Tpm2QuoteSource(swtpm.spec, ek="p384"))
    yield attester
    attester.close()


def test_router_serves_the_high_range_p384_ek_and_its_certificate_chaining_to_swtpms_ca(p384, swtpm):
    body = p384.endorsement()
    ek = parse_public(base64.b64decode(body["ek_public_b64"]))
    assert ek.type == ALG.ECC and ek.curve_id == 0x0004 and ek.name_alg == ALG.SHA384
    store = TrustStore.from_pem(swtpm.ca_root_path.read_bytes())
    chain = [base64.b64decode(der) for der in body["ek_chain_b64"]]
    validation = validate_ek_chain(
        base64.b64decode(body["ek_certificate_b64"]), chain, store, at=datetime.now(timezone.utc)
    )
    assert ek_matches_public(validation.ek, ek)


def test_swtpm_activates_our_credential_to_the_p384_ek_under_its_policy_or(p384):
    ek = parse_public(base64.b64decode(p384.endorsement()["ek_public_b64"]))
    aik = parse_public(p384.aik_public())
    secret = os.urandom(32)
    assert p384.activate_credential(*make_credential(ek, aik.name, secret)) == secret


def test_p384_activation_for_another_aik_fails(p384):
    ek = parse_public(base64.b64decode(p384.endorsement()["ek_public_b64"]))
    other = b"\x00\x0b" + hashlib.sha256(b"another AIK").digest()
    with pytest.raises(CredentialError) as refused:
        p384.activate_credential(*make_credential(ek, other, SECRET))
    assert refused.value.code == "activation_failed"
    assert SECRET.hex() not in str(refused.value)


def test_child_aik_of_the_p384_ek_activates(swtpm):
    """--aik-parent ek under a high-range EK: TPM2_Create and TPM2_Load under its PolicyOR session."""
    attester = TPMAttester(Tpm2QuoteSource(swtpm.spec, aik_parent="ek", ek="p384"))
    try:
        body = attester.endorsement()
        ek = parse_public(base64.b64decode(body["ek_public_b64"]))
        assert body["aik_parent_qualified_name_b64"] is not None and ek.curve_id == 0x0004
        aik = parse_public(attester.aik_public())
        assert attester.activate_credential(*make_credential(ek, aik.name, SECRET)) == SECRET
    finally:
        attester.close()


def test_auto_keeps_the_low_range_rsa_ek_when_it_has_a_certificate(swtpm):
    attester = TPMAttester(Tpm2QuoteSource(swtpm.spec))
    try:
        assert parse_public(base64.b64decode(attester.endorsement()["ek_public_b64"])).type == ALG.RSA
    finally:
        attester.close()


def test_auto_serves_the_high_range_ek_when_it_is_the_only_one_with_a_certificate():
    """A TPM whose low-range certificate was removed (platform auth, as a manufacturer could)."""
    from tpm2_pytss import ESAPI, TCTILdr
    from tpm2_pytss.constants import ESYS_TR

    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available
    from nomyo_audit.attest._tpm2 import parse_tpm_spec

    require(swtpm_available(), "swtpm is not installed")
    with SwtpmProcess() as process:
        esys = ESAPI(TCTILdr(*parse_tpm_spec(process.spec)))
        try:
            index = esys.tr_from_tpmpublic(0x01C00002)
            esys.nv_undefine_space(index, auth_handle=ESYS_TR.PLATFORM)
        finally:
            esys.close()
        attester = TPMAttester(Tpm2QuoteSource(process.spec, ek="auto"))
        try:
            body = attester.endorsement()
            ek = parse_public(base64.b64decode(body["ek_public_b64"]))
            assert ek.curve_id == 0x0004 and body["ek_certificate_b64"] is not None
            aik = parse_public(attester.aik_public())
            assert attester.activate_credential(*make_credential(ek, aik.name, SECRET)) == SECRET
        finally:
            attester.close()


def test_an_unknown_or_uncertified_high_range_ek_is_a_clear_configuration_error(swtpm):
    assert set(EK_CHOICES) >= {"auto", "rsa", "ecc", "p384"}
    with pytest.raises(ConfigurationError, match="--ek"):
        Tpm2QuoteSource(swtpm.spec, ek="dsa")
    source = Tpm2QuoteSource(swtpm.spec, ek="rsa3072")  # swtpm has no certificate at 0x01c0001c
    try:
        with pytest.raises(ConfigurationError, match="0x01c0001c"):
            source.endorsement()
    finally:
        source.close()


# -- tpm2-tools activates our credential (code we did not write) ----------------------------------------


def _tools_ek_and_ak(swtpm, workdir) -> tuple[Tools, Public, bytes]:
    """tpm2_createek (RSA 2048, low range) and tpm2_createak (a child of the EK): the EK public area
    and the AK's name, as the tools wrote them."""
    for tool in ("tpm2_createek", "tpm2_createak", "tpm2_activatecredential", "tpm2_startauthsession"):
        require(shutil.which(tool) is not None, f"{tool} (tpm2-tools) is not installed")
    tools = Tools(swtpm.spec, workdir)
    tools.check("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
    tools.check("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa",
                "-u", "ak.pub", "-n", "ak.name")  # fmt: skip
    return tools, parse_public((workdir / "ek.pub").read_bytes()), (workdir / "ak.name").read_bytes()


def _tools_activate(tools: Tools) -> str:
    """tpm2_activatecredential of cred.bin into secret.out, under an EK policy session
    (PolicySecret of the endorsement hierarchy), as its man page shows: the tool's stderr."""
    tools.run("tpm2_startauthsession", "--policy-session", "-S", "session.ctx")
    try:
        tools.run("tpm2_policysecret", "-S", "session.ctx", "-c", "e")
        try:
            tools.check("tpm2_activatecredential", "-c", "ak.ctx", "-C", "ek.ctx", "-i", "cred.bin",
                        "-o", "secret.out", "-P", "session:session.ctx")  # fmt: skip
        except AssertionError as refused:
            return str(refused)
        return ""
    finally:
        subprocess.run(
            ["tpm2_flushcontext", "session.ctx"], cwd=tools.workdir, env=tools.env, capture_output=True
        )


def test_tpm2_activatecredential_returns_our_secret_for_the_low_range_rsa_ek(swtpm, tmp_path):
    """Our make_credential, written in tpm2-tools' file format, for an EK and AK that tpm2-tools made."""
    tools, ek, ak_name = _tools_ek_and_ak(swtpm, tmp_path)
    secret = os.urandom(32)
    credential = make_credential(ek, ak_name, secret)
    (tmp_path / "cred.bin").write_bytes(credential.to_tools_format())
    assert _tools_activate(tools) == ""
    assert (tmp_path / "secret.out").read_bytes() == secret


def test_tpm2_activatecredential_refuses_our_credential_for_another_ak(swtpm, tmp_path):
    tools, ek, _ = _tools_ek_and_ak(swtpm, tmp_path)
    other_name = b"\x00\x0b" + hashlib.sha256(b"another AK").digest()
    (tmp_path / "cred.bin").write_bytes(make_credential(ek, other_name, SECRET).to_tools_format())
    assert "tpm2_activatecredential" in _tools_activate(tools)
    assert not (tmp_path / "secret.out").exists()


# -- choosing the EK: make_attester and `nomyo-audit serve --ek` -----------------------------------------


def test_make_attester_passes_the_ek_choice_to_a_real_tpm(swtpm):
    from nomyo_audit.router._attestation import make_attester

    attester = make_attester(swtpm.spec, ek="p384")
    try:
        body = attester.endorsement()  # type: ignore[attr-defined]
        assert parse_public(base64.b64decode(body["ek_public_b64"])).curve_id == 0x0004
    finally:
        attester.close()


def test_the_software_attester_refuses_an_ek_choice():
    from nomyo_audit.router._attestation import make_attester

    with pytest.raises(ConfigurationError, match="--ek p384: the software attester has no EK"):
        make_attester("software", ek="p384")


def test_serve_refuses_an_unknown_ek_as_a_usage_error():
    from click.testing import CliRunner

    from nomyo_audit.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--tpm", "software", "--ek", "dsa"])
    assert result.exit_code == 2 and "--ek" in result.output
