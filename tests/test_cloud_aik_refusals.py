"""The router refuses to start when it cannot quote with the key the cloud's anchor certifies.

On a fresh swtpm set up with tpm2-tools (tests/test_cloud_aik.py): an AK certificate or HCL report
for another key, an anchor without its key (no persistent AK, no template), keys that cannot give
the anchor (owner hierarchy, unrestricted, a child of the EK), each with its own code and no
traceback; and the start check itself on the real GCE and Azure evidence.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from test_cloud_aik import (
    AZURE_ATTRIBUTES,
    GCE_ATTRIBUTES,
    REAL_GCE_AK,
    REAL_GCE_CERT,
    SNP,
    another_modulus,
    azure_tpm,
    fresh_cloud_tpm,
    gce_ak_certificate,
    gce_tpm,
    google_like_ca,
    hcl_report_naming,
    public_key,
)

from nomyo_audit.errors import ConfigurationError

pytestmark = pytest.mark.swtpm


@pytest.fixture
def cloud_tpm(tmp_path):
    with fresh_cloud_tpm(tmp_path) as tpm:
        yield tpm


# -- refusing to start -----------------------------------------------------------------------------


def refused(spec: str, aik_source: str = "auto") -> ConfigurationError:
    from nomyo_audit.router._attestation import make_attester

    with pytest.raises(ConfigurationError) as error:
        make_attester(spec, aik_source=aik_source)
    return error.value


def test_a_gce_certificate_for_another_key_stops_the_router(cloud_tpm):
    gce_tpm(cloud_tpm, certified_key=rsa.generate_private_key(65537, 2048).public_key())
    error = refused(cloud_tpm.spec)
    assert error.code == "cloud_aik_mismatch"
    assert "the GCE AK certificate at NV 0x01c10000 certifies another key than this AIK" in error.message


def test_an_hcl_report_naming_another_key_stops_the_router(cloud_tpm):
    azure_tpm(cloud_tpm, named_modulus=another_modulus())
    error = refused(cloud_tpm.spec, "cloud")
    assert error.code == "cloud_aik_mismatch"
    assert "the HCL report at NV 0x01400001 names another AK (HCLAkPub)" in error.message


def test_serve_refuses_to_start_with_exit_2(cloud_tpm, capsys):
    from nomyo_audit.cli import main

    gce_tpm(cloud_tpm, certified_key=rsa.generate_private_key(65537, 2048).public_key())
    status = main(["serve", "--port", "0", "--tpm", cloud_tpm.spec])  # --aik-source auto by default
    err = capsys.readouterr().err
    assert status == 2 and "certifies another key than this AIK" in err and "Traceback" not in err
    assert main(["serve", "--port", "0", "--tpm", cloud_tpm.spec, "--aik-source", "sometimes"]) == 2
    assert "--aik-source 'sometimes'" in capsys.readouterr().err


def test_an_hcl_report_without_the_ak_at_0x81000003_stops_the_router(cloud_tpm):
    cloud_tpm.nv_write(0x01400001, hcl_report_naming(another_modulus()))
    error = refused(cloud_tpm.spec)
    assert error.code == "cloud_aik_missing" and "0x81000003" in error.message


def test_a_gce_certificate_without_its_template_stops_the_router(cloud_tpm):
    cloud_tpm.primary("ak", GCE_ATTRIBUTES)
    cloud_tpm.flush()
    certificate = gce_ak_certificate(google_like_ca(cloud_tpm.work), public_key(cloud_tpm.work / "ak.pem"))
    cloud_tpm.nv_write(0x01C10000, certificate)
    error = refused(cloud_tpm.spec)
    assert error.code == "cloud_aik_missing" and "0x01c10001" in error.message


def test_cloud_without_an_anchor_is_an_error_and_auto_is_the_ephemeral_aik(cloud_tpm):
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource

    assert refused(cloud_tpm.spec, "cloud").code == "cloud_aik_missing"
    source = Tpm2QuoteSource(cloud_tpm.spec, aik_source="auto")
    assert source.aik_origin == "an ephemeral AIK"
    source.close()


def test_keys_that_cannot_give_the_anchor_are_refused(cloud_tpm):
    # an owner-hierarchy primary: its quotes name another qualifiedSigner than a verifier computes
    cloud_tpm.tool(
        "tpm2_createprimary", "-C", "o", "-G", "rsa2048:rsassa-sha256:null", "-a", AZURE_ATTRIBUTES,
        "-c", "o.ctx",
    )  # fmt: skip
    cloud_tpm.flush()
    cloud_tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "o.ctx", "0x81000020")
    # an unrestricted signing key in the endorsement hierarchy
    cloud_tpm.tool(
        "tpm2_createprimary", "-C", "e", "-G", "rsa2048:rsassa-sha256:null",
        "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign", "-c", "u.ctx",
    )  # fmt: skip
    cloud_tpm.flush()
    cloud_tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "u.ctx", "0x81000021")
    cloud_tpm.flush()
    owner = refused(cloud_tpm.spec, "persistent:0x81000020")
    assert owner.code == "cloud_aik_unusable"
    assert "not a primary key of the endorsement hierarchy" in owner.message
    unrestricted = refused(cloud_tpm.spec, "persistent:0x81000021")
    assert unrestricted.code == "cloud_aik_unusable"
    assert "not a restricted signing key" in unrestricted.message
    assert refused(cloud_tpm.spec, "persistent:0x81000030").code == "cloud_aik_missing"


def test_a_child_aik_cannot_give_the_cloud_anchor(cloud_tpm):
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource

    with pytest.raises(ConfigurationError, match="the cloud's AK is a primary key"):
        Tpm2QuoteSource(cloud_tpm.spec, aik_parent="ek", aik_source="cloud")
    child = Tpm2QuoteSource(cloud_tpm.spec, aik_parent="ek", aik_source="auto")  # no anchor: as before
    assert child.aik_parent_qualified_name is not None
    child.close()
    gce_tpm(cloud_tpm)
    with pytest.raises(ConfigurationError, match="--aik-source ephemeral to quote with a child of the EK"):
        Tpm2QuoteSource(cloud_tpm.spec, aik_parent="ek", aik_source="auto")


@pytest.mark.parametrize(
    "value", ["clouds", "persistent:", "persistent:0x01c10000", "persistent:zz", "ephemeral:1"]
)
def test_a_bad_aik_source_is_a_clear_error(value):
    from nomyo_audit.attest._cloud_aik import parse_aik_source

    with pytest.raises(ConfigurationError) as error:
        parse_aik_source(value)
    assert error.value.code == "aik_source"


def test_aik_source_needs_a_real_tpm():
    assert "needs a real TPM" in refused("software", "cloud").message


# -- the start check on real cloud evidence (pure) ----------------------------------------------------


def test_the_start_check_on_the_real_gce_and_azure_evidence():
    from sev_snp_evidence import azure_aik

    from nomyo_audit.attest._cloud_aik import check_anchor_key
    from nomyo_audit.tpm._marshal import tpm2b
    from nomyo_audit.tpm._public import parse_public

    gce_ak = parse_public(tpm2b(REAL_GCE_AK))
    in_nv = REAL_GCE_CERT + bytes(1516 - len(REAL_GCE_CERT))  # NV pads the certificate
    assert check_anchor_key({0x01C10000: in_nv}, gce_ak) == "the GCE AK certificate at NV 0x01c10000"
    assert check_anchor_key({}, gce_ak) is None
    for name in ("trustee-evidence-v0", "trustee-evidence-genoa"):
        hcl, ak = (SNP / name / "hcl_report.bin").read_bytes(), (SNP / name / "ak_pub.pem").read_bytes()
        assert check_anchor_key({0x01400001: hcl}, azure_aik(ak)) == "the HCL report's HCLAkPub"
    hcl = (SNP / "trustee-evidence-v0" / "hcl_report.bin").read_bytes()
    genoa_ak = azure_aik((SNP / "trustee-evidence-genoa" / "ak_pub.pem").read_bytes())
    v0_ak = azure_aik((SNP / "trustee-evidence-v0" / "ak_pub.pem").read_bytes())
    pairs = (({0x01400001: hcl}, genoa_ak), ({0x01C10000: in_nv}, genoa_ak), ({0x01C10000: in_nv}, v0_ak))
    for nv, key in pairs:
        with pytest.raises(ConfigurationError) as error:
            check_anchor_key(nv, key)
        assert error.value.code == "cloud_aik_mismatch"
    for nv in ({0x01400001: hcl[:1500]}, {0x01C10000: b"\x30\x82\x01"}):
        with pytest.raises(ConfigurationError) as error:
            check_anchor_key(nv, gce_ak)
        assert error.value.code == "cloud_anchor_malformed"
