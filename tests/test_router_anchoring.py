"""The router's anchoring endpoints (GET /pki/endorsement, POST /pki/activation, POST /pki/aik_certificate)
on a real router on loopback with a real swtpm attester: the success paths, and every bad input a
specific 4xx with a stable code, never a 500 and never a secret in the body."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nomyo_audit.attest._swtpm import SwtpmProcess
from nomyo_audit.router._attestation import make_attester
from nomyo_audit.tpm import TrustStore, make_credential, parse_public, validate_ek_chain
from nomyo_audit.wire import ACTIVATION_PATH, AIK_CERTIFICATE_PATH, ENDORSEMENT_PATH

pytestmark = pytest.mark.swtpm
ADMIN = "admin-key-for-tests"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def tpm_router(swtpm, make_router):
    return make_router(attester=make_attester(swtpm.spec), admin_keys=(ADMIN,), activation_burst=100)


def endorsement(router) -> dict:
    response = httpx.get(router.url + ENDORSEMENT_PATH)
    assert response.status_code == 200
    return response.json()


def challenge(router, *, secret: bytes = b"s" * 32, name: bytes | None = None) -> dict:
    body = endorsement(router)
    ek = parse_public(base64.b64decode(body["ek_public_b64"]))
    aik = parse_public(base64.b64decode(body["aik_pubkey_b64"]))
    credential = make_credential(ek, name or aik.name, secret)
    return {
        "version": 1,
        "aik_name_b64": b64(aik.name),
        "id_object_b64": b64(credential.id_object),
        "encrypted_secret_b64": b64(credential.encrypted_secret),
    }


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


def test_endorsement_serves_an_ek_certificate_that_chains_to_the_manufacturer(swtpm, tpm_router):
    body = endorsement(tpm_router)
    assert set(body) == {
        "version", "ek_public_b64", "ek_certificate_b64", "ek_chain_b64", "aik_pubkey_b64",
        "aik_parent_qualified_name_b64",
    }  # fmt: skip
    assert body["version"] == 1 and body["aik_parent_qualified_name_b64"] is None
    store = TrustStore.from_pem(swtpm.ca_root_path.read_bytes())
    chain = [base64.b64decode(c) for c in body["ek_chain_b64"]]
    validation = validate_ek_chain(
        base64.b64decode(body["ek_certificate_b64"]), chain, store, at=datetime.now(timezone.utc)
    )
    assert validation.ek.manufacturer == "id:00001014"  # IBM, as swtpm's local CA writes it


@pytest.mark.parametrize("spec", ["none", "software"])
def test_no_endorsement_without_an_ek(make_router, spec):
    router = make_router(attester=make_attester(spec), admin_keys=(ADMIN,))
    refused(httpx.get(router.url + ENDORSEMENT_PATH), 404, "no_endorsement")
    secret = {
        "version": 1,
        "aik_name_b64": b64(b"x"),
        "id_object_b64": b64(b"x"),
        "encrypted_secret_b64": b64(b"x"),
    }
    refused(httpx.post(router.url + ACTIVATION_PATH, json=secret), 404, "no_endorsement")


def test_activation_returns_the_secret_only_this_tpm_can_recover(tpm_router):
    secret = os.urandom(32)
    response = httpx.post(tpm_router.url + ACTIVATION_PATH, json=challenge(tpm_router, secret=secret))
    assert response.status_code == 200
    assert response.json() == {"version": 1, "secret_b64": b64(secret)}


def _altered(body: dict) -> dict:
    blob = bytearray(base64.b64decode(body["id_object_b64"]))
    blob[-1] ^= 1
    return {**body, "id_object_b64": b64(bytes(blob))}


BAD_BODIES = [
    (lambda b: b"not json", 400, "malformed_json"),
    (lambda b: b"[1, 2]", 400, "malformed_json"),
    (lambda b: b'{"version": NaN}', 400, "malformed_json"),
    (lambda b: {**b, "extra": 1}, 400, "unknown_field"),
    (lambda b: {k: v for k, v in b.items() if k != "id_object_b64"}, 400, "missing_field"),
    (lambda b: {**b, "version": 2}, 400, "unsupported_version"),
    (lambda b: {**b, "version": True}, 400, "unsupported_version"),
    (lambda b: {**b, "version": "1"}, 400, "unsupported_version"),
    (lambda b: {**b, "id_object_b64": "not base64!"}, 400, "bad_base64"),
    (lambda b: {**b, "id_object_b64": 7}, 400, "bad_base64"),
    (lambda b: {**b, "id_object_b64": ""}, 400, "bad_base64"),
    (lambda b: {**b, "encrypted_secret_b64": b64(bytes(4000))}, 400, "field_too_large"),
    (lambda b: {**b, "id_object_b64": b64(b"\x00\x05abc")}, 400, "credential_malformed"),
    (lambda b: {**b, "aik_name_b64": b64(b"\x00\x0b" + bytes(32))}, 409, "aik_mismatch"),
    (_altered, 422, "activation_failed"),
    (lambda b: b"x" * 70_000, 413, "body_too_large"),
]


@pytest.mark.parametrize(("mutate", "status", "code"), BAD_BODIES)
def test_every_bad_activation_is_a_specific_4xx(tpm_router, mutate, status, code):
    secret = os.urandom(32)
    body = mutate(challenge(tpm_router, secret=secret))
    content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).content
    response = httpx.post(tpm_router.url + ACTIVATION_PATH, content=content)
    refused(response, status, code)
    assert b64(secret) not in response.text and secret.hex() not in response.text


def test_a_credential_for_another_aik_is_refused_by_the_tpm(tpm_router):
    other = parse_public(base64.b64decode(endorsement(tpm_router)["ek_public_b64"])).name  # a real name
    response = httpx.post(tpm_router.url + ACTIVATION_PATH, json=challenge(tpm_router, name=other))
    refused(response, 422, "activation_failed")


def test_a_credential_for_another_ek_is_refused_by_the_tpm(tpm_router):
    with SwtpmProcess(ek_certificates=False) as other_tpm:
        other = make_attester(other_tpm.spec)
        try:
            other_ek = parse_public(base64.b64decode(other.endorsement()["ek_public_b64"]))
        finally:
            other.close()
    body = challenge(tpm_router)
    credential = make_credential(other_ek, base64.b64decode(body["aik_name_b64"]), b"s" * 32)
    body.update(
        id_object_b64=b64(credential.id_object), encrypted_secret_b64=b64(credential.encrypted_secret)
    )
    refused(httpx.post(tpm_router.url + ACTIVATION_PATH, json=body), 422, "activation_failed")


def test_activation_is_rate_limited(swtpm, make_router):
    router = make_router(attester=make_attester(swtpm.spec), activation_rate=0.01, activation_burst=1)
    body = challenge(router)
    assert httpx.post(router.url + ACTIVATION_PATH, json=body).status_code == 200
    response = httpx.post(router.url + ACTIVATION_PATH, json=body)
    refused(response, 429, "rate_limited")
    assert int(response.headers["retry-after"]) >= 1


# -- POST /pki/aik_certificate -----------------------------------------------------------------------


def _certificate_for(public_key, *, key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return certificate.public_bytes(serialization.Encoding.DER)


def _aik_key(router):
    from nomyo_audit.tpm._keys import to_crypto_key

    return to_crypto_key(parse_public(base64.b64decode(endorsement(router)["aik_pubkey_b64"])))


def _upload(router, chain: list[bytes], key: str | None = ADMIN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"version": 1, "aik_cert_chain_b64": [b64(c) for c in chain]}
    return httpx.post(router.url + AIK_CERTIFICATE_PATH, json=body, headers=headers)


def _attestation(router) -> dict:
    return httpx.get(router.url + "/pki/attestation", params={"nonce": "00" * 32}).json()["tpm_attestation"]


def test_an_installed_chain_for_this_aik_rides_on_every_quote(tpm_router):
    assert "aik_cert_chain_b64" not in _attestation(tpm_router)
    leaf = _certificate_for(_aik_key(tpm_router))
    response = _upload(tpm_router, [leaf])
    assert response.status_code == 200, response.text
    assert response.json()["installed"] == 1
    assert _attestation(tpm_router)["aik_cert_chain_b64"] == [b64(leaf)]


def test_chain_uploads_are_refused_without_the_admin_key_or_for_another_key(swtpm, make_router, tpm_router):
    leaf = _certificate_for(_aik_key(tpm_router))
    refused(_upload(tpm_router, [leaf], key=None), 401, "unauthorized")
    refused(_upload(tpm_router, [leaf], key="wrong"), 401, "unauthorized")
    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    refused(_upload(tpm_router, [_certificate_for(other_key)]), 409, "cert_key_mismatch")
    refused(_upload(tpm_router, [b"not a certificate"]), 400, "cert_malformed")
    refused(_upload(tpm_router, []), 400, "bad_chain")
    refused(_upload(tpm_router, [leaf] * 9), 400, "bad_chain")
    assert "aik_cert_chain_b64" not in _attestation(tpm_router)
    closed = make_router(attester=make_attester(swtpm.spec))  # no admin key configured
    refused(_upload(closed, [leaf]), 403, "enrollment_disabled")
