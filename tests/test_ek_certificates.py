"""EK certificates: real ones from ST, Nuvoton, Infineon and GCE (tests/fixtures/tpm-anchors,
PROVENANCE.md there), each quirk they carry handled and named, their chains validated at fixed
times and cross-checked with ``openssl verify``; every bad input its own CertificateError code."""

from __future__ import annotations

import random
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from tpm_cert_factory import (
    AT,
    EKU_AIK,
    T0,
    ca,
    ek_builder,
    ek_der,
    fixture,
    name,
    openssl_verify,
    other_key,
    pki,
    tpm_name,
)

from nomyo_audit.errors import CertificateError, EvidenceError
from nomyo_audit.tpm import (
    TrustStore,
    ek_matches_public,
    parse_ek_certificate,
    parse_public,
    validate_ek_chain,
)

ST_RSA = "ek/ST33HTPHAHB4_RSA_EK__02d30b107ced.der"
ST_ECC = "ek/ST33HTPHAHB4_ECC_EK__85f388433b8a.der"
NUVOTON = "ek/Nuvoton_RSA_EK_malformed__933cdb174526.der"
IFX_RSA = "ek/Infineon_OPTIGA_RSA_EK__234480e4f236.der"
IFX_ECC = "ek/Infineon_OPTIGA_ECC_EK__dfd310e73a14.der"
GCE_RSA = "ek/GCE_vTPM_RSA_EK_UCA__af614aee3b3d.der"
GCE_ECC = "ek/GCE_vTPM_ECC_EK_UCA__9fdd7997e134.der"
GCE_PCA_RSA = "ek/GCE_vTPM_RSA_EK_PCA_CAS__2df7967ae856.der"
GCE_PCA_ECC = "ek/GCE_vTPM_ECC_EK_PCA_CAS__0dd713251f14.der"

# (EK certificate, intermediates, root, manufacturer, vendor, model, version, quirks)
REAL = [
    (ST_RSA, ["STM_TPM_EK_Intermediate_CA_05__870fc181411d", "STM_TPM_EK_Root_CA__f8e37a86b689"],
     "GlobalSign_Trusted_Platform_Module_Root_CA__f27bf02c6e00",
     "id:53544D20", "STMicroelectronics", "ST33HTPHAHB4", "id:00490004", ("trailing_bytes",)),
    (ST_ECC, ["STM_TPM_ECC_Intermediate_CA_01__015bcfc39435", "STM_TPM_ECC_Root_CA_01__c541d7e5b9e3"],
     "GlobalSign_Trusted_Platform_Module_ECC_Root_CA__5a8c7b5eb888",
     "id:53544D20", "STMicroelectronics", "ST33HTPHAHB4", "id:00490004", ()),
    (NUVOTON, [], "Nuvoton_TPM_Root_CA_2111__cd8185ff8995", "id:4E544300", "Nuvoton", "NPCT75x",
     "id:00070002", ("unsorted_name_set", "reencoded", "tpm_attribute_string_type", "san_single_rdn")),
    (IFX_RSA, ["Infineon_OPTIGA_TM_RSA_Manufacturing_CA_035__9efd7b3c07f9"],
     "Infineon_OPTIGA_TM_RSA_Root_CA__899e35474c98", "id:49465800", "Infineon", "SLB 9670 TPM2.0", "id:073f",
     ()),
    (IFX_ECC, ["Infineon_OPTIGA_TM_ECC_Manufacturing_CA_035__1f61aed7c9d5"],
     "Infineon_OPTIGA_TM_ECC_Root_CA__cfeb02fecd55", "id:49465800", "Infineon", "SLB 9670 TPM2.0", "id:073f",
     ()),
    (GCE_RSA, ["tpm_ek_v1_cloud_host-signer-0-2021-10-12T04_22_11-07_00_K_1_3_nbvaGZFL__7132b6ea7110"],
     "tpm_ek_v1_cloud_host_root-signer-0-2018-04-06T10_58_26-07_00_K_1_1_Pw0__9bd5285f8fb1",
     "id:474F4F47", "Google", "vTPM", "id:20160511", ()),
    (GCE_ECC, ["tpm_ek_v1_cloud_host-signer-0-2021-10-12T04_22_11-07_00_K_1_3_nbvaGZFL__7132b6ea7110"],
     "tpm_ek_v1_cloud_host_root-signer-0-2018-04-06T10_58_26-07_00_K_1_1_Pw0__9bd5285f8fb1",
     "id:474F4F47", "Google", "vTPM", "id:20160511", ()),
    (GCE_PCA_RSA, ["EK_AK_CA_Intermediate__c84de8116dfa"], "EK_AK_CA_Root__594759594b9b",
     "", None, None, None, ("no_ek_eku", "non_empty_subject", "no_tcg_san")),
    (GCE_PCA_ECC, ["EK_AK_CA_Intermediate__c84de8116dfa"], "EK_AK_CA_Root__594759594b9b",
     "", None, None, None, ("no_ek_eku", "non_empty_subject", "no_tcg_san")),
]  # fmt: skip


def ca_der(stem: str) -> bytes:
    return fixture(f"ca/{stem}.der")


def code_of(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CertificateError) as caught:
        call(*args, **kwargs)
    assert isinstance(caught.value, EvidenceError)
    return caught.value.code


@pytest.mark.parametrize(
    ("ek", "chain", "root", "manufacturer", "vendor", "model", "version", "quirks"), REAL
)
def test_real_ek_certificates_parse_and_chain(ek, chain, root, manufacturer, vendor, model, version, quirks):
    parsed = parse_ek_certificate(fixture(ek))
    assert (parsed.manufacturer, parsed.manufacturer_name, parsed.model, parsed.version) == (
        manufacturer, vendor, model, version,
    )  # fmt: skip
    assert parsed.quirks == quirks
    store = TrustStore.from_der([ca_der(root)])
    result = validate_ek_chain(fixture(ek), [ca_der(c) for c in chain], store, at=AT)
    assert result.root_sha256 == store.certificates[0].sha256
    assert len(result.subjects) == len(chain) + 2 and result.ek.sha256 == parsed.sha256
    # The bundled manufacturer roots and intermediates anchor the same EK with no chain at all.
    assert validate_ek_chain(fixture(ek), [], TrustStore.bundled(), at=AT).ek.manufacturer == manufacturer


def test_st_rsa_ek_nv_padding_is_cut_and_the_signature_checked_on_the_signed_bytes():
    padded = fixture(ST_RSA)
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(padded)  # cryptography refuses the 431 bytes of 0xFF
    parsed = parse_ek_certificate(padded)
    assert padded.startswith(parsed.der) and set(padded[len(parsed.der) :]) == {0xFF}
    assert parsed.certificate.public_bytes(serialization.Encoding.DER) == parsed.der


def test_nuvoton_ek_refused_by_cryptography_is_validated_over_its_raw_tbs():
    original = fixture(NUVOTON)
    with pytest.raises(ValueError):
        x509.load_der_x509_certificate(original)  # InvalidSetOrdering in the issuer's RDN
    parsed = parse_ek_certificate(original)
    assert parsed.der == original and "reencoded" in parsed.quirks
    assert parsed.certificate.tbs_certificate_bytes not in original  # the repaired copy differs
    store = TrustStore.from_der([ca_der("Nuvoton_TPM_Root_CA_2111__cd8185ff8995")])
    assert validate_ek_chain(original, [], store, at=AT).subjects[1].startswith("CN=Nuvoton TPM Root CA 2111")
    flipped = bytearray(original)
    flipped[-10] ^= 1  # inside the signature
    assert code_of(validate_ek_chain, bytes(flipped), [], store, at=AT) == "cert_bad_signature"


def test_ek_matches_its_tpm_public_area_and_not_another():
    rsa_public = parse_public(fixture("ek/Infineon_OPTIGA_RSA_EK__234480e4f236.ek_tpm2b_public.bin"))
    ecc_public = parse_public(fixture("ek/Infineon_OPTIGA_ECC_EK__dfd310e73a14.ek_tpm2b_public.bin"))
    assert ek_matches_public(parse_ek_certificate(fixture(IFX_RSA)), rsa_public)
    assert ek_matches_public(parse_ek_certificate(fixture(IFX_ECC)), ecc_public)
    assert not ek_matches_public(parse_ek_certificate(fixture(IFX_RSA)), ecc_public)
    assert not ek_matches_public(
        parse_ek_certificate(fixture(ST_RSA)), rsa_public
    )  # an EK certificate for another EK


def test_cryptography_webpki_verifier_refuses_a_real_valid_ek_chain():
    """Why validate_ek_chain checks the path itself: PolicyBuilder refuses real, valid EK chains."""
    leaf = x509.load_der_x509_certificate(fixture(IFX_RSA))
    intermediate = x509.load_der_x509_certificate(
        ca_der("Infineon_OPTIGA_TM_RSA_Manufacturing_CA_035__9efd7b3c07f9")
    )
    root = x509.load_der_x509_certificate(ca_der("Infineon_OPTIGA_TM_RSA_Root_CA__899e35474c98"))
    verifier = verification.PolicyBuilder().store(verification.Store([root])).time(AT).build_client_verifier()
    with pytest.raises(verification.VerificationError):
        verifier.verify(leaf, [intermediate])


@pytest.mark.parametrize(("ek", "chain", "root"), [(r[0], r[1], r[2]) for r in REAL if r[0] != NUVOTON])
def test_openssl_verify_agrees_at_fixed_times(ek, chain, root, tmp_path):
    require(bool(shutil.which("openssl")), "openssl")
    parsed = parse_ek_certificate(fixture(ek))

    def pem(der: bytes) -> str:
        return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()

    (tmp_path / "leaf.pem").write_bytes(parsed.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.pem").write_text(pem(ca_der(root)))
    (tmp_path / "chain.pem").write_text("".join(pem(ca_der(c)) for c in chain) or pem(ca_der(root)))
    store = TrustStore.from_der([ca_der(root)])
    after = parsed.certificate.not_valid_after_utc + timedelta(days=1)
    for at, ours in ((AT, "ok"), (after, "cert_expired")):
        theirs = openssl_verify(at, tmp_path / "root.pem", tmp_path / "leaf.pem", tmp_path / "chain.pem")
        try:
            validate_ek_chain(fixture(ek), [ca_der(c) for c in chain], store, at=at)
            verdict = "ok"
        except CertificateError as exc:
            verdict = exc.code
        assert verdict == ours
        assert (theirs == 0) == (ours == "ok")


# -- bad input: each its own code, with certificates made by cryptography's builder -----------------


def test_each_bad_ek_chain_has_its_own_code():
    p = pki()
    store = TrustStore.from_der([p.der(p.root)])
    chain = [p.der(p.intermediate)]
    assert validate_ek_chain(ek_der(p), chain, store, at=AT).ek.manufacturer_name == "Nuvoton"
    later = T0 + timedelta(days=4000)
    assert code_of(validate_ek_chain, ek_der(p), chain, store, at=later) == "cert_expired"
    assert (
        code_of(validate_ek_chain, ek_der(p), chain, store, at=T0 - timedelta(days=1)) == "cert_not_yet_valid"
    )
    young = ek_der(p, not_before=AT + timedelta(days=1))
    assert code_of(validate_ek_chain, young, chain, store, at=AT) == "cert_not_yet_valid"
    assert code_of(validate_ek_chain, ek_der(p, eku=[EKU_AIK]), chain, store, at=AT) == "cert_wrong_eku"
    assert code_of(validate_ek_chain, ek_der(p), [], store, at=AT) == "cert_unchained"
    stranger = pki()
    stranger.root = ca("Another Root", other_key())
    other_store = TrustStore.from_der([stranger.der(stranger.root)])
    full_chain = [p.der(p.intermediate), p.der(p.root)]
    assert code_of(validate_ek_chain, ek_der(p), full_chain, other_store, at=AT) == "cert_unknown_root"
    forged = ek_builder(p.intermediate, san=tpm_name()).sign(other_key(), hashes.SHA256())
    assert code_of(validate_ek_chain, p.der(forged), chain, store, at=AT) == "cert_bad_signature"
    assert code_of(validate_ek_chain, b"\x30\x03\x02\x01\x01", chain, store, at=AT) == "cert_malformed"
    assert code_of(validate_ek_chain, ek_der(p)[:-20], chain, store, at=AT) == "cert_malformed"
    assert code_of(validate_ek_chain, ek_der(p), chain, store, at=AT.replace(tzinfo=None)) == "cert_malformed"


def test_a_self_signed_ek_certificate_is_refused():
    key = rsa.generate_private_key(65537, 2048)
    subject = name("self")
    builder = ek_builder(ca("self", other_key()), key=key.public_key(), subject=subject, san=tpm_name())
    certificate = builder.sign(key, hashes.SHA256())  # issuer CN=self == subject, signed by its own key
    der = certificate.public_bytes(serialization.Encoding.DER)
    assert code_of(validate_ek_chain, der, [], TrustStore.bundled(), at=AT) == "cert_self_signed"


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"is_ca": False}, "cert_not_ca"),
        ({"path_length": 0}, None),
        ({"key_cert_sign": False}, "cert_key_usage"),
    ],
)
def test_issuer_constraints(options, code):
    p = pki(**options)
    store = TrustStore.from_der([p.der(p.root)])
    if code is None:
        assert validate_ek_chain(ek_der(p), [p.der(p.intermediate)], store, at=AT)
    else:
        assert code_of(validate_ek_chain, ek_der(p), [p.der(p.intermediate)], store, at=AT) == code


def test_path_length_constraint():
    p = pki(path_length=0)
    sub_key = ec.generate_private_key(ec.SECP256R1())
    sub = ca("Sub CA", sub_key, (p.intermediate, p.intermediate_key))
    leaf = ek_builder(sub, san=tpm_name()).sign(sub_key, hashes.SHA256())
    store = TrustStore.from_der([p.der(p.root)])
    chain = [p.der(sub), p.der(p.intermediate)]
    assert code_of(validate_ek_chain, p.der(leaf), chain, store, at=AT) == "cert_path_length"


def test_unknown_critical_extension():
    p = pki()
    builder = ek_builder(p.intermediate, san=tpm_name()).add_extension(
        x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"), critical=True
    )
    der = p.der(builder.sign(p.intermediate_key, hashes.SHA256()))
    store = TrustStore.from_der([p.der(p.root)])
    assert (
        code_of(validate_ek_chain, der, [p.der(p.intermediate)], store, at=AT)
        == "cert_unknown_critical_extension"
    )


def test_not_the_ek_profile():
    p = pki()
    assert code_of(parse_ek_certificate, ek_der(p, is_ca=True)) == "cert_not_ek_profile"
    small = rsa.generate_private_key(65537, 1024).public_key()
    assert code_of(parse_ek_certificate, ek_der(p, key=small)) == "cert_not_ek_profile"
    assert code_of(parse_ek_certificate, ek_der(p, san=None)) == "cert_not_ek_profile"  # names no TPM


# -- quirks the real certificates here do not show, made with the builder -----------------------------


def test_synthetic_quirks_are_handled_and_named():
    p = pki()
    assert "san_not_critical" in parse_ek_certificate(ek_der(p, san_critical=False)).quirks
    lowercase = parse_ek_certificate(ek_der(p, san=tpm_name(manufacturer="id:4e5443")))
    assert lowercase.manufacturer == "id:004E5443" and "manufacturer_id_format" in lowercase.quirks
    printable_string = x509.name._ASN1Type.PrintableString
    attribute = x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:49465800", printable_string)
    printable = x509.Name([x509.RelativeDistinguishedName([attribute])])
    parsed = parse_ek_certificate(ek_der(p, san=printable))
    assert parsed.manufacturer_name == "Infineon" and "tpm_attribute_string_type" in parsed.quirks
    assert parsed.model is None


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag, len(value)]) + value


def test_tpm_attributes_in_subject_directory_attributes():
    p = pki()
    tpm_manufacturer_oid = _tlv(0x06, bytes.fromhex("6781050201"))  # 2.23.133.2.1
    attribute = _tlv(0x30, tpm_manufacturer_oid + _tlv(0x31, _tlv(0x0C, b"id:53544D20")))
    sda = x509.UnrecognizedExtension(x509.ObjectIdentifier("2.5.29.9"), _tlv(0x30, attribute))
    builder = ek_builder(p.intermediate, subject=None, san=None).add_extension(sda, critical=False)
    parsed = parse_ek_certificate(p.der(builder.sign(p.intermediate_key, hashes.SHA256())))
    assert parsed.manufacturer_name == "STMicroelectronics" and "tpm_attributes_in_sda" in parsed.quirks


def _with_serial(der: bytes, serial_tlv: bytes) -> bytes:
    """The certificate with its serial TLV replaced (and both enclosing lengths fixed)."""
    assert der[:2] == der[4:6] == b"\x30\x82" and der[8:16] == b"\xa0\x03\x02\x01\x02\x02\x01\x7e"
    delta = len(serial_tlv) - 3
    total, tbs = int.from_bytes(der[2:4], "big") + delta, int.from_bytes(der[6:8], "big") + delta
    return (
        b"\x30\x82"
        + total.to_bytes(2, "big")
        + b"\x30\x82"
        + tbs.to_bytes(2, "big")
        + der[8:13]
        + serial_tlv
        + der[16:]
    )


@pytest.mark.parametrize(
    ("serial_tlv", "quirks"),
    [
        (b"\x02\x02\x00\x01", {"non_minimal_serial", "reencoded"}),
        (b"\x02\x01\xff", {"non_positive_serial"}),
        (b"\x02\x16\x01" + bytes(21), {"oversized_serial"}),
    ],
)
def test_odd_serial_numbers(serial_tlv, quirks):
    p = pki()
    certificate = _with_serial(ek_der(p, serial=0x7E), serial_tlv)
    assert quirks <= set(parse_ek_certificate(certificate).quirks)
    store = TrustStore.from_der([p.der(p.root)])
    # The TBS changed, so the issuer's signature no longer covers it: refused, with its own code.
    assert (
        code_of(validate_ek_chain, certificate, [p.der(p.intermediate)], store, at=AT) == "cert_bad_signature"
    )


# -- the trust store ---------------------------------------------------------------------------------


def test_trust_store_from_directory(tmp_path):
    p = pki()
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "bundle.pem").write_bytes(
        p.root.public_bytes(serialization.Encoding.PEM)
        + p.intermediate.public_bytes(serialization.Encoding.PEM)
    )
    (tmp_path / "nuvoton.der").write_bytes(ca_der("Nuvoton_TPM_Root_CA_2111__cd8185ff8995"))
    (tmp_path / "PROVENANCE.md").write_text("ignored")
    store = TrustStore.from_directory(tmp_path)
    assert len(store) == 3
    assert (
        validate_ek_chain(ek_der(p), [], store, at=AT).root_sha256
        == p.root.fingerprint(hashes.SHA256()).hex()
    )
    assert validate_ek_chain(fixture(NUVOTON), [], store, at=AT)


def test_trust_store_errors_name_the_problem(tmp_path):
    assert code_of(TrustStore.from_directory, tmp_path / "missing") == "cert_trust_store"
    assert code_of(TrustStore.from_directory, tmp_path) == "cert_trust_store"  # empty
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateError) as caught:
        TrustStore.from_directory(tmp_path)
    assert caught.value.code == "cert_trust_store" and "bad.pem" in caught.value.message
    (tmp_path / "bad.pem").write_bytes(b"0" * (4 * 1024 * 1024 + 1))
    assert code_of(TrustStore.from_directory, tmp_path) == "cert_trust_store"
    assert code_of(TrustStore.from_pem, "no certificate here") == "cert_trust_store"


def test_bundled_store_holds_the_licensed_manufacturer_roots():
    store = TrustStore.bundled()
    assert len(store) >= 200
    subjects = {c.subject_text for c in store.certificates}
    expected_roots = [
        "GlobalSign Trusted Platform Module Root CA",
        "Infineon OPTIGA(TM) RSA Root CA",
        "Nuvoton TPM Root CA 2111",
        "Microsoft TPM Root Certificate Authority 2014",
        "EK/AK CA Root",
    ]
    for expected in expected_roots:
        assert any(expected in s for s in subjects), expected


# -- fuzz: mutated DER of real certificates, only CertificateError comes out ----------------------------


FUZZ_CASES = 3000


def test_fuzz_real_ek_certificates_only_certificate_error():
    rng = random.Random(1212)
    seeds = [fixture(r[0]) for r in REAL]
    store = TrustStore.from_der([ca_der(r[2]) for r in REAL])
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(FUZZ_CASES):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            action = rng.random()
            position = rng.randrange(len(data))
            if action < 0.6:
                data[position] = rng.randrange(256)
            elif action < 0.8:
                del data[position : position + rng.randint(1, 16)]
            else:
                data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        try:
            parse_ek_certificate(bytes(data))
            validate_ek_chain(bytes(data), [], store, at=datetime(2025, 1, 1, tzinfo=timezone.utc))
            outcomes["parsed"] += 1
        except CertificateError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > FUZZ_CASES // 2 and sum(outcomes.values()) == FUZZ_CASES


def test_issuer_name_in_another_string_type_still_chains():
    """STM TPM ECC Intermediate CA 02 names its issuer with other string types than the subject of
    STM TPM ECC Root CA 01 (byte comparison fails); RFC 5280 7.1 comparison finds it, and the
    signature over the raw TBS decides."""
    from nomyo_audit.tpm._chain import build_path
    from nomyo_audit.tpm._x509 import read_certificate

    intermediate = read_certificate(ca_der("STM_TPM_ECC_Intermediate_CA_02__695ad0f0236f"))
    st_root = read_certificate(ca_der("STM_TPM_ECC_Root_CA_01__c541d7e5b9e3"))
    assert intermediate.issuer != st_root.subject
    store = TrustStore.from_der([ca_der("GlobalSign_Trusted_Platform_Module_ECC_Root_CA__5a8c7b5eb888")])
    path = build_path(intermediate, [st_root], store, at=AT)
    assert [c.sha256 for c in path[1:]] == [st_root.sha256, store.certificates[0].sha256]


def test_a_presented_copy_of_an_anchor_cannot_stretch_its_validity():
    """An anchor's own signature is not checked, so the store's copy is the one judged: a chain that
    carries a forged twin of an anchored CA (same name and key, later expiry) does not revive it."""
    p = pki(days=1000)
    store = TrustStore.from_der([p.der(p.intermediate)])  # the intermediate itself is the anchor
    leaf = ek_der(p, not_after=T0 + timedelta(days=5000))
    twin = (
        x509.CertificateBuilder()
        .subject_name(p.intermediate.subject)
        .issuer_name(name("Forger"))
        .public_key(p.intermediate_key.public_key())
        .serial_number(7)
        .not_valid_before(T0)
        .not_valid_after(T0 + timedelta(days=9000))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(other_key(), hashes.SHA256())
    )
    after = T0 + timedelta(days=2000)
    assert code_of(validate_ek_chain, leaf, [p.der(twin)], store, at=after) == "cert_expired"
    assert validate_ek_chain(leaf, [p.der(twin)], store, at=AT).root_sha256 == store.certificates[0].sha256


def test_swtpm_ek_certificates_chain_to_its_local_ca(tmp_path):
    """swtpm_setup --create-ek-cert (the manufacturer of the demo and the e2e tests, code we did not
    write) makes RSA and ECC EK certificates that parse and chain to its local CA."""
    require(bool(shutil.which("swtpm_setup") and shutil.which("swtpm_localca")), "swtpm_setup, swtpm_localca")
    ca_dir, certs = tmp_path / "ca", tmp_path / "certs"
    ca_dir.mkdir(), certs.mkdir(), (tmp_path / "state").mkdir()
    (tmp_path / "localca.conf").write_text(
        f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\nissuercert = {ca_dir}/issuercert.pem\n"
        f"certserial = {ca_dir}/certserial\n"
    )
    (tmp_path / "localca.options").write_text("--platform-manufacturer nomyo\n")
    (tmp_path / "setup.conf").write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {tmp_path / 'localca.conf'}\n"
        f"create_certs_tool_options = {tmp_path / 'localca.options'}\n"
    )
    command = ["swtpm_setup", "--tpm2", "--tpmstate", str(tmp_path / "state"), "--create-ek-cert", "--ecc"]
    command += ["--config", str(tmp_path / "setup.conf"), "--write-ek-cert-files", str(certs)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    store = TrustStore.from_pem((ca_dir / "swtpm-localca-rootca-cert.pem").read_bytes())
    intermediate = TrustStore.from_pem((ca_dir / "issuercert.pem").read_bytes()).certificates[0].der
    ek_files = sorted(certs.glob("ek-*.crt"))
    assert [f.name for f in ek_files] == ["ek-rsa2048.crt", "ek-secp384r1.crt"]
    for ek_file in ek_files:
        result = validate_ek_chain(ek_file.read_bytes(), [intermediate], store, at=datetime.now(timezone.utc))
        assert (result.ek.manufacturer, result.ek.model) == ("id:00001014", "swtpm")
        assert result.ek.quirks == ("non_empty_subject",)  # swtpm names the EK "CN=unknown"
        assert result.subjects[1:] == ("CN=swtpm-localca", "CN=swtpm-localca-rootca")
