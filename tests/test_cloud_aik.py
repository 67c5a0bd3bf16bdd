"""The router quotes with the cloud's certified AK (``--aik-source``), proven with tpm2-tools.

A fresh swtpm per test plays the cloud vTPM. tpm2-tools (code we did not write) puts there what a
cloud puts: on GCE the AK template at NV 0x01c10001 (go-tpm-tools ``client/handles.go``
``GceAKTemplateNVIndexRSA``) and an AK certificate at 0x01c10000; on Azure a primary key of the
endorsement hierarchy made persistent at 0x81000003 and an HCL report naming it at 0x01400001. Then
``tpm2_createprimary -C e`` from the same template / ``tpm2_readpublic`` of the handle say which key
that is, and the router's replies must be quoted with exactly it: the reply's ``aik_pubkey_b64`` is
tpm2-tools' TPM2B_PUBLIC byte for byte, and ``tpm2_checkquote`` with that key accepts the quote (a
router that cannot do so refuses to start: tests/test_cloud_aik_refusals.py). The GCE certificate
comes from a test CA named like Google's: with that CA as the policy's roots, the real client passes
``aik_anchor`` with kind ``gce-ak-cert`` through a real reply (with only the bundled roots it is
``cert_unchained``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

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


@contextmanager
def fresh_cloud_tpm(work: Path) -> Iterator[CloudTpm]:
    """A fresh swtpm of our own (the session one must not get cloud NV indices or persistent keys)."""
    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    require(shutil.which("tpm2_createprimary") is not None, "tpm2-tools is not installed")
    with SwtpmProcess(ek_certificates=False) as process:
        yield CloudTpm(process, work)


@pytest.fixture
def cloud_tpm(tmp_path):
    with fresh_cloud_tpm(tmp_path) as tpm:
        yield tpm


# -- a test CA named like Google's, and an HCL report naming a key --------------------------------------


def certificate(subject: list[tuple], issuer: x509.Name | None, key, signer, *, ca: bool) -> x509.Certificate:
    """A certificate of ``key`` for ``subject`` (OID, value pairs) signed by ``signer``: a CA that may
    sign certificates, or an end entity that may sign (keyUsage digitalSignature)."""
    name = x509.Name([x509.NameAttribute(oid, value) for oid, value in subject])
    now = datetime.now(timezone.utc)
    usage = (False, False, False, False, False, True, True, False, False) if ca else (True,) + (False,) * 8
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name).public_key(key)
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(*usage), critical=True)
        .sign(signer, hashes.SHA256())
    )  # fmt: skip


def google_like_ca(work: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A test root named like Google's EK/AK CA (``root.pem`` in ``work``) and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [(NameOID.ORGANIZATION_NAME, "Google LLC"), (NameOID.COMMON_NAME, "EK/AK CA Root (test)")]
    root = certificate(subject, None, key.public_key(), key, ca=True)
    (work / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    return key, root


def gce_ak_certificate(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], subject_key) -> bytes:
    """A CAS-style GCE AK certificate (the subject names the VM) over ``subject_key``."""
    key, root = ca
    subject = [
        (NameOID.COMMON_NAME, "4242424242424242"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "nomyo-test-project"),
        (NameOID.ORGANIZATION_NAME, "Google Compute Engine"),
        (NameOID.LOCALITY_NAME, "europe-west4-a"),
    ]
    leaf = certificate(subject, root.subject, subject_key, key, ca=False)
    return leaf.public_bytes(serialization.Encoding.DER)


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
def test_gce_the_router_quotes_with_the_ak_from_the_nv_template(cloud_tpm, make_router, aik_source, caplog):
    from nomyo_audit.router._attestation import make_attester

    expected = gce_tpm(cloud_tpm)
    template = (cloud_tpm.work / "ak.tmpl").read_bytes()
    # 280 bytes, and up to the unique field the real GCE AK's public area (go-tpm-tools' test data):
    # RSA 2048, SHA-256, attributes 0x00050072, RSASSA-SHA256, exponent 0
    assert len(template) == 280 and template[:24] == REAL_GCE_AK[:24]
    with caplog.at_level(logging.INFO, logger="nomyo_audit.router"):
        router = make_router(attester=make_attester(cloud_tpm.spec, aik_source=aik_source))
    assert (
        "AIK: the GCE AK made from the template at NV 0x01c10001 (named by the GCE AK certificate at NV "
        "0x01c10000)" in caplog.text
    )
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


def test_the_cloud_ak_activates_a_credential_for_the_ek(cloud_tpm):
    """``aik_trust: {mode: ek}`` still works with the cloud's AK: TPM2_ActivateCredential with the
    persistent AK and the EK recovers a secret made for that AK's name."""
    from nomyo_audit.attest import TPMAttester
    from nomyo_audit.attest._tpm2 import Tpm2QuoteSource
    from nomyo_audit.tpm import make_credential, parse_public

    expected = azure_tpm(cloud_tpm)
    attester = TPMAttester(Tpm2QuoteSource(cloud_tpm.spec, aik_source="cloud"))
    try:
        ek = parse_public(base64.b64decode(attester.endorsement()["ek_public_b64"]))
        secret = os.urandom(32)
        credential = make_credential(ek, parse_public(expected).name, secret)
        assert attester.activate_credential(credential.id_object, credential.encrypted_secret) == secret
    finally:
        attester.close()
