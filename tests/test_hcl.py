"""The Azure HCL report reader against real reports from trustee, openpcc and kinvolk.

tests/fixtures/cloud-anchors/azure/PROVENANCE.md names where each report comes from. For every one,
SHA-256 of the variable data we read equals the CPU report's report_data[0:32], as the three
independent verifiers the fixtures' README cites compute it; any byte changed in the header, the
sizes, the variable data or the padding is ``hcl_malformed`` or changes that hash.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from nomyo_audit.errors import EvidenceError
from nomyo_audit.tpm._hcl import HclReport, hcl_ak_matches, parse_hcl_report
from nomyo_audit.tpm._marshal import ALG
from nomyo_audit.tpm._public import Public

SNP = Path(__file__).parent / "fixtures" / "cloud-anchors" / "azure" / "snp"
SETS = sorted(p.name for p in SNP.iterdir() if (p / "hcl_report.bin").exists())


def rsa_public(pem: bytes) -> Public:
    """A quoting AIK with this RSA key (what parse_public gives for an RSA TPM2B_PUBLIC)."""
    key = serialization.load_pem_public_key(pem)
    numbers = key.public_numbers()  # type: ignore[union-attr]
    modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
    return Public(
        ALG.RSA,
        ALG.SHA256,
        0,
        b"",
        (ALG.NULL,),
        ALG.RSASSA,
        ALG.SHA256,
        rsa_key_bits=len(modulus) * 8,
        rsa_exponent=numbers.e,
        rsa_modulus=modulus,
    )


def report(name: str) -> bytes:
    return (SNP / name / "hcl_report.bin").read_bytes()


@pytest.mark.parametrize("name", SETS)
def test_real_reports_bind_their_variable_data(name: str) -> None:
    parsed = parse_hcl_report(report(name))
    assert parsed.report_type == "snp" and len(parsed.hw_report) == 1184
    assert hashlib.sha256(parsed.variable_data).digest() == parsed.hw_report[0x50:0x70]
    assert parsed.hw_report == (SNP / name / "snp_report.bin").read_bytes()
    assert parsed.ak_jwk["kid"] == "HCLAkPub"


@pytest.mark.parametrize("name", [s for s in SETS if s != "kinvolk-az-cvm-vtpm"])
def test_ak_is_the_key_the_fixture_names(name: str) -> None:
    parsed = parse_hcl_report(report(name))
    assert hcl_ak_matches(parsed, rsa_public((SNP / name / "ak_pub.pem").read_bytes()))
    other = "trustee-evidence-genoa" if name != "trustee-evidence-genoa" else "trustee-evidence-v0"
    assert not hcl_ak_matches(parsed, rsa_public((SNP / other / "ak_pub.pem").read_bytes()))


def test_kinvolk_repo_akpub_is_not_the_hcl_ak() -> None:
    """The kinvolk set is incoherent (fixtures README): its akpub.pem is another VM's AK."""
    parsed = parse_hcl_report(report("kinvolk-az-cvm-vtpm"))
    repo_ak = (SNP / "kinvolk-az-cvm-vtpm" / "akpub-repo.pem").read_bytes()
    assert not hcl_ak_matches(parsed, rsa_public(repo_ak))


def test_variable_data_is_kept_as_read() -> None:
    data = report("trustee-evidence-v0")
    parsed = parse_hcl_report(data)
    size = struct.unpack_from("<I", data, 1232)[0]
    assert parsed.variable_data == data[1236 : 1236 + size]
    assert isinstance(parsed, HclReport)


def with_u32(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<I", value) + data[offset + 4 :]


MUTATIONS = {
    "magic": lambda d: b"HCLB" + d[4:],
    "version": lambda d: with_u32(d, 4, 9),
    "report_size": lambda d: with_u32(d, 8, struct.unpack_from("<I", d, 8)[0] + 1),
    "request_type": lambda d: with_u32(d, 12, 1),
    "status": lambda d: with_u32(d, 16, 1),
    "reserved": lambda d: with_u32(d, 20, 1),
    "data_size": lambda d: with_u32(d, 1216, 5),
    "igvm_version": lambda d: with_u32(d, 1220, 2),
    "report_type": lambda d: with_u32(d, 1224, 3),
    "hash_type": lambda d: with_u32(d, 1228, 2),
    "variable_size_past_end": lambda d: with_u32(d, 1232, 5000),
    "padding": lambda d: d[:-1] + b"\x01",
    "truncated": lambda d: d[:1235],
    "oversized": lambda d: d + bytes(8192),
    "not_json": lambda d: d[:1236] + b"\xff" + d[1237:],
    "no_ak": lambda d: d.replace(b'"HCLAkPub"', b'"HCLAkPUB"'),
    "two_aks": lambda d: d.replace(b'"HCLEkPub"', b'"HCLAkPub"'),
    "duplicate_key": lambda d: d.replace(b'"kty":"RSA","e"', b'"kty":"RSA","n"', 1),
    "padded_b64": lambda d: d.replace(b'"e":"AQAB"', b'"e":"AQA="', 1),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_malformed_reports_are_refused(name: str) -> None:
    with pytest.raises(EvidenceError) as caught:
        parse_hcl_report(MUTATIONS[name](report("trustee-evidence-v0")))
    assert caught.value.code == "hcl_malformed"


def test_any_variable_data_byte_changes_the_bound_hash() -> None:
    data = report("trustee-evidence-v0")
    original = parse_hcl_report(data)
    for at in range(1236, 1236 + len(original.variable_data), 37):
        changed = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
        try:
            parsed = parse_hcl_report(changed)
        except EvidenceError as exc:
            assert exc.code == "hcl_malformed"
            continue
        assert hashlib.sha256(parsed.variable_data).digest() != original.hw_report[0x50:0x70]
