"""Platform evidence kept once, by digest (issue 17): a record keeps ``tpm_attestation.platform_sha256``,
the log's blobs table the RFC 8785 bytes of the ``platform`` object, put back exactly for re-appraisal.

Real SQLite logs and the real GCE COS-85 evidence (tests/fixtures/cloud-anchors/gce) throughout: the
verdict re-appraised from a detached record is the one from the same record kept whole.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import hashlib
import json
import math
import sqlite3
from types import SimpleNamespace

import pytest
import rfc8785  # an independent RFC 8785 implementation: the digest is over its bytes
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_gce_anchor import ROOTS, cos_block
from test_platform import append_metadata

from nomyo_audit.audit import AuditLog
from nomyo_audit.audit._blobs import BlobReader, attach_logs, blob_problems, detach_logs
from nomyo_audit.audit._bundle import build_bundle
from nomyo_audit.audit._bundle_verify import verify_bundle
from nomyo_audit.cli import cli
from nomyo_audit.client._audit import record_call
from nomyo_audit.client._call import CompletionCall
from nomyo_audit.errors import ExitCode
from nomyo_audit.tpm import TrustStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PLATFORM = cos_block()["platform"]
PLATFORM_BYTES = rfc8785.dumps(PLATFORM)
PLATFORM_SHA = sha(PLATFORM_BYTES)


def append(log: AuditLog, payload_id: str, metadata: dict, *, detach: bool) -> None:
    """One record of a reply's ``_metadata`` (test_platform's): detached as the client does (its blobs
    in the record's append), or kept whole, as records were before."""
    if not detach:
        return append_metadata(log, payload_id, metadata)
    kept, blobs = detach_logs(metadata)
    with_blobs = SimpleNamespace(append=functools.partial(log.append, blobs=blobs))
    return append_metadata(with_blobs, payload_id, kept)


def make_log(path, *, detach: bool, count: int = 2, key=None):
    with AuditLog(path, key=key) as log:
        for n in range(count):
            append(log, f"gce-{n}", {"tpm_attestation": cos_block()}, detach=detach)
        if key is not None:
            log.checkpoint()
    return path


def records(path) -> list[bytes]:
    with AuditLog.open(path) as log:
        return [r.data for r in log.store.records()]


def blob_rows(path) -> dict[str, bytes]:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        return dict(db.execute("SELECT sha256, data FROM blobs"))


def reappraise(path):
    options = ["--nonce", "9009", "--roots", str(ROOTS / "Google")]
    result = CliRunner().invoke(cli, ["verify", "--format", "json", "--log", str(path), *options])
    verdicts = json.loads(result.stdout) if result.stdout.startswith("[") else None
    return result.exit_code, verdicts, result


def test_the_client_keeps_only_the_digest_and_the_record_shrinks(tmp_path):
    """Through record_call, the client's own write: the record keeps platform_sha256 over RFC 8785 bytes."""
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        for n in range(2):
            call = CompletionCall(payload={"model": "m", "messages": []}, payload_id=f"p{n}")
            reply = {"_metadata": {"payload_id": f"p{n}", "tpm_attestation": cos_block()}}
            asyncio.run(
                record_call(
                    log, call, router="https://r", server_key=None, outcome="ok", request=None, response=reply
                )
            )
    kept = [json.loads(data)["metadata"]["tpm_attestation"] for data in records(path)]
    assert all(e["platform_sha256"] == PLATFORM_SHA and "platform" not in e for e in kept)
    assert blob_rows(path) == {PLATFORM_SHA: PLATFORM_BYTES}  # two replies, one blob
    whole = make_log(tmp_path / "whole.db", detach=False, count=1)
    detached = make_log(tmp_path / "detached.db", detach=True, count=1)
    size_whole, size_detached = len(records(whole)[0]), len(records(detached)[0])
    assert len(PLATFORM_BYTES) > 1_500
    # exactly "platform":{...} (1,954 bytes of COS-85 evidence) for "platform_sha256":"<64 hex>"
    reference = len(b'"platform_sha256":"') + 64 + 1
    assert size_whole - size_detached == len(b'"platform":') + len(PLATFORM_BYTES) - reference
    assert size_detached < 0.65 * size_whole  # 3,192 of 5,073 bytes


def test_two_replies_store_one_blob_and_log_verify_passes(tmp_path):
    path = make_log(tmp_path / "a.db", detach=True, count=3)
    assert blob_rows(path) == {PLATFORM_SHA: PLATFORM_BYTES}
    assert CliRunner().invoke(cli, ["log", "verify", "--log", str(path)]).exit_code == 0


def test_reappraisal_is_exactly_the_verdict_of_the_record_kept_whole(tmp_path):
    whole = make_log(tmp_path / "whole.db", detach=False)
    detached = make_log(tmp_path / "detached.db", detach=True)
    code_whole, verdicts_whole, result = reappraise(whole)
    assert code_whole == 0, result.output
    code, verdicts, result = reappraise(detached)
    assert code == 0, result.output
    for verdict in verdicts_whole + verdicts:
        verdict.pop("source", None)
    assert verdicts == verdicts_whole
    anchor = next(f for f in verdicts[0]["findings"] if f["check"] == "aik_anchor")
    assert (anchor["status"], anchor["code"]) == ("pass", "aik_anchored_gce_ak_cert")


def test_the_platform_put_back_is_the_object_the_reply_carried():
    metadata = {"tpm_attestation": cos_block(), "key_attestation": {"tpm_attestation": cos_block()}}
    kept, blobs = detach_logs(metadata)
    for evidence in (kept["tpm_attestation"], kept["key_attestation"]["tpm_attestation"]):
        assert evidence["platform_sha256"] == PLATFORM_SHA and "platform" not in evidence
    assert blobs == {PLATFORM_SHA: PLATFORM_BYTES}
    assert metadata["tpm_attestation"]["platform"] == PLATFORM  # the reply's own dict unchanged
    assert attach_logs(kept, BlobReader(blobs.get), "r") == metadata


@pytest.mark.parametrize("damage", ["delete", "alter"])
def test_a_missing_or_altered_platform_blob_is_exit_3_naming_it(tmp_path, damage, capsys):
    from nomyo_audit.cli import main

    path = make_log(tmp_path / "audit.db", detach=True)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        if damage == "delete":
            db.execute("DELETE FROM blobs WHERE sha256 = ?", (PLATFORM_SHA,))
        else:
            db.execute("UPDATE blobs SET data = ? WHERE sha256 = ?", (PLATFORM_BYTES + b" ", PLATFORM_SHA))
    assert main(["verify", "--log", str(path), "--nonce", "9009"]) == ExitCode.INTEGRITY
    said = capsys.readouterr().err
    assert "platform evidence" in said and "audit.db#0" in said, said
    assert ("is missing" if damage == "delete" else "altered") in said
    assert "Traceback" not in said
    assert main(["log", "verify", "--log", str(path)]) == ExitCode.INTEGRITY
    said = capsys.readouterr().out
    assert ("platform evidence" if damage == "delete" else "do not hash to its key") in said, said


def test_log_verify_finds_a_platform_reference_without_its_blob():
    """The byte scan of log verify covers the new name: a record referencing a blob the table lacks."""
    document = {"metadata": {"tpm_attestation": {"platform_sha256": PLATFORM_SHA}}}
    data = json.dumps(document, separators=(",", ":")).encode()
    problems = blob_problems([(0, data)], [])
    assert problems == [f"record 0: the platform evidence it references ({PLATFORM_SHA[:16]}...) is missing"]
    assert blob_problems([(0, data)], [(PLATFORM_SHA, PLATFORM_BYTES)]) == []
    elsewhere = {"metadata": {"facts": {"platform_sha256": "ab" * 32}}, "server_key_sha256": "cd" * 32}
    assert blob_problems([(2, json.dumps(elsewhere, separators=(",", ":")).encode())], []) == []
    other = {"metadata": {"tpm_attestation": {"platform_sha256": "x"}}}
    assert blob_problems([(1, json.dumps(other).encode())], []) == [
        "record 1: its platform evidence reference is not a SHA-256 digest (altered)"
    ]


def test_a_bundle_carries_the_platform_blob_and_fails_when_it_is_altered(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = make_log(tmp_path / "audit.db", detach=True, count=1, key=key)
    with AuditLog.open(path) as log:
        bundle = build_bundle(log, "gce-0")
    assert set(bundle["blobs"]) == {PLATFORM_SHA}
    whole_path = make_log(tmp_path / "whole.db", detach=False, count=1, key=key)
    with AuditLog.open(whole_path) as log:
        whole = build_bundle(log, "gce-0")
    roots = TrustStore.bundled()
    result = verify_bundle(bundle, key=key.public_key(), roots=roots)
    assert result.intact, result.checks
    expected = verify_bundle(whole, key=key.public_key(), roots=roots)
    assert expected.intact
    assert result.verdict.to_dict() == expected.verdict.to_dict()
    assert result.verdict.finding("aik_anchor").code == "aik_anchored_gce_ak_cert"
    altered = copy.deepcopy(bundle)
    raw = bytearray(PLATFORM_BYTES)
    raw[-2] ^= 1
    altered["blobs"][PLATFORM_SHA] = base64.b64encode(bytes(raw)).decode()
    result = verify_bundle(altered, key=key.public_key(), roots=roots)
    assert not result.intact and result.code == "blob_altered"
    dropped = copy.deepcopy(bundle)
    dropped["blobs"] = {}
    assert verify_bundle(dropped, key=key.public_key(), roots=roots).code == "blob_missing"


def test_an_old_record_with_the_platform_inline_still_verifies_and_reappraises(tmp_path):
    path = make_log(tmp_path / "old.db", detach=False)
    assert all("platform" in json.loads(d)["metadata"]["tpm_attestation"] for d in records(path))
    assert blob_rows(path) == {}
    assert CliRunner().invoke(cli, ["log", "verify", "--log", str(path)]).exit_code == 0
    code, _, result = reappraise(path)
    assert code == 0, result.output


@pytest.mark.parametrize(
    "value",
    ["gce", ["kind", "gce"], 12, None, {"kind": "gce", "n": math.nan}, {"kind": "gce", "s": "\ud800"}],
    ids=["string", "list", "int", "null", "nan", "lone-surrogate"],
)
def test_a_platform_that_is_no_object_or_has_no_canonical_form_is_kept_as_it_came(tmp_path, value):
    block = cos_block()
    block["platform"] = value
    kept, blobs = detach_logs({"tpm_attestation": block})
    assert blobs == {} and kept["tpm_attestation"]["platform"] is value
    assert "platform_sha256" not in kept["tpm_attestation"]
    if value == {"kind": "gce", "s": "\ud800"}:
        return  # no record at all can hold it (the log refuses it as before): only the detaching matters
    path = tmp_path / "odd.db"
    with AuditLog(path) as log:
        append(log, "odd", {"tpm_attestation": block}, detach=True)
    with AuditLog.open(path) as log:
        assert log.verify().ok
    assert blob_rows(path) == {}


def test_the_routers_own_platform_digest_never_poses_as_a_blob_reference():
    block = cos_block()
    block["platform_sha256"] = "ab" * 32
    kept, blobs = detach_logs({"tpm_attestation": block})
    assert kept["tpm_attestation"]["platform_sha256"] == PLATFORM_SHA and set(blobs) == {PLATFORM_SHA}
    del block["platform"]
    kept, blobs = detach_logs({"tpm_attestation": block})
    assert "platform_sha256" not in kept["tpm_attestation"] and blobs == {}


def test_postgresql_keeps_the_platform_blob_the_same_way(postgres_url, tmp_path, capsys):
    import psycopg

    from nomyo_audit.cli import main

    make_log(postgres_url, detach=True)
    with AuditLog.open(postgres_url) as log:
        assert dict(log.store.blobs()) == {PLATFORM_SHA: PLATFORM_BYTES}
        assert all(b"platform_sha256" in r.data and b"ak_cert_pem" not in r.data for r in log.store.records())
    code, verdicts, result = reappraise(postgres_url)
    assert code == 0, result.output
    _, whole, _ = reappraise(make_log(tmp_path / "whole.db", detach=False))
    assert [v["findings"] for v in verdicts] == [v["findings"] for v in whole]
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("DELETE FROM blobs")
    assert main(["log", "verify", "--log", postgres_url]) == ExitCode.INTEGRITY
    said = capsys.readouterr().out
    assert "the platform evidence it references" in said and "is missing" in said, said
