"""Protocol 2 against vectors, with a second decoder written from the spec alone.

The independent decoder below follows RFC 9180 (§4.1 DHKEM, §5.1 key schedule) and
draft-connolly-cfrg-xwing-kem (X-Wing decapsulation and combiner) with hmac/hashlib, taking from
cryptography only the primitives: X25519, ML-KEM-768 decapsulation and AES-GCM. It imports
nothing from nomyo_audit except to compare. It opens:

* tests/fixtures/protocol-v2/protocol-v2-vectors.json: our "open" vectors (docs/protocol-v2.md);
* the RFC 9180 vector for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, base mode;
* the X-Wing KEM vectors of draft-connolly-cfrg-xwing-kem, also run through cryptography's HPKE
  with KEM.MLKEM768_X25519, which shows that suite is X-Wing as the draft defines it.

Provenance of the copied vectors: tests/fixtures/protocol-v2/PROVENANCE.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from conftest import require
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nomyo_audit._protocol2 import (
    ClientContext,
    KeyConfig,
    RouterKeys,
    SuiteId,
    mlkem_available,
    open_request,
    open_response,
)

FIXTURES = Path(__file__).parent / "fixtures" / "protocol-v2"
VECTORS = json.loads((FIXTURES / "protocol-v2-vectors.json").read_text())
RFC9180 = json.loads((FIXTURES / "rfc9180-a1-dhkem-x25519-base.json").read_text())
XWING_KEM = json.loads((FIXTURES / "xwing-kem-vectors.json").read_text())

KEM_X25519, KEM_XWING = 0x0020, 0x647A


# ---- the independent decoder (spec only) -------------------------------------------------------


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return _hkdf_extract(salt, b"HPKE-v1" + suite_id + label + ikm)


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return _hkdf_expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info, length)


def _dhkem_x25519_decap(enc: bytes, sk: bytes) -> bytes:
    """RFC 9180 §4.1 Decap for DHKEM(X25519, HKDF-SHA256)."""
    private = x25519.X25519PrivateKey.from_private_bytes(sk)
    dh = private.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
    kem_suite = b"KEM" + KEM_X25519.to_bytes(2, "big")
    eae_prk = _labeled_extract(kem_suite, b"", b"eae_prk", dh)
    return _labeled_expand(
        kem_suite, eae_prk, b"shared_secret", enc + private.public_key().public_bytes_raw(), 32
    )


def _xwing_expand(seed: bytes) -> tuple[mlkem.MLKEM768PrivateKey, x25519.X25519PrivateKey]:
    expanded = hashlib.shake_256(seed).digest(96)
    return mlkem.MLKEM768PrivateKey.from_seed_bytes(
        expanded[:64]
    ), x25519.X25519PrivateKey.from_private_bytes(expanded[64:])


def _xwing_public(seed: bytes) -> bytes:
    ml, x = _xwing_expand(seed)
    return ml.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()


def _xwing_decap(ct: bytes, seed: bytes) -> bytes:
    """draft-connolly-cfrg-xwing-kem Decapsulate: SHA3-256(ss_M || ss_X || ct_X || pk_X || label)."""
    ml, x = _xwing_expand(seed)
    ct_m, ct_x = ct[:1088], ct[1088:]
    ss_m = ml.decapsulate(ct_m)
    ss_x = x.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
    pk_x = x.public_key().public_bytes_raw()
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + b"\\.//^\\").digest()


def _key_schedule(kem_id: int, shared_secret: bytes, info: bytes, aead_id: int = 2) -> dict[str, bytes]:
    """RFC 9180 §5.1 KeySchedule, base mode, HKDF-SHA256, AES-256-GCM (aead_id 2) or AES-128-GCM (1)."""
    suite_id = b"HPKE" + kem_id.to_bytes(2, "big") + (1).to_bytes(2, "big") + aead_id.to_bytes(2, "big")
    psk_id_hash = _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
    info_hash = _labeled_extract(suite_id, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = _labeled_extract(suite_id, shared_secret, b"secret", b"")
    return {
        "suite_id": suite_id,
        "key_schedule_context": context,
        "secret": secret,
        "key": _labeled_expand(suite_id, secret, b"key", context, 32 if aead_id == 2 else 16),
        "base_nonce": _labeled_expand(suite_id, secret, b"base_nonce", context, 12),
        "exporter_secret": _labeled_expand(suite_id, secret, b"exp", context, 32),
    }


def _spec_open_request(body: bytes, seeds: dict[str, str]) -> tuple[bytes, bytes, str]:
    """docs/protocol-v2.md "Opening a request", by hand: (response key, payload, info hex)."""
    doc = json.loads(body)
    kem_id = doc["suite"]["kem_id"]
    aad = {key: doc[key] for key in ("key_id", "payload_id", "security_tier", "model", "suite")}
    info = b"nomyo-audit/v2 request\x00" + rfc8785.dumps({"v": "2", **aad})
    enc, ciphertext = base64.b64decode(doc["enc"]), base64.b64decode(doc["ciphertext"])
    seed = bytes.fromhex(seeds[str(kem_id)])
    shared = _xwing_decap(enc, seed) if kem_id == KEM_XWING else _dhkem_x25519_decap(enc, seed)
    schedule = _key_schedule(kem_id, shared, info)
    plaintext = AESGCM(schedule["key"]).decrypt(schedule["base_nonce"], ciphertext, b"")
    return plaintext[:32], plaintext[32:], info.hex()


def _spec_open_response(body: bytes, response_key: bytes, payload_id: str) -> bytes:
    label = b"nomyo-audit/v2 response\x00" + payload_id.encode()
    key = _hkdf_expand(_hkdf_extract(b"", response_key), label, 32)
    return AESGCM(key).decrypt(body[:12], body[12:], label)


def _cases() -> list[dict[str, Any]]:
    return list(VECTORS["cases"])


def _case_id(case: dict[str, Any]) -> str:
    return "x-wing" if case["suite"]["kem_id"] == KEM_XWING else "dhkem-x25519"


def _needs(kem_id: int) -> None:
    if kem_id == KEM_XWING:
        require(mlkem_available(), "cryptography's OpenSSL has ML-KEM (X-Wing)")


# ---- (a) our implementation opens our vectors ----------------------------------------------------


def _vector_keys() -> RouterKeys:
    config = VECTORS["key_config"]
    seeds = {int(kem): bytes.fromhex(seed) for kem, seed in VECTORS["seeds_hex"].items()}
    return RouterKeys.from_seeds(seeds, not_before=config["not_before"], not_after=config["not_after"])


def test_key_config_vector() -> None:
    require(mlkem_available(), "cryptography's OpenSSL has ML-KEM (X-Wing)")
    keys = _vector_keys()
    config = KeyConfig.from_json(VECTORS["key_config"])
    assert keys.config == config
    assert config.digest().hex() == VECTORS["key_config_sha256"]
    # by hand: JCS with an independent RFC 8785 library, the key id, X-Wing's public key layout
    assert rfc8785.dumps(VECTORS["key_config"]).decode() == VECTORS["key_config_jcs"]
    assert hashlib.sha256(VECTORS["key_config_jcs"].encode()).hexdigest() == VECTORS["key_config_sha256"]
    publics = {int(k): base64.b64decode(v) for k, v in VECTORS["key_config"]["public_keys"].items()}
    assert publics[KEM_XWING] == _xwing_public(bytes.fromhex(VECTORS["seeds_hex"][str(KEM_XWING)]))
    x_private = x25519.X25519PrivateKey.from_private_bytes(
        bytes.fromhex(VECTORS["seeds_hex"][str(KEM_X25519)])
    )
    assert publics[KEM_X25519] == x_private.public_key().public_bytes_raw()
    material = b"".join(
        k.to_bytes(2, "big") + len(v).to_bytes(2, "big") + v for k, v in sorted(publics.items())
    )
    assert config.key_id == hashlib.sha256(material).hexdigest()[:16]


@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_our_decoder_opens_the_vectors(case: dict[str, Any]) -> None:
    _needs(case["suite"]["kem_id"])
    opened = open_request(_vector_keys(), case["request_body"].encode())
    assert opened.payload.decode() == case["expected_payload"]
    assert opened.response_key.hex() == case["expected_response_key_hex"]
    assert (opened.payload_id, opened.security_tier, opened.model) == (
        case["payload_id"],
        case["security_tier"],
        case["model"],
    )
    context = ClientContext(
        payload_id=case["payload_id"],
        response_key=bytes.fromhex(case["expected_response_key_hex"]),
        suite=SuiteId(**case["suite"]),
        key_id=VECTORS["key_config"]["key_id"],
        enc=opened.enc,
    )
    assert (
        open_response(context, bytes.fromhex(case["response_body_hex"])).decode() == case["expected_response"]
    )


# ---- (b) the independent decoder opens the same vectors ------------------------------------------


@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_independent_decoder_opens_the_vectors(case: dict[str, Any]) -> None:
    _needs(case["suite"]["kem_id"])
    response_key, payload, info_hex = _spec_open_request(case["request_body"].encode(), VECTORS["seeds_hex"])
    assert info_hex == case["expected_info_hex"]
    assert payload.decode() == case["expected_payload"]
    assert response_key.hex() == case["expected_response_key_hex"]
    reply = _spec_open_response(bytes.fromhex(case["response_body_hex"]), response_key, case["payload_id"])
    assert reply.decode() == case["expected_response"]


def test_request_body_is_canonical_json_of_the_documented_fields() -> None:
    for case in _cases():
        doc = json.loads(case["request_body"])
        assert set(doc) == {
            "version",
            "key_id",
            "suite",
            "payload_id",
            "security_tier",
            "model",
            "enc",
            "ciphertext",
        }
        assert doc["version"] == "2"
        assert rfc8785.dumps(doc).decode() == case["request_body"]


# ---- (c) RFC 9180's vector: the independent decoder and cryptography's HPKE as we call it -------


def test_rfc9180_vector_through_the_independent_decoder() -> None:
    vec = RFC9180
    enc, info = bytes.fromhex(vec["enc"]), bytes.fromhex(vec["info"])
    shared = _dhkem_x25519_decap(enc, bytes.fromhex(vec["skRm"]))
    assert shared.hex() == vec["shared_secret"]
    schedule = _key_schedule(vec["kem_id"], shared, info, aead_id=vec["aead_id"])
    for name in ("key_schedule_context", "secret", "key", "base_nonce", "exporter_secret"):
        assert schedule[name].hex() == vec[name], name
    base_nonce = int.from_bytes(schedule["base_nonce"], "big")
    for item in vec["encryptions"]:
        nonce = (base_nonce ^ item["seq"]).to_bytes(12, "big")
        assert nonce.hex() == item["nonce"]
        plain = AESGCM(schedule["key"]).decrypt(nonce, bytes.fromhex(item["ct"]), bytes.fromhex(item["aad"]))
        assert plain.hex() == item["pt"]
    for export in vec["exports"]:
        context = bytes.fromhex(export["exporter_context"])
        value = _labeled_expand(
            schedule["suite_id"], schedule["exporter_secret"], b"sec", context, export["L"]
        )
        assert value.hex() == export["exported_value"]


def test_rfc9180_vector_through_cryptography_hpke_as_we_call_it() -> None:
    """Single-shot base mode, as nomyo_audit._protocol2 calls it. The vector's sequence 0 (its AAD
    through cryptography's internal _decrypt_with_aad, test only); then our suite, AES-256-GCM: the
    KEM's shared secret does not depend on the AEAD, so a message sealed by the independent key
    schedule to the vector's enc must open with the public ``Suite.decrypt``."""
    vec = RFC9180
    private = x25519.X25519PrivateKey.from_private_bytes(bytes.fromhex(vec["skRm"]))
    assert private.public_key().public_bytes_raw().hex() == vec["pkRm"]
    enc, info = bytes.fromhex(vec["enc"]), bytes.fromhex(vec["info"])
    first = vec["encryptions"][0]
    from cryptography.hazmat.bindings._rust import openssl as rust_openssl

    aes128 = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    plain = rust_openssl.hpke._decrypt_with_aad(
        aes128, enc + bytes.fromhex(first["ct"]), private, info=info, aad=bytes.fromhex(first["aad"])
    )
    assert plain.hex() == first["pt"]
    sealed = AESGCM(bytes.fromhex(vec["key"])).encrypt(bytes.fromhex(vec["base_nonce"]), b"empty aad", b"")
    assert aes128.decrypt(enc + sealed, private, info=info) == b"empty aad"
    ours = _key_schedule(KEM_X25519, bytes.fromhex(vec["shared_secret"]), b"our info", aead_id=2)
    sealed = AESGCM(ours["key"]).encrypt(ours["base_nonce"], b"aes-256-gcm", b"")
    aes256 = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    assert aes256.decrypt(enc + sealed, private, info=b"our info") == b"aes-256-gcm"


# ---- X-Wing: the draft's KEM vectors, independently and through cryptography's HPKE ----------------


@pytest.mark.parametrize("index", range(len(XWING_KEM)))
def test_xwing_draft_vectors(index: int) -> None:
    require(mlkem_available(), "cryptography's OpenSSL has ML-KEM (X-Wing)")
    vec = XWING_KEM[index]
    seed, ct = bytes.fromhex(vec["sk"]), bytes.fromhex(vec["ct"])
    assert _xwing_public(seed).hex() == vec["pk"]
    assert _xwing_decap(ct, seed).hex() == vec["ss"]
    # the same public key through our RouterKeys (the wire layout ML-KEM || X25519)
    keys = RouterKeys.from_seeds({KEM_XWING: seed}, not_before=0, not_after=1)
    assert keys.config.public_keys[KEM_XWING].hex() == vec["pk"]
    # cryptography's KEM.MLKEM768_X25519 decapsulates the draft's ciphertext to the draft's secret:
    # a message sealed with the key schedule over that secret opens with its HPKE.
    info = b"x-wing vector"
    schedule = _key_schedule(KEM_XWING, bytes.fromhex(vec["ss"]), info)
    sealed = AESGCM(schedule["key"]).encrypt(schedule["base_nonce"], b"x-wing is kem 0x647a", b"")
    suite = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    assert suite.decrypt(ct + sealed, keys.hpke_private_key(KEM_XWING), info=info) == b"x-wing is kem 0x647a"
