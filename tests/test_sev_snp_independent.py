"""The azure-sev-snp anchor judged by code we did not write, on the same real evidence
(tests/fixtures/cloud-anchors/azure/PROVENANCE.md): tpm2_checkquote and tpm2-pytss on the vTPM
quotes, the OpenSSL command line on the VCEK chains and report signatures; the CLI end to end; and
the shipped AMD roots, which must anchor no TPM certificate.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from sev_snp_evidence import (
    AT,
    AZURE,
    COHERENT,
    EXPECTED,
    SEV_ROOTS,
    SNP,
    aik,
    azure_aik,
    patch,
    pem_certificates,
    platform_object,
    read,
    tpm_block,
    vcek,
)

from nomyo_audit.tpm import TrustStore

REPO_ROOTS = SEV_ROOTS


# -- the AMD roots anchor nothing else -------------------------------------------------------------


def _ek_outcome(der: bytes, store: TrustStore) -> str:
    from nomyo_audit.errors import CertificateError
    from nomyo_audit.tpm._ek_certificate import validate_ek_chain

    try:
        validate_ek_chain(der, [], store, at=AT)
    except CertificateError as exc:
        return exc.code
    return "pass"


def test_the_amd_roots_change_no_ek_outcome_and_no_cpu_certificate_is_a_tpm_one() -> None:
    from nomyo_audit.errors import CertificateError
    from nomyo_audit.tpm._ak_certificate import validate_ak_chain

    bundled = TrustStore.bundled()
    shipped = {
        hashlib.sha256(d).hexdigest()
        for d in pem_certificates(b"".join(p.read_bytes() for p in REPO_ROOTS.glob("*.pem")))
    }
    without = TrustStore([c for c in bundled.certificates if c.sha256 not in shipped])
    assert len(bundled) - len(without) == len(shipped) == 6
    eks = sorted((AZURE.parents[1] / "tpm-anchors" / "ek").glob("*.der"))
    assert len(eks) >= 8
    for path in eks:
        assert _ek_outcome(path.read_bytes(), bundled) == _ek_outcome(path.read_bytes(), without), path.name
    amd = [
        vcek("trustee-evidence-v0"),
        *pem_certificates(b"".join(p.read_bytes() for p in REPO_ROOTS.glob("*.pem"))),
    ]
    for der in amd:  # a CPU root vouches for no TPM: the VCEK chains to ARK-Milan, never as an EK
        assert _ek_outcome(der, bundled) in ("cert_unchained", "cert_unknown_root", "cert_not_ek_profile")
    from nomyo_audit.tpm._ek_certificate import validate_ek_chain

    milan = pem_certificates(b"".join(p.read_bytes() for p in sorted(REPO_ROOTS.glob("*-Milan__*.pem"))))
    with pytest.raises(CertificateError) as refused:
        validate_ek_chain(amd[0], milan, bundled, at=AT)
    assert refused.value.code == "cert_unknown_root"
    with pytest.raises(CertificateError) as caught:
        validate_ak_chain([vcek("trustee-evidence-v0"), *amd[1:]], bundled, aik("trustee-evidence-v0"), at=AT)
    assert caught.value.code == "cert_wrong_eku"


# -- tools we did not write judge the same quotes ------------------------------------------------------


@pytest.mark.parametrize("name", sorted(n for n in COHERENT if EXPECTED[n]["tpm_quote_nonce"]))
def test_tpm2_checkquote_verifies_the_real_quote_with_the_key_the_hcl_report_names(
    name: str, tmp_path
) -> None:
    """tpm2-tools checks each real quote (signature, nonce, PCR digest) with HCLAkPub as our HCL
    reader extracted it, and refuses it with another nonce."""
    import json
    import shutil
    import struct
    import subprocess

    from conftest import require
    from cryptography.hazmat.primitives import serialization
    from test_real_evidence_eventlog import _serialized_pcrs

    from nomyo_audit.tpm._hcl import parse_hcl_report
    from nomyo_audit.tpm._keys import to_crypto_key

    require(shutil.which("tpm2_checkquote") is not None, "tpm2-tools is not installed")
    hcl = parse_hcl_report(read(name, "hcl_report.bin"))
    jwk = hcl.ak_jwk
    key = to_crypto_key(azure_aik(read(name, "ak_pub.pem")))
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)), "big")
    assert key.public_numbers().n == n  # type: ignore[union-attr]
    (tmp_path / "ak.pem").write_bytes(spki)
    values = json.loads(read(name, "tpm_quote.pcrs.json"))
    (tmp_path / "pcrs.bin").write_bytes(_serialized_pcrs("sha256", {str(i): v for i, v in enumerate(values)}))
    signature = read(name, "tpm_quote.signature.bin")
    (tmp_path / "sig.bin").write_bytes(struct.pack(">HHH", 0x0014, 0x000B, len(signature)) + signature)
    nonce = EXPECTED[name]["tpm_quote_nonce"]

    def checkquote(hex_nonce: str) -> int:
        command = ["tpm2_checkquote", "-u", "ak.pem", "-m", str(SNP / name / "tpm_quote.tpms_attest.bin"),
                   "-s", "sig.bin", "-f", "pcrs.bin", "-g", "sha256", "-q", hex_nonce]  # fmt: skip
        return subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode

    assert checkquote(nonce) == 0
    assert checkquote(nonce[:-2] + "00") != 0


def test_tpm2_pytss_marshals_the_azure_ak_template_to_the_quotes_signer() -> None:
    """The Azure AK's public area, built by tpm2-pytss from the HCL's key and the template, has the
    name whose endorsement-hierarchy qualified name each real quote carries as qualifiedSigner."""
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPM2B_PUBLIC, TPMT_ASYM_SCHEME, TPMT_PUBLIC

    from nomyo_audit.tpm._attest import parse_attest
    from nomyo_audit.tpm._public import parse_public

    for name in sorted(n for n in COHERENT if EXPECTED[n]["tpm_quote_nonce"]):
        scheme = TPMT_ASYM_SCHEME(scheme=TPM2_ALG.RSASSA)
        scheme.details.anySig.hashAlg = TPM2_ALG.SHA256
        template = TPMT_PUBLIC.from_pem(read(name, "ak_pub.pem"), objectAttributes=0x00050472, scheme=scheme)
        theirs = parse_public(TPM2B_PUBLIC(publicArea=template).marshal())
        assert theirs.marshal() == aik(name).marshal()
        quote = parse_attest(read(name, "tpm_quote.tpms_attest.bin"))
        assert theirs.qualified_name((0x4000000B).to_bytes(4, "big")) == quote.qualified_signer


@pytest.mark.parametrize("name", sorted(COHERENT))
def test_openssl_agrees_on_the_vcek_chain_and_the_report_signature(name: str, tmp_path) -> None:
    """The OpenSSL command line (its own X.509 path validation, RSA-PSS and ECDSA) validates each
    real VCEK to its product's shipped ARK, refuses it under another product's, and verifies the SNP
    report's signature over bytes 0-0x29F, from r and s read little-endian as our reader does."""
    import shutil
    import subprocess

    from conftest import require
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    from nomyo_audit.tpm._sev_snp_report import parse_snp_report

    require(shutil.which("openssl") is not None, "openssl is not installed")
    product, other = COHERENT[name], "Genoa" if COHERENT[name] == "Milan" else "Milan"
    (tmp_path / "vcek.pem").write_bytes(
        read(name, "vcek.pem").split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
    )
    ask = next(REPO_ROOTS.glob(f"SEV-{product}__*.pem"))

    def verify(ark_product: str) -> int:
        ark = next(REPO_ROOTS.glob(f"ARK-{ark_product}__*.pem"))
        command = ["openssl", "verify", "-attime", str(int(AT.timestamp())), "-CAfile", str(ark),
                   "-untrusted", str(ask), "vcek.pem"]  # fmt: skip
        return subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode

    assert verify(product) == 0
    assert verify(other) != 0
    report = parse_snp_report(read(name, "snp_report.bin"))
    (tmp_path / "signed.bin").write_bytes(report.signed)
    (tmp_path / "sig.der").write_bytes(encode_dss_signature(report.signature_r, report.signature_s))
    key = subprocess.run(["openssl", "x509", "-in", "vcek.pem", "-pubkey", "-noout"], cwd=tmp_path,
                         capture_output=True, timeout=60, check=True).stdout  # fmt: skip
    (tmp_path / "vcek_key.pem").write_bytes(key)
    command = ["openssl", "dgst", "-sha384", "-verify", "vcek_key.pem", "-signature", "sig.der", "signed.bin"]
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode == 0
    (tmp_path / "signed.bin").write_bytes(patch(report.signed, 0x08, b"\x1f\x00\x0b"))  # debug bit set
    assert subprocess.run(command, cwd=tmp_path, capture_output=True, timeout=60).returncode != 0


# -- the CLI: the real Azure evidence verified from a file, with its own nonce ------------------------


def test_verify_nonce_anchors_the_real_azure_quote_from_the_cli(tmp_path) -> None:
    import json

    from click.testing import CliRunner

    from nomyo_audit.cli import cli

    name = "trustee-evidence-genoa"
    block = tpm_block(name)
    block["platform"] = platform_object(name)
    path = tmp_path / "azure.json"
    path.write_text(json.dumps({"tpm_attestation": block}))

    def run(*args: str):  # type: ignore[no-untyped-def]
        result = CliRunner().invoke(cli, ["verify", "--format", "json", *args, str(path)])
        assert "Traceback" not in result.output
        return result.exit_code, json.loads(result.stdout) if result.stdout.startswith("[") else None

    nonce = EXPECTED[name]["tpm_quote_nonce"]
    exit_code, verdicts = run("--nonce", nonce, "--roots", str(REPO_ROOTS))
    assert exit_code == 0, verdicts
    findings = {f["check"]: (f["status"], f["code"]) for f in verdicts[0]["findings"]}
    assert findings["aik_anchor"] == ("pass", "aik_anchored_azure_sev_snp")
    assert findings["nonce_binding"] == ("pass", "nonce_matches")
    milan_only = tmp_path / "milan"
    milan_only.mkdir()
    for source in REPO_ROOTS.glob("*-Milan__*.pem"):
        (milan_only / source.name).write_bytes(source.read_bytes())
    exit_code, verdicts = run("--nonce", nonce, "--roots", str(milan_only))
    assert exit_code == 1
    findings = {f["check"]: (f["status"], f["code"]) for f in verdicts[0]["findings"]}
    assert findings["aik_anchor"] == ("fail", "cert_unknown_root")
