"""Real Azure SEV-SNP evidence (tests/fixtures/cloud-anchors/azure, PROVENANCE.md there) and a test
AMD hierarchy that signs reports the real CPUs never would (debug allowed, VMPL 1, a Turin TCB), so
the checks after the signature can be reached at all."""

from __future__ import annotations

import base64
import json
import struct
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from nomyo_audit.tpm._marshal import ALG
from nomyo_audit.tpm._public import Public
from nomyo_audit.tpm._trust_store import TrustStore

AZURE = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure"
SNP = AZURE / "snp"
#: AMD's ARK and ASK as shipped in the wheel (tpm-roots/AMD-SEV)
SEV_ROOTS = Path(__file__).parents[1] / "tpm-roots" / "AMD-SEV"

#: Every SNP set whose pieces belong together (the fixtures README) and its product: each must pass.
#: kinvolk-az-cvm-vtpm is incoherent on purpose (its VCEK is another chip's): a negative case only.
COHERENT = {
    "trustee-evidence-v0": "Milan",
    "trustee-evidence-v1": "Milan",
    "trustee-evidence-v2": "Milan",
    "trustee-evidence-genoa": "Genoa",
    "trustee-unit-fixtures": "Milan",
    "openpcc-azure-sevsnp": "Genoa",
}
#: What the collection's MANIFEST.json recorded for each set (report fields, VCEK checks, the nonce
#: each TPM quote's extraData equals), copied as snp/expected.json.
EXPECTED = json.loads((SNP / "expected.json").read_text())
#: A time at which every real VCEK and AMD root is valid.
AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
#: The Azure vTPM AK's template, recovered from the real quotes: its name under the endorsement
#: hierarchy is exactly their qualifiedSigner (fixedTPM, fixedParent, sensitiveDataOrigin,
#: userWithAuth, noDA, restricted, sign; RSASSA-SHA256; default exponent).
AZURE_AK_ATTRIBUTES = 0x00050472


def read(name: str, file: str) -> bytes:
    return (SNP / name / file).read_bytes()


def pem_certificates(pem: bytes) -> list[bytes]:
    """The DER of each certificate in PEM text (VCEKs have serial 0: cryptography warns)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c.public_bytes(serialization.Encoding.DER) for c in x509.load_pem_x509_certificates(pem)]


def vcek(name: str) -> bytes:
    return pem_certificates(read(name, "certs.pem" if name.startswith("kinvolk") else "vcek.pem"))[0]


def azure_aik(pem: bytes) -> Public:
    numbers = serialization.load_pem_public_key(pem).public_numbers()  # type: ignore[union-attr]
    modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    assert numbers.e == 65537
    return Public(
        ALG.RSA,
        ALG.SHA256,
        AZURE_AK_ATTRIBUTES,
        b"",
        (ALG.NULL,),
        ALG.RSASSA,
        ALG.SHA256,
        rsa_key_bits=len(modulus) * 8,
        rsa_exponent=0,
        rsa_modulus=modulus,
    )


def aik(name: str) -> Public:
    return azure_aik(read(name, "ak_pub.pem"))


def amd_store(*products: str) -> TrustStore:
    files = [
        p
        for p in (AZURE / "amd-certs").glob("*.pem")
        if not products or p.name.split("__")[0].split("-")[-1] in products
    ]
    return TrustStore.from_pem(b"".join(p.read_bytes() for p in files if "VLEK" not in p.name))


def with_hw_report(hcl: bytes, report: bytes) -> bytes:
    assert len(report) == 1184
    return hcl[:32] + report + hcl[32 + 1184 :]


def tpm_block(name: str) -> dict:
    """The tpm_attestation block a router on that VM sends: its real quote of PCRs 0-23 (SHA-256)."""
    return vtpm_block(SNP / name)


def vtpm_block(where: Path) -> dict:
    """The tpm_attestation block of the Azure vTPM quote in ``where`` (SNP or TDX evidence alike),
    by the AK of its ``ak_pub.pem`` in the Azure template."""
    pcrs = json.loads((where / "tpm_quote.pcrs.json").read_text())
    signature = (where / "tpm_quote.signature.bin").read_bytes()
    tpmt_signature = struct.pack(">HHH", ALG.RSASSA, ALG.SHA256, len(signature)) + signature
    public = azure_aik((where / "ak_pub.pem").read_bytes()).marshal()
    return {
        "is_available": True,
        "quote_b64": base64.b64encode((where / "tpm_quote.tpms_attest.bin").read_bytes()).decode(),
        "signature_b64": base64.b64encode(tpmt_signature).decode(),
        "aik_pubkey_b64": base64.b64encode(public).decode(),
        "pcr_banks": "sha256:" + ",".join(str(i) for i in range(24)),
        "pcr_values": {"sha256": {str(i): value for i, value in enumerate(pcrs)}},
    }


# -- a test AMD hierarchy -------------------------------------------------------------------------


class AmdTestHierarchy:
    """A self-made ARK-<product> -> SEV-<product> -> SEV-VCEK for one chip and TCB, P-384 throughout."""

    def __init__(self, product: str, chip_id: bytes, tcb: dict[str, int], *, product_name: str = "") -> None:
        self.product = product
        now = datetime(2025, 1, 1, tzinfo=timezone.utc)
        self.ark_key, self.ask_key, self.vcek_key = (
            ec.generate_private_key(ec.SECP384R1()) for _ in range(3)
        )
        ark_name, ask_name = _name(f"ARK-{product}"), _name(f"SEV-{product}")
        ca = x509.BasicConstraints(ca=True, path_length=None)
        self.ark = _certificate(ark_name, ark_name, self.ark_key, self.ark_key, now, [ca])
        self.ask = _certificate(ask_name, ark_name, self.ask_key, self.ark_key, now, [ca])
        extensions = [
            _raw("1.3.6.1.4.1.3704.1.2", _ia5(product_name or product)),
            _raw("1.3.6.1.4.1.3704.1.3.1", _int(tcb["bootloader"])),
            _raw("1.3.6.1.4.1.3704.1.3.2", _int(tcb["tee"])),
            _raw("1.3.6.1.4.1.3704.1.3.3", _int(tcb["snp"])),
            _raw("1.3.6.1.4.1.3704.1.3.8", _int(tcb["microcode"])),
            _raw("1.3.6.1.4.1.3704.1.4", chip_id),
        ]
        if "fmc" in tcb:
            extensions.append(_raw("1.3.6.1.4.1.3704.1.3.9", _int(tcb["fmc"])))
        self.vcek = _certificate(_name("SEV-VCEK"), ask_name, self.vcek_key, self.ask_key, now, extensions)

    @property
    def store(self) -> TrustStore:
        return TrustStore.from_der([self.ark])

    @property
    def chain(self) -> list[bytes]:
        return [self.ask, self.ark]

    def sign(self, report: bytes) -> bytes:
        """The report with its signature replaced by this VCEK's over bytes 0-0x29F."""
        der = self.vcek_key.sign(report[:0x2A0], ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        return report[:0x2A0] + r.to_bytes(72, "little") + s.to_bytes(72, "little") + report[0x330:]


def patch(report: bytes, offset: int, value: bytes) -> bytes:
    return report[:offset] + value + report[offset + len(value) :]


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test, not Advanced Micro Devices"),
        ]
    )


def _raw(oid: str, value: bytes) -> x509.Extension[x509.UnrecognizedExtension]:
    return x509.Extension(
        x509.ObjectIdentifier(oid), False, x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)
    )


def _int(value: int) -> bytes:
    body = value.to_bytes(2, "big") if value >= 0x80 else bytes([value])
    return bytes([0x02, len(body)]) + body


def _ia5(text: str) -> bytes:
    return bytes([0x16, len(text)]) + text.encode()


def _certificate(subject, issuer, key, signer, now, extensions) -> bytes:  # type: ignore[no-untyped-def]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
    )
    for extension in extensions:
        builder = builder.add_extension(
            extension.value if isinstance(extension, x509.Extension) else extension, critical=False
        )
    return builder.sign(signer, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def platform_object(name: str) -> dict:
    """The ``platform`` object a router on that VM attaches (docs/protocol.md): the HCL report,
    the VCEK, and the ASK and ARK when the set holds them."""
    blocks = read(name, "vcek.pem").decode().split("-----END CERTIFICATE-----")
    pems = [b.strip() + "\n-----END CERTIFICATE-----\n" for b in blocks if "BEGIN CERTIFICATE" in b]
    found = {
        "kind": "azure-sev-snp",
        "hcl_report_b64": base64.b64encode(read(name, "hcl_report.bin")).decode(),
        "vcek_pem": pems[0],
    }
    if len(pems) > 1:
        found["cert_chain_pem"] = pems[1:]
    return found
