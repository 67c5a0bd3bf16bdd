"""A report names each router's key by fingerprint (``router_keys``, protocol 1.0 replies only: the
key the client encrypted to and the reply came back under), so the OSCAL file's subjects carry it."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives import serialization
from test_report_ear_jwt import chat

from nomyo_audit.audit import AuditLog, build_report, ed25519_private
from nomyo_audit.audit._keys import generate_audit_key
from nomyo_audit.cli import main
from nomyo_audit.errors import ExitCode

LOG_STATE = {"size": 0, "root": "00" * 32, "checkpoint": None}


def test_the_oscal_file_names_the_router_keys_fingerprint(tmp_path, router, router_keys):
    key, _ = generate_audit_key(tmp_path / "audit.key")
    db = tmp_path / "audit.db"
    with AuditLog(db, key=ed25519_private(key)) as log:
        chat(router, log, 2, protocol="1.0")
        chat(router, log, 1, protocol="2")  # encrypted to the protocol 2 key: not counted for this one
        log.checkpoint()
    out = tmp_path / "out"
    assert main(["report", "--log", str(db), "--format", "json,oscal", "-o", str(out)]) == ExitCode.OK
    der = router_keys.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fingerprint = hashlib.sha256(der).hexdigest()
    document = json.loads((out / "report.json").read_text())
    assert document["router_keys"] == [{"router": router.url, "key_sha256": fingerprint, "records": 2}]
    oscal = json.loads((out / "report.oscal.json").read_text())
    subjects = oscal["assessment-results"]["results"][0]["local-definitions"]["inventory-items"]
    named = [
        item
        for item in subjects
        if any(
            p["name"] == "key-fingerprint-sha256" and p["value"] == fingerprint for p in item.get("props", [])
        )
    ]
    assert named and router.url in named[0]["description"]


def test_router_keys_are_counted_from_protocol_1_records_with_a_fingerprint_only():
    key = "ab" * 32
    docs = [
        {"seq": 0, "router": "https://r", "server_key_sha256": key, "metadata": {"protocol": "1.0"}},
        {"seq": 1, "router": "https://r", "server_key_sha256": key, "metadata": {"protocol": "2"}},
        {"seq": 2, "router": "https://r", "server_key_sha256": key, "metadata": {}},  # never answered
        {"seq": 3, "router": "https://r", "server_key_sha256": "not hex", "metadata": {"protocol": "1.0"}},
        {"seq": 4, "router": "https://r", "server_key_sha256": None, "metadata": {"protocol": "1.0"}},
        {"seq": 5, "router": "https://s", "server_key_sha256": "CD" * 32, "metadata": {"protocol": "1.0"}},
    ]
    report = build_report(docs, generated_at="2026-01-01T00:00:00Z", log_state=LOG_STATE)
    assert report["router_keys"] == [
        {"router": "https://r", "key_sha256": key, "records": 1},
        {"router": "https://s", "key_sha256": "cd" * 32, "records": 1},
    ]
    assert build_report([], generated_at="2026-01-01T00:00:00Z", log_state=LOG_STATE)["router_keys"] == []
