"""TPM2_MakeCredential in pure Python (issue 12, section 3), proved against code we did not write:
go-tpm's byte-exact vectors, go-attestation's EK with its private key, tpm2-tools and tpm2-pytss files
and functions, and swtpm's TPM2_ActivateCredential."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from nomyo_audit.attest import TPMAttester
from nomyo_audit.attest._tpm2 import Tpm2QuoteSource
from nomyo_audit.errors import CredentialError
from nomyo_audit.tpm import Credential, EccPoint, Public, make_credential, parse_credential, parse_public
from nomyo_audit.tpm._marshal import ALG, tpm2b

FIXTURES = Path(__file__).parent / "fixtures" / "makecredential"
GO_TPM_RSA = FIXTURES / "go-tpm-credactivation-rsa2048"
GO_TPM_ECC = FIXTURES / "go-tpm-credactivation-ecc-p256"
GO_ATTESTATION = FIXTURES / "go-attestation-activation"
EK_SYMMETRIC = (ALG.AES, 128, ALG.CFB)
SECRET = bytes(range(1, 33))


def ek_from_pem(path: Path) -> Public:
    """An EK public area (standard template: SHA-256, AES-128-CFB) around a PEM public key."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers()
        return Public(
            ALG.RSA, ALG.SHA256, 0x300B2, b"", EK_SYMMETRIC, ALG.NULL, ALG.NULL,
            rsa_key_bits=2048, rsa_exponent=0 if n.e == 65537 else n.e, rsa_modulus=n.n.to_bytes(256, "big"),
        )  # fmt: skip
    assert isinstance(key, ec.EllipticCurvePublicKey)
    p = key.public_numbers()
    point = EccPoint(p.x.to_bytes(32, "big"), p.y.to_bytes(32, "big"))
    return Public(
        ALG.ECC, ALG.SHA256, 0x300B2, b"", EK_SYMMETRIC, ALG.NULL, ALG.NULL, curve_id=3, ecc_point=point
    )


# -- byte-exact vectors -------------------------------------------------------------------------------


def test_go_tpm_rsa_vector_byte_for_byte():
    made = make_credential(
        ek_from_pem(GO_TPM_RSA / "ek_pub.pem"),
        (GO_TPM_RSA / "ak_name.bin").read_bytes(),
        (GO_TPM_RSA / "secret.bin").read_bytes(),
        seed=bytes(16),
        oaep_seed=bytes(32),
    )
    assert made.id_object == (GO_TPM_RSA / "credentialBlob.tpm2b_id_object.bin").read_bytes()
    assert made.encrypted_secret == (GO_TPM_RSA / "encryptedSecret.tpm2b_encrypted_secret.bin").read_bytes()
    assert made.id_object + made.encrypted_secret == (GO_TPM_RSA / "expected_blob.bin").read_bytes()


def test_go_tpm_ecc_vector_byte_for_byte():
    ephemeral = ec.derive_private_key(0x42 << (30 * 8), ec.SECP256R1())  # Go's zero reader: 0x0042 || 0^30
    made = make_credential(
        ek_from_pem(GO_TPM_ECC / "ek_pub.pem"),
        (GO_TPM_ECC / "ak_name.bin").read_bytes(),
        (GO_TPM_ECC / "secret.bin").read_bytes(),
        ephemeral_key=ephemeral,
    )
    assert made.id_object + made.encrypted_secret == (GO_TPM_ECC / "expected_blob.bin").read_bytes()


@pytest.mark.parametrize("test", ["TestActivation", "TestECCActivation"])
def test_go_attestation_real_aks_derived_vectors(test):
    """A real Infineon AK and a real Google vTPM AK, their names from their public areas."""
    aik = parse_public(tpm2b((GO_ATTESTATION / test / "Public.bin").read_bytes()))
    secret = base64.b64decode("0vhS7HtORX9uf/iyQ8Sf9WkpJuoJ1olCfTjSZuyNNxY=")
    made = make_credential(ek_from_pem(GO_ATTESTATION / "ek_pub.pem"), aik.name, secret, seed=bytes(16),
                           oaep_seed=bytes(32))  # fmt: skip
    assert made.id_object == (GO_ATTESTATION / test / "DERIVED_credentialBlob.bin").read_bytes()
    assert made.encrypted_secret == (GO_ATTESTATION / test / "DERIVED_encryptedSecret.bin").read_bytes()


def _activate_in_software(private: rsa.RSAPrivateKey, name: bytes, credential: Credential) -> bytes:
    """ActivateCredential with the EK's private key, written from the spec with cryptography and
    tpm2-pytss's own KDFa (not ours)."""
    from tpm2_pytss.internal.crypto import _kdfa

    seed = private.decrypt(
        credential.encrypted_secret[2:],
        padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"IDENTITY\x00"),
    )
    blob = credential.id_object[2:]
    integrity, enc_identity = blob[2 : 2 + int.from_bytes(blob[:2], "big")], blob[34:]
    hmac_key = _kdfa(ALG.SHA256, seed, b"INTEGRITY", b"", b"", 256)
    assert hmac.compare_digest(integrity, hmac.new(hmac_key, enc_identity + name, "sha256").digest())
    key = _kdfa(ALG.SHA256, seed, b"STORAGE", name, b"", 128)
    plain = Cipher(algorithms.AES(key), CFB(bytes(16))).decryptor().update(enc_identity)
    return plain[2 : 2 + int.from_bytes(plain[:2], "big")]


def test_go_attestation_ek_private_key_round_trip_with_random_seeds():
    pem = (GO_ATTESTATION / "ek_private_TEST_ONLY.pem").read_bytes()
    private = serialization.load_pem_private_key(pem, None)
    assert isinstance(private, rsa.RSAPrivateKey)
    aik = parse_public(tpm2b((GO_ATTESTATION / "TestActivation" / "Public.bin").read_bytes()))
    for _ in range(3):
        made = make_credential(ek_from_pem(GO_ATTESTATION / "ek_pub.pem"), aik.name, SECRET)
        assert _activate_in_software(private, aik.name, made) == SECRET


def test_tpm2_pytss_make_credential_agrees_byte_for_byte(monkeypatch):
    """tpm2-pytss with its seed fixed to ours (only the randomness is replaced) makes the same blob."""
    import tpm2_pytss.utils as pytss_utils
    from tpm2_pytss.types import TPM2B_PUBLIC

    ek = ek_from_pem(GO_TPM_RSA / "ek_pub.pem")
    name = (GO_TPM_RSA / "ak_name.bin").read_bytes()
    ours = make_credential(ek, name, SECRET, seed=bytes(range(32)))
    monkeypatch.setattr(pytss_utils, "_generate_seed", lambda public, label: (bytes(range(32)), b"fixed"))
    id_object, _ = pytss_utils.make_credential(TPM2B_PUBLIC.unmarshal(ek.marshal())[0], SECRET, name)
    assert ours.id_object == id_object.marshal()


# -- the tpm2-tools file format ----------------------------------------------------------------------


def test_tpm2_pytss_tools_format_vector_round_trips():
    directory = FIXTURES / "tpm2-pytss-credential_to_tools"
    data = (directory / "mkcred.bin").read_bytes()
    credential = Credential.from_tools_format(data)
    assert credential.id_object == tpm2b((directory / "mkcred_id_object.bin").read_bytes())
    assert credential.encrypted_secret == tpm2b((directory / "mkcred_encrypted_secret.bin").read_bytes())
    assert credential.to_tools_format() == data


def test_keylime_tpm2_tools_files_parse():
    directory = FIXTURES / "keylime-tpm2-tools-files"
    credential = Credential.from_tools_format((directory / "mkcred.out").read_bytes())
    assert credential.to_tools_format() == (directory / "mkcred.out").read_bytes()
    assert parse_public((directory / "ak.pub").read_bytes()).name == (directory / "ak.name").read_bytes()
    assert len(credential.encrypted_secret) == 2 + 256


# -- activation on swtpm ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attester(swtpm):
    attester = TPMAttester(Tpm2QuoteSource(swtpm.spec))
    yield attester
    attester.close()


def _ek_and_aik(attester: TPMAttester) -> tuple[Public, Public]:
    body = attester.endorsement()
    return parse_public(base64.b64decode(body["ek_public_b64"])), parse_public(attester.aik_public())


def test_endorsement_serves_the_ek_certificate_for_this_ek(attester, swtpm):
    from cryptography import x509

    body = attester.endorsement()
    assert body["version"] == 1 and body["aik_parent_qualified_name_b64"] is None
    certificate = x509.load_der_x509_certificate(base64.b64decode(body["ek_certificate_b64"]))
    ek = parse_public(base64.b64decode(body["ek_public_b64"]))
    assert certificate.public_key().public_numbers().n == int.from_bytes(ek.rsa_modulus, "big")  # type: ignore[union-attr]
    intermediate = x509.load_der_x509_certificate(base64.b64decode(body["ek_chain_b64"][0]))
    root = x509.load_pem_x509_certificate(swtpm.ca_root_path.read_bytes())
    certificate.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(root)



def test_reading_the_endorsement_probes_no_nv_index_the_tpm_does_not_define(capfd):
    """The EK profile's template and nonce indices are optional and swtpm defines none: they are
    looked up among the defined indices first, so the router's start prints no tss2 error lines
    (NV_ReadPublic 0x18b) that an operator would read as a fault. (A TPM of its own: the module's
    swtpm has its three object slots taken by the `attester` fixture.)"""
    from conftest import require

    from nomyo_audit.attest._swtpm import SwtpmProcess, swtpm_available

    require(swtpm_available(), "swtpm is not installed")
    with SwtpmProcess() as process:
        capfd.readouterr()
        source = Tpm2QuoteSource(process.spec)
        try:
            assert TPMAttester(source).endorsement()["ek_certificate_b64"]
        finally:
            source.close()
    err = capfd.readouterr().err
    assert "NV_ReadPublic" not in err and "FromTPMPublic" not in err, err

def test_swtpm_activates_our_credential(attester):
    ek, aik = _ek_and_aik(attester)
    secret = os.urandom(32)
    assert attester.activate_credential(*make_credential(ek, aik.name, secret)) == secret


def test_swtpm_activates_tpm2_makecredential_blobs(attester, tmp_path):
    """tpm2_makecredential -T none (offline, its own random seed): the same TPM accepts its blob."""
    ek, aik = _ek_and_aik(attester)
    (tmp_path / "ek.pub").write_bytes(ek.marshal())
    (tmp_path / "secret").write_bytes(SECRET)
    subprocess.run(
        ["tpm2_makecredential", "-T", "none", "-u", "ek.pub", "-s", "secret", "-n", aik.name.hex(),
         "-o", "blob"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    credential = Credential.from_tools_format((tmp_path / "blob").read_bytes())
    assert attester.activate_credential(*credential) == SECRET


def test_activation_for_another_ek_fails(attester):
    _, aik = _ek_and_aik(attester)
    other_ek = ek_from_pem(GO_TPM_RSA / "ek_pub.pem")
    with pytest.raises(CredentialError) as refused:
        attester.activate_credential(*make_credential(other_ek, aik.name, SECRET))
    assert refused.value.code == "activation_failed"


def test_activation_for_another_aik_fails(attester):
    ek, aik = _ek_and_aik(attester)
    other_name = aik.name[:2] + hashlib.sha256(b"another AIK").digest()
    with pytest.raises(CredentialError) as refused:
        attester.activate_credential(*make_credential(ek, other_name, SECRET))
    assert refused.value.code == "activation_failed"


@pytest.mark.parametrize("offset", [4, 20, 36, 40])  # in the HMAC, and in encIdentity
def test_tampered_credential_fails(attester, offset):
    ek, aik = _ek_and_aik(attester)
    credential = make_credential(ek, aik.name, SECRET)
    tampered = bytearray(credential.id_object)
    tampered[offset] ^= 0x01
    with pytest.raises(CredentialError) as refused:
        attester.activate_credential(bytes(tampered), credential.encrypted_secret)
    assert refused.value.code == "activation_failed"
    assert SECRET.hex() not in str(refused.value)


def test_software_attester_has_no_endorsement():
    from nomyo_audit.attest import SoftwareTPM

    software = TPMAttester(SoftwareTPM())
    with pytest.raises(LookupError):
        software.endorsement()
    with pytest.raises(LookupError):
        software.activate_credential(b"", b"")


# -- bad input ------------------------------------------------------------------------------------------


def test_make_credential_refuses_bad_inputs():
    ek = ek_from_pem(GO_TPM_RSA / "ek_pub.pem")
    name = (GO_TPM_RSA / "ak_name.bin").read_bytes()
    cases = {
        "credential_bad_secret": lambda: make_credential(ek, name, bytes(33)),
        "credential_bad_name": lambda: make_credential(ek, name[:-1], SECRET),
        "credential_bad_input": lambda: make_credential(ek, name, SECRET, seed=bytes(33)),
        "credential_unsupported_ek": lambda: make_credential(
            Public(**{**ek.__dict__, "symmetric": (ALG.NULL,)}), name, SECRET
        ),
    }
    for code, call in cases.items():
        with pytest.raises(CredentialError) as refused:
            call()
        assert refused.value.code == code
    assert make_credential(ek, name, b"\x01").id_object  # the smallest secret works


def test_fuzz_the_credential_parsers_only_raise_credential_error():
    rng = random.Random(12)
    genuine = (FIXTURES / "keylime-tpm2-tools-files" / "mkcred.out").read_bytes()
    for _ in range(3000):
        data = bytearray(genuine)
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            position = rng.randrange(len(data) + 1)
            if choice < 0.5 and data:
                data[min(position, len(data) - 1)] = rng.randrange(256)
            elif choice < 0.75:
                del data[position : position + rng.randint(1, 40)]
            else:
                data[position:position] = os.urandom(rng.randint(1, 40))
        try:
            credential = Credential.from_tools_format(bytes(data))
        except CredentialError:
            continue
        assert credential.to_tools_format() == bytes(data)
    for _ in range(2000):
        id_object, secret = os.urandom(rng.randrange(0, 160)), os.urandom(rng.randrange(0, 600))
        try:
            parse_credential(id_object, secret)
        except CredentialError as exc:
            assert exc.code == "credential_malformed"
