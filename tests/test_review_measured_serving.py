"""Review of issue 14: a serving-stack event is read only in the exact bytes the router writes.

The router is the attacker: it extends whatever it likes into PCR 23, so the quote proves its
bytes, not that they mean one thing. JSON with a duplicated key, another spelling of a number or
a non-string kind must be no serving-stack measurement at all, and never an exception out of
decode_event or verify_attestation.
"""

from __future__ import annotations

import struct

import pytest
from test_verify_measured import MODEL, NONCE, machine, verify

from nomyo_audit._canonical import canonical_json
from nomyo_audit.eventlog import (
    EV_EVENT_TAG,
    SERVING_STACK_TAG,
    EventLogWriter,
    _constants,
    decode_event,
    match_event_log,
    parse_event_log,
    replay_event_log,
    serving_stack_event,
    summarize_serving_stack,
)
from nomyo_audit.eventlog._parse import Event

_MODEL_DUPLICATE_NAME = (
    b'{"kind":"model","name":"approved","name":"other","source":"local",'
    b'"upstream_identity":null,"v":1,"weights_sha256":null}'
)
BODIES = {
    "kind_is_a_list": b'{"kind":["model"],"v":1}',
    "kind_is_an_object": b'{"kind":{"a":1},"v":1}',
    "duplicate_key": _MODEL_DUPLICATE_NAME,
    "v_is_true": canonical_json({**MODEL, "kind": "model", "v": 1}).replace(b'"v":1', b'"v":true'),
    "v_is_float": canonical_json({**MODEL, "kind": "model", "v": 1}).replace(b'"v":1', b'"v":1.0'),
    "spaces": canonical_json({**MODEL, "kind": "model", "v": 1}).replace(b",", b", "),
    "unsorted": b'{"v":1,"kind":"model","name":"echo","source":"echo","weights_sha256":null,'
    b'"upstream_identity":null}',
}


def tagged(body: bytes) -> bytes:
    return struct.pack("<II", SERVING_STACK_TAG, len(body)) + body


@pytest.mark.parametrize("name", sorted(BODIES))
def test_non_canonical_serving_stack_json_is_not_a_measurement(name):
    event = Event(1, 23, EV_EVENT_TAG, {"sha256": bytes(32)}, tagged(BODIES[name]), 0)
    assert decode_event(event).kind != "serving_stack"


def test_the_router_s_own_bytes_still_decode():
    event = Event(1, 23, EV_EVENT_TAG, {"sha256": bytes(32)}, serving_stack_event("model", MODEL), 0)
    info = decode_event(event)
    assert info.kind == "serving_stack" and info.fields["name"] == "echo"


@pytest.mark.parametrize("name", ["kind_is_a_list", "duplicate_key"])
def test_verify_attestation_neither_raises_nor_reads_a_non_canonical_model(name):
    attester = machine()
    attester.measurements.extend_event(23, EV_EVENT_TAG, tagged(BODIES[name]))
    verdict = verify(attester.evidence(NONCE))
    assert verdict.finding("event_log").status == "pass"
    models = verdict.facts["serving_stack"]["models"]
    assert set(models) == {"echo"}


def test_a_bank_this_python_cannot_hash_does_not_crash_the_serving_stack(monkeypatch):
    # a log with an sm3_256 bank, read where OpenSSL has no SM3: PCR 23 is proven in sha256
    writer = EventLogWriter(("sha256", "sm3_256"))
    writer.add(23, EV_EVENT_TAG, serving_stack_event("model", MODEL))
    log = parse_event_log(writer.to_bytes())
    monkeypatch.setitem(_constants._HASHLIB_NAMES, "sm3_256", "no-such-hash")
    match = match_event_log(log, {"sha256": replay_event_log(log, "sha256")})
    assert match.ok
    stack = summarize_serving_stack(log, match)
    assert stack is not None and set(stack["models"]) == {"echo"}
