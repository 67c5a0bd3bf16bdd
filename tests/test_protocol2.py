"""Protocol 2's pure core (nomyo_audit._protocol2): seal/open both ways, every bound field, key configs.

The byte-level spec is docs/protocol-v2.md; tests/test_protocol2_vectors.py checks the shipped
vectors against it with an independent decoder. Here: behaviour, refusals and their stable codes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from conftest import require
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nomyo_audit._canonical import canonical_json
from nomyo_audit._protocol2 import (
    DHKEM_X25519,
    XWING,
    ClientContext,
    KeyConfig,
    ReplayWindow,
    RouterKeys,
    SuiteId,
    mlkem_available,
    open_request,
    open_response,
    seal_request,
    seal_response,
)
from nomyo_audit.errors import ProtocolError, SecurityError

NOW = 1_760_000_000
PAYLOAD = json.dumps({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def keys() -> RouterKeys:
    return RouterKeys.generate(3600, now=NOW)


def _seal(config: KeyConfig, suite: SuiteId | None = None, **over: Any) -> tuple[bytes, ClientContext]:
    fields: dict[str, Any] = {"payload_id": "pid-1", "security_tier": "high", "model": "echo"}
    fields.update(over)
    return seal_request(config, PAYLOAD, suite=suite, **fields)


def _edit(body: bytes, **fields: Any) -> bytes:
    doc = json.loads(body)
    doc.update(fields)
    return json.dumps(doc).encode()


def _code(exc: pytest.ExceptionInfo[BaseException]) -> str:
    assert isinstance(exc.value, (ProtocolError, SecurityError))
    return str(exc.value.code)


def test_ml_kem_is_available_here_and_x_wing_is_preferred(keys: RouterKeys) -> None:
    require(mlkem_available(), "cryptography's OpenSSL has ML-KEM (X-Wing)")
    assert keys.config.suites == (XWING, DHKEM_X25519)
    body, context = _seal(keys.config)
    assert context.suite == XWING
    assert json.loads(body)["suite"] == {"kem_id": 0x647A, "kdf_id": 1, "aead_id": 2}


@pytest.mark.parametrize("suite", [XWING, DHKEM_X25519], ids=["x-wing", "dhkem-x25519"])
def test_round_trip_per_suite(keys: RouterKeys, suite: SuiteId) -> None:
    body, context = _seal(keys.config, suite)
    opened = open_request(keys, body)
    assert (opened.payload, opened.payload_id, opened.security_tier, opened.model) == (
        PAYLOAD,
        "pid-1",
        "high",
        "echo",
    )
    assert opened.key_id == keys.config.key_id and opened.suite == suite
    assert len(opened.enc) == suite.enc_length
    reply = seal_response(opened, b'{"choices": []}')
    assert open_response(context, reply) == b'{"choices": []}'
    assert b"pid-1" not in reply and PAYLOAD not in body  # sealed, not merely framed


def test_secrets_stay_out_of_reprs(keys: RouterKeys) -> None:
    body, context = _seal(keys.config)
    opened = open_request(keys, body)
    for text in (repr(context), repr(opened), repr(keys)):
        assert context.response_key.hex() not in text and "response_key=" not in text
    assert "messages" not in repr(opened)


@pytest.mark.parametrize(
    ("field", "value"),
    [("payload_id", "pid-2"), ("security_tier", "maximum"), ("model", "other"), ("version", "2")],
)
def test_each_bound_field_tampered_fails_decryption(keys: RouterKeys, field: str, value: str) -> None:
    body, _ = _seal(keys.config, DHKEM_X25519)
    if field == "version":  # the envelope's version is checked before; the AAD's "v" can only be "2"
        with pytest.raises(ProtocolError) as exc:
            open_request(keys, _edit(body, version="3"))
        assert _code(exc) == "v2_malformed"
        return
    with pytest.raises(ProtocolError) as exc:
        open_request(keys, _edit(body, **{field: value}))
    assert _code(exc) == "v2_aad_mismatch"


def test_suite_swap_fails_decryption(keys: RouterKeys) -> None:
    """A request sealed under X-Wing relabelled as DHKEM cannot open (the suite is in the AAD too)."""
    body, _ = _seal(keys.config, DHKEM_X25519)
    doc = json.loads(body)
    # Another configured suite with the same KEM is not on offer; the only swap possible is the KEM,
    # which changes the encapsulation length: truncated.
    doc["suite"] = XWING.to_json()
    with pytest.raises(ProtocolError) as exc:
        open_request(keys, json.dumps(doc).encode())
    assert _code(exc) == "v2_truncated"


def test_key_id_tampered_is_unknown(keys: RouterKeys) -> None:
    body, _ = _seal(keys.config)
    with pytest.raises(ProtocolError) as exc:
        open_request(keys, _edit(body, key_id="0000000000000000"))
    assert _code(exc) == "v2_unknown_key_id"
    other = RouterKeys.generate(3600, now=NOW)
    with pytest.raises(ProtocolError) as exc:
        open_request(other, body)
    assert _code(exc) == "v2_unknown_key_id"


def test_same_key_id_other_private_key_fails(keys: RouterKeys) -> None:
    """Keys that claim the same key id but hold other private keys cannot open the request."""
    other = RouterKeys.generate(3600, now=NOW)
    body, _ = _seal(keys.config, DHKEM_X25519)
    with pytest.raises(ProtocolError) as exc:
        open_request(other, _edit(body, key_id=other.config.key_id))
    assert _code(exc) == "v2_aad_mismatch"


def test_unknown_suite(keys: RouterKeys) -> None:
    body, _ = _seal(keys.config)
    for suite in ({"kem_id": 0x20, "kdf_id": 1, "aead_id": 1}, {"kem_id": 0x10, "kdf_id": 1, "aead_id": 2}):
        with pytest.raises(ProtocolError) as exc:
            open_request(keys, _edit(body, suite=suite))
        assert _code(exc) == "v2_unknown_suite"
    with pytest.raises(ProtocolError) as exc:
        _seal(keys.config, SuiteId(0x20, 1, 1))
    assert _code(exc) == "v2_unknown_suite"


@pytest.mark.parametrize("suite", [XWING, DHKEM_X25519], ids=["x-wing", "dhkem-x25519"])
def test_truncated_encapsulation_and_ciphertext(keys: RouterKeys, suite: SuiteId) -> None:
    body, _ = _seal(keys.config, suite)
    doc = json.loads(body)
    enc = base64.b64decode(doc["enc"])
    for cut in (0, 1, len(enc) - 1):
        with pytest.raises(ProtocolError) as exc:
            open_request(keys, _edit(body, enc=base64.b64encode(enc[:cut]).decode()))
        assert _code(exc) == "v2_truncated"
    ct = base64.b64decode(doc["ciphertext"])
    with pytest.raises(ProtocolError) as exc:
        open_request(keys, _edit(body, ciphertext=base64.b64encode(ct[:40]).decode()))
    assert _code(exc) == "v2_truncated"
    with pytest.raises(ProtocolError) as exc:  # one byte short of the tag: the AEAD refuses it
        open_request(keys, _edit(body, ciphertext=base64.b64encode(ct[:-1]).decode()))
    assert _code(exc) == "v2_aad_mismatch"


def test_reply_for_another_request_fails(keys: RouterKeys) -> None:
    _, context_a = _seal(keys.config)
    body_b, context_b = _seal(keys.config)  # same payload_id, same everything: a fresh response key
    reply_b = seal_response(open_request(keys, body_b), b"reply b")
    with pytest.raises(SecurityError) as exc:
        open_response(context_a, reply_b)
    assert _code(exc) == "v2_reply_mismatch"
    assert open_response(context_b, reply_b) == b"reply b"


def test_tampered_or_truncated_reply_fails(keys: RouterKeys) -> None:
    body, context = _seal(keys.config)
    reply = bytearray(seal_response(open_request(keys, body), b"reply"))
    reply[-1] ^= 1
    with pytest.raises(SecurityError) as exc:
        open_response(context, bytes(reply))
    assert _code(exc) == "v2_reply_mismatch"
    for short in (b"", bytes(reply[:27])):
        with pytest.raises(ProtocolError) as exc:
            open_response(context, short)
        assert _code(exc) == "v2_truncated"


def test_reply_bound_to_payload_id(keys: RouterKeys) -> None:
    """A context for another payload_id with the same response key still cannot open the reply."""
    body, context = _seal(keys.config)
    reply = seal_response(open_request(keys, body), b"reply")
    forged = ClientContext(
        payload_id="pid-other",
        response_key=context.response_key,
        suite=context.suite,
        key_id=context.key_id,
        enc=context.enc,
    )
    with pytest.raises(SecurityError) as exc:
        open_response(forged, reply)
    assert _code(exc) == "v2_reply_mismatch"


@pytest.mark.parametrize(
    "over",
    [
        {"payload_id": ""},
        {"payload_id": "a" * 129},
        {"payload_id": "has space"},
        {"model": ""},
        {"model": "m" * 257},
        {"security_tier": "ultra"},
    ],
)
def test_seal_refuses_fields_out_of_bounds(keys: RouterKeys, over: dict[str, str]) -> None:
    with pytest.raises(ProtocolError) as exc:
        _seal(keys.config, **over)
    assert _code(exc) == "v2_malformed"


# ---- key configuration -----------------------------------------------------------------------


def test_key_config_round_trip_and_digest(keys: RouterKeys) -> None:
    doc = keys.config.to_json()
    assert set(doc) == {"version", "key_id", "suites", "public_keys", "not_before", "not_after"}
    assert doc["version"] == 2 and doc["not_after"] - doc["not_before"] == 3600
    again = KeyConfig.from_json(json.loads(json.dumps(doc)))
    assert again == keys.config and again.digest() == keys.config.digest()
    assert keys.config.digest() == hashlib.sha256(canonical_json(doc)).digest()
    assert keys.config.valid_at(NOW)
    assert not keys.config.valid_at(NOW + 3600) and not keys.config.valid_at(NOW - 1)


def _bad_configs(doc: dict[str, Any]) -> list[Any]:
    x25519_b64 = doc["public_keys"][str(0x20)]
    out: list[Any] = [
        None,
        [],
        "x",
        {**doc, "extra": 1},
        {k: v for k, v in doc.items() if k != "key_id"},
        {**doc, "version": 1},
        {**doc, "version": "2"},
        {**doc, "version": True},
        {**doc, "key_id": ""},
        {**doc, "key_id": "k" * 65},
        {**doc, "key_id": "bad id"},
        {**doc, "key_id": 5},
        {**doc, "suites": []},
        {**doc, "suites": "x"},
        {**doc, "suites": [doc["suites"][0]] * 2},
        {**doc, "suites": [{"kem_id": 0x20, "kdf_id": 1}]},
        {**doc, "suites": [{"kem_id": 0x20, "kdf_id": 1, "aead_id": True}]},
        {**doc, "suites": [{"kem_id": 0x20, "kdf_id": 1, "aead_id": 2, "x": 1}]},
        {**doc, "suites": [{"kem_id": 0x20, "kdf_id": 1, "aead_id": 2}] * 9},
        {**doc, "public_keys": {}},
        {**doc, "public_keys": []},
        {**doc, "public_keys": {**doc["public_keys"], "16": x25519_b64}},
        {**doc, "public_keys": {**doc["public_keys"], "32": x25519_b64[:-4]}},
        {**doc, "public_keys": {**doc["public_keys"], "32": "!" + x25519_b64[1:]}},
        {**doc, "public_keys": {**doc["public_keys"], "32": x25519_b64 + "A" * 10_000}},
        {**doc, "public_keys": {**doc["public_keys"], "032": x25519_b64}},
        {**doc, "not_before": "0"},
        {**doc, "not_after": doc["not_before"]},
        {**doc, "not_before": -1},
        {**doc, "not_after": 2**63},
        {**doc, "not_before": 1.5},
    ]
    return out


def test_key_config_from_json_is_strict(keys: RouterKeys) -> None:
    doc = keys.config.to_json()
    for bad in _bad_configs(doc):
        with pytest.raises(ProtocolError) as exc:
            KeyConfig.from_json(bad)
        assert _code(exc) == "v2_bad_key_config", bad


def test_key_config_suite_without_public_key_is_refused(keys: RouterKeys) -> None:
    doc = keys.config.to_json()
    only_x25519 = {**doc, "public_keys": {"32": doc["public_keys"]["32"]}}
    with pytest.raises(ProtocolError) as exc:
        KeyConfig.from_json(only_x25519)
    assert _code(exc) == "v2_bad_key_config"


def test_x_wing_public_key_is_ml_kem_then_x25519(keys: RouterKeys) -> None:
    """X-Wing's public key on the wire: ML-KEM-768 encapsulation key (1184) || X25519 (32)."""
    require(mlkem_available(), "cryptography's OpenSSL has ML-KEM (X-Wing)")
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    public = keys.config.public_keys[0x647A]
    assert len(public) == 1216
    private = keys.private_key(0x647A)
    assert isinstance(private, tuple)  # (ML-KEM-768 private key, X25519 private key)
    ml, x = private
    assert isinstance(ml, mlkem.MLKEM768PrivateKey) and isinstance(x, x25519.X25519PrivateKey)
    assert public == ml.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
    bad = bytes(1184) + public[1184:]  # not an ML-KEM encapsulation key (coefficients out of range ok?)
    doc = keys.config.to_json()
    doc["public_keys"]["25722"] = base64.b64encode(b"\xff" * 1184 + public[1184:]).decode()
    with pytest.raises(ProtocolError) as exc:
        KeyConfig.from_json(doc)
    assert _code(exc) == "v2_bad_key_config"
    assert bad  # all-zero is a valid encoding; 0xff coefficients (4095 > q) are not


def test_router_keys_from_seeds_are_deterministic() -> None:
    seeds = {0x647A: bytes(range(32)), 0x20: bytes(range(32, 64))}
    if not mlkem_available():
        seeds.pop(0x647A)
    a = RouterKeys.from_seeds(seeds, not_before=NOW, not_after=NOW + 60)
    b = RouterKeys.from_seeds(seeds, not_before=NOW, not_after=NOW + 60)
    assert a.config == b.config and a.config.key_id == b.config.key_id
    with pytest.raises(ProtocolError) as exc:
        RouterKeys.from_seeds({0x20: b"short"}, not_before=NOW, not_after=NOW + 60)
    assert _code(exc) == "v2_bad_key_config"
    with pytest.raises(ProtocolError) as exc:
        a.private_key(0x10)
    assert _code(exc) == "v2_unknown_suite"


# ---- replay window -----------------------------------------------------------------------------


def test_replay_window_refuses_reuse_within_window() -> None:
    window = ReplayWindow(10.0, 100)
    assert window.seen(b"enc-a", 0.0) is False
    assert window.seen(b"enc-a", 5.0) is True
    assert window.seen(b"enc-b", 5.0) is False
    assert window.seen(b"enc-a", 10.5) is False  # past the window: forgotten, accepted once more
    assert window.seen(b"enc-a", 11.0) is True


def test_replay_window_memory_is_bounded() -> None:
    window = ReplayWindow(1e9, 50)
    for index in range(10_000):
        assert window.seen(index.to_bytes(4, "big"), float(index)) is False
        assert len(window) <= 50
    assert window.seen((9_999).to_bytes(4, "big"), 10_000.0) is True  # the newest are kept
    assert window.seen((0).to_bytes(4, "big"), 10_000.0) is False  # the oldest fell out (documented)


def test_replay_window_expires_many_at_once_and_refuses_bad_settings() -> None:
    window = ReplayWindow(1.0, 1000)
    for index in range(500):
        window.seen(index.to_bytes(4, "big"), 0.0)
    window.seen(b"later", 5.0)
    assert len(window) == 1
    for bad in ((0.0, 10), (-1.0, 10), (1.0, 0), (float("nan"), 10), (float("inf"), 10)):
        with pytest.raises(ValueError):
            ReplayWindow(*bad)


# ---- fuzz: only our error types come out -----------------------------------------------------


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_key_config_from_json(keys: RouterKeys, data: st.DataObject) -> None:
    doc = keys.config.to_json()
    field = data.draw(st.sampled_from([*doc, "suites.0", "public_keys.32", None]))
    value = data.draw(_JSON)
    if field is None:
        candidate: Any = value
    elif field == "suites.0":
        candidate = {**doc, "suites": [value, *doc["suites"][1:]]}
    elif field == "public_keys.32":
        candidate = {**doc, "public_keys": {**doc["public_keys"], "32": value}}
    else:
        candidate = {**doc, field: value}
    try:
        KeyConfig.from_json(candidate)
    except ProtocolError as exc:
        assert exc.code == "v2_bad_key_config"


_REQUEST_CODES = {"v2_unknown_suite", "v2_unknown_key_id", "v2_truncated", "v2_aad_mismatch", "v2_malformed"}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_open_request(keys: RouterKeys, data: st.DataObject) -> None:
    suite = data.draw(st.sampled_from(keys.config.suites))
    body, _ = _seal(keys.config, suite)
    mode = data.draw(st.sampled_from(["bytes", "flip", "field", "cut"]))
    if mode == "bytes":
        candidate = data.draw(st.binary(max_size=300))
    elif mode == "flip":
        raw = bytearray(body)
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] ^= data.draw(st.integers(1, 255))
        candidate = bytes(raw)
    elif mode == "cut":
        candidate = body[: data.draw(st.integers(0, len(body)))]
    else:
        doc = json.loads(body)
        field = data.draw(st.sampled_from(sorted(doc)))
        doc[field] = data.draw(_JSON | st.binary(max_size=1200).map(lambda b: base64.b64encode(b).decode()))
        candidate = json.dumps(doc).encode()
    try:
        opened = open_request(keys, candidate)
    except ProtocolError as exc:
        assert exc.code in _REQUEST_CODES
    else:
        assert opened.payload == PAYLOAD  # only an unchanged request (e.g. whitespace edits) opens


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 2000))
def test_fuzz_open_response(keys: RouterKeys, junk: bytes, flip: int) -> None:
    body, context = _seal(keys.config, DHKEM_X25519)
    reply = bytearray(seal_response(open_request(keys, body), b"reply"))
    reply[flip % len(reply)] ^= 0x80
    for candidate in (junk, bytes(reply)):
        try:
            open_response(context, candidate)
        except SecurityError as exc:
            assert exc.code in {"v2_reply_mismatch", "v2_truncated", "v2_malformed"}
        else:
            raise AssertionError("a changed or random reply opened")
