"""Offline evidence bundles (issue 15 section 3): one reply's record, its event logs, its inclusion
proof and signed checkpoint, checked with no network at all, every alteration named by its own code.

The log is a real one: a real router on loopback quoting with the software TPM (its boot measured,
so every reply carries a TCG event log the record keeps by digest), the real client writing the
records, one reply allowed and one denied by the client's policy.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import require

from nomyo_audit import PolicyViolationError, SecureChatCompletion
from nomyo_audit.attest._attester import TPMAttester
from nomyo_audit.attest._software import SoftwareTPM
from nomyo_audit.audit import AuditLog, build_record, generate_audit_key, inclusion_proof
from nomyo_audit.audit._blobs import references
from nomyo_audit.audit._bundle import _Tree, build_bundle, parse_bundle
from nomyo_audit.audit._bundle_verify import verify_bundle
from nomyo_audit.audit._keys import ed25519_private, ed25519_public
from nomyo_audit.audit._merkle import leaf_hash
from nomyo_audit.cli import cli, main
from nomyo_audit.cli._bundle import bundle_bytes, read_bundle
from nomyo_audit.errors import EvidenceError, ExitCode
from nomyo_audit.policy import Policy
from nomyo_audit.router import RouterConfig, RouterThread
from nomyo_audit.tpm._measurements import measure_demo_boot

HELLO = [{"role": "user", "content": "kept for the auditors"}]
DENYING = (
    "apiVersion: nomyo-audit/v1\nkind: AttestationPolicy\nmetadata: {name: only-qwen}\n"
    "spec:\n  models: ['qwen*']\n"
)


@pytest.fixture(scope="module")
def logged(router_keys, client_keys_dir, tmp_path_factory):
    """A checkpointed log of one allowed and one denied reply; the router stopped afterwards."""
    directory = tmp_path_factory.mktemp("bundle")
    attester = TPMAttester(SoftwareTPM())
    measure_demo_boot(attester.measurements)
    key = ed25519_private(generate_audit_key(directory / "audit.key")[0])
    policy_file = directory / "only-qwen.yaml"
    policy_file.write_text(DENYING)
    denying = Policy.from_document({"metadata": {"name": "only-qwen"}, "spec": {"models": ["qwen*"]}})

    async def chats(url):
        with AuditLog(directory / "audit.db", key=key) as log:
            async with SecureChatCompletion(
                url, allow_http=True, key_dir=str(client_keys_dir), audit_log=log
            ) as c:
                allowed = await c.create("echo", HELLO, security_tier="high")
            async with SecureChatCompletion(
                url, allow_http=True, key_dir=str(client_keys_dir), audit_log=log, policy=denying
            ) as c:
                with pytest.raises(PolicyViolationError) as denied:
                    await c.create("echo", HELLO, security_tier="high")
            log.checkpoint()
        assert allowed["_metadata"]["verification"]["result"] == "pass"
        assert denied.value.result.outcome == "deny"

    with RouterThread(RouterConfig(private_key=router_keys.private_key, attester=attester)) as router:
        asyncio.run(chats(router.url))
    with AuditLog.open(directory / "audit.db") as log:
        records = [json.loads(r.data) for r in log.store.records()]
    assert [r["outcome"] for r in records] == ["ok", "policy_denied"]
    return directory, [r["payload_id"] for r in records], policy_file


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def run_main(capsys, *args):
    """The CLI's own entry point, which maps errors to exit codes (CliRunner does not)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def write_bundle(logged, index, name="reply.bundle.json"):
    directory, payload_ids, _ = logged
    out = directory / name
    code, _, err = run("bundle", payload_ids[index], "--log", directory / "audit.db", "-o", out, "--force")
    assert code == 0, err
    return out


def verify_json(path, *extra):
    code, out, err = run("verify", path, "--offline", "--format", "json", *extra)
    assert "Traceback" not in out + err
    return code, (json.loads(out)[0] if out.startswith("[") else None), err


def key_of(logged):
    return logged[0] / "audit.key.pub"


def test_a_bundle_holds_the_record_its_event_log_its_proof_and_checkpoint(logged):
    directory, payload_ids, _ = logged
    bundle = json.loads(write_bundle(logged, 0).read_text())
    record = base64.b64decode(bundle["record"])
    document = json.loads(record)
    assert document["payload_id"] == payload_ids[0] == bundle["payload_id"]
    digest = document["metadata"]["tpm_attestation"]["event_log_sha256"]  # kept by digest in the record
    referenced = {d for _, d in references(document["metadata"])}  # the router key's evidence's too
    assert digest in referenced and set(bundle["blobs"]) == referenced
    assert bundle["inclusion_proof"].startswith("c2sp.org/tlog-proof@v1\n")
    assert bundle["inclusion_proof"].endswith(bundle["checkpoint"])
    with AuditLog.open(directory / "audit.db") as log:
        assert bundle["checkpoint"] == log.latest_checkpoint().note
        assert log.store.blob(digest) == base64.b64decode(bundle["blobs"][digest])
    # the proof inside is the one 'log prove' makes, so it can be cut out and checked on its own
    proof = directory / "cut.tlog-proof"
    proof.write_text(bundle["inclusion_proof"])
    code, out, _ = run("log", "verify-proof", proof, "--key", key_of(logged))
    assert code == 0 and "record 0 is in" in out


def test_a_bundle_verifies_offline_intact_and_passing(logged):
    code, result, err = verify_json(write_bundle(logged, 0), "--key", key_of(logged))
    assert code == ExitCode.OK, err
    assert (result["result"], result["intact"], result["key_trusted"]) == ("ok", True, True)
    assert result["verdict"]["result"] == "pass" and result["verdict"]["payload_id"] == logged[1][0]
    # the quote was bound to the content digest the record holds, and the event log replayed
    findings = {f["check"]: f["status"] for f in result["verdict"]["findings"]}
    assert findings["nonce_binding"] == "pass" and findings["event_log"] == "pass", findings
    code, out, _ = run("verify", write_bundle(logged, 0), "--offline", "--key", key_of(logged))
    assert code == 0 and "evidence intact" in out


def test_verify_offline_runs_in_a_network_namespace_with_no_network(logged):
    """`unshare --net`: a new network namespace, not even loopback up. First shown to cut the
    network (a connection to the machine's own loopback fails in it), then the bundle verifies."""
    unshare = shutil.which("unshare")
    require(unshare is not None, "unshare (util-linux) is not installed")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True)
    require(probe.returncode == 0, f"unshare --net is not permitted here: {probe.stderr.decode()[:200]}")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        connect = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        outside = subprocess.run([sys.executable, "-c", connect], capture_output=True)
        inside = subprocess.run([unshare, "--net", sys.executable, "-c", connect], capture_output=True)
    finally:
        listener.close()
    assert outside.returncode == 0 and inside.returncode != 0, inside.stderr.decode()[-300:]
    bundle = write_bundle(logged, 0)
    command = [sys.executable, "-c", "import sys; from nomyo_audit.cli import main; sys.exit(main())"]
    done = subprocess.run(
        [unshare, "--net", *command, "verify", str(bundle), "--offline", "--key", str(key_of(logged))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "evidence intact" in done.stdout and "OK" in done.stdout


def test_verify_offline_opens_no_socket(logged, monkeypatch):
    bundle = write_bundle(logged, 0)
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise OSError("the network is blocked in this test")

    for name in ("socket", "create_connection", "getaddrinfo", "socketpair"):
        monkeypatch.setattr(socket, name, refuse)
    code, result, err = verify_json(bundle, "--key", key_of(logged))
    assert (code, result["result"], opened) == (0, "ok", []), err


def _alter_record(bundle):
    record = bytearray(base64.b64decode(bundle["record"]))
    at = record.index(b'"outcome":"ok"') + len('"outcome":"')
    record[at : at + 2] = b"OK"
    bundle["record"] = base64.b64encode(bytes(record)).decode()


def _alter_proof_hash(bundle):
    lines = bundle["inclusion_proof"].split("\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("index ")) + 1
    lines[at] = base64.b64encode(bytes(32)).decode()
    bundle["inclusion_proof"] = "\n".join(lines)


def _alter_signature(bundle):
    body, _, signature = bundle["checkpoint"].rpartition(" ")
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 1
    bundle["checkpoint"] = f"{body} {base64.b64encode(bytes(raw)).decode()}\n"


def _alter_blob(bundle):
    digest = next(iter(bundle["blobs"]))
    data = bytearray(base64.b64decode(bundle["blobs"][digest]))
    data[100] ^= 1
    bundle["blobs"][digest] = base64.b64encode(bytes(data)).decode()


def _garble_proof(bundle):
    bundle["inclusion_proof"] = "not a proof"


def _drop_blob(bundle):
    bundle["blobs"].clear()


def _add_chain_certificate(bundle):
    bundle["anchor"]["aik_cert_chain_b64"] = [base64.b64encode(b"0\x82 not a certificate").decode()]


def _other_payload_id(bundle):
    bundle["payload_id"] = "someone-elses-request"


TAMPERING = {
    "record byte": (_alter_record, "record_altered"),
    "proof hash": (_alter_proof_hash, "inclusion_proof_invalid"),
    "checkpoint signature": (_alter_signature, "checkpoint_signature_invalid"),
    "blob byte": (_alter_blob, "blob_altered"),
    "blob removed": (_drop_blob, "blob_missing"),
    "chain certificate": (_add_chain_certificate, "anchor_altered"),
    "payload_id": (_other_payload_id, "bundle_payload_id_mismatch"),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_every_alteration_has_its_own_code_and_never_passes(logged, name, tmp_path):
    alter, expected = TAMPERING[name]
    bundle = json.loads(write_bundle(logged, 0).read_text())
    alter(bundle)
    path = tmp_path / "altered.bundle.json"
    path.write_bytes(bundle_bytes(bundle))
    code, result, err = verify_json(path, "--key", key_of(logged))
    assert code == ExitCode.INTEGRITY, err
    assert (result["result"], result["intact"], result["verdict"]) == (expected, False, None)
    code, out, _ = run("verify", path, "--offline", "--key", key_of(logged))
    assert code == ExitCode.INTEGRITY and expected in out and "not intact" in out


def test_a_wrong_key_is_its_own_failure(logged, tmp_path):
    other = generate_audit_key(tmp_path / "other.key")[1]
    code, result, _ = verify_json(write_bundle(logged, 0), "--key", other)
    assert (code, result["result"]) == (ExitCode.INTEGRITY, "checkpoint_wrong_key")


def test_codes_are_distinct_for_every_alteration():
    codes = [expected for _, expected in TAMPERING.values()]
    assert len(set(codes)) == len(codes) and "checkpoint_wrong_key" not in codes


def test_without_a_key_the_bundles_own_key_is_used_and_said_to_be_untrusted(logged):
    """Intact under the key the bundle names is never 'ok' (exit 0): whoever wrote the bundle chose it."""
    code, result, err = verify_json(write_bundle(logged, 0))
    assert (code, result["result"], result["key_trusted"]) == (1, "checkpoint_key_untrusted", False)
    assert result["intact"] and result["verdict"]["result"] == "pass"  # still appraised, and shown
    assert "no --key" in err
    code, out, _ = run("verify", write_bundle(logged, 0), "--offline")
    assert code == 1 and "CHECKPOINT_KEY_UNTRUSTED" in out and "untrusted: pass --key" in out


def test_a_bundle_re_signed_with_a_key_it_names_itself_never_passes(logged, tmp_path):
    """Review: a bundle whose checkpoint an attacker re-signed with a key of their own, named in the
    bundle, verified 'ok' with exit 0 when no --key was given."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from nomyo_audit.audit._note import parse_checkpoint, sign_checkpoint, verifier_key

    bundle = json.loads(write_bundle(logged, 0).read_text())
    forger = Ed25519PrivateKey.generate()
    checkpoint = parse_checkpoint(bundle["checkpoint"])[0]
    note = sign_checkpoint(checkpoint, forger)
    bundle["inclusion_proof"] = bundle["inclusion_proof"].replace(bundle["checkpoint"], note)
    bundle["checkpoint"] = note
    bundle["log"]["public_key"] = verifier_key(checkpoint.origin, forger.public_key())
    forged = tmp_path / "forged.bundle.json"
    forged.write_bytes(bundle_bytes(bundle))
    code, result, _ = verify_json(forged)
    assert (code, result["result"], result["intact"], result["key_trusted"]) == (
        ExitCode.FINDING,
        "checkpoint_key_untrusted",
        True,
        False,
    )
    code, result, _ = verify_json(forged, "--key", key_of(logged))
    assert (code, result["result"]) == (ExitCode.INTEGRITY, "checkpoint_wrong_key")


def test_the_result_names_the_log_its_signed_checkpoint_is_of(logged):
    """Review: the result said which key signed, not which log: the signed checkpoint's origin (one key
    may sign several logs) is in the text and the JSON, never the bundle's unauthenticated log.origin."""
    path = write_bundle(logged, 0)
    bundle = json.loads(path.read_text())
    bundle["log"]["origin"] = "example.com/not-this-log"
    path.write_bytes(bundle_bytes(bundle))
    with AuditLog.open(logged[0] / "audit.db") as log:
        origin = log.origin
    code, result, _ = verify_json(path, "--key", key_of(logged))
    assert (code, result["origin"]) == (0, origin)
    _, out, _ = run("verify", path, "--offline", "--key", key_of(logged))
    assert f"log {origin}" in out and "not-this-log" not in out


def test_a_denied_reply_is_intact_evidence_and_a_denial(logged):
    """Two statements, never one for the other: the evidence is the log's, and the policy denies it."""
    _, payload_ids, policy_file = logged
    bundle = write_bundle(logged, 1, "denied.bundle.json")
    code, result, _ = verify_json(bundle, "--key", key_of(logged))
    # no policy given: the client's own policy result, signed with the record, is what denied it
    assert (code, result["result"], result["intact"]) == (ExitCode.FINDING, "policy_denied_recorded", True)
    assert result["verdict"]["result"] == "pass" and result["recorded"]["policy_outcome"] == "deny"
    code, result, _ = verify_json(bundle, "--key", key_of(logged), "--policy", policy_file)
    assert (code, result["result"], result["intact"]) == (ExitCode.FINDING, "policy_denied", True)
    assert result["policy"]["outcome"] == "deny" and result["verdict"]["payload_id"] == payload_ids[1]
    code, out, _ = run("verify", bundle, "--offline", "--key", key_of(logged), "--policy", policy_file)
    assert "evidence intact" in out and "policy only-qwen: deny" in out


def test_the_allowed_reply_against_the_denying_policy_is_denied_too(logged):
    code, result, _ = verify_json(write_bundle(logged, 0), "--key", key_of(logged), "--policy", logged[2])
    assert (code, result["result"], result["intact"]) == (ExitCode.FINDING, "policy_denied", True)


# -- bad input --------------------------------------------------------------------------------------------


def test_an_oversized_bundle_is_refused_before_it_is_parsed(logged, tmp_path):
    path = write_bundle(logged, 0)
    with pytest.raises(EvidenceError) as refused:
        read_bundle(path, limit=1000)
    assert refused.value.code == "bundle_too_large" and "more than the 1000" in refused.value.message


@pytest.mark.parametrize(
    "text",
    [
        b"not json",
        b"[]",
        b'{"schema": "https://example.com/other"}',
        b'{"schema": "https://nomyo-audit.dev/schemas/evidence-bundle/v1"}',
    ],
)
def test_what_is_not_a_bundle_is_invalid_input(tmp_path, text, capsys):
    path = tmp_path / "not.bundle.json"
    path.write_bytes(text)
    code, _, err = run_main(capsys, "verify", path, "--offline")
    assert code == ExitCode.USAGE and "not an evidence bundle" in err


def test_a_repeated_key_is_refused(logged):
    data = write_bundle(logged, 0).read_bytes()
    doubled = data.replace(b'"seq":', b'"seq": 7, "seq":', 1)
    with pytest.raises(EvidenceError, match="repeats a key"):
        parse_bundle(doubled)


def test_bundle_of_an_unknown_request_or_one_after_the_checkpoint(logged, tmp_path, capsys):
    directory, _, _ = logged
    code, _, err = run_main(
        capsys, "bundle", "no-such-id", "--log", directory / "audit.db", "-o", tmp_path / "x.json"
    )
    assert code == ExitCode.USAGE and "no record for payload_id no-such-id" in err
    copy_db = tmp_path / "later.db"
    shutil.copy(directory / "audit.db", copy_db)
    with AuditLog(copy_db) as log:
        log.append(
            "later",
            lambda seq, salt: build_record(
                seq=seq,
                timestamp=time.time(),
                salt=salt,
                payload_id="later",
                router="r",
                server_key=None,
                model=None,
                security_tier=None,
                outcome="ok",
                request=None,
                response=None,
            ),
        )
    code, _, err = run_main(capsys, "bundle", "later", "--log", copy_db, "-o", tmp_path / "y.json")
    assert code == ExitCode.USAGE and "after the latest checkpoint" in err, err
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "y.json").exists()


def test_verify_offline_needs_files(capsys):
    code, _, err = run_main(capsys, "verify", "--offline")
    assert code == ExitCode.USAGE and "bundle files" in err


# -- pure parts -------------------------------------------------------------------------------------------


def test_proofs_from_the_kept_tree_are_the_rfc_9162_paths():
    for size in (1, 2, 63, 64, 65, 100, 257):
        leaves = [leaf_hash(str(i).encode()) for i in range(size)]
        tree = _Tree(leaves)
        for index in {0, size // 3, size // 2, size - 1}:
            assert tree.path(index) == inclusion_proof(leaves, index), (size, index)


def test_build_and_verify_in_process(logged):
    directory, payload_ids, _ = logged
    with AuditLog.open(directory / "audit.db") as log:
        bundle = build_bundle(log, payload_ids[0])
    key = ed25519_public(directory / "audit.key.pub")
    assert verify_bundle(parse_bundle(bundle_bytes(bundle)), key=key).code == "ok"
    altered = copy.deepcopy(bundle)
    _alter_record(altered)
    result = verify_bundle(altered, key=key)
    assert not result.intact and result.exit_code == ExitCode.INTEGRITY and result.verdict is None
    assert Path(directory / "audit.db").exists()


def test_the_key_a_bundle_names_reads_whatever_its_base64_holds(logged):
    """A note verifier key is name+keyid+base64, and base64 may hold '+' itself."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from nomyo_audit.audit._bundle_verify import _named_key
    from nomyo_audit.audit._note import verifier_key

    keys = (Ed25519PrivateKey.generate().public_key() for _ in range(500))
    public = next(k for k in keys if verifier_key("o", k).count("+") > 2)
    assert _named_key({"log": {"public_key": verifier_key("o", public)}}) == public


def test_report_writes_a_bundle_per_failure_and_lists_it_in_the_signed_report(logged, tmp_path, capsys):
    directory, payload_ids, _ = logged
    out = tmp_path / "report"
    signed = ("--format", "json", "--sign", directory / "audit.key")
    code, _, err = run_main(
        capsys, "report", "--log", directory / "audit.db", *signed, "--bundles", out / "bundles", "-o", out
    )
    assert code == 0, err
    document = json.loads((out / "report.json").read_text())
    assert [f["payload_id"] for f in document["failures"]] == [payload_ids[1]]  # the denied reply
    (listed,) = document["bundles"]
    assert (listed["payload_id"], listed["seq"], listed["file"]) == (
        payload_ids[1],
        1,
        "bundles/record-1.bundle.json",
    )
    path = out / listed["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == listed["sha256"]
    assert run_main(capsys, "verify-report", out, "--key", key_of(logged))[0] == 0  # the list is signed
    code, result, _ = verify_json(path, "--key", key_of(logged))
    assert (code, result["intact"], result["result"]) == (ExitCode.FINDING, True, "policy_denied_recorded")
    # a second run does not overwrite the bundles without --force
    again = run_main(
        capsys, "report", "--log", directory / "audit.db", "--bundles", out / "bundles", "-o", tmp_path / "r2"
    )
    assert again[0] == ExitCode.USAGE and "--force" in again[2]


def test_verify_offline_writes_its_result_where_output_says(logged, tmp_path):
    out = tmp_path / "result.json"
    code, stdout, _ = run(
        "verify", write_bundle(logged, 0), "--offline", "--key", key_of(logged), "--format", "json", "-o", out
    )
    assert code == 0 and stdout == ""
    assert json.loads(out.read_text())[0]["result"] == "ok"


def test_a_record_altered_with_its_leaf_hint_still_never_passes(logged, tmp_path):
    """Whoever alters the record and the hint that names it is caught by the proof itself."""
    bundle = json.loads(write_bundle(logged, 0).read_text())
    _alter_record(bundle)
    bundle["leaf_sha256"] = leaf_hash(base64.b64decode(bundle["record"])).hex()
    _, _, rest = bundle["inclusion_proof"].partition("\nindex ")
    bundle["inclusion_proof"] = f"c2sp.org/tlog-proof@v1\nextra {bundle['record']}\nindex {rest}"
    path = tmp_path / "altered.bundle.json"
    path.write_bytes(bundle_bytes(bundle))
    code, result, _ = verify_json(path, "--key", key_of(logged))
    assert (code, result["result"], result["verdict"]) == (
        ExitCode.INTEGRITY,
        "inclusion_proof_invalid",
        None,
    )


def test_a_proof_that_is_not_one_is_an_integrity_failure_not_a_crash(logged, tmp_path):
    bundle = json.loads(write_bundle(logged, 0).read_text())
    _garble_proof(bundle)
    path = tmp_path / "garbled.bundle.json"
    path.write_bytes(bundle_bytes(bundle))
    code, result, _ = verify_json(path, "--key", key_of(logged))
    assert (code, result["result"]) == (ExitCode.INTEGRITY, "inclusion_proof_invalid")
