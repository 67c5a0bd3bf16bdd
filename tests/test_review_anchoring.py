"""Reviewer R1's attacks on the issue-12 anchoring stack: each test is a defect found (and fixed) or a
claim of the brief checked against code we did not write (tpm2-pytss, swtpm)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from nomyo_audit.tpm import make_credential, parse_public

SECRET = bytes(range(1, 49))


# -- MakeCredential for an ECC P-384 EK with nameAlg SHA-384 --------------------------------------------


def _p384_sha384_ek_and_aik(esys: Any) -> tuple[Any, Any, bytes, bytes]:
    """A P-384 / SHA-384 / AES-256-CFB storage primary in the endorsement hierarchy (the shape of the
    TCG high-range EK template H-3, with userWithAuth instead of its policy) and an AIK under it."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG
    from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

    ek_template = TPM2B_PUBLIC.parse(
        "ecc384:aes256cfb",
        nameAlg=TPM2_ALG.SHA384,
        objectAttributes="restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
    )
    ek, ek_public, _, _, _ = esys.create_primary(TPM2B_SENSITIVE_CREATE(), ek_template, ESYS_TR.ENDORSEMENT)
    aik_template = TPM2B_PUBLIC.parse(
        "ecc384:ecdsa-sha384:null",
        nameAlg=TPM2_ALG.SHA384,
        objectAttributes="restricted|sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
    )
    private, aik_public, _, _, _ = esys.create(ek, TPM2B_SENSITIVE_CREATE(), aik_template)
    aik = esys.load(ek, private, aik_public)
    return ek, aik, ek_public.marshal(), aik_public.marshal()


def test_make_credential_p384_sha384_is_activated_by_swtpm_and_matches_tpm2_pytss(swtpm, monkeypatch):
    """Our blob for an ECC P-384 EK with nameAlg SHA-384 (48-byte seed and HMAC, AES-256) is what
    tpm2-pytss makes from the same ephemeral key, and swtpm's TPM2_ActivateCredential recovers a
    48-byte secret from it."""
    import tpm2_pytss.internal.crypto as pytss_crypto
    from tpm2_pytss import ESAPI, TCTILdr, TSS2_Exception
    from tpm2_pytss.constants import ESYS_TR
    from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PUBLIC
    from tpm2_pytss.utils import make_credential as pytss_make_credential

    name, _, config = swtpm.spec.partition(":")
    esys = ESAPI(TCTILdr(name, config))
    try:
        ek, aik, ek_bytes, aik_bytes = _p384_sha384_ek_and_aik(esys)
        try:
            ek_public, aik_public = parse_public(ek_bytes), parse_public(aik_bytes)
            assert len(aik_public.name) == 2 + 48
            ephemeral = ec.derive_private_key(0x1234567890ABCDEF << 200, ec.SECP384R1())
            ours = make_credential(ek_public, aik_public.name, SECRET, ephemeral_key=ephemeral)

            monkeypatch.setattr(pytss_crypto.ec, "generate_private_key", lambda curve, *a: ephemeral)
            blob, encrypted = pytss_make_credential(
                TPM2B_PUBLIC.unmarshal(ek_bytes)[0], SECRET, aik_public.name
            )
            assert ours.id_object == blob.marshal()
            assert ours.encrypted_secret == encrypted.marshal()

            fresh = make_credential(ek_public, aik_public.name, SECRET)  # random ephemeral key
            for credential in (ours, fresh):
                recovered = esys.activate_credential(
                    aik,
                    ek,
                    TPM2B_ID_OBJECT.unmarshal(credential.id_object)[0],
                    TPM2B_ENCRYPTED_SECRET.unmarshal(credential.encrypted_secret)[0],
                    session1=ESYS_TR.PASSWORD,
                    session2=ESYS_TR.PASSWORD,
                )
                assert bytes(recovered) == SECRET
            other = aik_public.name[:2] + os.urandom(48)
            with pytest.raises(TSS2_Exception):
                esys.activate_credential(
                    aik,
                    ek,
                    TPM2B_ID_OBJECT.unmarshal(make_credential(ek_public, other, SECRET).id_object)[0],
                    TPM2B_ENCRYPTED_SECRET.unmarshal(ours.encrypted_secret)[0],
                    session1=ESYS_TR.PASSWORD,
                    session2=ESYS_TR.PASSWORD,
                )
        finally:
            esys.flush_context(aik)
            esys.flush_context(ek)
    finally:
        esys.close()


# -- path search: bounded work ------------------------------------------------------------------------


def _look_alike_chain(count: int) -> tuple[bytes, list[bytes]]:
    """An EK certificate and ``count`` intermediates that all have one subject, one issuer (that same
    name) and one key, each signed by that key: every ordering of them is a candidate path."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from tpm_cert_factory import T0, ek_builder, name, tpm_name

    key = ec.generate_private_key(ec.SECP256R1())

    def intermediate(serial: int) -> x509.Certificate:
        return (
            x509.CertificateBuilder().subject_name(name("Look-alike CA")).issuer_name(name("Look-alike CA"))
            .public_key(key.public_key()).serial_number(serial).not_valid_before(T0)
            .not_valid_after(T0 + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip

    pool = [intermediate(serial) for serial in range(1, count + 1)]
    leaf = ek_builder(pool[0], san=tpm_name()).sign(key, hashes.SHA256())
    der = serialization.Encoding.DER
    return leaf.public_bytes(der), [c.public_bytes(der) for c in pool]


def test_a_chain_of_look_alike_intermediates_cannot_make_path_search_try_every_ordering(monkeypatch):
    """Before: 7 look-alikes cost 13,699 signature checks (12.7 s with P-521 keys) on every client
    activation and in ``ca serve``'s event loop. Now the search stops at a fixed budget."""
    from tpm_cert_factory import AT, pki

    import nomyo_audit.tpm._chain as chain_module
    from nomyo_audit.errors import CertificateError
    from nomyo_audit.tpm import TrustStore, validate_ek_chain

    checks = []
    real = chain_module.verify_issued_by

    def counting(child: Any, key: Any) -> None:
        checks.append(1)
        real(child, key)

    monkeypatch.setattr(chain_module, "verify_issued_by", counting)
    leaf, pool = _look_alike_chain(7)
    anchors = pki()
    with pytest.raises(CertificateError) as refused:
        validate_ek_chain(leaf, pool, TrustStore.from_der([anchors.der(anchors.root)]), at=AT)
    assert refused.value.code == "cert_unchained"
    assert len(checks) <= 64  # the budget, plus one self-signature check per dead end


# -- chains that cryptography refuses with an exception that is not a ValueError -----------------------


def _version_4_certificate() -> bytes:
    """A certificate whose version field says v4 (INTEGER 3): cryptography raises x509.InvalidVersion,
    which is not a ValueError."""
    from tpm_cert_factory import pki

    anchors = pki()
    der = bytearray(anchors.der(anchors.root))
    at = der.find(bytes([0xA0, 0x03, 0x02, 0x01, 0x02]))
    der[at + 4] = 3
    return bytes(der)


def test_certifies_is_false_for_a_certificate_of_an_unknown_version():
    from nomyo_audit._anchoring_wire import certifies

    assert certifies(_version_4_certificate(), b"\x00\x00") is False


def test_router_refuses_an_unknown_version_chain_upload_with_400_not_503(swtpm, make_router):
    import base64

    import httpx

    from nomyo_audit.router._attestation import make_attester
    from nomyo_audit.wire import AIK_CERTIFICATE_PATH

    router = make_router(attester=make_attester(swtpm.spec), admin_keys=("admin",))
    body = {"version": 1, "aik_cert_chain_b64": [base64.b64encode(_version_4_certificate()).decode()]}
    response = httpx.post(
        router.url + AIK_CERTIFICATE_PATH, json=body, headers={"Authorization": "Bearer admin"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "cert_malformed"), response.text


# -- anchor substitution in the leaf position --------------------------------------------------------


def test_a_forged_twin_of_an_anchor_is_not_a_valid_ek_or_ak_certificate():
    """A leaf with an anchor's subject and key but its own content (EKU, TPM manufacturer), signed by
    an unrelated key: before, build_path swapped it for the store's copy and checked no signature, so
    validate_ek_chain and validate_ak_chain passed it with the forger's TPM facts."""
    from cryptography.hazmat.primitives import hashes, serialization
    from tpm_cert_factory import AT, EKU_AIK, aik_public, ek_builder, other_key, pki, tpm_name

    from nomyo_audit.errors import CertificateError
    from nomyo_audit.tpm import TrustStore, validate_ak_chain, validate_ek_chain

    anchors = pki()
    store = TrustStore.from_der([anchors.der(anchors.root)])
    root_key = anchors.root.public_key()
    for eku in (None, [EKU_AIK]):
        twin = ek_builder(
            anchors.root, key=root_key, subject=anchors.root.subject, san=tpm_name(), eku=eku
        ).sign(other_key(), hashes.SHA256())
        der = twin.public_bytes(serialization.Encoding.DER)
        with pytest.raises(CertificateError) as refused:
            if eku is None:
                validate_ek_chain(der, [], store, at=AT)
            else:
                validate_ak_chain([der], store, aik_public(root_key), at=AT)  # type: ignore[arg-type]
        assert refused.value.code == "cert_bad_signature"


# -- the child-AIK verdict's wording -----------------------------------------------------------------------


def test_a_child_signer_match_does_not_claim_to_prove_the_parent_or_the_attributes_by_itself():
    """Any software key can put H(P || Name(AIK)) in its own quote for a P of its choice, so a match
    proves the attributes only for a TPM signer, and a parent QN is a digest, not a known key. Before,
    the finding said outright that it 'proves the AIK's public area and attributes'."""
    import base64

    from tpm_cert_factory import aik_public, other_key

    from nomyo_audit.tpm._aik import child_signer

    aik_b64 = base64.b64encode(aik_public(other_key().public_key()).marshal()).decode()
    detail = child_signer(aik_b64, base64.b64encode(bytes.fromhex("4000000b")).decode()).matches.detail
    assert "only as far as the signer is a TPM" in detail and "aik_anchor" in detail
    assert "as no particular key" in detail


@pytest.mark.parametrize(
    ("change", "code_detail"),
    [
        ({"scheme": "NULL"}, "names no signing scheme"),
        ({"drop": "RESTRICTED"}, "restricted"),
        ({"add": "DECRYPT"}, "decryption"),
    ],
)
def test_the_ca_refuses_an_aik_the_verifier_would_refuse(change, code_detail):
    """The CA certifies only what the verifier accepts as an attestation key: an AIK with no signing
    scheme (TPM_ALG_NULL, aik_no_scheme in a verdict), an unrestricted one, or one that also
    decrypts gets no certificate, before anything else about the endorsement is looked at."""
    import dataclasses

    from nomyo_audit._anchoring_wire import Endorsement
    from nomyo_audit.attest import SoftwareTPM
    from nomyo_audit.ca._enrollment import Enrollment
    from nomyo_audit.errors import EnrollmentError
    from nomyo_audit.tpm import TrustStore
    from nomyo_audit.tpm._marshal import ALG
    from nomyo_audit.tpm._public import ObjectAttributes

    public = SoftwareTPM().public
    if change.get("scheme") == "NULL":
        public = dataclasses.replace(public, scheme=ALG.NULL, scheme_hash=ALG.NULL)
    if "drop" in change:
        flag = getattr(ObjectAttributes, change["drop"])
        public = dataclasses.replace(public, object_attributes=public.object_attributes & ~flag)
    if "add" in change:
        flag = getattr(ObjectAttributes, change["add"])
        public = dataclasses.replace(public, object_attributes=public.object_attributes | flag)
    endorsement = Endorsement(b"junk", None, (), public.marshal(), None)
    with pytest.raises(EnrollmentError) as refused:
        Enrollment.start(endorsement, TrustStore(), at=__import__("datetime").datetime.now())
    assert refused.value.code == "aik_attributes"
    assert code_detail in refused.value.message
