"""The router quotes with the cloud's certified AK (``--aik-source``), proven with tpm2-tools.

A fresh swtpm per test plays the cloud vTPM. tpm2-tools (code we did not write) puts there what a
cloud puts: on GCE the AK template at NV 0x01c10001 (go-tpm-tools ``client/handles.go``
``GceAKTemplateNVIndexRSA``) and an AK certificate at 0x01c10000; on Azure a primary key of the
endorsement hierarchy made persistent at 0x81000003 and an HCL report naming it at 0x01400001. Then
``tpm2_createprimary -C e`` from the same template / ``tpm2_readpublic`` of the handle say which key
that is, and the router's replies must be quoted with exactly it: the reply's ``aik_pubkey_b64`` is
tpm2-tools' TPM2B_PUBLIC byte for byte, and ``tpm2_checkquote`` with that key accepts the quote. A
router whose anchor names another key refuses to start. The GCE certificate comes from a test CA
named like Google's: with that CA as the policy's roots, the real client passes ``aik_anchor`` with
kind ``gce-ak-cert`` through a real reply (with only the bundled roots it is ``cert_unchained``).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import struct
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from nomyo_audit.errors import ConfigurationError
from nomyo_audit.tpm import TrustStore
from nomyo_audit.tpm._aik import aik_material
from nomyo_audit.tpm._anchoring import Anchoring

pytestmark = pytest.mark.swtpm

HELLO = [{"role": "user", "content": "hello from the cloud's AK"}]
GCE_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
#: C2's note (design file): the Azure vTPM AK's attributes, 0x00050472
AZURE_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|sign"
SNP = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure" / "snp"
SNP_HCL = SNP / "trustee-evidence-v0"
NV_ATTRIBUTES = "ownerread|ownerwrite|authread|authwrite"
FIXTURES = Path(__file__).parent / "fixtures"
REAL_GCE_AK = (FIXTURES / "measured" / "gce-cos-85-no-nonce" / "ak_pub.tpmt_public.bin").read_bytes()
REAL_GCE_CERT = (FIXTURES / "cloud-anchors" / "gce" / "cos-85" / "ak_cert.der").read_bytes()


class CloudTpm:
    """A fresh swtpm and tpm2-tools run against it in ``work``."""

    def __init__(self, process, work: Path) -> None:
        self.process, self.spec, self.work = process, process.spec, work

    def tool(self, *command: str, data: bytes | None = None) -> bytes:
        env = {**os.environ, "TPM2TOOLS_TCTI": self.spec}
        done = subprocess.run(command, input=data, env=env, cwd=self.work, capture_output=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr.decode(errors="replace"))
        return done.stdout

    def nv_write(self, index: int, data: bytes) -> None:
        self.tool("tpm2_nvdefine", "-C", "o", "-s", str(len(data)), "-a", NV_ATTRIBUTES, f"0x{index:08x}")
        self.tool("tpm2_nvwrite", "-C", "o", "-i", "-", f"0x{index:08x}", data=data)

    def primary(
        self, name: str, attributes: str, unique: bytes = bytes(256), alg: str = "rsa2048:rsassa-sha256:null"
    ) -> bytes:
        """``tpm2_createprimary -C e`` (``unique`` as the template's unique field, each part with its
        size; ECC: x and y): the key's TPM2B_PUBLIC as tpm2_readpublic writes it (``name.pub``, and
        ``name.pem``); the template (TPMT_PUBLIC) in ``name.tmpl``."""
        parts = [unique] if alg.startswith("rsa") else [unique[:32], unique[32:]]
        (self.work / f"{name}.unique").write_bytes(b"".join(len(p).to_bytes(2, "little") + p for p in parts))
        self.tool(
            "tpm2_createprimary", "-C", "e", "-G", alg, "-a", attributes,
            "-c", f"{name}.ctx", "--template-data", f"{name}.tmpl", "-u", f"{name}.unique",
        )  # fmt: skip
        self.flush()  # swtpm has three object slots and tpm2-tools no resource manager
        return self.read_public(f"{name}.ctx", name)

    def read_public(self, key: str, name: str) -> bytes:
        for output in (["-o", f"{name}.pub"], ["-f", "pem", "-o", f"{name}.pem"]):
            self.tool("tpm2_readpublic", "-c", key, *output)
            self.flush()
        return (self.work / f"{name}.pub").read_bytes()

    def flush(self) -> None:
        self.tool("tpm2_flushcontext", "-t")


@pytest.fixture
def cloud_tpm(tmp_path):
    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    require(shutil.which("tpm2_createprimary") is not None, "tpm2-tools is not installed")
    with SwtpmProcess(ek_certificates=False) as process:
        yield CloudTpm(process, tmp_path)


# -- a test CA named like Google's, and an HCL report naming a key --------------------------------------


def google_like_ca(work: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Google LLC"),
         x509.NameAttribute(NameOID.COMMON_NAME, "EK/AK CA Root (test)")]
    )  # fmt: skip
    now = datetime.now(timezone.utc)
    root = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    (work / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return key, root


def gce_ak_certificate(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], subject_key) -> bytes:
    """A CAS-style GCE AK certificate (the subject names the VM) over ``subject_key``."""
    key, root = ca
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "4242424242424242"),
         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "nomyo-test-project"),
         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Google Compute Engine"),
         x509.NameAttribute(NameOID.LOCALITY_NAME, "europe-west4-a")]
    )  # fmt: skip
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(root.subject).public_key(subject_key)
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.DER)


def hcl_report_naming(modulus: bytes) -> bytes:
    """The real SNP HCL report's header and hardware report with variable data whose HCLAkPub has
    ``modulus`` (sizes fixed up), small enough for swtpm's 2048-byte NV indices."""
    real = (SNP_HCL / "hcl_report.bin").read_bytes()
    n = base64.urlsafe_b64encode(modulus).rstrip(b"=")
    variable = b'{"keys":[{"kid":"HCLAkPub","key_ops":["sign"],"kty":"RSA","e":"AQAB","n":"' + n + b'"}]}'
    header = bytearray(real[:32])
    struct.pack_into("<I", header, 8, 1236 + len(variable))  # report_size
    igvm = struct.pack("<IIIII", 20 + len(variable), 1, 2, 1, len(variable))
    return bytes(header) + real[32:1216] + igvm + variable


def public_key(pem_path: Path):
    return serialization.load_pem_public_key(pem_path.read_bytes())


def modulus_of(pem_path: Path) -> bytes:
    return public_key(pem_path).public_numbers().n.to_bytes(256, "big")


def another_modulus() -> bytes:
    return rsa.generate_private_key(65537, 2048).public_key().public_numbers().n.to_bytes(256, "big")


# -- replies, and tpm2_checkquote -----------------------------------------------------------------------


def reply(router, policy=None) -> dict:
    from nomyo_audit import SecureChatCompletion

    async def chat():
        async with SecureChatCompletion(router.url, allow_http=True, policy=policy) as client:
            return await client.create("echo", HELLO)

    return asyncio.run(chat())["_metadata"]


def checkquote(tpm: CloudTpm, block: dict, public_file: str) -> None:
    """tpm2_checkquote with the key tpm2-tools read (TPM2B_PUBLIC), the reply's quote, signature and
    PCR values, and the extraData tpm2-pytss reads from the quote (our client checked what it binds)."""
    from tpm2_pytss.types import TPMS_ATTEST

    quote = base64.b64decode(block["quote_b64"])
    extra = bytes(TPMS_ATTEST.unmarshal(quote)[0].extraData)
    (tpm.work / "quote.msg").write_bytes(quote)
    (tpm.work / "quote.sig").write_bytes(base64.b64decode(block["signature_b64"]))
    assert block["pcr_banks"] == "sha256:0,7,10"
    pcrs = b"".join(bytes.fromhex(block["pcr_values"]["sha256"][i]) for i in ("0", "7", "10"))
    (tpm.work / "pcrs.bin").write_bytes(pcrs)
    tpm.tool(
        "tpm2_checkquote", "-u", public_file, "-m", "quote.msg", "-s", "quote.sig", "-g", "sha256",
        "-q", extra.hex(), "-f", "pcrs.bin", "-l", "sha256:0,7,10",
    )  # fmt: skip


def gce_tpm(tpm: CloudTpm, certified_key=None) -> bytes:
    """GCE's NV: the AK template at 0x01c10001 and an AK certificate at 0x01c10000 over the key made
    from it (or over ``certified_key``). Returns tpm2-tools' TPM2B_PUBLIC of the template's key."""
    expected = tpm.primary("ak", GCE_ATTRIBUTES)
    tpm.flush()
    tpm.nv_write(0x01C10001, (tpm.work / "ak.tmpl").read_bytes())
    ca = google_like_ca(tpm.work)
    tpm.nv_write(0x01C10000, gce_ak_certificate(ca, certified_key or public_key(tpm.work / "ak.pem")))
    return expected


def azure_tpm(tpm: CloudTpm, named_modulus: bytes | None = None) -> bytes:
    """Azure's vTPM: the AK at 0x81000003 and an HCL report at 0x01400001 naming it (or
    ``named_modulus``). Returns tpm2-tools' TPM2B_PUBLIC of the persistent key."""
    tpm.primary("azure", AZURE_ATTRIBUTES, os.urandom(256))  # not the key an ephemeral AIK would be
    tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "azure.ctx", "0x81000003")
    tpm.flush()
    expected = tpm.read_public("0x81000003", "azure")
    tpm.nv_write(0x01400001, hcl_report_naming(named_modulus or modulus_of(tpm.work / "azure.pem")))
    return expected


# -- GCE: the AK made from the NV template ------------------------------------------------------------


@pytest.mark.parametrize("aik_source", ["auto", "cloud"])
def test_gce_the_router_quotes_with_the_ak_from_the_nv_template(cloud_tpm, make_router, aik_source):
    from nomyo_audit.router._attestation import make_attester

    expected = gce_tpm(cloud_tpm)
    template = (cloud_tpm.work / "ak.tmpl").read_bytes()
    # 280 bytes, and up to the unique field the real GCE AK's public area (go-tpm-tools' test data):
    # RSA 2048, SHA-256, attributes 0x00050072, RSASSA-SHA256, exponent 0
    assert len(template) == 280 and template[:24] == REAL_GCE_AK[:24]
    router = make_router(attester=make_attester(cloud_tpm.spec, aik_source=aik_source))
    meta = reply(router)
    block = meta["tpm_attestation"]
    assert meta["verification"]["result"] == "pass", meta["verification"]  # signer_name included
    assert base64.b64decode(block["aik_pubkey_b64"]) == expected  # tpm2-tools' key, byte for byte
    assert "aik_parent_qualified_name_b64" not in block  # a primary key of the endorsement hierarchy
    assert block["platform"]["kind"] == "gce"
    checkquote(cloud_tpm, block, "ak.pub")


def test_gce_ecc_the_router_quotes_with_the_ecc_ak(cloud_tpm, make_router):
    from nomyo_audit.router._attestation import make_attester

    expected = cloud_tpm.primary("ecc", GCE_ATTRIBUTES, bytes(64), "ecc256:ecdsa-sha256:null")
    cloud_tpm.nv_write(0x01C10003, (cloud_tpm.work / "ecc.tmpl").read_bytes())
    certificate = gce_ak_certificate(google_like_ca(cloud_tpm.work), public_key(cloud_tpm.work / "ecc.pem"))
    cloud_tpm.nv_write(0x01C10002, certificate)
    router = make_router(attester=make_attester(cloud_tpm.spec, "ecc256-ecdsa", aik_source="cloud"))
    meta = reply(router)
    assert meta["verification"]["result"] == "pass", meta["verification"]
    block = meta["tpm_attestation"]
    assert base64.b64decode(block["aik_pubkey_b64"]) == expected
    assert block["platform"]["kind"] == "gce"
    checkquote(cloud_tpm, block, "ecc.pub")


def test_gce_anchor_passes_end_to_end_with_the_test_ca_as_roots(cloud_tpm, make_router):
    from nomyo_audit.policy import Policy
    from nomyo_audit.router._attestation import make_attester

    gce_tpm(cloud_tpm)
    router = make_router(attester=make_attester(cloud_tpm.spec, aik_source="auto"))
    trust = {"mode": "gce-ak-cert", "roots": [str(cloud_tpm.work / "root.pem")]}
    policy = Policy.from_document({"metadata": {"name": "gce"}, "spec": {"aik_trust": trust}})
    meta = reply(router, policy)
    (finding,) = [f for f in meta["verification"]["findings"] if f["check"] == "aik_anchor"]
    assert (finding["status"], finding["code"]) == ("pass", "aik_anchored_gce_ak_cert"), finding
    facts = meta["verification"]["facts"]
    assert facts["anchor_kind"] == "gce-ak-cert"
    assert facts["platform"]["project_id"] == "nomyo-test-project"
    assert facts["platform"]["instance_id"] == "4242424242424242"
    assert meta["policy"]["outcome"] == "pass", meta["policy"]
    # the same reply with only Google's real roots: the key matches, the test CA anchors nothing
    block = meta["tpm_attestation"]
    aik = aik_material(block["aik_pubkey_b64"]).public
    finding = Anchoring(TrustStore.bundled())(aik, block, {})
    assert (finding.status, finding.code) == ("fail", "cert_unchained"), finding


# -- Azure: the persistent AK at 0x81000003 --------------------------------------------------------------


def test_azure_the_router_quotes_with_the_persistent_ak(cloud_tpm, make_router):
    from nomyo_audit.router._attestation import make_attester
    from nomyo_audit.tpm._hcl import hcl_ak_matches, parse_hcl_report
    from nomyo_audit.tpm._public import parse_public
    from nomyo_audit.tpm._structures import HIERARCHIES

    expected = azure_tpm(cloud_tpm)
    text = cloud_tpm.tool("tpm2_readpublic", "-c", "0x81000003").decode()
    assert "raw: 0x50472" in text  # C2's attributes, as tpm2-tools reads them
    qualified = parse_public(expected).qualified_name(HIERARCHIES["endorsement"]).hex()
    assert f"qualified name: {qualified}" in text  # tpm2-tools: a primary of the endorsement hierarchy
    attester = make_attester(cloud_tpm.spec, aik_source="auto")
    router = make_router(attester=attester)
    meta = reply(router)
    block = meta["tpm_attestation"]
    assert meta["verification"]["result"] == "pass", meta["verification"]
    assert base64.b64decode(block["aik_pubkey_b64"]) == expected
    assert "aik_parent_qualified_name_b64" not in block
    hcl = parse_hcl_report(hcl_report_naming(modulus_of(cloud_tpm.work / "azure.pem")))
    assert hcl_ak_matches(hcl, parse_public(expected))
    checkquote(cloud_tpm, block, "azure.pub")
    router.stop()  # closes the attester
    assert cloud_tpm.read_public("0x81000003", "after") == expected  # closed, not flushed or evicted


def test_persistent_handle_named_explicitly(cloud_tpm, make_router):
    from nomyo_audit.router._attestation import make_attester

    cloud_tpm.primary("azure", AZURE_ATTRIBUTES, os.urandom(256))
    cloud_tpm.tool("tpm2_evictcontrol", "-C", "o", "-c", "azure.ctx", "0x81000010")
    cloud_tpm.flush()
    expected = cloud_tpm.read_public("0x81000010", "azure")
    router = make_router(attester=make_attester(cloud_tpm.spec, aik_source="persistent:0x81000010"))
    block = reply(router)["tpm_attestation"]
    assert base64.b64decode(block["aik_pubkey_b64"]) == expected
    checkquote(cloud_tpm, block, "azure.pub")


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
