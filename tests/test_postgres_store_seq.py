"""``with_seq``: the record a server log's sequencer stores is exactly the one SQLite would have built.

The writer builds a record with seq 0 and the sequencer gives it its position afterwards, so
``with_seq(build(0), n)`` must be byte for byte ``build(n)`` for every record version: v3 (RFC 8785),
v2 (the fallback for NaN), with labels, and with nested ``seq`` keys the router controls.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nomyo_audit._canonical import canonical_json, legacy_json
from nomyo_audit.audit._records import _with_seq_parsed, build_record, with_seq

SALT = b"s" * 32


def _builder(**overrides):
    fields = {
        "timestamp": 1_764_000_000.25,
        "salt": SALT,
        "payload_id": "p-1",
        "router": "https://router.example",
        "server_key": "ab" * 32,
        "model": "m",
        "security_tier": "standard",
        "outcome": "ok",
        "request": {"messages": [{"role": "user", "content": "hi"}]},
        "response": {"choices": [], "_metadata": {"seq": 0, "nested": {"seq": 7, "v": 9}}},
    }
    fields.update(overrides)
    return lambda seq: build_record(seq=seq, **fields)


CASES = {
    "v3": _builder(),
    "v2-nan": _builder(response={"choices": [float("nan")], "_metadata": {"x": float("inf")}}),
    "labels": _builder(service="billing", tenant="acme"),
    "error": _builder(outcome="error", response=None, error={"code": "x", "seq": 3}),
    "unicode": _builder(payload_id="p-é-\U0001f600", request={"é": "\u2028", "z": 1.5e300}),
}


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("seq", [0, 1, 9, 10, 4095, 2**40])
def test_with_seq_is_build(name, seq):
    build = CASES[name]
    assert with_seq(build(0), seq) == build(seq)
    assert _with_seq_parsed(build(0), seq) == build(seq)  # the careful path, whatever the fast one did
    assert with_seq(build(seq), 0) == build(0)


def test_versions_covered():
    assert json.loads(CASES["v2-nan"](0).replace(b"NaN", b"0").replace(b"Infinity", b"0"))["v"] == 2
    assert json.loads(CASES["v3"](0))["v"] == 3


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"v":3}',
        b'{"v":3,"seq":"0"}',
        b'{"v":3,"seq":true}',
        b'{"v":1,"seq":0}',
        b'{"v":3,"seq":0,"seq":1}',
        b"\xff",
        b"{" * 100_000,
    ],
)
def test_not_a_record(data):
    with pytest.raises(ValueError, match="record"):
        with_seq(data, 1)


@pytest.mark.parametrize("seq", [-1, True, 1.0])
def test_bad_seq(seq):
    with pytest.raises(ValueError, match="seq"):
        with_seq(CASES["v3"](0), seq)


_KEYS = st.sampled_from(["seq", "v", "a", "z", 'q"seq', ',"seq":', "{", "\\"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**60), 2**60) | st.text(max_size=8) | _KEYS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(body=st.dictionaries(_KEYS, _JSON, max_size=4), seq=st.integers(0, 2**63), v=st.sampled_from([2, 3]))
def test_the_fast_path_is_the_careful_one(body, seq, v):
    """Whatever nested keys a router puts in a record, replacing digits in place equals re-encoding."""
    document = {**body, "seq": 0, "v": v}
    data = (canonical_json if v == 3 else legacy_json)(document)
    assert with_seq(data, seq) == _with_seq_parsed(data, seq)
