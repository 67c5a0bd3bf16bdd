"""AK certificates: real Windows AIK chains to Microsoft TPM Root CA 2014 (WebAuthn attestations
from public test suites; tests/fixtures/tpm-anchors/PROVENANCE.md), and the enrollment CA's own
certificates from build_ak_certificate, validated at fixed times, cross-checked with openssl, each
bad input its own CertificateError code."""

from __future__ import annotations

import random
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from conftest import require
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tpm_cert_factory import AT, aik_public, ca, fixture, openssl_verify, pki

from nomyo_audit.errors import CertificateError
from nomyo_audit.tpm import (
    TrustStore,
    build_ak_certificate,
    parse_ek_certificate,
    validate_ak_chain,
)

MS_ROOT = "ca/Microsoft_TPM_Root_Certificate_Authority_2014__870c7a35ceab.der"
# directory, a time inside every validity period, manufacturer, model, version
WINDOWS = [
    ("3270ca142066", datetime(2024, 6, 1, tzinfo=timezone.utc), "id:4E544300", "NPCT75x", "id:00070002"),
    ("6852bdfa7eee", datetime(2024, 6, 1, tzinfo=timezone.utc), "id:494E5443", "ICL", "id:00020000"),
    ("c65a171d7d96", datetime(2024, 6, 1, tzinfo=timezone.utc), "id:4E544300", "NPCT6xx", "id:13"),
]


def aik_of(directory: str):  # type: ignore[no-untyped-def]
    """The quoting AIK's public area: WebAuthn carries the AIK's key only in its certificate."""
    key = x509.load_der_x509_certificate(fixture(f"ak/{directory}/x5c_0.der")).public_key()
    return aik_public(key)  # type: ignore[arg-type]


def chain_of(directory: str) -> list[bytes]:
    return [fixture(f"ak/{directory}/x5c_0.der"), fixture(f"ak/{directory}/x5c_1.der")]


def code_of(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(CertificateError) as caught:
        call(*args, **kwargs)
    return caught.value.code


@pytest.mark.parametrize(("directory", "at", "manufacturer", "model", "version"), WINDOWS)
def test_real_windows_aik_chains(directory, at, manufacturer, model, version):
    store = TrustStore.from_der([fixture(MS_ROOT)])
    result = validate_ak_chain(chain_of(directory), store, aik_of(directory), at=at)
    assert (result.manufacturer, result.model, result.version) == (manufacturer, model, version)
    assert result.subjects[0] == "" and "Microsoft TPM Root Certificate Authority 2014" in result.subjects[-1]
    assert result.root_sha256 == store.certificates[0].sha256
    # The shipped roots hold Microsoft's TPM root too.
    assert validate_ak_chain(chain_of(directory), TrustStore.bundled(), aik_of(directory), at=at).root_sha256


def test_real_windows_aik_chain_bad_inputs():
    store = TrustStore.from_der([fixture(MS_ROOT)])
    chain, aik = chain_of("6852bdfa7eee"), aik_of("6852bdfa7eee")
    assert (
        code_of(validate_ak_chain, chain, store, aik, at=datetime(2026, 1, 1, tzinfo=timezone.utc))
        == "cert_expired"
    )
    assert code_of(validate_ak_chain, chain, store, aik, at=datetime(2019, 1, 1, tzinfo=timezone.utc)) == (
        "cert_not_yet_valid"
    )
    assert (
        code_of(validate_ak_chain, chain, store, aik_of("3270ca142066"), at=WINDOWS[1][1])
        == "cert_key_mismatch"
    )
    assert code_of(validate_ak_chain, chain[:1], store, aik, at=WINDOWS[1][1]) == "cert_unchained"
    assert code_of(validate_ak_chain, chain, TrustStore.bundled().__class__(), aik, at=WINDOWS[1][1]) == (
        "cert_unchained"
    )
    assert code_of(validate_ak_chain, [], store, aik, at=WINDOWS[1][1]) == "cert_malformed"
    ek = fixture("ek/Infineon_OPTIGA_RSA_EK__234480e4f236.der")
    assert code_of(validate_ak_chain, [ek], store, aik, at=WINDOWS[1][1]) == "cert_wrong_eku"


# -- the enrollment CA's certificates ----------------------------------------------------------------


@pytest.fixture(params=["ec", "rsa"])
def enrollment_ca(request):  # type: ignore[no-untyped-def]
    key = (
        ec.generate_private_key(ec.SECP384R1())
        if request.param == "ec"
        else rsa.generate_private_key(65537, 3072)
    )
    root = ca("nomyo-audit enrollment CA", key)  # type: ignore[arg-type]
    return key, root


def issue(enrollment_ca, aik_directory: str = "3270ca142066", **overrides) -> bytes:  # type: ignore[no-untyped-def]
    key, root = enrollment_ca
    options = {
        "issuer_key": key,
        "issuer_cert": root,
        "aik": aik_of(aik_directory),
        "ek": parse_ek_certificate(fixture("ek/Infineon_OPTIGA_RSA_EK__234480e4f236.der")),
        "not_before": AT - timedelta(days=1),
        "not_after": AT + timedelta(days=30),
    }
    options.update(overrides)
    return build_ak_certificate(**options)


def test_built_ak_certificate_follows_the_tcg_ak_profile(enrollment_ca):
    der = issue(enrollment_ca)
    certificate = x509.load_der_x509_certificate(der)
    assert certificate.subject == x509.Name([])
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    attributes = {a.oid.dotted_string: a.value for a in san.value.get_values_for_type(x509.DirectoryName)[0]}
    assert attributes == {
        "2.23.133.2.1": "id:49465800",
        "2.23.133.2.2": "SLB 9670 TPM2.0",
        "2.23.133.2.3": "id:073f",
    }
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [o.dotted_string for o in eku] == ["2.23.133.8.3"]
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    store = TrustStore.from_der([enrollment_ca[1].public_bytes(serialization.Encoding.DER)])
    result = validate_ak_chain([der], store, aik_of("3270ca142066"), at=AT)
    assert (result.manufacturer, result.model, result.version) == (
        "id:49465800",
        "SLB 9670 TPM2.0",
        "id:073f",
    )
    assert result.subjects == ("", "CN=nomyo-audit enrollment CA")


def test_built_ak_certificate_bad_inputs(enrollment_ca):
    der = issue(enrollment_ca)
    store = TrustStore.from_der([enrollment_ca[1].public_bytes(serialization.Encoding.DER)])
    aik = aik_of("3270ca142066")
    assert code_of(validate_ak_chain, [der], store, aik_of("c65a171d7d96"), at=AT) == "cert_key_mismatch"
    assert code_of(validate_ak_chain, [der], store, aik, at=AT + timedelta(days=31)) == "cert_expired"
    assert code_of(validate_ak_chain, [der], store, aik, at=AT - timedelta(days=2)) == "cert_not_yet_valid"
    stranger = pki()
    other = TrustStore.from_der([stranger.der(stranger.root)])
    assert code_of(validate_ak_chain, [der], other, aik, at=AT) == "cert_unchained"
    root_der = enrollment_ca[1].public_bytes(serialization.Encoding.DER)
    assert code_of(validate_ak_chain, [der, root_der], other, aik, at=AT) == "cert_unknown_root"
    tampered = bytearray(der)
    tampered[-5] ^= 0x01
    assert code_of(validate_ak_chain, [bytes(tampered)], store, aik, at=AT) == "cert_bad_signature"
    no_identity = parse_ek_certificate(fixture("ek/GCE_vTPM_RSA_EK_PCA_CAS__2df7967ae856.der"))
    assert code_of(issue, enrollment_ca, ek=no_identity) == "cert_not_ek_profile"
    assert code_of(issue, enrollment_ca, not_after=AT - timedelta(days=5)) == "cert_malformed"


def test_a_self_signed_ak_certificate_is_refused(enrollment_ca):
    key, _ = enrollment_ca
    self_root = ca("self", key)  # type: ignore[arg-type]
    der = issue((key, self_root))
    # An AK certificate whose issuer is a CA nobody trusts, and a self-issued one, never pass.
    assert (
        code_of(validate_ak_chain, [der], TrustStore.bundled(), aik_of("3270ca142066"), at=AT)
        == "cert_unchained"
    )


def test_openssl_verifies_the_built_chain(enrollment_ca, tmp_path):
    require(bool(shutil.which("openssl")), "openssl")
    der = issue(enrollment_ca)
    (tmp_path / "ak.pem").write_bytes(
        x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    )
    (tmp_path / "root.pem").write_bytes(enrollment_ca[1].public_bytes(serialization.Encoding.PEM))
    for at, expected in ((AT, 0), (AT + timedelta(days=31), 2)):
        assert openssl_verify(at, tmp_path / "root.pem", tmp_path / "ak.pem") == expected


def test_fuzz_ak_chains_only_certificate_error():
    rng = random.Random(1213)
    store = TrustStore.from_der([fixture(MS_ROOT)])
    directories = [w[0] for w in WINDOWS]
    refused = 0
    for _ in range(2000):
        directory = rng.choice(directories)
        chain = chain_of(directory)
        index = rng.randrange(2)
        data = bytearray(chain[index])
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[position] = rng.randrange(256)
            else:
                del data[position : position + rng.randint(1, 12)]
        chain[index] = bytes(data)
        try:
            validate_ak_chain(chain, store, aik_of(directory), at=WINDOWS[0][1])
        except CertificateError:
            refused += 1
    assert refused > 1000
