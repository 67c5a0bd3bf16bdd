"""The NOMYO 1.0 package format: round trips, and every malformed or tampered package refused."""

from __future__ import annotations

import base64
import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit.errors import ProtocolError, SecurityError
from nomyo_audit.wire import (
    ALGORITHM,
    MAX_PACKAGE_BYTES,
    decrypt_package,
    encrypt_package,
    key_fingerprint,
    load_public_key_pem,
    parse_package,
    public_key_pem,
)


@pytest.fixture(scope="module")
def key(router_keys):
    return router_keys.private_key


def sealed(key, plaintext=b'{"model":"m"}') -> dict:
    return json.loads(encrypt_package(plaintext, key.public_key()))


def test_package_has_exactly_the_protocol_fields(key):
    package = sealed(key)
    assert package == {
        "version": "1.0",
        "algorithm": "hybrid-aes256-rsa4096",
        "encrypted_payload": package["encrypted_payload"],
        "encrypted_aes_key": package["encrypted_aes_key"],
        "key_algorithm": "RSA-OAEP-SHA256",
        "payload_algorithm": "AES-256-GCM",
    }
    inner = package["encrypted_payload"]
    assert set(inner) == {"ciphertext", "nonce", "tag"}
    assert len(base64.b64decode(inner["nonce"])) == 12
    assert len(base64.b64decode(inner["tag"])) == 16
    assert len(base64.b64decode(package["encrypted_aes_key"])) == 512  # RSA-4096


def test_round_trip_and_processed_at(key):
    data = encrypt_package(b"hello", key.public_key(), processed_at=123)
    parsed = parse_package(data)
    assert parsed.processed_at == 123
    assert bytes(decrypt_package(parsed, key)) == b"hello"


def test_every_message_gets_a_fresh_key_and_nonce(key):
    a, b = sealed(key), sealed(key)
    assert a["encrypted_payload"]["nonce"] != b["encrypted_payload"]["nonce"]
    assert a["encrypted_aes_key"] != b["encrypted_aes_key"]


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("version", "0.9", "version"),
        ("version", "2.0", "version"),
        ("algorithm", "hybrid-aes128-rsa2048", "algorithm"),
        ("key_algorithm", "RSA-PKCS1v15", "algorithm"),
        ("payload_algorithm", "AES-128-CBC", "algorithm"),
    ],
)
def test_no_downgrade(key, field, value, code):
    package = sealed(key)
    package[field] = value
    with pytest.raises(ProtocolError) as err:
        parse_package(json.dumps(package).encode())
    assert err.value.code == code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "package_empty"),
        (b"\xff\xfe garbage", "package_json"),
        (b"[1, 2]", "package_json"),
        (b'{"version": "1.0"}', "package_fields"),
    ],
)
def test_garbage_is_a_protocol_error(data, code):
    with pytest.raises(ProtocolError) as err:
        parse_package(data)
    assert err.value.code == code


def test_truncated_package(key):
    data = encrypt_package(b"x" * 100, key.public_key())
    with pytest.raises(ProtocolError):
        parse_package(data[: len(data) // 2])


def test_oversized_package_refused_before_parsing():
    with pytest.raises(ProtocolError) as err:
        parse_package(b" " * (MAX_PACKAGE_BYTES + 1))
    assert err.value.code == "package_too_large"


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "tag"])
def test_bad_base64(key, field):
    package = sealed(key)
    package["encrypted_payload"][field] = "not base64!!"
    with pytest.raises(ProtocolError) as err:
        parse_package(json.dumps(package).encode())
    assert err.value.code == "package_base64"


def test_wrong_nonce_length(key):
    package = sealed(key)
    package["encrypted_payload"]["nonce"] = base64.b64encode(b"\0" * 16).decode()
    with pytest.raises(ProtocolError, match="nonce is 16 bytes"):
        parse_package(json.dumps(package).encode())


@pytest.mark.parametrize("field", ["ciphertext", "tag"])
def test_tampering_fails_authentication(key, field):
    package = sealed(key)
    raw = bytearray(base64.b64decode(package["encrypted_payload"][field]))
    raw[0] ^= 1
    package["encrypted_payload"][field] = base64.b64encode(raw).decode()
    with pytest.raises(SecurityError) as err:
        decrypt_package(parse_package(json.dumps(package).encode()), key)
    assert err.value.code == "decrypt"
    assert not isinstance(err.value, ProtocolError)


def test_wrong_private_key(key, client_keys_dir):
    from nomyo_audit.client._keys import load_key_pair

    other = load_key_pair(client_keys_dir / "private_key.pem").private_key
    with pytest.raises(SecurityError, match="decryption failed"):
        decrypt_package(parse_package(encrypt_package(b"secret", key.public_key())), other)


def test_public_key_helpers(key):
    pem = public_key_pem(key.public_key())
    assert load_public_key_pem(pem).public_numbers() == key.public_key().public_numbers()
    assert len(key_fingerprint(key.public_key())) == 64
    with pytest.raises(ProtocolError):
        load_public_key_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_small_rsa_public_keys_refused():
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(ProtocolError, match="1024 bits"):
        load_public_key_pem(public_key_pem(small))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_fuzz_parse_raises_only_protocol_error(data):
    with contextlib.suppress(ProtocolError):
        parse_package(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
        max_leaves=20,
    )
)
def test_fuzz_parse_json_shapes(doc):
    for candidate in (
        doc,
        {"version": "1.0", "algorithm": ALGORITHM, "encrypted_payload": doc, "encrypted_aes_key": doc},
    ):
        with contextlib.suppress(ProtocolError):
            parse_package(json.dumps(candidate).encode())


@pytest.mark.parametrize(
    ("text", "fault"),
    [
        ("[" * 100_000 + "]" * 100_000, "not valid JSON: nested deeper than 100 levels"),
        ("[" * 101 + "]" * 101, "not valid JSON: nested deeper than 100 levels"),
        ('{"a": NaN}', "NaN is not a JSON number"),
        ('{"a": -Infinity}', "-Infinity is not a JSON number"),
        ('{"a": 1e400}', "1e400 \\(out of range\\) is not a JSON number"),
        ('{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "lone UTF-16 surrogate"),
        ('{"a": 1', "not valid JSON"),
    ],
)
def test_parse_json_refuses_what_cannot_be_handled_safely(text, fault):
    from nomyo_audit.wire import parse_json

    with pytest.raises(ProtocolError, match=fault) as err:
        parse_json(text.encode(), what="message", code="x_json")
    assert err.value.code == "x_json"


def test_parse_json_accepts_valid_pairs_and_the_depth_limit():
    from nomyo_audit.wire import MAX_JSON_DEPTH, parse_json

    assert parse_json('["\\ud83d\\ude00"]', what="m", code="c") == ["\U0001f600"]
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(nested, what="m", code="c") is not None


def test_parse_json_refuses_bytes_that_are_not_utf8():
    from nomyo_audit.wire import parse_json

    with pytest.raises(ProtocolError, match="not UTF-8 text"):
        parse_json(b'["\xff"]', what="m", code="c")


def test_deep_or_nan_package_is_a_protocol_error_not_a_crash():
    with pytest.raises(ProtocolError, match="deeper"):
        parse_package(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ProtocolError, match="NaN"):
        parse_package(b'{"version": "1.0", "processed_at": NaN}')
