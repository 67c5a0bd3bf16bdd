"""GCE vTPM AK certificates anchor real GCE quotes (issue 17): the `gce-ak-cert` anchor.

The quotes, the AK and the AK certificate are real, from a GCE COS-85 VM (go-tpm-tools' test
attestations, tests/fixtures/measured and tests/fixtures/cloud-anchors/gce, with provenance); the
Google roots are the ones the wheel ships. go-tpm-tools verifies the same attestations with nonce
``nil`` and ``90 09`` against the same roots. Every mutation fails with its own code, never a pass.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from tpm2_pytss import TPM2B_PUBLIC, TPMT_PUBLIC

from nomyo_audit.cli import cli
from nomyo_audit.tpm import TrustStore, verify_attestation
from nomyo_audit.tpm._anchoring import Anchoring
from nomyo_audit.tpm._gce import appraise_gce
from nomyo_audit.tpm._keys import to_crypto_key
from nomyo_audit.tpm._public import parse_public

HERE = Path(__file__).parent
GCE = HERE / "fixtures" / "cloud-anchors" / "gce"
MEASURED = HERE / "fixtures" / "measured"
ROOTS = HERE.parent / "nomyo_audit" / "data" / "tpm-roots"
NONCES = {"gce-cos-85-no-nonce": b"", "gce-cos-85-nonce9009": bytes.fromhex("9009")}
AK_CERT = (GCE / "cos-85" / "ak_cert.der").read_bytes()
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)
#: what the COS-85 AK certificate's GCE extension says (its DER, read by hand: MANIFEST.json's hex)
COS_VM = {
    "cloud": "gce",
    "pki": "uca",
    "instance_id": "6797026933021542085",
    "instance_name": "cos-test",
    "project_id": "google.com:wuale-gcp-testing",
    "project_number": 117478743145,
    "zone": "us-central1-a",
}


def pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cos_block(name: str = "gce-cos-85-nonce9009", cert: bytes = AK_CERT, intermediates=()) -> dict:
    """The tpm_attestation block a router on that VM would send: its sha256 quote of PCRs 0-23
    (the event log left out) and Google's AK certificate from NV index 0x01c10000."""
    where = MEASURED / name
    values = json.loads((where / "quote_sha256.pcrs.json").read_text())
    public = (where / "ak_pub.tpmt_public.bin").read_bytes()
    return {
        "is_available": True,
        "quote_b64": b64((where / "quote_sha256.tpms_attest.bin").read_bytes()),
        "signature_b64": b64((where / "quote_sha256.tpmt_signature.bin").read_bytes()),
        "aik_pubkey_b64": b64(len(public).to_bytes(2, "big") + public),
        "pcr_banks": "sha256:" + ",".join(str(i) for i in range(24)),
        "pcr_values": {"sha256": values["pcrs"]},
        "platform": {
            "kind": "gce",
            "ak_cert_pem": pem(cert),
            "intermediates_pem": [pem(d) for d in intermediates],
        },
    }


def cos_aik():
    public = (MEASURED / "gce-cos-85-no-nonce" / "ak_pub.tpmt_public.bin").read_bytes()
    return parse_public(len(public).to_bytes(2, "big") + public)


def aik_of(der: bytes):
    """A TPM public area holding the certificate's key, made by tpm2-pytss (not our code)."""
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return parse_public(TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.from_pem(spki)).marshal())


def anchor(verdict):
    finding = verdict.finding("aik_anchor")
    return finding.status, finding.code


def verified(block, store=None, nonce=NONCES["gce-cos-85-nonce9009"], at=NOW):
    anchoring = Anchoring(store if store is not None else TrustStore.bundled(), at=at)
    return verify_attestation(block, None, expected_nonce=nonce, anchor=anchoring)


# -- the real evidence passes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NONCES))
def test_real_gce_quote_is_anchored_by_googles_ak_certificate(name):
    verdict = verified(cos_block(name), nonce=NONCES[name])
    assert verdict.passed, verdict.failures
    assert anchor(verdict) == ("pass", "aik_anchored_gce_ak_cert")
    facts = verdict.facts
    assert facts["anchor_kind"] == "gce-ak-cert" and facts["manufacturer"] == "Google"
    assert facts["platform"] == COS_VM
    assert facts["chain_subjects"][0] == ""  # the UCA AK certificate's empty subject
    assert facts["chain_subjects"][1].startswith("CN=tpm_ek_v1_cloud_host-signer-0-2020-10-22")
    # tpm_ek_root_1.cer, data/tpm-roots/Google/PROVENANCE.md
    assert facts["anchor_root_sha256"] == "9bd5285f8fb18502a7947e621ffd470266f49fcd3b73e19a190f690ad32a7caf"


def test_the_google_roots_alone_anchor_it():
    store = TrustStore.from_directory(ROOTS / "Google")
    assert anchor(verified(cos_block(), store)) == ("pass", "aik_anchored_gce_ak_cert")


@pytest.mark.parametrize(
    ("name", "pki", "root"),
    [
        ("GCE_AK_RSA_UCA", "uca", "9bd5285f8fb1"),
        ("GCE_AK_ECC_UCA", "uca", "9bd5285f8fb1"),
        ("GCE_AK_RSA_PCA", "cas", "594759594b9b"),
        ("GCE_AK_ECC_PCA", "cas", "594759594b9b"),
        ("openpcc_test_gce_ak_cert", "cas", "594759594b9b"),
    ],
)
def test_every_real_gce_ak_certificate_chains_to_a_google_root(name, pki, root):
    der = (GCE / "ak-certs" / f"{name}.der").read_bytes()
    result = appraise_gce(aik_of(der), der, [], TrustStore.bundled(), at=NOW)
    assert (result.finding.status, result.finding.code) == ("pass", "aik_anchored_gce_ak_cert")
    assert result.facts["platform"]["pki"] == pki
    assert result.facts["anchor_root_sha256"].startswith(root)
    assert result.valid_from is not None and result.valid_from <= NOW <= result.valid_until


def test_a_cas_certificate_names_the_instance_in_its_subject_and_extension():
    der = (GCE / "ak-certs" / "GCE_AK_RSA_PCA.der").read_bytes()
    facts = appraise_gce(aik_of(der), der, [], TrustStore.bundled(), at=NOW).facts["platform"]
    assert facts == {
        "cloud": "gce",
        "pki": "cas",
        "instance_id": "218557372616137117",  # the subject's CN, and the extension's instanceId
        "instance_name": "cs-debug-pca",
        "project_id": "google.com:wuale-gcp-testing",
        "project_number": 117478743145,
        "zone": "us-central1-a",
    }


def test_the_intermediate_may_come_with_the_evidence():
    der = (GCE / "ak-certs" / "openpcc_test_gce_ak_cert.der").read_bytes()
    intermediate = (GCE / "ak-certs" / "openpcc_test_gce_ak_intermediate_cert.der").read_bytes()
    root_only = TrustStore.from_pem((ROOTS / "Google" / "EK_AK_CA_Root__594759594b9b.pem").read_bytes())
    alone = appraise_gce(aik_of(der), der, [], root_only, at=NOW)
    assert (alone.finding.status, alone.finding.code) == ("fail", "cert_unchained")
    result = appraise_gce(aik_of(der), der, [intermediate], root_only, at=NOW)
    assert result.finding.code == "aik_anchored_gce_ak_cert"
    assert result.facts["platform"]["project_id"] == "nonvolatile-dev"


# -- mutations: each its own code, never a pass --------------------------------------------------------


def test_an_ak_certificate_for_another_key_is_gce_ak_mismatch():
    other = (GCE / "ak-certs" / "GCE_AK_RSA_UCA.der").read_bytes()  # genuine, but another VM's AK
    verdict = verified(cos_block(cert=other))
    assert anchor(verdict) == ("fail", "gce_ak_mismatch")
    assert verdict.finding("signature").status == "pass" and "platform" not in verdict.facts


def test_an_expired_certificate_is_cert_expired():
    not_after = x509.load_der_x509_certificate(AK_CERT).not_valid_after_utc
    assert anchor(verified(cos_block(), at=not_after + timedelta(days=1))) == ("fail", "cert_expired")
    not_before = x509.load_der_x509_certificate(AK_CERT).not_valid_before_utc
    assert anchor(verified(cos_block(), at=not_before - timedelta(days=1))) == ("fail", "cert_not_yet_valid")


def test_a_store_without_google_does_not_anchor_it():
    infineon = TrustStore.from_directory(ROOTS / "Infineon")
    assert anchor(verified(cos_block(), infineon)) == ("fail", "cert_unchained")
    # the whole Google chain presented with the evidence: a root outside the store
    google = [c.der for c in TrustStore.from_directory(ROOTS / "Google").certificates]
    uca = [d for d in google if b"cloud_host" in d]
    assert anchor(verified(cos_block(intermediates=uca), infineon)) == ("fail", "cert_unknown_root")


def test_a_broken_signature_is_cert_bad_signature():
    broken = bytearray(AK_CERT)
    broken[-1] ^= 0x01  # the last byte of the issuer's RSA signature
    assert anchor(verified(cos_block(cert=bytes(broken)))) == ("fail", "cert_bad_signature")


def test_a_changed_byte_in_the_signed_identity_breaks_the_signature():
    changed = AK_CERT.replace(b"cos-test", b"cos-tesT")
    assert changed != AK_CERT
    assert anchor(verified(cos_block(cert=changed))) == ("fail", "cert_bad_signature")


# -- certificates signed by a CA of our own (the store names it), to reach each identity check ----------


def _der_text(text: str) -> bytes:
    return _tlv(0x0C, text.encode())


def _tlv(tag: int, value: bytes) -> bytes:
    size = len(value)
    length = (
        bytes([size])
        if size < 128
        else bytes([0x81, size])
        if size < 256
        else bytes([0x82]) + size.to_bytes(2, "big")
    )
    return bytes([tag]) + length + value


def _der_int(number: int) -> bytes:
    return _tlv(0x02, number.to_bytes(number.bit_length() // 8 + 1, "big"))


def gce_extension(
    zone="europe-west4-a", number=42, project="acme-prod", instance=7, name="router-1"
) -> bytes:
    """go-tpm-tools' gceInstanceInfo, DER-encoded by hand (a second encoder, not our reader)."""
    fields = _der_text(zone) + _der_int(number) + _der_text(project) + _der_int(instance) + _der_text(name)
    return _tlv(0x30, fields)


class OwnCa:
    """A CA key and self-signed root with the name we choose, and AK certificates for the COS AIK."""

    def __init__(self, organisation: str = "Google LLC", common_name: str = "EK/AK CA Root") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ])  # fmt: skip
        self.root = self._sign(
            x509.CertificateBuilder().subject_name(self.name).public_key(self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        )  # fmt: skip
        self.store = TrustStore.from_der([self.root])

    def _sign(self, builder: x509.CertificateBuilder) -> bytes:
        builder = (
            builder.issuer_name(self.name)
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=1))
            .not_valid_after(NOW + timedelta(days=365))
        )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def ak_cert(self, *, subject=(), extension: bytes | None = gce_extension(), extra=()) -> bytes:
        builder = x509.CertificateBuilder().subject_name(x509.Name(list(subject)))
        builder = builder.public_key(to_crypto_key(cos_aik()))
        if extension is not None:
            gce_oid = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.1.21")
            builder = builder.add_extension(x509.UnrecognizedExtension(gce_oid, extension), critical=False)
        for value, critical in extra:
            builder = builder.add_extension(value, critical=critical)
        return self._sign(builder)


def own(ca: OwnCa, der: bytes):
    return appraise_gce(cos_aik(), der, [], ca.store, at=NOW)


def code(result) -> tuple[str, str]:
    return result.finding.status, result.finding.code


def test_own_google_named_ca_reads_the_extension():
    ca = OwnCa()
    result = own(ca, ca.ak_cert())
    assert code(result) == ("pass", "aik_anchored_gce_ak_cert")
    assert result.facts["platform"] == {
        "cloud": "gce", "pki": "cas", "instance_id": "7", "instance_name": "router-1",
        "project_id": "acme-prod", "project_number": 42, "zone": "europe-west4-a",
    }  # fmt: skip


def test_a_root_that_is_not_a_google_ek_ak_ca_is_gce_not_google():
    assert code(own(OwnCa("Acme Inc"), OwnCa("Acme Inc").ak_cert())) == ("fail", "cert_bad_signature")
    ca = OwnCa("Acme Inc", "EK/AK CA Root")
    assert code(own(ca, ca.ak_cert())) == ("fail", "gce_not_google")
    ca = OwnCa("Google LLC", "Some other CA")
    assert code(own(ca, ca.ak_cert())) == ("fail", "gce_not_google")


def test_a_certificate_naming_no_instance_is_gce_not_gce():
    ca = OwnCa()
    assert code(own(ca, ca.ak_cert(extension=None))) == ("fail", "gce_not_gce")


def _subject(instance="7", project="acme-prod", zone="europe-west4-a"):
    return (
        x509.NameAttribute(NameOID.LOCALITY_NAME, zone),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Google Compute Engine"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, project),
        x509.NameAttribute(NameOID.COMMON_NAME, instance),
    )


def test_a_cas_subject_alone_names_the_instance():
    ca = OwnCa()
    result = own(ca, ca.ak_cert(subject=_subject(), extension=None))
    assert code(result) == ("pass", "aik_anchored_gce_ak_cert")
    assert result.facts["platform"]["instance_id"] == "7"
    assert (
        result.facts["platform"]["instance_name"] is None
        and result.facts["platform"]["project_number"] is None
    )


@pytest.mark.parametrize("field", ["instance", "project", "zone"])
def test_a_subject_that_disagrees_with_the_extension_is_gce_identity_mismatch(field):
    ca = OwnCa()
    subject = _subject(**{field: "8" if field == "instance" else "other"})
    assert code(own(ca, ca.ak_cert(subject=subject))) == ("fail", "gce_identity_mismatch")


@pytest.mark.parametrize(
    "extension",
    [
        b"",
        b"\x30\x00",
        gce_extension() + b"\x00",
        gce_extension()[:-1],
        _tlv(0x30, _der_text("z") + _der_int(1) + _der_text("p") + _der_int(2)),  # no instance name
        _tlv(0x30, _der_text("z") + _tlv(0x02, b"\xff") + _der_text("p") + _der_int(2) + _der_text("n")),
        _tlv(0x30, _der_text("z") + _der_int(1 << 64) + _der_text("p") + _der_int(2) + _der_text("n")),
        _tlv(0x30, _tlv(0x13, b"z") + _der_int(1) + _der_text("p") + _der_int(2) + _der_text("n")),
        _tlv(0x30, _der_text("") + _der_int(1) + _der_text("p") + _der_int(2) + _der_text("n")),
        _tlv(0x30, _tlv(0x0C, b"\xff\xfe") + _der_int(1) + _der_text("p") + _der_int(2) + _der_text("n")),
        _tlv(0x30, gce_extension()[2:] + _tlv(0x04, b"x")),  # a sixth field that is not [0]
    ],
)
def test_a_malformed_gce_extension_is_gce_identity_malformed(extension):
    ca = OwnCa()
    assert code(own(ca, ca.ak_cert(extension=extension))) == ("fail", "gce_identity_malformed")


def test_googles_security_properties_after_the_name_are_accepted():
    real = x509.load_der_x509_certificate(AK_CERT).extensions
    value = next(e for e in real if e.oid.dotted_string == "1.3.6.1.4.1.11129.2.1.21").value.value
    ca = OwnCa()
    assert code(own(ca, ca.ak_cert(extension=value))) == ("pass", "aik_anchored_gce_ak_cert")


def test_the_profile_of_an_ak_certificate_is_checked():
    ca = OwnCa()
    server_auth = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    assert code(own(ca, ca.ak_cert(extra=[(server_auth, False)]))) == ("fail", "cert_wrong_eku")
    encipher = x509.KeyUsage(False, False, True, False, False, False, False, False, False)  # an EK's
    assert code(own(ca, ca.ak_cert(extra=[(encipher, True)]))) == ("fail", "cert_key_usage")
    is_ca = x509.BasicConstraints(ca=True, path_length=None)
    assert code(own(ca, ca.ak_cert(extra=[(is_ca, True)]))) == ("fail", "cert_not_ek_profile")


def test_garbage_certificate_bytes_are_cert_malformed_never_a_raise():
    for garbage in (b"", b"\x30", b"\x00" * 40, AK_CERT[:200]):
        assert code(appraise_gce(cos_aik(), garbage, [], TrustStore.bundled(), at=NOW))[0] == "fail"
    assert code(appraise_gce(cos_aik(), AK_CERT, [b"junk"], TrustStore.bundled(), at=NOW)) == (
        "fail",
        "cert_malformed",
    )
    assert code(appraise_gce(cos_aik(), AK_CERT, [AK_CERT] * 8, TrustStore.bundled(), at=NOW)) == (
        "fail",
        "cert_malformed",
    )


# -- the CLI: evidence made outside NOMYO, with its own nonce -----------------------------------------------


def _cli(tmp_path, block, *args):
    path = tmp_path / "gce.json"
    path.write_text(json.dumps({"tpm_attestation": block}))
    result = CliRunner().invoke(cli, ["verify", "--format", "json", *args, str(path)])
    return result.exit_code, (json.loads(result.stdout) if result.stdout.startswith("[") else None), result


@pytest.mark.parametrize("name", sorted(NONCES))
def test_verify_nonce_anchors_the_real_quotes_from_the_cli(tmp_path, name):
    exit_code, verdicts, result = _cli(
        tmp_path, cos_block(name), "--nonce", NONCES[name].hex(), "--roots", str(ROOTS / "Google")
    )
    assert exit_code == 0, result.output
    findings = {f["check"]: (f["status"], f["code"]) for f in verdicts[0]["findings"]}
    assert findings["nonce_binding"] == ("pass", "nonce_matches")
    assert findings["aik_anchor"] == ("pass", "aik_anchored_gce_ak_cert")
    assert verdicts[0]["facts"]["platform"] == COS_VM


def test_verify_nonce_refuses_another_nonce_and_bad_hex(tmp_path):
    exit_code, verdicts, _ = _cli(tmp_path, cos_block(), "--nonce", "9008")
    assert exit_code == 1
    assert {f["code"] for f in verdicts[0]["findings"] if f["status"] == "fail"} == {"nonce_mismatch"}
    exit_code, _, _ = _cli(tmp_path, cos_block("gce-cos-85-no-nonce"), "--nonce", "9009")
    assert exit_code == 1
    for bad in ("zz", "123", "00" * 65):
        exit_code, _, result = _cli(tmp_path, cos_block(), "--nonce", bad)
        assert exit_code == 2 and "--nonce" in result.output and "Traceback" not in result.output


def test_verify_without_nonce_cannot_bind_a_foreign_quote(tmp_path):
    exit_code, verdicts, _ = _cli(tmp_path, cos_block(), "--roots", str(ROOTS / "Google"))
    assert exit_code == 1
    findings = {f["check"]: f["code"] for f in verdicts[0]["findings"] if f["status"] == "fail"}
    assert findings == {"nonce_binding": "nonce_unverifiable"}


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(AK_CERT) - 1), st.integers(min_value=1, max_value=255))
def test_fuzz_any_changed_byte_of_the_real_certificate_never_passes(at, flip):
    changed = bytearray(AK_CERT)
    changed[at] ^= flip
    result = appraise_gce(cos_aik(), bytes(changed), [], TrustStore.bundled(), at=NOW)
    assert result.finding.status == "fail", (at, flip)
    assert result.finding.code.startswith(("cert_", "gce_")), result.finding.code


def test_verify_nonce_is_refused_with_bundles(tmp_path):
    exit_code, _, result = _cli(tmp_path, cos_block(), "--offline", "--nonce", "9009")
    assert exit_code == 2 and "--nonce" in result.output and "Traceback" not in result.output
