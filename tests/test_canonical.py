"""The canonical encoding (RFC 8785 with exact integers): vectors, a differential proof of the fast
path against the rfc8785 package, the v3 record and the v2 records made before, and what happens
to values with no canonical form in the client, the router, the log and the verifier."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import httpx
import pytest
import rfc8785
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit._canonical import CanonicalJSONError, _encode, _plain, canonical_json, legacy_json
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._records import RECORD_VERSION, build_record, keyed_digest
from nomyo_audit.cli import main
from nomyo_audit.client import SyncSecureChatCompletion
from nomyo_audit.errors import ExitCode
from nomyo_audit.policy import Policy, PolicyError, load_policy
from nomyo_audit.tpm import verify_attestation
from nomyo_audit.tpm._binding import legacy_content_digest, response_content_digest
from nomyo_audit.tpm._measurements import measure_demo_boot

VECTORS = json.loads((FIXTURES / "vectors" / "canonical-json.json").read_text(encoding="utf-8"))
V2 = json.loads((FIXTURES / "v2-evidence.json").read_text(encoding="utf-8"))
REPO = Path(__file__).resolve().parent.parent


# -- the vectors docs/protocol.md publishes ----------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vectors(vector):
    value = json.loads(vector["input"])
    out = canonical_json(value)
    assert out == vector["canonical"].encode("utf-8")
    assert hashlib.sha256(out).hexdigest() == vector["sha256"]
    if "extension" not in vector:  # the RFC 8785 vectors are RFC 8785's, not only ours
        assert rfc8785.dumps(value) == out


@pytest.mark.parametrize("vector", VECTORS["errors"], ids=lambda v: v["name"])
def test_error_vectors(vector):
    with pytest.raises(CanonicalJSONError) as raised:
        canonical_json(json.loads(vector["input"]))
    assert raised.value.code == vector["error"] == "not_canonical_json"


def test_rfc8785_examples_are_in_the_vectors_verbatim():
    by_name = {v["name"]: v for v in VECTORS["vectors"]}
    assert by_name["rfc8785-3.2.2-example"]["canonical"] == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert by_name["rfc8785-appendix-b-44b52d02c7e14af6"]["canonical"] == "1e+23"
    assert by_name["rfc8785-appendix-b-8000000000000000"]["canonical"] == "0"
    number = struct.unpack(">d", bytes.fromhex("becbf647612f3696"))[0]
    assert canonical_json(number) == b"-0.0000033333333333333333"


# -- the fast path is RFC 8785: a differential test against rfc8785 -----------------------------------

KEYS = st.text(st.characters(codec="utf-8"), max_size=6) | st.sampled_from(
    ["\U0001f600", "\ue000", "\uffff", "a", "ab", "\U00010000z", ""]
)
FLOATS = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=1e-5, max_value=1e-3)
    | st.floats(min_value=1e15, max_value=1e17)
    | st.sampled_from(
        [1e-4, 0.0001000000000000001, 9.999999999999999e-05, 1e16, 9999999999999998.0, -0.0, 0.5]
    )
)
SAFE_INTS = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
SCALARS = st.none() | st.booleans() | SAFE_INTS | FLOATS | st.text(st.characters(codec="utf-8"), max_size=12)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(JSON)
def test_canonical_json_is_rfc8785(value):
    """Over generated JSON in rfc8785's domain, both paths give rfc8785's bytes exactly."""
    expected = rfc8785.dumps(value)
    assert canonical_json(value) == expected
    careful: list[bytes] = []
    _encode(value, careful, 0)
    assert b"".join(careful) == expected
    if _plain(value, 0):  # the C encoder's output, the fast path, is RFC 8785's
        assert legacy_json(value) == expected


@settings(max_examples=3000, deadline=None)
@given(FLOATS)
def test_fast_path_floats_are_exactly_those_python_spells_as_jcs(number):
    plain = _plain(number, 0)
    if plain:
        assert json.dumps(number).encode() == rfc8785.dumps(number)
    else:
        assert number.is_integer() or abs(number) < 1e-4 or abs(number) >= 1e16


def test_fast_path_is_taken_for_typical_content():
    response = {
        "id": "x",
        "choices": [{"message": {"content": "héllo"}, "logprob": -0.25}],
        "usage": {"n": 3},
    }
    assert _plain(response, 0)
    assert not _plain({"\U0001f600": 1}, 0) and not _plain([1.0], 0) and not _plain({1: "a"}, 0)


# -- the extension and the errors -------------------------------------------------------------------


def test_big_integers_are_exact_and_int_keys_are_their_decimal_strings():
    assert canonical_json([2**64, -(2**53)]) == b"[18446744073709551616,-9007199254740992]"
    assert canonical_json({10: "a", 9: "b", 2**60: 1.0}) == b'{"10":"a","1152921504606846976":1,"9":"b"}'
    assert canonical_json(2**53 + 1) != canonical_json(float(2**53 + 1))  # never rounded into another


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        {"a": [math.inf]},
        -math.inf,
        "\ud800",
        {"\udc00x": 1},
        b"bytes",
        {1.5: "float key"},
        {None: 1},
        {1: "a", "1": "b"},
        10**5000,
        object(),
    ],
    ids=lambda value: type(value).__name__,
)
def test_values_with_no_canonical_form_raise_a_stable_code(value):
    with pytest.raises(CanonicalJSONError) as raised:
        canonical_json(value)
    assert raised.value.code == "not_canonical_json" and isinstance(raised.value, ValueError)
    assert "PATIENT" not in str(raised.value)


def test_circular_and_deep_values_raise_a_stable_code():
    loop: list[object] = []
    loop.append(loop)
    deep: object = []
    for _ in range(5000):
        deep = [deep]
    for value in (loop, deep):
        with pytest.raises(CanonicalJSONError):
            canonical_json(value)


# -- audit records: v3 now, v2 still read and verified ----------------------------------------------

COMMON = {
    "payload_id": "p-1",
    "router": "https://router.test",
    "server_key": None,
    "model": "m",
    "security_tier": "standard",
}


def test_records_are_v3_jcs_with_jcs_keyed_digests():
    salt = bytes(32)
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}
    response = {"choices": [{"message": {"content": "x"}}], "cost": 2.0, "_metadata": {"at": 0.5}}
    data = build_record(
        seq=0, timestamp=0.0, salt=salt, outcome="ok", request=request, response=response, **COMMON
    )
    document = json.loads(data)
    assert document["v"] == RECORD_VERSION == 3
    assert data == canonical_json(document) == rfc8785.dumps(document)
    assert document["request_digest"] == keyed_digest(salt, request) == keyed_digest(salt, request, 3)
    assert document["request_digest"] != keyed_digest(salt, request, 2)  # 1.0 is spelled "1" now
    content = {k: v for k, v in response.items() if k != "_metadata"}
    assert document["response_digest"] == keyed_digest(salt, content)


def test_a_record_no_canonical_json_holds_falls_back_to_v2_and_is_still_written():
    request = {"model": "m", "messages": [], "temperature": math.nan}  # only from Python, never parsed
    data = build_record(
        seq=0, timestamp=0.0, salt=bytes(32), outcome="error:x", request=request, response=None, **COMMON
    )
    document = json.loads(data)
    assert document["v"] == 2 and document["request_digest"] == keyed_digest(bytes(32), request, 2)
    with pytest.raises(CanonicalJSONError):  # what neither encoding holds is a clear error
        build_record(
            seq=0,
            timestamp=0.0,
            salt=bytes(32),
            outcome="x",
            request={"a": "\ud800"},
            response=None,
            **COMMON,
        )


def test_v2_fixture_keyed_digests_recompute_with_the_legacy_encoding():
    salt = bytes.fromhex(V2["salt_hex"])
    ok = json.loads(V2["records"][0])
    assert ok["v"] == 2
    assert ok["request_digest"] == keyed_digest(salt, V2["request"], 2)
    assert ok["request_digest"] != keyed_digest(salt, V2["request"])
    content = {k: v for k, v in V2["saved_response"].items() if k != "_metadata"}
    assert ok["response_digest"] == keyed_digest(salt, content, 2)
    assert V2["records"][0].encode() == legacy_json(ok)  # the bytes are the v2 encoding


def test_a_log_holding_v2_then_v3_records_verifies(tmp_path):
    path = tmp_path / "mixed.db"
    stored = [record.encode() for record in V2["records"]]
    with AuditLog(path) as log:
        for seq, data in enumerate(stored):
            document = json.loads(data)
            log.append(
                document["payload_id"], lambda _seq, _salt, data=data: data, timestamp=1767225600.5 + seq
            )
        log.append(
            "p-3",
            lambda seq, salt: build_record(
                seq=seq,
                timestamp=1767225700.0,
                salt=salt,
                outcome="ok",
                request={"model": "m"},
                response=None,
                **{**COMMON, "payload_id": "p-3"},
            ),
            timestamp=1767225700.0,
        )
        assert log.verify().ok
        assert [json.loads(r.data)["v"] for r in log.store.records()] == [2, 2, 3]
    assert main(["log", "verify", "--log", str(path)]) == ExitCode.OK
    # the v2 reply re-verifies from the record alone (its recorded, legacy content digest)
    out = tmp_path / "verdicts.json"
    main(["verify", "--log", str(path), "--format", "json", "--output", str(out)])
    verdicts = json.loads(out.read_text())
    assert [v["result"] for v in verdicts] == ["pass", "fail", "fail"]  # the two without quotes fail
    assert verdicts[0]["binding_digest"] == "recorded"


# -- the response content digest: new evidence is JCS, old saved evidence still checks ----------------


def test_saved_responses_from_before_verify_with_the_legacy_digest():
    saved = V2["saved_response"]
    metadata = saved["_metadata"]
    legacy = legacy_content_digest(saved)
    assert legacy is not None and legacy.hex() == V2["legacy_content_digest"]
    assert response_content_digest(saved) != legacy
    fresh = verify_attestation(metadata["tpm_attestation"], metadata["payload_id"], content_digest=legacy)
    assert fresh.result == "pass"
    retried = verify_attestation(
        metadata["tpm_attestation"], metadata["payload_id"], content_digest=response_content_digest(saved)
    )
    assert retried.result == "fail"  # JCS first; the retry with the legacy digest is what passes


def test_legacy_digest_costs_nothing_when_it_cannot_differ():
    assert legacy_content_digest({"choices": [{"message": {"content": "x"}}], "_metadata": {}}) is None
    assert legacy_content_digest({"x": math.nan}) is not None  # legacy held NaN; JCS holds nothing
    assert legacy_content_digest({"x": b"bytes"}) is None  # never raises


def test_client_and_router_agree_on_content_jcs_spells_differently(make_router, client_keys_dir, tmp_path):
    """Floats, big integers and astral keys in a completion: quote, verdict and v3 record agree."""

    class Backend:
        async def complete(self, payload):
            return {
                "id": "c",
                "object": "chat.completion",
                "model": payload["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "ok"}, "logprob": -1.2e-05}
                ],
                "usage": {"total_tokens": 2**60 + 1, "cost": 2.0},
                "x": {"\U0001f600": 1, "\ue000": 2},
            }

        async def aclose(self):
            return None

    tpm = SoftwareTPM()
    measure_demo_boot(tpm)
    router = make_router(backend=Backend(), attester=TPMAttester(tpm))
    log_path = tmp_path / "audit.db"
    with SyncSecureChatCompletion(
        router.url, allow_http=True, key_dir=str(client_keys_dir), audit_log=str(log_path)
    ) as client:
        reply = client.create("m", [{"role": "user", "content": "hi"}], temperature=1.0)
    assert reply["_metadata"]["verification"]["result"] == "pass"
    assert reply["usage"]["total_tokens"] == 2**60 + 1
    with AuditLog.open(log_path) as log:
        (stored,) = list(log.store.records())
    record = json.loads(stored.data)
    assert record["v"] == 3 and record["verdict"]["result"] == "pass"
    assert record["verdict"]["content_digest"] == response_content_digest(reply).hex()


def test_router_refuses_to_attest_content_with_no_canonical_form(make_router, router_keys, client_keys_dir):
    """An upstream reply with NaN (its JSON parser is lenient) gets a clear 503, not a crash."""
    from test_router import client_pem as _unused  # noqa: F401  (the module's fixtures need its conftest)
    from test_router import headers_for, post, seal

    from nomyo_audit.client._keys import load_key_pair

    class Backend:
        async def complete(self, payload):
            return {"choices": [{"message": {"content": "x"}}], "score": math.nan}

        async def aclose(self):
            return None

    tpm = SoftwareTPM()
    router = make_router(backend=Backend(), attester=TPMAttester(tpm))
    pem = load_key_pair(client_keys_dir / "private_key.pem").public_key_pem
    body = seal(router_keys, {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    response = post(router, body, headers_for(pem))
    assert response.status_code == 503 and "CanonicalJSONError" in response.text
    assert httpx.get(router.url + "/pki/public_key").status_code == 200


# -- the policy digest ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["development", "production", "maximum"])
def test_shipped_policy_digests_did_not_change(name):
    policy = load_policy(REPO / "policies" / f"{name}.yaml")
    assert policy.digest == hashlib.sha256(legacy_json(dict(policy.document))).hexdigest()


def test_a_policy_with_no_canonical_form_is_a_policy_error():
    policy = Policy.from_document(
        {"apiVersion": "x", "kind": "Policy", "metadata": {"n": math.nan}, "spec": {}}
    )
    with pytest.raises(PolicyError) as raised:
        _ = policy.digest
    assert raised.value.code == "policy_not_canonical"


def test_the_vectors_docs_protocol_shows_are_the_vector_files():
    text = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = text[text.index("## Canonical JSON") :]
    shown = [line.rsplit("`", 2)[-2] for line in section.splitlines() if line.startswith("| `")]
    known = {vector["sha256"] for vector in VECTORS["vectors"]}
    assert len(shown) >= 5 and set(shown) <= known


def test_verify_checks_a_response_saved_before_with_its_legacy_digest(tmp_path):
    saved = tmp_path / "reply.json"
    saved.write_text(json.dumps(V2["saved_response"]), encoding="utf-8")
    out = tmp_path / "verdict.json"
    assert main(["verify", str(saved), "--format", "json", "--output", str(out)]) == ExitCode.OK
    (verdict,) = json.loads(out.read_text())
    assert verdict["result"] == "pass"


def test_log_digest_prints_the_v2_digest_too_when_it_differs(tmp_path, capsys):
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        salt = log.salt
    request = tmp_path / "request.json"
    request.write_text(json.dumps(V2["request"]), encoding="utf-8")
    assert main(["log", "digest", str(request), "--log", str(path)]) == ExitCode.OK
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        keyed_digest(salt, V2["request"]),
        f"{keyed_digest(salt, V2['request'], 2)}  (v2 records)",
    ]
